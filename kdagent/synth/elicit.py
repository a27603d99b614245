"""Elicitation: the teacher's samples of each grounded prompt that fits its context, `4 x teacher.batch_size`
tasks at a time, each chunk seeded and saved as it finishes (kdagent/resume.py)."""

from collections import Counter
from pathlib import Path

from kdagent.records import Generation, GroundedTask, stable_id
from kdagent.resume import chunked, partial_files


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
    texts = [
        tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=generation_prompt) for c in conversations
    ]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False).input_ids] if texts else []


def fitting_prompts(
    skill, grounded: list[GroundedTask], model_path: Path | None, max_new_tokens: int
) -> tuple[list[GroundedTask], int]:
    """The grounded tasks whose prompt leaves room for `max_new_tokens` in a local model's context, and how
    many did not (dropped by policy: a prompt the model cannot read whole is never sent)."""
    limit = context_length(model_path) if model_path is not None else None
    if limit is None or not grounded:
        return grounded, 0
    from transformers import AutoTokenizer

    lengths = token_counts(
        AutoTokenizer.from_pretrained(model_path),
        [skill.messages(g.task, g.passages) for g in grounded],
        generation_prompt=True,
    )
    kept = [g for g, n in zip(grounded, lengths) if n + max_new_tokens <= limit]
    return kept, len(grounded) - len(kept)


def elicit(
    teacher,
    skill,
    grounded: list[GroundedTask],
    round_: int,
    seed: int,
    teacher_settings: dict,
    partial: Path | None = None,
    chunk: int = 32,
    failures: list | None = None,
) -> list[Generation]:
    """Sample the teacher's answers to the grounded prompts, `chunk` tasks at a time.

    `teacher` is a callable returning the teacher (loaded only if something is left to do). Each chunk is
    sampled with a seed of its own and saved beside `partial` as it finishes, with the teacher's failures
    during it, so an interrupted run resumes after the last finished chunk and produces the same records and
    counts as an uninterrupted one. `failures`, a list, receives the failures of every chunk."""
    from tqdm.auto import tqdm

    n = teacher_settings.get("samples", 1)
    chunks = (len(grounded) + chunk - 1) // chunk
    from kdagent.terminal import interactive, quiet

    # an explicit `disable` overrides TQDM_DISABLE, so the terminal's rules are applied here too
    bar = tqdm(
        total=chunks, desc=f"round {round_}: elicit", unit="chunk", disable=chunks < 2 or quiet() or not interactive()
    )

    def run_chunk(c: int, part: list[GroundedTask]) -> tuple[list[Generation], dict]:
        t = teacher()
        before = len(getattr(t, "failures", None) or [])
        records = _sample(
            t, skill, part, round_, seed, teacher_settings, c, f"round {round_}: elicit {c + 1}/{chunks}", n
        )
        bar.update()
        return records, {"failures": list(getattr(t, "failures", None) or [])[before:]}

    results, notes = chunked(
        partial,
        Generation,
        grounded,
        chunk,
        run_chunk,
        item_key=lambda g: g.task.id,
        record_keys=lambda gen: (gen.task_id, gen.sample),
        want=n,
    )
    bar.close()
    if failures is not None:
        failures += [f for c in range(chunks) for f in notes[str(c)].get("failures", [])]
    return [gen for g in grounded for gen in sorted(results[g.task.id], key=lambda x: x.sample)]


def _sample(
    t, skill, part: list[GroundedTask], round_: int, seed: int, settings: dict, c: int, desc: str, n: int
) -> list[Generation]:
    """One chunk's samples: the agent loop for a skill with tools, dialogues for a multi-turn skill, else replies."""
    prompts = [skill.messages(g.task, g.passages) for g in part]
    chunk_seed = int(stable_id(seed, round_, c), 16) % 2**31  # fits any server's seed field
    if skill.tools:  # the agent loop: the teacher's calls are run and their results fed back
        from kdagent.tools.agent import CLOSE, final_reply, run_agent

        trajectories = run_agent(
            lambda ps, k, s: t.generate(ps, seed=s, desc=desc, n=k, stop=[CLOSE]),
            prompts,
            skill.tools,
            n,
            skill.max_steps,
            chunk_seed,
        )
        samples = [[(final_reply(x), x) for x in row] for row in trajectories]
    elif getattr(skill, "turns", 1) > 1:  # multi-turn: the teacher also writes the user's follow-ups

        def sample(ps, k, s):
            return t.generate(ps, seed=s, desc=desc, n=k) if ps else []

        firsts = sample(prompts, n, chunk_seed)
        trajectories = skill.continue_dialogue(sample, prompts, firsts, chunk_seed)
        samples = [
            list(zip(replies, dialogues)) for replies, dialogues in zip(firsts, trajectories)
        ]  # text: the first reply
    else:
        samples = [[(reply, []) for reply in row] for row in t.generate(prompts, seed=chunk_seed, desc=desc)]
    return [
        Generation(
            id=stable_id(round_, seed, g.task.id, k, t.label, settings),
            task_id=g.task.id,
            round=round_,
            sample=k,
            teacher=t.label,
            skill=skill.name,
            messages=messages,
            passage_ids=[p.id for p in g.passages],
            text=reply,
            trajectory=trajectory,
        )
        for g, messages, replies in zip(part, prompts, samples)
        for k, (reply, trajectory) in enumerate(replies)
    ]


def elicit_stage(
    teacher, skill, recipe, round_: int, grounded: list[GroundedTask], teacher_path: Path | None, partial: Path
) -> tuple[list[Generation], dict]:
    """The round's elicitation: the prompts that fit a local teacher's context (`teacher_path`, the folder its
    kind declares, or None for a teacher that runs elsewhere), sampled in chunks; counts the teacher's failures
    (a killed run's too), the prompts too long to send and the python tool's calls by isolation. With
    `teacher.samples: 0` it asks nothing."""
    from kdagent.tools.sandbox import ISOLATION_COUNTS

    if recipe.teacher.samples == 0:  # nothing asked: curation teaches each task's reference answer
        return [], {"teacher_failures": 0, "errors": [], "skipped": "teacher.samples is 0"}
    calls = Counter(ISOLATION_COUNTS)
    fitting, too_long = fitting_prompts(skill, grounded, teacher_path, recipe.teacher.max_new_tokens)
    failures: list[str] = []
    gens = elicit(
        teacher.get,
        skill,
        fitting,
        round_,
        recipe.seed,
        recipe.teacher.model_dump(
            mode="json", exclude=set() if recipe.teacher.options else {"options"}
        ),  # ids of teachers without options stay stable
        partial,
        chunk=4 * recipe.teacher.batch_size,
        failures=failures,
    )
    counts = {"teacher_failures": len(failures), "errors": failures[:20], "_partial": partial_files(partial)}
    isolation = dict(ISOLATION_COUNTS - calls)  # the python tool's calls by isolation: kernel, none (opted in), refused
    counts |= {"python_tool_isolation": isolation} if isolation else {}
    return gens, counts | ({"dropped": {"prompt_too_long": too_long}} if too_long else {})
