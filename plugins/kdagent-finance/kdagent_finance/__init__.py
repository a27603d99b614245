"""kdagent-finance: the `finance` domain for kdagent (entry point `finance = "kdagent_finance.plugin"`)."""

__version__ = "0.1.0"
