"""The stages of a round. Each is a function of its inputs and returns typed records; the runner writes
them as JSONL in the round's folder and skips a stage whose output already exists on --resume."""

from collections import Counter

from kdagent.records import Feedback, Generation, GroundedTask, Passage, Provenance, SFTExample, Task, stable_id


def ground(tasks: list[Task], store, top_k: int) -> list[GroundedTask]:
    """Attach the top-k passages to each task (none when retrieval is off)."""
    if store is None:
        return [GroundedTask(task=t) for t in tasks]
    hits = store.query([t.prompt for t in tasks], top_k)
    return [GroundedTask(task=t, passages=p) for t, p in zip(tasks, hits)]


def elicit(teacher, skill, grounded: list[GroundedTask], round_: int, seed: int, teacher_settings: dict) -> list[Generation]:
    """Sample the teacher's answers to the grounded prompts."""
    prompts = [skill.messages(g.task, g.passages) for g in grounded]
    samples = teacher.generate(prompts, seed=seed * 1000 + round_, desc=f"round {round_}: elicit")
    out = []
    for g, messages, replies in zip(grounded, prompts, samples):
        for k, reply in enumerate(replies):
            out.append(
                Generation(
                    id=stable_id(round_, seed, g.task.id, k, teacher.label, teacher_settings),
                    task_id=g.task.id, round=round_, sample=k, teacher=teacher.label, skill=skill.name,
                    messages=messages, passage_ids=[p.id for p in g.passages], text=reply,
                )
            )
    return out


def judge(skill, tasks: dict[str, Task], generations: list[Generation]) -> list[Feedback]:
    """Check every sample with the skill's verifier against its task's reference answer."""
    out = []
    for gen in generations:
        verdict = skill.verify(tasks[gen.task_id], gen.text)
        out.append(
            Feedback(
                generation_id=gen.id, task_id=gen.task_id, verifier=f"{skill.name}/reference",
                passed=verdict.passed, score=verdict.score, predicted=verdict.predicted, reason=verdict.reason,
            )
        )
    return out


def curate(
    skill, recipe, plugins, round_: int, grounded: list[GroundedTask], generations: list[Generation], feedback: list[Feedback],
) -> tuple[list[SFTExample], dict]:
    """Turn accepted samples into SFT examples: per-task cap, dedupe, empty replies out, plugin vetoes."""
    cur = recipe.curation
    verdicts = {f.generation_id: f for f in feedback}
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(gen.task_id, []).append(gen)
    counts: Counter = Counter()
    seen: set[tuple[str, str]] = set()
    examples: list[SFTExample] = []
    for g in grounded:
        task = g.task
        train_passages: list[Passage] = g.passages if recipe.synthesis.train_with_passages else []
        prompt = skill.messages(task, train_passages)
        candidates = []
        for gen in by_task.get(task.id, []):
            verdict = verdicts[gen.id]
            if not verdict.passed:
                counts["rejected_by_verifier"] += 1
                continue
            candidates.append((gen, verdict, skill.completion(task, gen.text)))
        if not candidates and recipe.feedback.fallback_to_reference:
            reference = skill.reference_completion(task)
            if reference:
                candidates.append((None, None, reference))
                counts["reference_fallback"] += 1
        kept = 0
        for gen, verdict, text in candidates:
            if kept >= cur.max_per_task:
                counts["over_per_task_cap"] += 1
                continue
            if len(text.strip()) < cur.min_reply_chars:
                counts["empty_reply"] += 1
                continue
            key = (prompt[-1]["content"], text)
            if cur.dedupe and key in seen:
                counts["duplicate"] += 1
                continue
            example = SFTExample(
                id=stable_id(round_, task.id, gen.id if gen else "reference", text),
                prompt=prompt,
                completion=[{"role": "assistant", "content": text}],
                provenance=Provenance(
                    round=round_, teacher=gen.teacher if gen else "reference", skill=skill.name, domain=recipe.domain.name,
                    task_id=task.id, generation_id=gen.id if gen else None, passage_ids=gen.passage_ids if gen else [],
                    feedback=verdict.model_dump(exclude={"generation_id", "task_id"}) if verdict else {"verifier": "reference-solution"},
                ),
            )
            reasons = plugins.veto_reasons(example, recipe)
            if reasons:
                counts["vetoed"] += 1
                continue
            seen.add(key)
            examples.append(example)
            kept += 1
    counts["kept"] = len(examples)
    return examples, dict(counts)
