"""Evaluation: the runner (`kdagent.evaluate.runner`), grading rules and metrics.

The package is also callable, as the Python API's `kdagent.evaluate(model, data, ...)` (`kdagent.evaluate.score.evaluate_model`):
a subpackage and a function cannot share the name `kdagent.evaluate` otherwise, because importing the
subpackage sets that attribute on `kdagent`."""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from kdagent.evaluate.score import evaluate_model

        return evaluate_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
