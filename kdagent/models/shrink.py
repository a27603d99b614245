"""Make a smaller student from a llama-family checkpoint by keeping a subset of its decoder layers.

The embeddings, final norm, `lm_head`, generation config and tokenizer are copied unchanged; the kept layers keep
their weights and are renumbered in order. The new model is built from the edited config (so per-layer settings such
as attention layer indices follow the new numbering) and saved as safetensors into a temporary folder beside the
destination, then renamed into place.
"""

import json
import math
import os
import re
import shutil
from pathlib import Path

from kdagent.errors import UserError
from kdagent.models.gguf import fsync_tree
from kdagent.models.registry import safetensors_only

MARKER = "kdagent-shrink.json"
# config fields holding one entry per decoder layer; they are cut down with the layers
PER_LAYER_FIELDS = ("layer_types", "no_rope_layers")


def layers_to_keep(keep_layers: list[int] | int, num_layers: int) -> list[int]:
    """Sorted layer indices. An int n means n layers evenly spaced, the first and last included (n=1 keeps the
    first). A list may use negative indices, counted from the end."""
    if isinstance(keep_layers, bool):
        raise UserError(f"keep_layers must be a number of layers or a list of layer indices, got {keep_layers!r}")
    if isinstance(keep_layers, int):
        n = keep_layers
        if not 1 <= n <= num_layers:
            raise UserError(f"cannot keep {n} layers of a model with {num_layers}: choose 1 to {num_layers}")
        if n == 1:
            return [0]
        return [int(math.floor(i * (num_layers - 1) / (n - 1) + 0.5)) for i in range(n)]
    indices = list(keep_layers)
    if not indices:
        raise UserError("keep_layers is empty: keep at least one layer")
    normal = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -num_layers <= i < num_layers:
            raise UserError(f"layer index {i!r} is out of range for a model with {num_layers} layers")
        normal.append(i % num_layers)
    if len(set(normal)) != len(normal):
        raise UserError(f"keep_layers names a layer twice: {indices}")
    return sorted(normal)


def _layer_list_name(model, num_layers: int) -> str:
    """The qualified name of the decoder-layer ModuleList (model.layers in llama, qwen2, mistral, gemma...)."""
    import torch

    for name, module in model.named_modules():
        if name.endswith("layers") and isinstance(module, torch.nn.ModuleList) and len(module) == num_layers:
            return name
    raise UserError(
        f"{type(model).__name__} has no list of {num_layers} decoder layers: shrink supports llama-family models"
    )


def shrink(src: Path, dst: Path, keep_layers: list[int] | int) -> Path:
    """Save a copy of the checkpoint at `src` with only `keep_layers` of its decoder layers to `dst` (replaced)."""
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise UserError(f"{src} is not a Hugging Face checkpoint folder (no config.json)")
    if dst.resolve() == src.resolve() or dst.resolve() in src.resolve().parents:
        raise UserError(f"the shrunk model must not replace its source: {dst}")

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(src)
    num_layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(num_layers, int):
        raise UserError(f"{src}: the config has no num_hidden_layers; shrink supports llama-family models")
    keep = layers_to_keep(keep_layers, num_layers)

    source = AutoModelForCausalLM.from_pretrained(src, dtype="auto", use_safetensors=safetensors_only())
    prefix = _layer_list_name(source, num_layers) + "."
    new_index = {old: new for new, old in enumerate(keep)}
    state = {}
    pattern = re.compile(rf"^{re.escape(prefix)}(\d+)\.(.*)$")
    for key, tensor in source.state_dict().items():
        m = pattern.match(key)
        if m is None:
            state[key] = tensor  # embeddings, final norm, lm_head
        elif int(m.group(1)) in new_index:
            state[f"{prefix}{new_index[int(m.group(1))]}.{m.group(2)}"] = tensor

    small_config = source.config.__class__.from_dict(source.config.to_dict())
    small_config.num_hidden_layers = len(keep)
    for field in PER_LAYER_FIELDS:
        value = getattr(small_config, field, None)
        if isinstance(value, (list, tuple)) and len(value) == num_layers:
            setattr(small_config, field, [value[i] for i in keep])
    small = AutoModelForCausalLM.from_config(small_config, dtype=source.dtype)
    small.load_state_dict(state, strict=True)
    small.generation_config = source.generation_config
    tokenizer = AutoTokenizer.from_pretrained(src)
    del source

    dst.parent.mkdir(parents=True, exist_ok=True)
    for stale in dst.parent.glob(f".{dst.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        with torch.no_grad():
            small.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(
            json.dumps({"source": str(src), "source_layers": num_layers, "kept_layers": keep}, indent=2) + "\n"
        )
        fsync_tree(tmp)
        if dst.exists():
            shutil.rmtree(dst)
        os.rename(tmp, dst)
        fd = os.open(dst.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst
