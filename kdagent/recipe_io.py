"""Reading a recipe: its YAML file, `--set` overrides, names checked against the plugins, and the recipe written back.

YAML is read with a safe loader that also bounds what a hostile file can cost (`bounded_yaml`): its size, its depth and
how far its aliases expand (a "billion laughs"). Errors become one-line `UserError`s naming the path of the
bad field, with a "did you mean" for an unknown key.
Names of skills, domains and teachers are checked against what the plugins registered, and the teacher's kind
and the updaters check their own options (`check_names`).
Written back (`masked_dump`, `recipe_to_yaml`), a recipe's secrets are masked.
"""

import re
from pathlib import Path
from typing import Any, get_origin
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ValidationError

from kdagent import bounded_yaml
from kdagent.errors import UserError, did_you_mean
from kdagent.recipe import Recipe, submodel


def _format_loc(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


# Names other tools give to what a recipe calls otherwise, for "did you mean" (only where the target is a
# valid key at that place).
_SYNONYMS = {
    "training": "update",
    "train": "update",
    "trainer": "update",
    "optimizer": "update",
    "sft": "update",
    "model": "student",
    "base_model": "student",
    "eval": "evaluation",
    "evaluate": "evaluation",
    "eval_data": "data",
    "data": "domain",
    "dataset": "domain",
    "datasets": "domain",
    "task": "domain",
    "tasks": "domain",
    "rag": "retrieval",
    "rounds": "loop",
    "iterations": "loop",
    "judge": "feedback",
    "verify": "feedback",
    "filter": "curation",
    "filters": "curation",
    "skill": "skills",
    "lr": "learning_rate",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "num_samples": "samples",
    "n": "samples",
    "num_generations": "samples",
    "max_tokens": "max_new_tokens",
    "temp": "temperature",
    "embedding_model": "embedder",
    "k": "top_k",
}


def _field_paths(model: type[BaseModel], prefix: str = "") -> dict[str, list[str]]:
    """Every field name of the recipe -> the dotted paths where it is a key (list items left out)."""
    out: dict[str, list[str]] = {}
    for name, field in model.model_fields.items():
        out.setdefault(name, []).append(prefix + name)
        sub = submodel(model, name)
        if sub is not None and get_origin(field.annotation) is not list:
            for key, paths in _field_paths(sub, f"{prefix}{name}.").items():
                out.setdefault(key, []).extend(paths)
    return out


def _suggest_key(loc: tuple) -> str:
    """For an unknown key at `loc`: the same key where it belongs, a synonym valid there, the closest valid
    key there (difflib), or a misspelt synonym's; else the valid keys there."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        if isinstance(part, str) and part in model.model_fields:
            model = submodel(model, part) or model
    key, names, paths = str(loc[-1]), list(model.model_fields), _field_paths(Recipe)
    here = _format_loc(loc[:-1])
    at = "" if here == "(top level)" else here + "."

    def mean(*choices: str) -> str:
        return f" (did you mean {' or '.join(repr(c) for c in choices[:3])}?)"

    if key in paths:
        return mean(*paths[key])
    if _SYNONYMS.get(key) in names:
        return mean(at + _SYNONYMS[key])
    close = did_you_mean(key, names)
    if close:
        return mean(at + close)
    synonym = _SYNONYMS.get(key) or _SYNONYMS.get(did_you_mean(key, list(_SYNONYMS), 0.8) or "")
    if synonym in names:
        return mean(at + synonym)
    if synonym in paths:
        return mean(*paths[synonym])
    return f" (valid keys{' under ' + here if at else ''}: {', '.join(names)})"


def format_validation_error(source: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        path = _format_loc(err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {path!r}{_suggest_key(err['loc'])}")
        else:
            parts.append(f"{path}: {err['msg']}")
    return f"invalid recipe {source}: " + "; ".join(parts)


# A recipe is a few KB; a recipe file or a --set value far larger is refused before it is parsed.
MAX_RECIPE_BYTES = 2**20
MAX_SET_CHARS = 2**16


def _parse_set(assignment: str) -> tuple[list[str], Any]:
    if "=" not in assignment:
        raise UserError(f"--set {assignment!r}: expected path.to.field=value")
    path, raw = assignment.split("=", 1)
    if len(raw) > MAX_SET_CHARS:
        raise UserError(f"--set {path}: the value is {len(raw)} characters, over the limit of {MAX_SET_CHARS}")
    try:
        value = bounded_yaml.safe_load(raw) if raw != "" else ""
    except bounded_yaml.TooCostly as exc:
        raise UserError(f"--set {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"--set {path}: value is not valid YAML ({exc.__class__.__name__})") from None
    keys = [k for k in path.strip().split(".")]
    if not all(keys):
        raise UserError(f"--set {assignment!r}: empty field name in path")
    return keys, value


def apply_sets(data: dict, assignments: list[str]) -> dict:
    """Apply `path.to.field=value` overrides (value read as YAML) to a recipe's raw data."""
    for assignment in assignments:
        keys, value = _parse_set(assignment)
        node = data
        for i, key in enumerate(keys):
            last = i == len(keys) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise UserError(f"--set {'.'.join(keys)}: no item {key} in a list of {len(node)}")
                idx = int(key)
                if last:
                    node[idx] = value
                else:
                    node = node[idx]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    if node.get(key) is None:
                        node[key] = {}
                    node = node[key]
            else:
                raise UserError(f"--set {'.'.join(keys)}: {'.'.join(keys[:i])} is not a mapping")
    return data


def read_yaml(path: Path) -> dict:
    """Read a recipe's YAML with the safe loader; any problem is a one-line UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"recipe {path} not found")
    with path.open("rb") as fh:  # never more than the limit into memory
        raw = fh.read(MAX_RECIPE_BYTES + 1)
    if len(raw) > MAX_RECIPE_BYTES:
        size = max(path.stat().st_size, len(raw))
        raise UserError(
            f"recipe {path}: {size} bytes, over the limit of {MAX_RECIPE_BYTES} (a recipe names its data files; it does not hold them)"
        )
    try:
        data = bounded_yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"recipe {path} is not UTF-8 text") from None
    except bounded_yaml.TooCostly as exc:
        raise UserError(f"recipe {path}: {exc}") from None
    except yaml.YAMLError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserError(f"recipe {path} is not safe, valid YAML{where}: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"recipe {path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_recipe(path: str | Path, sets: list[str] | None = None) -> Recipe:
    data = read_yaml(Path(path))
    if isinstance(data.get("skills"), list):  # so that --set skills.0.options.x=... finds a mapping
        data["skills"] = [{"name": v} if isinstance(v, str) else v for v in data["skills"]]
    data = apply_sets(data, list(sets or []))
    data.setdefault("name", Path(path).stem)
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(str(path), exc)) from None


def check_names(recipe: Recipe, plugins) -> None:
    """Unknown skill, domain, teacher, store, verifier or updater names are UserErrors that list what is registered;
    the teacher's kind and each updater check their options and the settings they depend on."""

    def known(kind: str, path: str, name: str, registered: dict) -> None:
        if name not in registered:
            names = ", ".join(sorted(registered)) or "none"
            close = did_you_mean(name, registered)
            raise UserError(
                f"{path}: unknown {kind} {name!r} (registered: {names})"
                + (f"; did you mean {close!r}?" if close else "")
            )

    for i, skill in enumerate(recipe.skills):
        known("skill", f"skills[{i}].name", skill.name, plugins.skills)
    known("domain", "domain.name", recipe.domain.name, plugins.domains)
    for i, other in enumerate(recipe.evaluation.cross_check):
        known("domain", f"evaluation.cross_check[{i}].name", other.name, plugins.domains)
    known("teacher kind", "teacher.kind", recipe.teacher.kind, plugins.teachers)
    from kdagent.teachers.kinds import check_teacher

    check_teacher(recipe.teacher, plugins)  # the kind's own options and checks
    from kdagent.retrieval.stores import check_store

    check_store(recipe.retrieval, plugins)  # a registered store kind, and its own options
    if recipe.retrieval.corpus_dir and not Path(recipe.retrieval.corpus_dir).is_dir():
        raise UserError(f"retrieval.corpus_dir: {recipe.retrieval.corpus_dir} is not a folder")
    if recipe.evaluation.data and not Path(recipe.evaluation.data).is_file():
        raise UserError(f"evaluation.data: {recipe.evaluation.data} not found")
    plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    for i, skill in enumerate(recipe.skills):
        plugins.instantiate("skills", skill.name, f"skills[{i}].options", skill.options)
    from kdagent.feedback.verifiers import check_verifiers
    from kdagent.update.updater import check_updaters

    check_verifiers(recipe, plugins)
    check_updaters(recipe, plugins)
    if recipe.loop.failure_mining != "off" and recipe.synthesis.expansion is None:
        raise UserError("loop.failure_mining: needs synthesis.expansion (failed tasks seed the next round's expansion)")
    if recipe.teacher.samples == 0 and not recipe.feedback.fallback_to_reference:
        raise UserError(
            "teacher.samples: 0 samples nothing, so only reference answers can teach; set feedback.fallback_to_reference: true"
        )
    if recipe.teacher.samples > 1 and recipe.teacher.temperature == 0:
        raise UserError(
            "teacher.samples: several samples need teacher.temperature > 0 (greedy decoding repeats itself)"
        )


_SECRET_KEY = re.compile(r"key|token|secret|password|credential", re.IGNORECASE)
MASK = "***"


def _mask_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rsplit('@', 1)[1]}"
    query = (
        "&".join(f"{kv.split('=', 1)[0]}={MASK}" if "=" in kv else kv for kv in parts.query.split("&"))
        if parts.query
        else ""
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _mask_options(value):
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "") else _mask_options(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask_options(v) for v in value]
    return value


def masked_dump(recipe: Recipe) -> dict:
    """The recipe as data, with secrets masked: credentials and query values in URLs, and option values
    whose key looks like a secret (key, token, secret, password). API keys themselves never appear in a
    recipe: only the name of the environment variable that holds one."""
    data = recipe.model_dump(mode="json")
    if isinstance(data["teacher"].get("base_url"), list):
        data["teacher"]["base_url"] = [_mask_url(url) for url in data["teacher"]["base_url"]]
    elif data["teacher"].get("base_url"):
        data["teacher"]["base_url"] = _mask_url(data["teacher"]["base_url"])
    if data["retrieval"].get("server"):
        data["retrieval"]["server"] = _mask_url(data["retrieval"]["server"])
    data["teacher"]["options"] = _mask_options(data["teacher"]["options"])
    data["domain"]["options"] = _mask_options(data["domain"]["options"])
    data["skills"] = [{**s, "options": _mask_options(s["options"])} for s in data["skills"]]
    data["update"]["options"] = _mask_options(data["update"]["options"])
    data["retrieval"]["options"] = _mask_options(data["retrieval"]["options"])
    return data


def recipe_to_yaml(recipe: Recipe, mask: bool = True) -> str:
    return yaml.safe_dump(masked_dump(recipe) if mask else recipe.model_dump(mode="json"), sort_keys=False)
