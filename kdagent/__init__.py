"""kdagent: iterative knowledge distillation for open language models.

The Python API (docs/api.md): `kdagent.load_recipe`, `kdagent.run`, `kdagent.evaluate`, `kdagent.write_report`.
They load lazily, so `import kdagent` stays light (no torch, no transformers)."""

__version__ = "0.1.0"

_API = {"load_recipe": "kdagent.api", "run": "kdagent.api", "write_report": "kdagent.report"}
# `kdagent.evaluate` is the evaluation subpackage, callable as kdagent.evaluate.score.evaluate_model (see its __init__).
__all__ = ["__version__", "evaluate", *_API]


def __getattr__(name: str):
    if name == "evaluate":
        import importlib

        return importlib.import_module("kdagent.evaluate")
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'kdagent' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "evaluate", *_API])
