"""`kdagent validate --explain`: the resolved recipe as YAML, each field preceded by its description as a
comment, so a user reads what every setting means beside its value. The output is itself a valid recipe."""

import textwrap

import yaml
from pydantic import BaseModel


def _comment(text: str, indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in textwrap.wrap(" ".join(text.split()), width=max(40, 110 - len(indent)))]


def _scalar(key: str, value, indent: str) -> list[str]:
    text = yaml.safe_dump(
        {key: value}, sort_keys=False, default_flow_style=False, allow_unicode=True, width=10_000
    ).rstrip("\n")
    return [indent + line for line in text.splitlines()]


def _lines(model: type[BaseModel], data: dict, indent: str) -> list[str]:
    from kdagent.recipe import submodel

    out = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is not None and field.description:
            out += _comment(field.description, indent)
        inner = submodel(model, key)
        if inner is not None and isinstance(value, dict):
            out += [f"{indent}{key}:", *_lines(inner, value, indent + "  ")]
        elif inner is not None and isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"{indent}{key}:")
            for item in value:
                body = _lines(inner, item, indent + "    ")
                first = next(i for i, line in enumerate(body) if not line.lstrip().startswith("#"))
                body[first] = f"{indent}  - " + body[first][len(indent) + 4 :]
                out += body
        else:
            out += _scalar(key, value, indent)
    return out


def explain(recipe) -> str:
    """The resolved recipe (secrets masked) with every field's description above it."""
    from kdagent.recipe import Recipe
    from kdagent.recipe_io import masked_dump

    return "\n".join(_lines(Recipe, masked_dump(recipe), "")) + "\n"
