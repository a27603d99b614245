"""The run: index the corpus, evaluate the baseline, then one round after another (`loop/round.py`)."""

import sys
import time
from pathlib import Path

from kdagent.errors import UserError
from kdagent.evaluate.gate import apply_gate, raised, set_scores
from kdagent.evaluate.held_out import evaluate_sets, fitting_sets, held_out_sets
from kdagent.hookspecs import by_name
from kdagent.jsonl import write_jsonl
from kdagent.loop.round import Context, run_round
from kdagent.loop.rundir import RunDir
from kdagent.models import resolve_model
from kdagent.recipe import Recipe
from kdagent.recipe_io import check_names
from kdagent.retrieval.indexing import open_retrieval
from kdagent.synth.tasks import eval_texts, seed_tasks
from kdagent.teachers.kinds import local_teacher_path
from kdagent.trackers import send_rounds
from kdagent.update.updater import options_for


def _log(message: str) -> None:
    print(f"[kdagent] {message}", file=sys.stderr, flush=True)


def run_recipe(recipe: Recipe, run_dir: Path, plugins, resume: bool = False) -> dict:
    rd = RunDir(run_dir)
    if rd.path.is_dir():  # another process may be at work there: refused at once, before the checks below
        rd.lock()
    try:
        return _checked_run(recipe, rd, plugins, resume)
    finally:
        rd.close()


def _checked_run(recipe: Recipe, rd: RunDir, plugins, resume: bool) -> dict:
    check_names(recipe, plugins)
    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    updaters = {name: plugins.updaters[name].obj for name in recipe.update.methods()}
    if skill.tools and any(not u.tool_calls for u in updaters.values()):
        able = sorted(name for name, entry in plugins.updaters.items() if entry.obj.tool_calls)
        raise UserError(
            f"update.method: a skill with tools ({skill.name}) trains with {', '.join(able)} only for now "
            f"(got {', '.join(recipe.update.methods())}): the other trainers do not run the tool loop"
        )
    quarantine: list[dict] = []  # malformed lines of the user's files, written to RUN_DIR/quarantine.jsonl
    eval_tasks, skill_sets = held_out_sets(recipe, plugins, domain, skill, quarantine)
    held_out = eval_tasks + [t for _, tasks in skill_sets.values() for t in tasks]
    seed_tasks(
        recipe, plugins, domain, eval_texts(held_out), 1
    )  # an empty or fully filtered dataset fails before any model loads
    student = resolve_model(recipe.student.model)
    eval_tasks, skill_sets, too_long = fitting_sets(recipe, skill, eval_tasks, skill_sets, student)
    inputs = {
        "evaluation_tasks": len(eval_tasks),
        "dropped": {"eval_too_long": too_long} if too_long else {},
        "quarantined": quarantine,
    }
    if skill_sets:
        inputs["skill_evaluation_tasks"] = {name: len(tasks) for name, (_, tasks) in skill_sets.items()}
    for name, updater in updaters.items():  # checks that import the trainers or read the models' files
        options = options_for(recipe.update, name, updater)
        updater.check_models(
            **by_name(updater.check_models, recipe=recipe, options=options, student=student, plugins=plugins)
        )
    plan = _memory_plan(recipe, student, local_teacher_path(recipe.teacher, plugins, student), updaters)
    rd.open(recipe, resume)
    rd.write_json("memory-plan.json", plan)
    return _run(recipe, rd, plugins, domain, skill, eval_tasks, skill_sets, student, resume, inputs)


def _memory_plan(recipe: Recipe, student: Path, teacher: Path | None, updaters: dict) -> dict:
    """The run's memory plan (kdagent/memory.py), logged, and refused when its peak stage cannot fit."""
    from kdagent.generation.engine import pick_device
    from kdagent.memory import check_plan, memory_plan

    plan = memory_plan(recipe, student, teacher, pick_device(), updaters)
    _log(
        f"memory plan: peak {plan['peak_mb']} MiB in {plan['peak_stage']} of {plan['available_mb']} MiB available ("
        + ", ".join(f"{k} {v}" for k, v in plan["stages_mb"].items())
        + ")"
    )
    check_plan(plan)
    return plan


def _write_inputs(rd: RunDir, inputs: dict) -> None:
    """RUN_DIR/inputs.counts.json (what the input checks dropped) and RUN_DIR/quarantine.jsonl (the
    malformed records of the user's files, each with its file and line)."""
    quarantine = inputs["quarantined"]
    rd.write_json("inputs.counts.json", {**inputs, "quarantined": len(quarantine)})
    if quarantine:
        write_jsonl(rd.path / "quarantine.jsonl", quarantine)
        _log(f"quarantined {len(quarantine)} malformed records of the input files into {rd.path / 'quarantine.jsonl'}")


def _run(
    recipe, rd: RunDir, plugins, domain, skill, eval_tasks, skill_sets, student: Path, resume: bool, inputs: dict
) -> dict:
    metrics = (rd.read_json("metrics.json") if resume else None) or {"baseline": None, "rounds": []}

    store, embedder = open_retrieval(recipe, domain, rd.path / "chroma", inputs["quarantined"], plugins)

    _write_inputs(rd, inputs)
    scores: dict[str, dict] = {}  # a student that did not change is not evaluated twice

    def evaluate(model_path: Path, out: Path, desc: str) -> dict:
        key = str(Path(model_path).resolve())
        if key not in scores:
            scores[key] = evaluate_sets(model_path, eval_tasks, skill, skill_sets, recipe, out, desc)
        return {k: v for k, v in scores[key].items() if k != "seconds"}

    if metrics["baseline"] is None:
        _log(
            f"baseline: evaluating {student} on {len(eval_tasks)} held-out tasks"
            + "".join(f", {len(tasks)} of the {name} skill's" for name, (_, tasks) in skill_sets.items())
        )
        started = time.time()
        metrics["baseline"] = evaluate(student, rd.path / "baseline-predictions.jsonl", "baseline: evaluate")
        metrics["baseline"]["seconds"] = round(time.time() - started, 1)
        rd.write_json("metrics.json", metrics)
        send_rounds(rd.path)  # the trackers of update.report_to, as metrics.json grows
    scores.setdefault(str(student.resolve()), metrics["baseline"])
    _log(
        f"baseline accuracy {metrics['baseline']['accuracy']:.3f}"
        + "".join(f", {name} skill {s['accuracy']:.3f}" for name, s in metrics["baseline"].get("skills", {}).items())
    )

    skill_held_out = [t for _, tasks in skill_sets.values() for t in tasks]
    ctx = Context(recipe, rd, plugins, domain, skill, eval_tasks, store, embedder, resume, evaluate, skill_held_out)
    best = set_scores(metrics["baseline"], recipe.evaluation.gate)
    for round_ in range(1, recipe.loop.rounds + 1):
        done = {m["round"]: m for m in metrics["rounds"]}
        if round_ in done:
            student = Path(done[round_]["student"])
            scores.setdefault(str(student.resolve()), done[round_]["eval"])
            best = (
                raised(best, set_scores(done[round_]["eval"], recipe.evaluation.gate))
                if done[round_].get("gate", {}).get("passed", True)
                else best
            )
            continue
        plugins.round_start(round=round_, run_dir=rd.path, recipe=recipe)
        previous = student
        entry, student = run_round(ctx, round_, student)
        accuracy = entry["eval"]["accuracy"]
        student, best = apply_gate(recipe.evaluation.gate, entry, best, previous, student)
        if not entry.get("gate", {}).get("passed", True):
            g = entry["gate"]
            _log(
                f"round {round_}: failed the gate on {', '.join(g['failed'])} (domain {g['metric']} "
                f"{set_scores(entry['eval'], recipe.evaluation.gate)['domain']:.3f}, floor {g['floor']:.3f}"
                + "".join(
                    f"; {k} collapsed: {c['label']!r} for {c['share']:.0%} of the items"
                    for k, c in g.get("collapsed", {}).items()
                )
                + "); keeping the previous student"
            )
        rd.write_json(rd.round_dir(round_) / "metrics.json", entry)
        metrics["rounds"].append(entry)
        rd.write_json("metrics.json", metrics)
        send_rounds(rd.path)
        c = entry["counts"]
        _log(
            f"round {round_}: {c['passed']}/{c['generations']} samples passed; {c['sft_examples']} training examples, "
            f"{c['preference_pairs']} preference pairs; accuracy {metrics['baseline']['accuracy']:.3f} -> {accuracy:.3f}"
            + "".join(
                f", {name} skill {metrics['baseline'].get('skills', {}).get(name, {}).get('accuracy', float('nan')):.3f} -> {s['accuracy']:.3f}"
                for name, s in entry["eval"].get("skills", {}).items()
            )
        )
        plugins.round_end(round=round_, run_dir=rd.path, recipe=recipe, metrics=entry)

    if store is not None:
        store.release()
    return metrics
