"""kdagent: iterative knowledge distillation for open language models."""

__version__ = "0.1.0"
