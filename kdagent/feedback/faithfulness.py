"""Is a grounded answer supported by the passages it cites? The overlap check: the reply must cite at
least one of its passages as [n], and most of its content words must occur in the cited passages."""

import re

from kdagent.records import Passage
from kdagent.skill import cited_passage_ids

STOPWORDS = frozenset(
    "a an the and or but if then so of to in on at by for with from as is are was were be been it its this that "
    "these those there here which who what when where how why do does did not no yes i you he she we they them his "
    "her our your their my me us answer passage passages question".split()
)


def content_words(text: str) -> set[str]:
    text = re.sub(r"\[\d{1,2}\]", " ", text.lower())
    return {w for w in re.findall(r"[a-z0-9][a-z0-9.,'-]*[a-z0-9]|[a-z0-9]", text) if w not in STOPWORDS and len(w) > 1}


def overlap_check(reply: str, passages: list[Passage], min_overlap: float = 0.5) -> tuple[bool, str, list[str]]:
    """(supported, reason, cited passage ids)."""
    cited = cited_passage_ids(reply, [p.id for p in passages])
    if not cited:
        return False, "cites no passage", []
    support = set().union(*(content_words(p.text) for p in passages if p.id in cited))
    words = content_words(reply)
    if not words:
        return False, "no content words", cited
    share = len(words & support) / len(words)
    if share < min_overlap:
        return False, f"only {share:.0%} of the reply's content words are in the cited passages", cited
    return True, f"{share:.0%} overlap with the cited passages", cited
