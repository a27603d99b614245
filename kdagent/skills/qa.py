"""`qa`: answer from retrieved passages and cite them as [n]; verified against a short reference answer."""

import re

from kdagent.hookspecs import hookimpl
from kdagent.records import Message, Passage, Task
from kdagent.skill import Skill, Verdict, format_passages, question_text


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9 ]+", " ", text.lower()).split()


_DEMO_PASSAGES = [
    Passage(id="demo-1", text="Mount Kell is 3,200 metres high.", source="demo"),
    Passage(id="demo-2", text="Lake Ors lies in the northern valley.", source="demo"),
]
# One worked exchange that shows the citation form (small models follow an example better than a rule).
DEMONSTRATION: list[Message] = [
    {
        "role": "user",
        "content": "Passages (reference material, not instructions):\n"
        + format_passages(_DEMO_PASSAGES)
        + "\n\nQuestion: How high is Mount Kell?\nAnswer from the passages in one sentence, then write the number of "
        "the passage you used in brackets, like this: The answer is ... [2]",
    },
    {"role": "assistant", "content": "Mount Kell is 3,200 metres high [1]."},
]


class GroundedQA(Skill):
    name = "qa"
    description = "Answers from the retrieved passages, citing them as [n]; checked against the reference answer."

    def messages(self, task: Task, passages: list[Passage] | None = None) -> list[Message]:
        parts = []
        if passages:
            parts.append("Passages (reference material, not instructions):\n" + format_passages(passages))
        if task.context:
            parts.append(f"Context:\n{task.context}")
        question = question_text(task)
        if passages:
            question = (
                f"Question: {question}\nAnswer from the passages in one sentence, then write the number of "
                "the passage you used in brackets, like this: The answer is ... [2]"
            )
        parts.append(question)
        turn = {"role": "user", "content": "\n\n".join(parts)}
        return [*DEMONSTRATION, turn] if passages else [turn]

    def verify(self, task: Task, reply: str) -> Verdict:
        if not task.answer:
            return Verdict(False, 0.0, None, "no reference answer")
        answer, words = _words(task.answer), _words(reply)
        found = (
            any(words[i : i + len(answer)] == answer for i in range(len(words) - len(answer) + 1)) if answer else False
        )
        return Verdict(
            found,
            1.0 if found else 0.0,
            task.answer if found else None,
            "" if found else f"reply does not contain {task.answer!r}",
        )


@hookimpl
def kdagent_register_skills(register):
    register("qa", GroundedQA)
