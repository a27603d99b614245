"""Convert a GGUF file into a normal safetensors Hugging Face checkpoint, atomically.

The checkpoint is written into a temporary folder beside the destination and renamed into place only once
complete, so an interrupted conversion is never mistaken for a finished one. A lock file serialises
concurrent conversions; whoever holds it removes temporary folders left by killed conversions.
"""

import fcntl
import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

MARKER = "kdagent-model.json"


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def is_complete(dest: Path) -> bool:
    """A finished conversion: the renamed folder with its marker."""
    return (dest / MARKER).is_file()


def convert_gguf(gguf_path: Path, dest: Path) -> Path:
    """Dequantize `gguf_path` to fp32 and save it as safetensors at `dest` (idempotent, crash-safe)."""
    dest = Path(dest)
    with _locked(dest.parent / f".{dest.name}.lock"):
        if is_complete(dest):
            return dest
        for stale in dest.parent.glob(f".{dest.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if dest.exists():  # a folder without its marker was never finished by us
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
        try:
            _convert_into(gguf_path, tmp)
            os.chmod(tmp, 0o755)
            os.rename(tmp, dest)
            fd = os.open(dest.parent, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return dest


def _convert_into(gguf_path: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are already
    # dequantized to fp32, so clear the marks and save a plain checkpoint.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / MARKER).write_text(
        json.dumps(
            {
                "source": str(gguf_path),
                "source_bytes": gguf_path.stat().st_size,
                "seconds": round(time.time() - started, 1),
            },
            indent=2,
        )
    )
    fsync_tree(out)
