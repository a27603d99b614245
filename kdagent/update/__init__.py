"""Updaters: thin wrappers over TRL trainers, one module each, registered through `kdagent_register_updaters`
(the interface is `updater.py`, the shared parts `common.py`); our pydantic options become TRL's config, and no
trainer code is copied."""
