"""Building the round's SFT examples: each accepted sample (or the task's reference solution) under the skill's
training prompts, one example per assistant turn, vetoed by plugins, then filtered, cut to the student's length
and balanced over labels."""

from collections import Counter
from pathlib import Path

from kdagent.curate.balance import balance_examples
from kdagent.curate.filters import FilterConfig, curate_examples
from kdagent.records import Feedback, Generation, GroundedTask, Message, Provenance, SFTExample, Task, stable_id
from kdagent.synth.elicit import token_counts


def curate_stage(
    skill,
    recipe,
    plugins,
    round_: int,
    grounded: list[GroundedTask],
    generations: list[Generation],
    feedback: list[Feedback],
    tasks: dict[str, Task],
    student: Path,
    eval_texts: list[str],
) -> tuple[list[SFTExample], dict]:
    """The round's SFT examples (`curate`), filtered (`filter_examples`), held to `student.max_length` (`limit_length`)
    and balanced over labels (after the filters, which would take the repeated copies of 'upsample' for duplicates)."""
    examples, counts = curate(skill, recipe, plugins, round_, grounded, generations, feedback)
    fallback = counts.pop("reference_fallback", 0)
    auxiliary = counts.pop("auxiliary", 0)
    kept, dropped = filter_examples(examples, eval_texts, recipe.curation)
    kept, lengths = limit_length(kept, student, recipe.student.max_length, recipe.curation.too_long)
    dropped.update({k: v for k, v in lengths.items() if k in ("too_long", "prompt_too_long")})
    extra = {"truncated_to_max_length": lengths["truncated"]} if "truncated" in lengths else {}
    kept, labels = balance_examples(kept, tasks, recipe.curation.balance, recipe.seed * 1000 + round_)
    return kept, {
        "reference_fallback": fallback,
        **({"auxiliary_examples": auxiliary} if auxiliary else {}),
        **extra,
        "dropped": {**counts, **dropped},
        "labels": labels,
    }


def curate(
    skill,
    recipe,
    plugins,
    round_: int,
    grounded: list[GroundedTask],
    generations: list[Generation],
    feedback: list[Feedback],
) -> tuple[list[SFTExample], dict]:
    """Turn accepted samples into SFT examples: a per-task cap, the reference fallback, plugin vetoes. An
    accepted completion is taught under each of the skill's training prompts (`Skill.training_prompts`); the
    cap counts completions. The skill's auxiliary examples of a task (`Skill.auxiliary_examples`, such as its
    rationale) are added beside them."""
    cur = recipe.curation
    verdicts = {f.generation_id: f for f in feedback}
    by_task: dict[str, list[Generation]] = {}
    for gen in generations:
        by_task.setdefault(gen.task_id, []).append(gen)
    counts: Counter = Counter()
    examples: list[SFTExample] = []
    for g in grounded:
        task = g.task
        prompts = skill.training_prompts(task, g.passages if recipe.synthesis.train_with_passages else [])
        candidates = []
        for gen in by_task.get(task.id, []):
            verdict = verdicts[gen.id]
            if not verdict.passed:
                if verdict.failed:
                    counts["failed_check"] += 1
                elif not (
                    verdict.verifier == "none"
                    or verdict.reason.startswith(("unfaithful", "copies a retrieved passage"))
                ):  # counted by feedback
                    counts["rejected_by_verifier"] += 1
                continue
            completion = (
                skill.trajectory_completion(task, gen.trajectory)
                if gen.trajectory
                else [{"role": "assistant", "content": skill.completion(task, gen.text)}]
            )
            candidates.append((gen, verdict, completion))
        if not candidates and recipe.feedback.fallback_to_reference:
            reference = skill.reference_trajectory(task)
            if reference:
                candidates.append((None, None, reference))
                counts["reference_fallback"] += 1
        kept = 0
        for gen, verdict, completion in candidates:
            if kept >= cur.max_per_task:
                counts["over_per_task_cap"] += 1
                continue
            provenance = Provenance(
                round=round_,
                teacher=gen.teacher if gen else "reference",
                skill=skill.name,
                domain=recipe.domain.name,
                task_id=task.id,
                generation_id=gen.id if gen else None,
                passage_ids=gen.passage_ids if gen else [],
                feedback=verdict.model_dump(exclude={"generation_id", "task_id"})
                if verdict
                else {"verifier": "reference-solution"},
            )
            pieces = [  # only later prompts add their index: the first keeps the ids of a skill with one prompt
                SFTExample(
                    id=stable_id(
                        round_, task.id, gen.id if gen else "reference", *_piece_key(p, c), *([k] if k else [])
                    ),
                    prompt=prompt + p,
                    completion=c,
                    provenance=provenance,
                )
                for k, prompt in enumerate(prompts)
                for p, c in split_dialogue(completion)
            ]
            if any(plugins.veto_reasons(example, recipe) for example in pieces):
                counts["vetoed"] += 1
                continue
            examples += pieces
            kept += 1
        for prompt, completion in skill.auxiliary_examples(
            task
        ):  # from the task's own data (a rationale), not from a sample
            provenance = Provenance(
                round=round_,
                teacher="reference",
                skill=skill.name,
                domain=recipe.domain.name,
                task_id=task.id,
                feedback={"verifier": "reference-auxiliary"},
            )
            example = SFTExample(
                id=stable_id(round_, task.id, "auxiliary", prompt, completion),
                prompt=prompt,
                completion=completion,
                provenance=provenance,
            )
            if plugins.veto_reasons(example, recipe):
                counts["vetoed"] += 1
                continue
            examples.append(example)
            counts["auxiliary"] += 1
    return examples, dict(counts)


def _piece_key(earlier: list[Message], completion: list[Message]) -> list:
    if earlier:
        return [completion, len(earlier)]
    return [completion[0]["content"] if len(completion) == 1 else completion]


def split_dialogue(completion: list[Message]) -> list[tuple[list[Message], list[Message]]]:
    """(earlier turns, completion) pairs, so that the student learns only what the assistant says: a
    completion with user turns (a multi-turn dialogue, where the teacher played the user) becomes one
    example per assistant turn after a user turn, each with the dialogue so far in its prompt. A
    completion without user turns (a reply, or tool calls and results) is one example as it is."""
    users = [i for i, m in enumerate(completion) if m["role"] == "user"]
    bounds = zip([0] + [i + 1 for i in users], users + [len(completion)])
    return [
        (completion[:a], completion[a:b]) for a, b in bounds if any(m["role"] == "assistant" for m in completion[a:b])
    ]


def limit_length(
    examples: list[SFTExample], model_path: Path, max_length: int, policy: str
) -> tuple[list[SFTExample], dict]:
    """The training-length policy: an example longer than `max_length` tokens is kept, to be cut at
    max_length by the trainer ('truncate'), or left out ('drop'); one whose prompt alone leaves no room for
    its completion is always left out (the trainer would learn nothing from it). Each case is counted."""
    if not examples:
        return examples, {}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    whole = token_counts(tokenizer, [ex.prompt + ex.completion for ex in examples], generation_prompt=False)
    prompts = token_counts(tokenizer, [ex.prompt for ex in examples], generation_prompt=True)
    counts: Counter = Counter()
    kept = []
    for ex, n, p in zip(examples, whole, prompts):
        if p >= max_length:
            counts["prompt_too_long"] += 1
        elif n > max_length and policy == "drop":
            counts["too_long"] += 1
        else:
            counts["truncated"] += n > max_length
            kept.append(ex)
    return kept, {k: v for k, v in counts.items() if v}


def filter_examples(examples: list, eval_texts: list[str], cur, near_dups: bool = True) -> tuple[list, dict]:
    """The curation filters: length and quality, exact and near duplicates, decontamination against every
    evaluation item. Returns the kept examples and a count per drop reason."""
    config = FilterConfig(
        near_dup_threshold=cur.near_dup_threshold if near_dups else None,
        decontam_ngram=cur.decontam_ngram,
        min_chars=cur.min_reply_chars,
        max_chars=cur.max_reply_chars,
        max_repeat_ratio=cur.max_repeat_ratio,
    )
    kept, counts = curate_examples(examples, eval_texts, config)
    return kept, {k: v for k, v in counts.items() if v}
