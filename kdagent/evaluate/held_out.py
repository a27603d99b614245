"""The run's held-out sets: the domain's evaluation tasks (or `evaluation.data`), each listed skill's own set and
the cross-checked domains' sets, cut to what fits the student's context, and scored together with one engine."""

import sys
from pathlib import Path

from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks, load_tasks
from kdagent.jsonl import write_jsonl
from kdagent.recipe import Recipe
from kdagent.records import Task


def _log(message: str) -> None:
    print(f"[kdagent] {message}", file=sys.stderr, flush=True)


def load_eval_tasks(recipe: Recipe, domain, quarantine: list) -> list[Task]:
    if recipe.evaluation.data:
        return load_tasks(Path(recipe.evaluation.data), quarantine)
    try:
        tasks = domain.eval_tasks(recipe.domain.eval_tasks)
    except ValueError as exc:
        raise UserError(f"domain.eval_tasks: {exc}") from None
    check_tasks(tasks, f"domain {recipe.domain.name}")
    return tasks


def skill_eval_sets(recipe: Recipe, plugins, skill) -> dict[str, tuple]:
    """Each listed skill's own held-out set (`Skill.eval_tasks`, at most `evaluation.skill_tasks` tasks),
    by skill name, with the skill that prompts it; skills without one are left out."""
    sets: dict[str, tuple] = {}
    if recipe.evaluation.skill_tasks == 0:
        return sets
    for i, cfg in enumerate(recipe.skills):
        if cfg.name in sets:
            continue
        obj = skill if i == 0 else plugins.instantiate("skills", cfg.name, f"skills[{i}].options", cfg.options)
        try:
            tasks = obj.eval_tasks(recipe.evaluation.skill_tasks)
        except ValueError as exc:
            raise UserError(f"skills[{i}].eval_tasks: {exc}") from None
        if tasks:
            check_tasks(tasks, f"skill {cfg.name}'s held-out set")
            sets[cfg.name] = (obj, tasks)
    return sets


def held_out_sets(recipe: Recipe, plugins, domain, skill, quarantine: list) -> tuple[list[Task], dict[str, tuple]]:
    """The domain's evaluation tasks, and the other sets by name (`skill_eval_sets`, then each cross-checked
    domain's as `domain:<name>`, scored as the first skill prompts)."""
    eval_tasks = load_eval_tasks(recipe, domain, quarantine)
    skill_sets = skill_eval_sets(recipe, plugins, skill)
    for i, cfg in enumerate(recipe.evaluation.cross_check):  # other domains' held-out sets, scored as the skill prompts
        other = plugins.instantiate("domains", cfg.name, f"evaluation.cross_check[{i}].options", cfg.options)
        try:
            tasks = other.eval_tasks(cfg.eval_tasks)
        except ValueError as exc:
            raise UserError(f"evaluation.cross_check[{i}].eval_tasks: {exc}") from None
        check_tasks(tasks, f"domain {cfg.name}'s held-out set")
        skill_sets[f"domain:{cfg.name}"] = (skill, tasks)
    return eval_tasks, skill_sets


def evaluate_sets(model_path: Path, tasks, skill, skill_sets: dict, recipe: Recipe, out: Path, desc: str) -> dict:
    """The domain's held-out set (predictions in `out`), under the evaluation's reserved phrasing too with
    `evaluation.unseen_phrasing` (`unseen_phrasing` in the summary, predictions in `<stem>.unseen.jsonl`), then
    each skill's (`skills` in the summary, predictions beside `out` as `<stem>.<skill>.jsonl`), with one engine."""
    from kdagent.evaluate.runner import evaluate
    from kdagent.generation.engine import Engine

    e = recipe.evaluation
    engine = Engine(model_path, backend=e.backend)
    try:
        summary, predictions = evaluate(engine, tasks, skill, e.max_new_tokens, e.batch_size, desc, e.bootstrap)
        write_jsonl(out, predictions)
        choice = [t for t in tasks if t.kind == "choice"]
        if e.unseen_phrasing and choice:
            result, predictions = evaluate(
                engine,
                choice,
                skill,
                e.max_new_tokens,
                e.batch_size,
                f"{desc} (unseen phrasing)",
                e.bootstrap,
                "unseen",
            )
            write_jsonl(out.with_name(f"{out.stem}.unseen.jsonl"), predictions)
            summary["unseen_phrasing"] = result
        for name, (obj, held_out) in skill_sets.items():  # "domain:<name>" for a cross-checked domain
            kind, _, short = name.rpartition(":")
            result, predictions = evaluate(
                engine,
                held_out,
                obj,
                e.max_new_tokens,
                e.batch_size,
                f"{desc} ({short} {kind or 'skill'})",
                e.bootstrap,
            )
            write_jsonl(out.with_name(f"{out.stem}.{name.replace(':', '-')}.jsonl"), predictions)
            summary.setdefault("domains" if kind == "domain" else "skills", {})[short] = result
    finally:
        engine.close()
    return summary


def fitting_eval_tasks(
    recipe: Recipe, skill, tasks: list[Task], student: Path, what: str = "evaluation"
) -> tuple[list[Task], int]:
    """The evaluation tasks whose prompt leaves room for `evaluation.max_new_tokens` in the student's
    context; the others are dropped by policy (a truncated question is another question) and counted."""
    from kdagent.synth.elicit import context_length, token_counts

    limit = context_length(student)
    if limit is None:
        return tasks, 0
    from transformers import AutoTokenizer

    from kdagent.skill import plain_messages

    prompts = [skill.messages(t) if t.kind == "numeric" else plain_messages(t) for t in tasks]
    lengths = token_counts(AutoTokenizer.from_pretrained(student), prompts, generation_prompt=True)
    kept = [t for t, n in zip(tasks, lengths) if n + recipe.evaluation.max_new_tokens <= limit]
    if not kept:
        raise UserError(
            f"{what}: no tasks left: all {len(tasks)} are longer than the student's context ({limit} tokens, "
            f"with room for evaluation.max_new_tokens={recipe.evaluation.max_new_tokens})"
        )
    if len(kept) < len(tasks):
        _log(
            f"{what}: dropped {len(tasks) - len(kept)} of {len(tasks)} tasks longer than the student's context ({limit} tokens)"
        )
    return kept, len(tasks) - len(kept)


def fitting_sets(
    recipe: Recipe, skill, eval_tasks: list[Task], skill_sets: dict[str, tuple], student: Path
) -> tuple[list[Task], dict[str, tuple], int]:
    """`fitting_eval_tasks` over the domain's set and each other set; the sets kept and how many tasks were dropped."""
    eval_tasks, too_long = fitting_eval_tasks(recipe, skill, eval_tasks, student)
    kept_sets = {}
    for name, (obj, tasks) in skill_sets.items():
        kept, dropped = fitting_eval_tasks(recipe, obj, tasks, student, f"skill {name}'s held-out set")
        kept_sets[name] = (obj, kept)
        too_long += dropped
    return eval_tasks, kept_sets, too_long


# The names benchmarks/distill_quality.py imports.
_load_eval_tasks, _evaluate, _fitting_eval_tasks = load_eval_tasks, evaluate_sets, fitting_eval_tasks
