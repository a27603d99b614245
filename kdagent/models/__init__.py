"""Embedded default models and model resolution: an alias, a local Hugging Face folder, or a Hub id from the
local Hugging Face cache (a download only where the user allows it)."""

from kdagent.models.registry import (
    ALIASES,
    ModelAlias,
    allow_download,
    list_models,
    materialise,
    resolve_hub,
    resolve_model,
)

__all__ = ["ALIASES", "ModelAlias", "allow_download", "list_models", "materialise", "resolve_hub", "resolve_model"]
