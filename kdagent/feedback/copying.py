"""Replies that copy the retrieved reference material instead of answering.

A grounded sample can pass the reference check while most of it is a passage pasted back (a worked
example's "Question: ... Answer: ..." scaffolding, say). Trained on, it teaches the student to recite
whatever it is shown. `copied_span` finds such a copy: a run of `n` words of the reply that a passage holds
verbatim and that the task's own text does not (a reply may restate its question).
"""

from kdagent.curate.filters import word_tokens as _words  # the word tokens decontamination compares


def _grams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def copied_span(reply: str, passages: list[str], own_text: str, n: int = 12) -> str | None:
    """The first `n`-word run of `reply` found verbatim (case and punctuation aside) in one of `passages`
    but not in `own_text` (the task's prompt and context), as text; None when there is none."""
    words = _words(reply)
    if len(words) < n or not passages:
        return None
    held = set().union(*(_grams(_words(p), n) for p in passages)) - _grams(_words(own_text), n)
    for i in range(len(words) - n + 1):
        if tuple(words[i : i + n]) in held:
            return " ".join(words[i : i + n])
    return None
