"""kdagent-law: the `law` domain for kdagent (entry point `law = "kdagent_law.plugin"`)."""

__version__ = "0.1.0"
