"""Embedded default models and model resolution: an alias or a local Hugging Face folder, never a download."""

from kdagent.models.registry import ALIASES, ModelAlias, list_models, materialise, resolve_model

__all__ = ["ALIASES", "ModelAlias", "list_models", "materialise", "resolve_model"]
