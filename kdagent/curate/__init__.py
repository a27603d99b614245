"""Curation: dedup, decontamination and quality filters over training examples, and label balance."""

from kdagent.curate.balance import balance_examples, label_counts
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
    "balance_examples",
    "label_counts",
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
