"""Reading a checkpoint folder's metadata without loading it: its text config and safetensors headers."""

import json
import struct
from pathlib import Path


def text_config(model_dir: Path) -> dict:
    """The checkpoint's config.json (its `text_config` for a multimodal model), or {} when unreadable."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config.get("text_config", config) if isinstance(config, dict) else {}


class TruncatedHeader(ValueError):
    """The header's length points past the end of the file."""


def safetensors_header(path: Path) -> tuple[int, dict]:
    """(header length, header) of a safetensors file; OSError, struct.error or ValueError when it has none,
    TruncatedHeader when the file ends inside it."""
    size = Path(path).stat().st_size
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        if length > size - 8:
            raise TruncatedHeader(f"{Path(path).name}: header length past the end of the file")
        return length, json.loads(fh.read(length))
