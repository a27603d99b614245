"""Curation: dedup, decontamination and quality filters over training examples."""

from kdagent.curate.filters import (
    FilterConfig,
    contaminated_ids,
    curate_examples,
    decontaminate,
    dedupe_exact,
    dedupe_near,
    example_texts,
    length_quality,
    repeat_ratio,
)

__all__ = [
    "FilterConfig",
    "contaminated_ids",
    "curate_examples",
    "decontaminate",
    "dedupe_exact",
    "dedupe_near",
    "example_texts",
    "length_quality",
    "repeat_ratio",
]
