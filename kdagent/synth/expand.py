"""Task expansion from seed tasks: self-instruct (few-shot "write one new question like these") and
evol-instruct (rewrite a seed deeper, more concrete or with more steps), then format and novelty filters.

Expanded tasks have no reference answer (`answer=""`): the loop judges them by self-consistency or a judge.
Everything is deterministic for a given seed and given teacher outputs; the teacher's own sampling is seeded
with the same seed. Filters return `(kept, counts)`, counts keyed by the reason a text was dropped.
"""

import random
import re
from collections import Counter

from kdagent.records import Message, Task, stable_id

FORMAT_REASONS = ("too_short", "too_long", "refusal", "leftover_prefix", "not_a_question")
NOVELTY_REASONS = ("duplicate", "not_novel")
METHODS = ("self_instruct", "evol_instruct")

SELF_INSTRUCT_SYSTEM = "You write new practice questions for students."
SELF_INSTRUCT_USER = (
    "Here are some example questions:\n\n{examples}\n\n"
    "Write ONE new question of the same kind and difficulty. It must differ from the examples, be self-contained "
    "and have one clear answer. Do not answer it. Reply with the question only."
)
EVOL_SYSTEM = "You rewrite questions into harder versions that stay answerable."
EVOL_USER = (
    "Rewrite the given question into a more complex version. {instruction} The rewritten question must stay "
    "reasonable, self-contained and answerable with one clear answer, and add at most 10 to 20 words. "
    "Do not answer it. Reply with the rewritten question only.\n\n#Given Question#:\n{question}\n\n#Rewritten Question#:"
)
EVOL_OPERATIONS = {
    "deepen": "If the question asks about a certain matter, increase the depth and breadth of what it asks.",
    "concretize": "Replace general concepts with more specific ones: concrete names, quantities, units and situations.",
    "add_steps": "If the question can be solved in one step, rewrite it so that it needs several steps of reasoning.",
}

_PREFIX = re.compile(
    r"^\s*(?:[*_#>\"'`•\-]+"  # markdown marks, bullets, quotes
    r"|\(?\d{1,3}[.):](?!\d)"  # 1.  1)  (1)  but not 1.5
    r"|(?:(?:new|rewritten|harder|evolved|example)\s+)*(?:question|prompt|problem|task|instruction|q)\s*\d*\s*#*\s*:"
    r"|(?:question|problem|task|prompt|q)\s*\d+\s*[.)])\s*",
    re.IGNORECASE,
)
# an answer label at a line start or right after a sentence ends (not "here is a possible answer:")
_ANSWER = re.compile(r"(?:^|\n|(?<=[.?!])[ \t]+)[ \t*#_]*(?:answer|solution|explanation)[ \t*#_]*:", re.IGNORECASE)
_LEFTOVER = re.compile(
    r"\b(?:question|answer|solution|rewritten question|given question)\s*\d*\s*#?\s*:", re.IGNORECASE
)
_REFUSAL = re.compile(
    r"\b(?:I(?:'m| am) sorry|I (?:cannot|can't|can not|won't)|I(?:'m| am) (?:unable|not able)|as an AI)\b",
    re.IGNORECASE,
)
IMPERATIVES = frozenset(
    "calculate compute find determine solve work explain describe list give name show prove estimate evaluate simplify "
    "convert identify compare summarize summarise classify state outline write draft suggest decide choose predict "
    "analyze analyse justify derive express rank sort count".split()
)


def strip_prefix(line: str) -> str:
    """Remove numbering, bullets, markdown marks and labels such as 'Question 2:' from the start of a line."""
    line = line.strip()
    while (new := _PREFIX.sub("", line, count=1)) != line:
        line = new
    return line.rstrip("*_`\"' ").strip()


def _question_like(text: str) -> bool:
    if "?" in text:
        return True
    sentences = re.split(r"(?<=[.!;])\s+|\n", text)
    return any(s.split() and s.split()[0].strip(",:").lower() in IMPERATIVES for s in sentences)


def parse_question(reply: str) -> str:
    """The first question-like paragraph of a teacher's reply, without numbering, labels, lead-ins or answer."""
    text = _ANSWER.split(reply.replace("\r", ""), maxsplit=1)[0]
    blocks: list[list[str]] = [[]]
    for line in text.split("\n"):
        cleaned = strip_prefix(line)
        if not line.strip() or cleaned != line.strip().rstrip("*_`\"' ").strip():
            blocks.append([])  # a blank line or a new numbered/labelled item starts a new paragraph
        if cleaned:
            blocks[-1].append(cleaned)
    first = ""
    for lines in blocks:
        while lines and lines[0].endswith(":") and "?" not in lines[0]:
            lines = lines[1:]  # lead-ins such as "Here is a new question:"
        paragraph = " ".join(lines).strip()
        if paragraph and _question_like(paragraph):
            return paragraph
        first = first or paragraph
    return first


def filter_format(texts: list[str], min_chars: int = 15, max_chars: int = 600) -> tuple[list[str], dict[str, int]]:
    """Keep texts that look like one well-formed question; count the others by the first reason that drops them."""
    kept, counts = [], dict.fromkeys(FORMAT_REASONS, 0)
    for text in texts:
        stripped = text.strip()
        if len(stripped) < min_chars:
            reason = "too_short"
        elif len(stripped) > max_chars:
            reason = "too_long"
        elif _REFUSAL.search(stripped):
            reason = "refusal"
        elif _LEFTOVER.search(stripped):
            reason = "leftover_prefix"
        elif not _question_like(stripped):
            reason = "not_a_question"
        else:
            kept.append(text)
            continue
        counts[reason] += 1
    return kept, counts


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def filter_novel(
    texts: list[str], existing: list[str], embedder, threshold: float = 0.9, index=None
) -> tuple[list[str], dict[str, int]]:
    """Drop exact duplicates (after case and whitespace folding) and candidates whose cosine similarity to any
    existing text or to an earlier kept candidate is >= threshold. `embedder.embed` must return unit vectors.
    With `index` (a ChromaStore of earlier tasks, `max_similarity(texts)`), similarity to existing tasks is
    looked up in the store as well, so tasks of earlier rounds count too."""
    import numpy as np

    counts = dict.fromkeys(NOVELTY_REASONS, 0)
    seen = {_normalise(t) for t in existing}
    unique = []
    for text in texts:
        key = _normalise(text)
        if key in seen:
            counts["duplicate"] += 1
            continue
        seen.add(key)
        unique.append(text)
    if not unique:
        return [], counts
    vectors = np.asarray(embedder.embed(list(existing) + unique), dtype=np.float32)
    ref, cand = vectors[: len(existing)], vectors[len(existing) :]
    to_existing = (cand @ ref.T).max(axis=1) if len(existing) else np.full(len(unique), -1.0)
    if index is not None:
        to_existing = np.maximum(to_existing, np.asarray(index.max_similarity(unique), dtype=np.float32))
    among = cand @ cand.T
    kept, kept_idx = [], []
    for i, text in enumerate(unique):
        if to_existing[i] >= threshold or (kept_idx and among[i, kept_idx].max() >= threshold):
            counts["not_novel"] += 1
            continue
        kept.append(text)
        kept_idx.append(i)
    return kept, counts


def self_instruct_prompts(
    seeds: list[Task], n_new: int, seed: int, examples_per_prompt: int = 3
) -> list[tuple[list[Message], list[Task]]]:
    """`n_new` few-shot prompts, each with its example seeds (drawn from `seed`)."""
    if not seeds:
        raise ValueError("expansion needs at least one seed task")
    rng = random.Random(seed)
    k = max(1, min(examples_per_prompt, len(seeds)))
    out = []
    for _ in range(n_new):
        shown = rng.sample(seeds, k)
        examples = "\n\n".join(f"Question {i + 1}: {t.prompt.strip()}" for i, t in enumerate(shown))
        messages = [
            {"role": "system", "content": SELF_INSTRUCT_SYSTEM},
            {"role": "user", "content": SELF_INSTRUCT_USER.format(examples=examples)},
        ]
        out.append((messages, shown))
    return out


def evol_prompts(seeds: list[Task], seed: int, operations=tuple(EVOL_OPERATIONS)) -> list[tuple[str, list[Message]]]:
    """One rewrite prompt per seed, with its operation (drawn from `seed`)."""
    unknown = [op for op in operations if op not in EVOL_OPERATIONS]
    if unknown or not operations:
        raise ValueError(f"unknown evol-instruct operation(s) {unknown} (use {', '.join(EVOL_OPERATIONS)})")
    rng = random.Random(seed)
    out = []
    for task in seeds:
        op = rng.choice(list(operations))
        user = EVOL_USER.format(instruction=EVOL_OPERATIONS[op], question=task.prompt.strip())
        out.append((op, [{"role": "system", "content": EVOL_SYSTEM}, {"role": "user", "content": user}]))
    return out


def _generate(teacher, prompts: list[list[Message]], seed: int, desc: str, temperature: float | None) -> list[str]:
    if not prompts:
        return []
    replies = teacher.generate(prompts, seed=seed, desc=desc, n=1, temperature=temperature)
    return [parse_question(r[0] if r else "") for r in replies]


def self_instruct(
    teacher, seeds: list[Task], n_new: int, seed: int, examples_per_prompt: int = 3, temperature: float | None = None
) -> list[str]:
    """`n_new` candidate questions (parsed, unfiltered), one per few-shot prompt."""
    prompts = self_instruct_prompts(seeds, n_new, seed, examples_per_prompt)
    return _generate(teacher, [m for m, _ in prompts], seed, "self-instruct", temperature)


def evol_instruct(
    teacher, seeds: list[Task], seed: int, operations=tuple(EVOL_OPERATIONS), temperature: float | None = None
) -> list[tuple[str, str]]:
    """Each seed rewritten by one operation: (operation, parsed new question), in the seeds' order."""
    prompts = evol_prompts(seeds, seed, operations)
    texts = _generate(teacher, [m for _, m in prompts], seed, "evol-instruct", temperature)
    return [(op, text) for (op, _), text in zip(prompts, texts)]


def _majority(values: list) -> object:
    return Counter(values).most_common(1)[0][0]


def expand_tasks(
    teacher,
    seeds: list[Task],
    embedder,
    n_new: int,
    seed: int,
    method: str = "self_instruct",
    domain: str | None = None,
    existing: list[str] | None = None,
    threshold: float = 0.9,
    examples_per_prompt: int = 3,
    index=None,
) -> tuple[list[Task], dict[str, int]]:
    """Generate `n_new` candidates with `method`, filter them (format, then novelty against the seeds and
    `existing`, e.g. held-out prompts) and return the survivors as Tasks with provenance. Counts:
    generated = kept + the sum of the drop reasons."""
    if not seeds:
        raise ValueError("expansion needs at least one seed task")
    if method == "self_instruct":
        prompts = self_instruct_prompts(seeds, n_new, seed, examples_per_prompt)
        texts = _generate(teacher, [m for m, _ in prompts], seed, "self-instruct", None)
        origins = ["self_instruct"] * len(texts)
        parents = [[t.id for t in shown] for _, shown in prompts]
    elif method == "evol_instruct":
        pool = list(seeds)
        random.Random(seed).shuffle(pool)
        chosen = [pool[i % len(pool)] for i in range(n_new)]
        rewrites = evol_instruct(teacher, chosen, seed)
        texts = [text for _, text in rewrites]
        origins = [f"evol_instruct:{op}" for op, _ in rewrites]
        parents = [[t.id] for t in chosen]
    else:
        raise ValueError(f"unknown expansion method {method!r} (use {' or '.join(METHODS)})")

    formatted, format_counts = filter_format(texts)
    reference = [t.prompt for t in seeds] + list(existing or [])
    novel, novelty_counts = filter_novel(formatted, reference, embedder, threshold, index=index)
    first_index: dict[str, int] = {}
    for i, text in enumerate(texts):
        first_index.setdefault(text, i)

    kind = _majority([t.kind for t in seeds])
    domain = domain if domain is not None else _majority([t.domain for t in seeds])
    tasks = []
    for text in novel:
        i = first_index[text]
        tasks.append(
            Task(
                id="exp-" + stable_id(origins[i], parents[i], text),
                prompt=text,
                answer="",
                kind=kind,
                domain=domain,
                origin=origins[i],
                parent_ids=parents[i],
            )
        )
    counts = {"generated": len(texts), "kept": len(tasks), **format_counts, **novelty_counts}
    return tasks, counts
