"""`kdagent init`: a commented starter recipe for a domain and a skill, which validates.

The base is a small budget of kdagent's own defaults. The domain's `starter` and then the skill's (partial
recipes each declares, as YAML data) are merged over it. Every field written carries its description as a
comment, and the domain's and the skill's own options are listed, commented out, with their defaults.
"""

import inspect
import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdagent.errors import UserError, did_you_mean
from kdagent.recipe import DomainConfig, Recipe, submodel
from kdagent.recipe_io import check_names, format_validation_error

DEFAULT = ...  # the field's default, read off the recipe models

# What a starter shows: the fields a user changes first, a budget that runs on a CPU in minutes.
BASE: dict[str, Any] = {
    "seed": DEFAULT,
    "student": {"model": DEFAULT, "max_length": DEFAULT},
    "teacher": {"kind": DEFAULT, "samples": DEFAULT, "temperature": DEFAULT, "max_new_tokens": DEFAULT},
    "domain": {"name": DEFAULT, "seed_tasks": 64, "eval_tasks": 32},
    "skills": None,  # filled in: the chosen skill
    "retrieval": {"enabled": DEFAULT, "top_k": 1},
    "feedback": {"verifier": DEFAULT, "fallback_to_reference": DEFAULT},
    "curation": {"max_per_task": DEFAULT},
    "update": {"method": DEFAULT, "learning_rate": 1.0e-4, "epochs": DEFAULT, "batch_size": DEFAULT},
    "evaluation": {"gate": {"max_regression": 0.0}},
    "loop": {"rounds": DEFAULT},
}
WIDTH = 110


def merge(base: dict, extra: dict) -> dict:
    """`extra` over `base`, mappings merged key by key; anything else (lists too) replaced."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _defaults(data: dict, model: type[BaseModel]) -> dict:
    out = {}
    for key, value in data.items():
        sub = submodel(model, key)
        if isinstance(value, dict) and sub is not None:
            out[key] = _defaults(value, sub)
        elif value is DEFAULT:
            out[key] = model.model_fields[key].get_default(call_default_factory=True)
        else:
            out[key] = value
    return out


def _skill_name(entry) -> str:
    return entry if isinstance(entry, str) else entry["name"]


def _options(factory) -> list[tuple[str, Any]]:
    """A component's own options (its factory's keyword arguments) with their defaults."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        (p.name, None if p.default is inspect.Parameter.empty else p.default)
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]


def _mean(name: str, registered) -> str:
    close = did_you_mean(name, registered)
    return f"; did you mean {close!r}?" if close else ""


def starter_data(domain: str, skill: str | None, plugins, data_dir: str | None) -> dict:
    """The starter recipe as data (before comments): base, then the domain's starter, then the skill's."""
    if domain not in plugins.domains:
        raise UserError(
            f"--domain: unknown domain {domain!r} (registered: {', '.join(sorted(plugins.domains))})"
            + _mean(domain, plugins.domains)
        )
    domain_obj = plugins.domains[domain].obj
    data = merge(BASE, {"domain": {"name": domain}})
    data = merge(data, getattr(domain_obj, "starter", {}) or {})
    skills = data.get("skills") or [
        s.name for s in Recipe.model_fields["skills"].get_default(call_default_factory=True)
    ]
    if skill is not None:
        skills = [skill]
    name = _skill_name(skills[0])
    if name not in plugins.skills:
        raise UserError(
            f"--skill: unknown skill {name!r} (registered: {', '.join(sorted(plugins.skills))})"
            + _mean(name, plugins.skills)
        )
    data = merge(data, getattr(plugins.skills[name].obj, "starter", {}) or {})
    if skill is not None or not data.get("skills"):
        data["skills"] = [name]
    if data_dir is not None and "data_dir" in dict(_options(domain_obj)):
        data["domain"] = merge(data["domain"], {"options": {"data_dir": data_dir}})
    return _defaults(data, Recipe)


# -- rendering ------------------------------------------------------------------------------------------
def _scalar(value) -> str:
    text = yaml.safe_dump([value], default_flow_style=True, width=10**9).strip()
    return text[1:-1]


def _comment(text: str, pad: str) -> list[str]:
    return [f"{pad}# {line}" for line in textwrap.wrap(text, WIDTH - len(pad) - 2)] if text else []


def _render_options(set_options: dict, factory, pad: str, hints: dict) -> list[str]:
    """`options:` with the ones set, and every other option of the component commented out with its default
    (or the value of `hints`, for data_dir)."""
    rest = [(k, hints.get(k, v)) for k, v in _options(factory) if k not in set_options]
    lines = []
    if set_options:
        lines.append(f"{pad}options:")
        lines += [f"{pad}  {k}: {_scalar(v)}" for k, v in set_options.items()]
        lines += [f"{pad}  # {k}: {_scalar(v)}" for k, v in rest]
    elif rest:
        lines.append(f"{pad}# options:")
        lines += [f"{pad}#   {k}: {_scalar(v)}" for k, v in rest]
    return lines


def _render(data: dict, model: type[BaseModel], plugins, hints: dict, depth: int = 0) -> list[str]:
    pad = "  " * depth
    lines: list[str] = []
    for key, value in data.items():
        if model is DomainConfig and key == "options":
            continue  # rendered after the domain's other fields, below
        if depth == 0 and lines:
            lines.append("")
        lines += _comment(model.model_fields[key].description or "", pad)
        sub = submodel(model, key)
        if key == "skills":
            lines.append(f"{pad}skills:")
            for entry in value:
                entry = {"name": entry} if isinstance(entry, str) else entry
                registered = plugins.skills[entry["name"]]
                lines += _comment(f"{entry['name']}: {getattr(registered.obj, 'description', '')}", pad + "  ")
                lines.append(f"{pad}  - name: {entry['name']}")
                lines += _render_options(entry.get("options", {}), registered.obj, pad + "    ", {})
        elif isinstance(value, dict) and sub is not None:
            lines.append(f"{pad}{key}:")
            lines += _render(value, sub, plugins, hints, depth + 1)
            if sub is DomainConfig:
                registered = plugins.domains[value["name"]]
                lines += _comment(DomainConfig.model_fields["options"].description, pad + "  ")
                lines += _render_options(value.get("options", {}), registered.obj, pad + "  ", hints)
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return lines


def render(data: dict, name: str, plugins, hints: dict | None = None) -> str:
    domain, skill = data["domain"]["name"], _skill_name(data["skills"][0])
    about = getattr(plugins.domains[domain].obj, "description", "")
    head = [
        f"# A starter recipe for the {domain} domain with the {skill} skill, written by `kdagent init`.",
        *_comment(f"{domain}: {about}", ""),
        "# Check it with `kdagent validate` (it prints the recipe with every default), run it with `kdagent run`.",
        "# `kdagent schema` has every field's description; with it saved as recipe.schema.json, the first line",
        "# `# yaml-language-server: $schema=recipe.schema.json` lets an editor check this file as you type.",
        "",
        *_comment(Recipe.model_fields["name"].description, ""),
        f"name: {_scalar(name)}",
    ]
    return "\n".join(head + [""] + _render(data, Recipe, plugins, hints or {})) + "\n"


def _check(text: str, source: str, plugins) -> None:
    try:
        recipe = Recipe.model_validate(yaml.safe_load(text))
    except ValidationError as exc:
        raise UserError(format_validation_error(source, exc)) from None
    check_names(recipe, plugins)


def write_starter(output: Path, domain: str, skill: str | None, plugins, data_dir: str | None) -> str:
    """Write a starter recipe at `output` (never over an existing file) once it validates; returns the skill
    it names. A domain whose data_dir is optional leaves it commented out when that folder is absent here."""
    if output.exists():
        raise UserError(f"{output} exists: kdagent init never overwrites a file (choose another --output)")
    data = starter_data(domain, skill, plugins, data_dir)
    hints = {"data_dir": data_dir} if data_dir else {}
    text = render(data, output.stem, plugins, hints)
    try:
        _check(text, str(output), plugins)
    except UserError as exc:
        options = data["domain"].get("options", {})
        if "data_dir" not in options or Path(data_dir).is_dir():
            raise UserError(f"the starter recipe for domain {domain!r} does not validate here: {exc}") from None
        data["domain"]["options"] = {k: v for k, v in options.items() if k != "data_dir"}
        text = render(data, output.stem, plugins, hints)
        try:
            _check(text, str(output), plugins)
        except UserError:
            raise UserError(
                f"the starter recipe for domain {domain!r} does not validate here: {exc}; "
                "point --data-dir at the domain's data"
            ) from None
    try:
        with open(output, "x", encoding="utf-8") as fh:
            fh.write(text)
    except FileExistsError:
        raise UserError(f"{output} exists: kdagent init never overwrites a file (choose another --output)") from None
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc.strerror or exc}") from None
    return _skill_name(data["skills"][0])
