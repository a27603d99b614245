"""Pure filters over training examples: length/quality, exact and near dedup, decontamination.

Every filter takes a list of SFTExample or PreferencePair (for a pair, the chosen reply is the reply),
keeps the order of what it keeps, and returns ``(kept, dropped_counts)`` where ``dropped_counts`` has
one key per drop reason (present even when zero), ready for a round's metrics.json.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from kdagent.records import Message, PreferencePair, SFTExample

Example = TypeVar("Example", SFTExample, PreferencePair)

_WORD = re.compile(r"\w+")


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens with punctuation stripped."""
    return _WORD.findall(text.lower())


def _normalise(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, ends stripped."""
    return " ".join(text.lower().split())


def _join(messages: list[Message]) -> str:
    return "\n".join(m.get("content") or "" for m in messages)


def example_texts(example: SFTExample | PreferencePair, full_prompt: bool = False) -> tuple[str, str]:
    """``(prompt_text, reply_text)`` of an example.

    The prompt text is the last user message (all prompt messages joined when ``full_prompt``, or when
    there is no user message); the reply is the completion, or the chosen reply of a preference pair.
    """
    users = [m for m in example.prompt if m.get("role") == "user"]
    prompt = _join(example.prompt) if full_prompt or not users else users[-1].get("content") or ""
    reply = _join(example.chosen if isinstance(example, PreferencePair) else example.completion)
    return prompt, reply


def length_quality(
    examples: list[Example],
    min_chars: int = 1,
    max_chars: int = 8000,
    max_repeat_ratio: float = 0.5,
) -> tuple[list[Example], dict[str, int]]:
    """Drop replies that are empty or shorter than ``min_chars`` after stripping (``too_short``), longer
    than ``max_chars`` (``too_long``), or degenerate: a share of repeated word 3-grams (1 - unique/total)
    above ``max_repeat_ratio`` (``repetitive``). Each dropped example counts under its first reason."""
    counts = {"too_short": 0, "too_long": 0, "repetitive": 0}
    kept = []
    for ex in examples:
        reply = example_texts(ex)[1].strip()
        if not reply or len(reply) < min_chars:
            counts["too_short"] += 1
        elif len(reply) > max_chars:
            counts["too_long"] += 1
        elif repeat_ratio(reply) > max_repeat_ratio:
            counts["repetitive"] += 1
        else:
            kept.append(ex)
    return kept, counts


def repeat_ratio(text: str, n: int = 3) -> float:
    """Share of the word n-grams of ``text`` that repeat an earlier one (0 when it has none)."""
    words = word_tokens(text)
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def dedupe_exact(examples: list[Example]) -> tuple[list[Example], dict[str, int]]:
    """Drop examples whose (last user message, reply) equal an earlier one's, ignoring case and
    whitespace (``duplicate_exact``)."""
    seen: set[tuple[str, str]] = set()
    kept, dropped = [], 0
    for ex in examples:
        prompt, reply = example_texts(ex)
        key = (_normalise(prompt), _normalise(reply))
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        kept.append(ex)
    return kept, {"duplicate_exact": dropped}


def _shingles(text: str, ngram: int) -> set[str]:
    """Character n-grams of the normalised text (the whole text when shorter than ``ngram``)."""
    text = _normalise(text)
    if len(text) <= ngram:
        return {text}
    return {text[i : i + ngram] for i in range(len(text) - ngram + 1)}


def dedupe_near(
    examples: list[Example],
    threshold: float = 0.85,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
) -> tuple[list[Example], dict[str, int]]:
    """Drop near-duplicates (``duplicate_near``), keeping the first of each group.

    Two examples are near-duplicates when the estimated Jaccard similarity of their character
    ``ngram``-shingles is at least ``threshold`` for the prompt (last user message) *and* for the reply.
    Requiring both keeps distinct samples for one long prompt, and the same short answer to different
    questions. One reply of a task taught under several phrasings of its prompt (``Skill.training_prompts``:
    the same task and generation, another prompt) is not a near-duplicate of itself. Candidates come from
    MinHash LSH (datasketch) over the reply; fixed ``seed``, so the result is deterministic.
    """
    from datasketch import MinHash, MinHashLSH

    template = MinHash(num_perm=num_perm, seed=seed)  # permutations drawn once and shared

    def minhash(text: str) -> MinHash:
        m = MinHash(num_perm=num_perm, seed=seed, permutations=template.permutations, scheme=template.scheme)
        m.update_batch([s.encode("utf-8") for s in _shingles(text, ngram)])
        return m

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    prompt_hashes: dict[str, MinHash] = {}
    reply_hashes: dict[str, MinHash] = {}
    sources: dict[str, tuple] = {}
    kept, dropped = [], 0
    for i, ex in enumerate(examples):
        prompt, reply = example_texts(ex)
        p_hash, r_hash = minhash(prompt), minhash(reply)
        provenance = getattr(ex, "provenance", None)
        source = (provenance.task_id, provenance.generation_id, prompt) if provenance else (None, None, prompt)
        if any(
            r_hash.jaccard(reply_hashes[key]) >= threshold
            and p_hash.jaccard(prompt_hashes[key]) >= threshold
            and not (
                source[0] is not None and sources[key][:2] == source[:2] and sources[key][2] != prompt
            )  # a rephrasing
            for key in lsh.query(r_hash)
        ):
            dropped += 1
            continue
        key = str(i)
        lsh.insert(key, r_hash)
        prompt_hashes[key], reply_hashes[key], sources[key] = p_hash, r_hash, source
        kept.append(ex)
    return kept, {"duplicate_near": dropped}


class _EvalGrams:
    """The word n-grams of evaluation texts, and a test of whether a text shares one.

    An evaluation text of at least ``n`` words contributes its ``n``-grams. A shorter one of at least
    ``min_words`` words is one gram of its own length, found anywhere in a text as a contiguous word run.
    Texts under ``min_words`` words (a bare answer such as "42" or "B") are ignored: as grams they would
    knock out every reply that mentions them.
    """

    def __init__(self, eval_texts: Iterable[str], n: int = 8, min_words: int = 3):
        self.n = n
        self.grams: dict[int, set[tuple[str, ...]]] = {}  # by gram length: n, and the shorter whole texts
        for text in eval_texts:
            words = word_tokens(text)
            k = min(len(words), n)
            if k >= min_words:
                self.grams.setdefault(k, set()).update(tuple(words[i : i + k]) for i in range(len(words) - k + 1))

    def hits(self, text: str) -> bool:
        """Whether ``text`` shares a gram with any evaluation text."""
        words = word_tokens(text)
        return any(
            tuple(words[i : i + k]) in grams for k, grams in self.grams.items() for i in range(len(words) - k + 1)
        )


def contaminated_ids(
    texts_by_id: dict[str, str],
    eval_texts: Iterable[str],
    n: int = 8,
    min_words: int = 3,
) -> set[str]:
    """Ids whose text shares a word ``n``-gram with an evaluation text (see ``decontaminate``); the loop
    uses it to drop seed tasks before elicitation (reason ``contaminated_task``)."""
    index = _EvalGrams(eval_texts, n, min_words)
    return {key for key, text in texts_by_id.items() if index.hits(text)}


def decontaminate(
    examples: list[Example],
    eval_texts: Iterable[str],
    n: int = 8,
    min_words: int = 3,
) -> tuple[list[Example], dict[str, int]]:
    """Drop examples whose prompt (all its messages) or reply shares a word ``n``-gram (lower-cased,
    punctuation stripped) with any evaluation text: prompts, answers, contexts (``contaminated``).

    An evaluation text shorter than ``n`` words is one gram of its own length, matched anywhere; one
    shorter than ``min_words`` words is ignored.
    """
    index = _EvalGrams(eval_texts, n, min_words)
    kept, dropped = [], 0
    for ex in examples:
        prompt, reply = example_texts(ex, full_prompt=True)
        if index.hits(prompt) or index.hits(reply):
            dropped += 1
        else:
            kept.append(ex)
    return kept, {"contaminated": dropped}


@dataclass(frozen=True)
class FilterConfig:
    """Settings of ``curate_examples``."""

    near_dup_threshold: float | None = 0.85  # None turns near-duplicate removal off
    decontam_ngram: int = 8
    decontam_min_words: int = 3  # evaluation texts with fewer words are not checked
    min_chars: int = 1
    max_chars: int = 8000
    max_repeat_ratio: float = 0.5


def curate_examples(
    examples: list[Example],
    eval_texts: Iterable[str] = (),
    cfg: FilterConfig | None = None,
) -> tuple[list[Example], dict[str, int]]:
    """Run ``length_quality``, ``dedupe_exact``, ``dedupe_near`` (when ``cfg.near_dup_threshold`` is
    set) and ``decontaminate`` in that order; return the survivors and the merged drop counts."""
    cfg = cfg or FilterConfig()
    counts: dict[str, int] = {}
    examples, c = length_quality(examples, cfg.min_chars, cfg.max_chars, cfg.max_repeat_ratio)
    counts.update(c)
    examples, c = dedupe_exact(examples)
    counts.update(c)
    if cfg.near_dup_threshold is not None:
        examples, c = dedupe_near(examples, threshold=cfg.near_dup_threshold)
        counts.update(c)
    examples, c = decontaminate(examples, eval_texts, cfg.decontam_ngram, cfg.decontam_min_words)
    counts.update(c)
    return examples, counts
