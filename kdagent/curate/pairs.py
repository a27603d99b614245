"""Preference pairs: best against worst sample of each task with the score margin, or self-play (SPIN) pairs;
filtered and vetoed like SFT examples."""

from collections import Counter

from kdagent.curate.examples import filter_examples
from kdagent.feedback.ranking import rank_pairs
from kdagent.records import Generation, PreferencePair, Provenance, Task, stable_id


def spin_pair(
    skill, recipe, round_: int, task: Task, prompt, gens: list[Generation], verdicts: dict
) -> PreferencePair | None:
    """Self-play (SPIN): the reference solution (or else a sample that passed) is chosen against a sample
    of the current model that failed."""
    failed = [x for x in gens if not verdicts[x.id].passed and not verdicts[x.id].failed and x.text.strip()]
    if not failed:
        return None
    chosen_text, chosen_gen = skill.reference_completion(task), None
    if not chosen_text:
        passed = sorted((x for x in gens if verdicts[x.id].passed), key=lambda x: -verdicts[x.id].score)
        if not passed:
            return None
        chosen_gen = passed[0]
        chosen_text = skill.completion(task, chosen_gen.text)
    rejected = failed[0]
    rejected_text = skill.completion(task, rejected.text)
    if chosen_text.strip() == rejected_text.strip():
        return None
    return PreferencePair(
        id=stable_id(round_, task.id, "spin", rejected.id),
        prompt=prompt,
        chosen=[{"role": "assistant", "content": chosen_text}],
        rejected=[{"role": "assistant", "content": rejected_text}],
        margin=1.0 - verdicts[rejected.id].score,
        provenance=Provenance(
            round=round_,
            teacher=rejected.teacher,
            skill=skill.name,
            domain=recipe.domain.name,
            task_id=task.id,
            generation_id=chosen_gen.id if chosen_gen else None,
            passage_ids=rejected.passage_ids,
            feedback={
                "chosen": "reference-solution" if chosen_gen is None else verdicts[chosen_gen.id].model_dump(),
                "rejected": verdicts[rejected.id].model_dump(),
            },
        ),
    )


def preference_pairs(
    skill, recipe, plugins, round_: int, grounded, generations, feedback, eval_texts
) -> tuple[list[PreferencePair], dict]:
    """Best against worst sample of each task, with the score margin; filtered and vetoed like SFT examples."""
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(gen.task_id, []).append(gen)
    verdicts = {f.generation_id: f for f in feedback}
    counts: Counter = Counter()
    pairs: list[PreferencePair] = []
    for g in grounded:
        gens = by_task.get(g.task.id, [])
        prompt = skill.messages(g.task, g.passages if recipe.synthesis.train_with_passages else [])
        if recipe.feedback.pairs == "spin":
            pair = spin_pair(skill, recipe, round_, g.task, prompt, gens, verdicts)
            counts["spin_pairs" if pair else "spin_no_pair"] += 1
            pairs += [pair] if pair else []
            continue
        pairs += rank_pairs(
            g.task,
            prompt,
            gens,
            [verdicts[x.id] for x in gens],
            round_,
            skill.name,
            recipe.domain.name,
            min_margin=recipe.feedback.min_margin,
            completion=lambda text, task=g.task: skill.completion(task, text),
            counts=counts,
        )
    kept, dropped = filter_examples(pairs, eval_texts, recipe.curation, near_dups=False)
    allowed = [p for p in kept if not plugins.veto_reasons(p, recipe)]
    if len(allowed) < len(kept):
        dropped["vetoed"] = len(kept) - len(allowed)
    return allowed, {"ranking": dict(counts), "dropped": dropped}
