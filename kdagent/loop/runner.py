"""The round runner: tasks -> ground -> elicit -> feedback -> curate -> update -> evaluate, round after round.

Reads top to bottom. Each stage's output lands in the run directory as JSONL (or a checkpoint folder);
with `resume=True` a stage whose output exists is read back instead of recomputed.
"""

import gc
import sys
import time
from pathlib import Path

from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks, load_tasks
from kdagent.jsonl import read_jsonl, write_jsonl
from kdagent.loop import stages
from kdagent.loop.rundir import RunDir
from kdagent.models import resolve_model
from kdagent.recipe import Recipe, check_names
from kdagent.records import Feedback, Generation, GroundedTask, SFTExample, Task


def _log(message: str) -> None:
    print(f"[kdagent] {message}", file=sys.stderr, flush=True)


def _load_eval_tasks(recipe: Recipe, domain) -> list[Task]:
    if recipe.evaluation.data:
        return load_tasks(Path(recipe.evaluation.data))
    try:
        tasks = domain.eval_tasks(recipe.domain.eval_tasks)
    except ValueError as exc:
        raise UserError(f"domain.eval_tasks: {exc}") from None
    check_tasks(tasks, f"domain {recipe.domain.name}")
    return tasks


def _evaluate(model_path: Path, tasks, skill, recipe: Recipe, out: Path, desc: str) -> dict:
    from kdagent.evaluate.runner import evaluate
    from kdagent.generation.engine import Engine

    engine = Engine(model_path)
    try:
        summary, predictions = evaluate(engine, tasks, skill, recipe.evaluation.max_new_tokens, recipe.evaluation.batch_size, desc)
    finally:
        engine.close()
    write_jsonl(out, predictions)
    return summary


def _stage(path: Path, model, resume: bool, compute):
    """Read a finished stage back on resume, else compute and write it."""
    if resume and path.exists():
        return read_jsonl(path, model)
    records = compute()
    write_jsonl(path, records)
    return records


def run_recipe(recipe: Recipe, run_dir: Path, plugins, resume: bool = False) -> dict:
    check_names(recipe, plugins)
    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    eval_tasks = _load_eval_tasks(recipe, domain)
    student = resolve_model(recipe.student.model)
    rd = RunDir(run_dir)
    rd.open(recipe, resume)
    try:
        return _run(recipe, rd, plugins, domain, skill, eval_tasks, student, resume)
    finally:
        rd.close()


def _run(recipe, rd: RunDir, plugins, domain, skill, eval_tasks, student: Path, resume: bool) -> dict:
    metrics = (rd.read_json("metrics.json") if resume else None) or {"baseline": None, "rounds": []}

    store = None
    if recipe.retrieval.enabled:
        from kdagent.retrieval.embedder import Embedder
        from kdagent.retrieval.store import ChromaStore

        started = time.time()
        store = ChromaStore(rd.path / "chroma", collection=recipe.domain.name, embedder=Embedder(resolve_model(recipe.retrieval.embedder)))
        indexed = store.index(domain.corpus(), recipe.retrieval.chunk_chars)
        _log(f"indexed {indexed} passages into {store.path} ({time.time() - started:.1f}s)")

    if metrics["baseline"] is None:
        _log(f"baseline: evaluating {student} on {len(eval_tasks)} held-out tasks")
        started = time.time()
        metrics["baseline"] = _evaluate(student, eval_tasks, skill, recipe, rd.path / "baseline-predictions.jsonl", "baseline: evaluate")
        metrics["baseline"]["seconds"] = round(time.time() - started, 1)
        rd.write_json("metrics.json", metrics)
    _log(f"baseline accuracy {metrics['baseline']['accuracy']:.3f}")

    for round_ in range(1, recipe.loop.rounds + 1):
        done = {m["round"]: m for m in metrics["rounds"]}
        round_dir = rd.round_dir(round_)
        if round_ in done:
            if (round_dir / "student").is_dir():
                student = round_dir / "student"
            continue
        plugins.round_start(round=round_, run_dir=rd.path, recipe=recipe)
        seconds: dict[str, float] = {}
        t = time.time()

        def lap(name: str) -> None:
            nonlocal t
            seconds[name] = round(time.time() - t, 1)
            t = time.time()

        tasks = _stage(round_dir / "tasks.jsonl", Task, resume, lambda: [
            plugins.transform_task(task, recipe) for task in domain.seed_tasks(recipe.domain.seed_tasks, recipe.seed * 1000 + round_)
        ])
        if not tasks:
            raise UserError(f"round {round_}: the domain gave no seed tasks")
        grounded = _stage(round_dir / "grounded.jsonl", GroundedTask, resume, lambda: stages.ground(tasks, store, recipe.retrieval.top_k))
        lap("ground")

        def run_teacher():
            teacher = plugins.create_teacher(recipe.teacher, student)
            try:
                settings = recipe.teacher.model_dump(mode="json")
                generations = stages.elicit(teacher, skill, grounded, round_, recipe.seed, settings)
            finally:
                teacher.close()
                gc.collect()
            failures = list(getattr(teacher, "failures", []))  # API teachers: requests whose retries ran out
            rd.write_json(round_dir / "elicit.json", {"teacher_failures": len(failures), "errors": failures[:20]})
            return generations

        generations = _stage(round_dir / "generations.jsonl", Generation, resume, run_teacher)
        teacher_failures = (rd.read_json(round_dir / "elicit.json") or {}).get("teacher_failures", 0)
        lap("elicit")
        by_id = {task.id: task for task in tasks}
        feedback = _stage(round_dir / "feedback.jsonl", Feedback, resume, lambda: stages.judge(skill, by_id, generations))
        lap("feedback")
        curation: dict = {}

        def run_curate():
            examples, counts = stages.curate(skill, recipe, plugins, round_, grounded, generations, feedback)
            curation.update(counts)
            return examples

        examples = _stage(round_dir / "sft.jsonl", SFTExample, resume, run_curate)
        if curation:
            rd.write_json(round_dir / "curation.json", curation)
        else:  # read back on resume
            curation = rd.read_json(round_dir / "curation.json") or {}
        lap("curate")
        passed = sum(f.passed for f in feedback)
        _log(f"round {round_}: {passed}/{len(feedback)} samples passed the verifier; {len(examples)} training examples")

        update: dict = {"skipped": "no training examples"} if not examples else {}
        if examples:
            from kdagent.update.sft import train_sft

            if not (round_dir / "student").is_dir():
                update = train_sft(examples, student, round_dir / "student", recipe.update, recipe.student.max_length, recipe.seed + round_)
                rd.write_json(round_dir / "update.json", update)
            else:
                update = rd.read_json(round_dir / "update.json") or {}
            student = round_dir / "student"
        lap("update")

        evaluation = _evaluate(student, eval_tasks, skill, recipe, round_dir / "eval-predictions.jsonl", f"round {round_}: evaluate")
        lap("evaluate")
        entry = {
            "round": round_,
            "student": str(student),
            "eval": evaluation,
            "counts": {
                "tasks": len(tasks), "generations": len(generations), "teacher_failures": teacher_failures, "passed": passed,
                "sft_examples": len(examples), **{f"curation_{k}": v for k, v in curation.items()},
            },
            "update": update,
            "seconds": seconds,
        }
        rd.write_json(round_dir / "metrics.json", entry)
        metrics["rounds"].append(entry)
        rd.write_json("metrics.json", metrics)
        _log(f"round {round_}: accuracy {metrics['baseline']['accuracy']:.3f} -> {evaluation['accuracy']:.3f}")
        plugins.round_end(round=round_, run_dir=rd.path, recipe=recipe, metrics=entry)

    if store is not None:
        store.release()
    return metrics
