"""An example kdagent plugin package: three small plugins, each its own entry point (see pyproject.toml)."""
