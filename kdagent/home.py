"""Where kdagent keeps materialised models and caches, and the offline defaults."""

import os
from pathlib import Path


def kdagent_home() -> Path:
    """`KDAGENT_HOME`, default `~/.cache/kdagent`."""
    return Path(os.environ.get("KDAGENT_HOME") or Path.home() / ".cache" / "kdagent").expanduser()


def force_offline() -> None:
    """Nothing is ever downloaded from a model hub: set the offline switches unless the user set them."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # chromadb
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
