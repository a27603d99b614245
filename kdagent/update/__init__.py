"""Thin wrappers over TRL trainers: our pydantic config becomes TRL's config; no trainer code is copied."""
