"""The stages of a round. Each is a function of its inputs and returns typed records; the runner writes
them as JSONL in the round's folder and skips a stage whose output already exists on --resume."""

from collections import Counter
from pathlib import Path

from kdagent.feedback.verifiers import check_with_skill as judge  # noqa: F401 (the skill's verifier against the reference answers)
from kdagent.records import Feedback, Generation, GroundedTask, Message, PreferencePair, Provenance, SFTExample, Task, stable_id


def context_length(model_path: Path) -> int | None:
    """The longest sequence a local model takes (its config's position limit), or None when unknown."""
    from kdagent.models.files import text_config

    config = text_config(model_path)
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def token_counts(tokenizer, conversations: list[list], generation_prompt: bool) -> list[int]:
    """Tokens of each chat, rendered with the model's chat template."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=generation_prompt) for c in conversations]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids] if texts else []


def fitting_prompts(skill, grounded: list[GroundedTask], model_path: Path | None, max_new_tokens: int) -> tuple[list[GroundedTask], int]:
    """The grounded tasks whose prompt leaves room for `max_new_tokens` in a local model's context, and how
    many did not (dropped by policy: a prompt the model cannot read whole is never sent)."""
    limit = context_length(model_path) if model_path is not None else None
    if limit is None or not grounded:
        return grounded, 0
    from transformers import AutoTokenizer

    lengths = token_counts(AutoTokenizer.from_pretrained(model_path), [skill.messages(g.task, g.passages) for g in grounded], generation_prompt=True)
    kept = [g for g, n in zip(grounded, lengths) if n + max_new_tokens <= limit]
    return kept, len(grounded) - len(kept)


def limit_length(examples: list[SFTExample], model_path: Path, max_length: int, policy: str) -> tuple[list[SFTExample], dict]:
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


def ground(tasks: list[Task], store, top_k: int) -> list[GroundedTask]:
    """Attach the top-k passages to each task (none when retrieval is off)."""
    if store is None:
        return [GroundedTask(task=t) for t in tasks]
    hits = store.query([t.prompt for t in tasks], top_k)
    return [GroundedTask(task=t, passages=p) for t, p in zip(tasks, hits)]


def elicit(teacher, skill, grounded: list[GroundedTask], round_: int, seed: int, teacher_settings: dict,
           partial: Path | None = None, chunk: int = 32) -> list[Generation]:
    """Sample the teacher's answers to the grounded prompts, `chunk` tasks at a time.

    `teacher` is a callable returning the teacher (loaded only if something is left to do). Each chunk is
    sampled with a seed of its own and appended to `partial` as it finishes, so an interrupted run resumes
    after the last finished chunk and produces the same records as an uninterrupted one."""
    from tqdm.auto import tqdm

    from kdagent.jsonl import append_jsonl, read_jsonl

    prompts = [skill.messages(g.task, g.passages) for g in grounded]
    have: dict[str, list[Generation]] = {}
    if partial is not None and partial.exists():
        for gen in read_jsonl(partial, Generation):
            have.setdefault(gen.task_id, []).append(gen)
    n = teacher_settings.get("samples", 1)
    results: dict[str, list[Generation]] = {}
    starts = list(range(0, len(grounded), chunk))
    for c, start in enumerate(tqdm(starts, desc=f"round {round_}: elicit", unit="chunk", disable=len(starts) < 2)):
        part = grounded[start : start + chunk]
        if all(len({x.sample for x in have.get(g.task.id, [])}) >= n for g in part):
            for g in part:
                results[g.task.id] = sorted({x.sample: x for x in have[g.task.id]}.values(), key=lambda x: x.sample)
            continue
        t = teacher()
        chunk_seed = int(stable_id(seed, round_, c), 16) % 2**31  # fits any server's seed field
        desc = f"round {round_}: elicit {c + 1}/{len(starts)}"
        if skill.tools:  # the agent loop: the teacher's calls are run and their results fed back
            from kdagent.tools.agent import CLOSE, final_reply, run_agent

            trajectories = run_agent(
                lambda ps, k, s: t.generate(ps, seed=s, desc=desc, n=k, stop=[CLOSE]),
                prompts[start : start + chunk], skill.tools, n, skill.max_steps, chunk_seed,
            )
            samples = [[(final_reply(x), x) for x in row] for row in trajectories]
        elif getattr(skill, "turns", 1) > 1:  # multi-turn: the teacher also writes the user's follow-ups
            def sample(ps, k, s):
                return t.generate(ps, seed=s, desc=desc, n=k) if ps else []

            firsts = sample(prompts[start : start + chunk], n, chunk_seed)
            trajectories = skill.continue_dialogue(sample, prompts[start : start + chunk], firsts, chunk_seed)
            samples = [list(zip(replies, dialogues)) for replies, dialogues in zip(firsts, trajectories)]  # text: the first reply
        else:
            samples = [[(reply, []) for reply in row] for row in t.generate(prompts[start : start + chunk], seed=chunk_seed, desc=desc)]
        fresh = []
        for g, messages, replies in zip(part, prompts[start : start + chunk], samples):
            results[g.task.id] = [
                Generation(
                    id=stable_id(round_, seed, g.task.id, k, t.label, teacher_settings),
                    task_id=g.task.id, round=round_, sample=k, teacher=t.label, skill=skill.name,
                    messages=messages, passage_ids=[p.id for p in g.passages], text=reply, trajectory=trajectory,
                )
                for k, (reply, trajectory) in enumerate(replies)
            ]
            fresh += results[g.task.id]
        if partial is not None:
            append_jsonl(partial, fresh)
    return [gen for g in grounded for gen in results[g.task.id]]


def curate(
    skill, recipe, plugins, round_: int, grounded: list[GroundedTask], generations: list[Generation], feedback: list[Feedback],
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
                elif not (verdict.verifier == "none" or verdict.reason.startswith(("unfaithful", "copies a retrieved passage"))):  # counted by feedback
                    counts["rejected_by_verifier"] += 1
                continue
            completion = (skill.trajectory_completion(task, gen.trajectory) if gen.trajectory
                          else [{"role": "assistant", "content": skill.completion(task, gen.text)}])
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
                round=round_, teacher=gen.teacher if gen else "reference", skill=skill.name, domain=recipe.domain.name,
                task_id=task.id, generation_id=gen.id if gen else None, passage_ids=gen.passage_ids if gen else [],
                feedback=verdict.model_dump(exclude={"generation_id", "task_id"}) if verdict else {"verifier": "reference-solution"},
            )
            pieces = [  # only later prompts add their index: the first keeps the ids of a skill with one prompt
                SFTExample(id=stable_id(round_, task.id, gen.id if gen else "reference", *_piece_key(p, c), *([k] if k else [])),
                           prompt=prompt + p, completion=c, provenance=provenance)
                for k, prompt in enumerate(prompts) for p, c in split_dialogue(completion)
            ]
            if any(plugins.veto_reasons(example, recipe) for example in pieces):
                counts["vetoed"] += 1
                continue
            examples += pieces
            kept += 1
        for prompt, completion in skill.auxiliary_examples(task):  # from the task's own data (a rationale), not from a sample
            provenance = Provenance(round=round_, teacher="reference", skill=skill.name, domain=recipe.domain.name, task_id=task.id,
                                    feedback={"verifier": "reference-auxiliary"})
            example = SFTExample(id=stable_id(round_, task.id, "auxiliary", prompt, completion), prompt=prompt, completion=completion, provenance=provenance)
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
    return [(completion[:a], completion[a:b]) for a, b in bounds if any(m["role"] == "assistant" for m in completion[a:b])]


def filter_examples(examples: list, eval_texts: list[str], cur, near_dups: bool = True) -> tuple[list, dict]:
    """The curation filters: length and quality, exact and near duplicates, decontamination against every
    evaluation item. Returns the kept examples and a count per drop reason."""
    from kdagent.curate import FilterConfig, curate_examples

    config = FilterConfig(
        near_dup_threshold=cur.near_dup_threshold if near_dups else None, decontam_ngram=cur.decontam_ngram,
        min_chars=cur.min_reply_chars, max_chars=cur.max_reply_chars, max_repeat_ratio=cur.max_repeat_ratio,
    )
    kept, counts = curate_examples(examples, eval_texts, config)
    return kept, {k: v for k, v in counts.items() if v}


def spin_pair(skill, recipe, round_: int, task: Task, prompt, gens: list[Generation], verdicts: dict) -> PreferencePair | None:
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
            round=round_, teacher=rejected.teacher, skill=skill.name, domain=recipe.domain.name, task_id=task.id,
            generation_id=chosen_gen.id if chosen_gen else None, passage_ids=rejected.passage_ids,
            feedback={"chosen": "reference-solution" if chosen_gen is None else verdicts[chosen_gen.id].model_dump(),
                      "rejected": verdicts[rejected.id].model_dump()},
        ),
    )


def preference_pairs(skill, recipe, plugins, round_: int, grounded, generations, feedback, eval_texts) -> tuple[list[PreferencePair], dict]:
    """Best against worst sample of each task, with the score margin; filtered and vetoed like SFT examples."""
    from kdagent.feedback import rank_pairs

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
            g.task, prompt, gens, [verdicts[x.id] for x in gens], round_, skill.name, recipe.domain.name,
            min_margin=recipe.feedback.min_margin, completion=lambda text, task=g.task: skill.completion(task, text), counts=counts,
        )
    kept, dropped = filter_examples(pairs, eval_texts, recipe.curation, near_dups=False)
    allowed = [p for p in kept if not plugins.veto_reasons(p, recipe)]
    if len(allowed) < len(kept):
        dropped["vetoed"] = len(kept) - len(allowed)
    return allowed, {"ranking": dict(counts), "dropped": dropped}
