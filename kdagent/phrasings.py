"""Phrasings of a choice task's prompt: the evaluation's own, the alternatives a skill teaches, and one that
evaluation keeps for itself.

Users prompt a student their own way. A student taught one template learns that template's format as much
as the task, so the `label` skill can teach each choice task under several phrasings (`training_prompt`),
and evaluation can score the same held-out tasks under a phrasing that no training example used
(`unseen_prompt`, `evaluation.unseen_phrasing`).

A phrasing is a question wording times a layout (where the context goes, how the options are listed, how
the reply is asked for). Question wordings come from the task: its `prompt`, the alternatives a domain
writes into the task's extra field `rephrasings`, and the wording a domain reserves for evaluation in
`unseen_question`. A task's `rule` (its instructions, such as a LegalBench task's) opens every phrasing. Phrasing 0 is the evaluation's own prompt (`plain_content`); the reserved layout and
the reserved wording are never used for training.
"""

import random

from kdagent.records import Task, stable_id

ANSWER_LINE = "Answer with one of the options."  # the last line of the evaluation's own prompt of a choice task


def _options_bulleted(choices: list[str]) -> str:
    return "Options:\n" + "\n".join(f"- {c}" for c in choices)


def _or_list(choices: list[str]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


def plain_content(question: str, context: str | None, choices: list[str] | None) -> str:
    """The evaluation's own prompt (phrasing 0): the context, the question, the options listed, one line
    asking for one of them."""
    parts = [f"Context:\n{context}"] if context else []
    text = question
    if choices:
        text += "\n" + _options_bulleted(choices) + "\n" + ANSWER_LINE
    parts.append(text)
    return "\n\n".join(parts)


def _context_after(question: str, context: str | None, choices: list[str]) -> str:
    body = f"{question}\nChoose one of: {', '.join(choices)}."
    return body + (f"\n\nText:\n{context}" if context else "")


def _slash_options(question: str, context: str | None, choices: list[str]) -> str:
    head = f"{context}\n\n" if context else ""
    return f"{head}{question}\nAnswer ({' / '.join(choices)}), nothing else:"


def _options_first(question: str, context: str | None, choices: list[str]) -> str:
    head = f"Material:\n{context}\n\n" if context else ""
    return f"{head}Reply with {_or_list(choices)}.\n{question}"


TRAINING_LAYOUTS = (plain_content, _context_after, _slash_options, _options_first)


def unseen_layout(question: str, context: str | None, choices: list[str]) -> str:
    """The layout evaluation keeps for itself: never a training prompt."""
    tail = f"\n\nHere is the document:\n{context}" if context else ""
    return f"{question}{tail}\n\nThe possible answers are: {'; '.join(choices)}. Which one is right?"


def questions(task: Task) -> list[str]:
    """The task's training wordings: its prompt, then the domain's alternatives (`rephrasings`)."""
    extra = getattr(task, "rephrasings", None) or []
    return [task.prompt] + [q for q in extra if isinstance(q, str) and q.strip() and q != task.prompt]


def with_rule(task: Task, content: str) -> str:
    """`content` after the task's rule (extra field `rule`), as the evaluation's own prompt puts it."""
    rule = getattr(task, "rule", None)
    return f"{rule.strip()}\n\n{content}" if isinstance(rule, str) and rule.strip() else content


def training_contents(task: Task, k: int) -> list[str]:
    """`k` user turns for a choice task: the evaluation's own first, then k-1 other phrasings (a wording
    times a layout), drawn without repeats by a random generator seeded by the task's id, so that the
    same task gets the same phrasings on every run."""
    if task.kind != "choice" or not task.choices:
        raise ValueError("phrasings apply to choice tasks")
    wordings = questions(task)
    combos = [
        (w, layout) for w in range(len(wordings)) for layout in range(len(TRAINING_LAYOUTS)) if (w, layout) != (0, 0)
    ]
    rng = random.Random(int(stable_id("phrasings", task.id), 16))
    picked = rng.sample(combos, min(k - 1, len(combos)))
    out = [plain_content(task.prompt, task.context, task.choices)]
    out += [TRAINING_LAYOUTS[layout](wordings[w], task.context, task.choices) for w, layout in picked]
    return [with_rule(task, c) for c in out]


def unseen_content(task: Task) -> str:
    """The user turn of a choice task under the evaluation's reserved phrasing: the domain's reserved
    wording (`unseen_question`) where it wrote one, else the task's prompt, in the reserved layout."""
    question = getattr(task, "unseen_question", None) or task.prompt
    return with_rule(task, unseen_layout(question, task.context, task.choices or []))
