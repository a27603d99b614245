"""The run: index the corpus, evaluate the baseline, then one round after another (`loop/round.py`)."""

import sys
import time
from pathlib import Path

from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks, load_tasks
from kdagent.jsonl import write_jsonl
from kdagent.loop.round import Context, run_round
from kdagent.loop.rundir import RunDir
from kdagent.models import resolve_model
from kdagent.recipe import Recipe, check_names
from kdagent.records import Task


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


def apply_gate(gate, entry: dict, best: float, previous: Path, student: Path) -> tuple[Path, float]:
    """The evaluation gate: a round more than `gate.max_regression` below the best accuracy so far keeps
    the previous student (recorded in `entry`). Returns the student to go on with and the new best."""
    accuracy = entry["eval"]["accuracy"]
    if gate is None:
        return student, max(best, accuracy)
    floor = best - gate.max_regression
    passed = accuracy >= floor - 1e-12
    entry["gate"] = {"passed": passed, "best_so_far": best, "floor": round(floor, 4)}
    if passed:
        return student, max(best, accuracy)
    entry["gate"]["kept_student"] = entry["student"] = str(previous)
    return previous, best


def run_recipe(recipe: Recipe, run_dir: Path, plugins, resume: bool = False) -> dict:
    check_names(recipe, plugins)
    domain = plugins.instantiate("domains", recipe.domain.name, "domain.options", recipe.domain.options)
    skill = plugins.instantiate("skills", recipe.skills[0].name, "skills[0].options", recipe.skills[0].options)
    if skill.tools and set(recipe.update.methods()) - {"sft"}:
        raise UserError(f"update.method: a skill with tools ({skill.name}) trains with sft only for now "
                        f"(got {', '.join(recipe.update.methods())}): the other trainers do not run the tool loop")
    eval_tasks = _load_eval_tasks(recipe, domain)
    student = resolve_model(recipe.student.model)
    if "dpo" in recipe.update.methods():  # checked before any model loads (this imports trl, so not in validate)
        from kdagent.update.dpo import dpo_loss_types

        if recipe.update.dpo.loss_type not in dpo_loss_types():
            raise UserError(f"update.dpo.loss_type: unknown {recipe.update.dpo.loss_type!r} (this TRL offers: {', '.join(dpo_loss_types())})")
    if "distill" in recipe.update.methods():  # white-box: refused up front when the vocabularies differ
        from kdagent.teachers.vocab import require_shared_vocabulary

        require_shared_vocabulary(resolve_model(recipe.teacher.model), student)
    rd = RunDir(run_dir)
    rd.open(recipe, resume)
    try:
        return _run(recipe, rd, plugins, domain, skill, eval_tasks, student, resume)
    finally:
        rd.close()


def _run(recipe, rd: RunDir, plugins, domain, skill, eval_tasks, student: Path, resume: bool) -> dict:
    metrics = (rd.read_json("metrics.json") if resume else None) or {"baseline": None, "rounds": []}

    store = embedder = None
    if recipe.retrieval.enabled or recipe.synthesis.expansion is not None:
        from kdagent.retrieval.embedder import Embedder

        embedder = Embedder(resolve_model(recipe.retrieval.embedder))
    if recipe.retrieval.enabled:
        from kdagent.retrieval.corpus import load_folder
        from kdagent.retrieval.store import ChromaStore

        started = time.time()
        store = ChromaStore(rd.path / "chroma", collection=recipe.domain.name, embedder=embedder)
        documents = list(domain.corpus()) if recipe.retrieval.domain_corpus else []
        if recipe.retrieval.corpus_dir:
            documents += list(load_folder(recipe.retrieval.corpus_dir))
        indexed = store.index(documents, recipe.retrieval.chunk_chars)
        _log(f"indexed {indexed} passages into {store.path} ({time.time() - started:.1f}s)")

    scores: dict[str, dict] = {}  # a student that did not change is not evaluated twice

    def evaluate(model_path: Path, out: Path, desc: str) -> dict:
        key = str(Path(model_path).resolve())
        if key not in scores:
            scores[key] = _evaluate(model_path, eval_tasks, skill, recipe, out, desc)
        return {k: v for k, v in scores[key].items() if k != "seconds"}

    if metrics["baseline"] is None:
        _log(f"baseline: evaluating {student} on {len(eval_tasks)} held-out tasks")
        started = time.time()
        metrics["baseline"] = evaluate(student, rd.path / "baseline-predictions.jsonl", "baseline: evaluate")
        metrics["baseline"]["seconds"] = round(time.time() - started, 1)
        rd.write_json("metrics.json", metrics)
    scores.setdefault(str(student.resolve()), metrics["baseline"])
    _log(f"baseline accuracy {metrics['baseline']['accuracy']:.3f}")

    ctx = Context(recipe, rd, plugins, domain, skill, eval_tasks, store, embedder, resume, evaluate)
    best = metrics["baseline"]["accuracy"]
    for round_ in range(1, recipe.loop.rounds + 1):
        done = {m["round"]: m for m in metrics["rounds"]}
        if round_ in done:
            student = Path(done[round_]["student"])
            scores.setdefault(str(student.resolve()), done[round_]["eval"])
            best = max(best, done[round_]["eval"]["accuracy"]) if done[round_].get("gate", {}).get("passed", True) else best
            continue
        plugins.round_start(round=round_, run_dir=rd.path, recipe=recipe)
        previous = student
        entry, student = run_round(ctx, round_, student)
        accuracy = entry["eval"]["accuracy"]
        student, best = apply_gate(recipe.evaluation.gate, entry, best, previous, student)
        if not entry.get("gate", {}).get("passed", True):
            _log(f"round {round_}: accuracy {accuracy:.3f} is below the gate's floor {entry['gate']['floor']:.3f}; keeping the previous student")
        rd.write_json(rd.round_dir(round_) / "metrics.json", entry)
        metrics["rounds"].append(entry)
        rd.write_json("metrics.json", metrics)
        c = entry["counts"]
        _log(f"round {round_}: {c['passed']}/{c['generations']} samples passed; {c['sft_examples']} training examples, "
             f"{c['preference_pairs']} preference pairs; accuracy {metrics['baseline']['accuracy']:.3f} -> {accuracy:.3f}")
        plugins.round_end(round=round_, run_dir=rd.path, recipe=recipe, metrics=entry)

    if store is not None:
        store.release()
    return metrics
