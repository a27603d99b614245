"""Batched generation: teachers, synthesis and evaluation all sample through this engine."""
