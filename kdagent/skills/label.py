"""`label`: reply with the answer alone, in the very prompt format the evaluation scores.

Choice tasks are evaluated by the log-probability of each option after `plain_messages(task)` (the prompt,
"Options: ...", "Answer with one of the options."). This skill prompts the same way, accepts a reply that
names the reference option (or, for numeric tasks, states the reference number) and teaches the option text
(or the number) alone, so training moves exactly the probabilities the evaluation reads. With
`feedback.fallback_to_reference: true`, a task the teacher gets wrong teaches its reference answer.

With `phrasings: k` (k > 1) an accepted answer to a choice task is taught under k phrasings of the prompt:
the evaluation's own and k-1 others (kdagent/phrasings.py), so that the student learns the task rather
than one template, and keeps its gain when users ask in their own words. With `per_answer: m` (m < k) each
answer is taught under m of the k phrasings, drawn per task: the phrasings vary across the tasks while an
epoch costs m examples per answer, not k (for recipes with many labels, where time is the limit).
"""

import random
import re

from kdagent.evaluate.grading import format_number, last_number, numbers_match
from kdagent.hookspecs import hookimpl
from kdagent.phrasings import ANSWER_LINE, training_contents
from kdagent.records import Message, Passage, Task, stable_id
from kdagent.skill import Skill, Verdict, passages_block, plain_messages

NUMERIC_INSTRUCTION = "Answer with the final number only."
RATIONALE_LINE = "Explain briefly what the evidence shows, then give the option."
_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?(?:answer|option|label)\s*(?:is|:)\s*", re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case, punctuation dropped (except inside numbers), whitespace collapsed."""
    text = re.sub(r"(?<!\d)[^\w\s]|[^\w\s](?!\d)", " ", text.lower())
    return " ".join(text.split())


def named_choice(reply: str, choices: list[str]) -> str | None:
    """The option a reply names: the one it equals, else the longest one it starts with, else the only one
    it contains (all after `normalise`, with a leading "the answer is" dropped); None when unclear."""
    said = normalise(_PREFIX.sub("", reply.strip().lstrip("-*• ").strip()))
    options = {normalise(c): c for c in choices if normalise(c)}
    if said in options:
        return options[said]
    for key in sorted(options, key=len, reverse=True):
        if said.startswith(key + " "):
            return options[key]
    contained = [c for key, c in options.items() if re.search(rf"(?<!\w){re.escape(key)}(?!\w)", said)]
    return contained[0] if len(contained) == 1 else None


class Label(Skill):
    name = "label"
    description = (
        "The answer alone, prompted as the evaluation prompts (options listed); teaches the option text or the number."
    )
    starter = {  # a one-word reply; the gold label taught where no sample names it; balanced labels
        "teacher": {"samples": 1, "max_new_tokens": 8},
        "feedback": {"fallback_to_reference": True},
        "curation": {"balance": "upsample"},
        "evaluation": {"unseen_phrasing": True},
    }

    def __init__(self, phrasings: int = 1, rationales: bool = False, per_answer: int | None = None):
        """`phrasings`: how many phrasings of a choice task's prompt each accepted answer is taught under
        (the evaluation's own first); 1 teaches the evaluation's prompt only. `rationales`: also teach, for a
        task whose data holds a worked rationale (`solution`, such as PubMedQA's long answer), the rationale
        and then the answer under a prompt that asks for the reasoning (Hsieh et al. 2023, distilling step by
        step: label and rationale as two tasks); the evaluation still asks for the option alone. `per_answer`:
        how many of the `phrasings` each answer is taught under, drawn per task by a generator seeded by its id
        (default: all of them)."""
        if not 1 <= phrasings <= 16:
            raise ValueError(f"phrasings must be between 1 and 16 (got {phrasings})")
        if per_answer is not None and not 1 <= per_answer <= phrasings:
            raise ValueError(f"per_answer must be between 1 and phrasings ({phrasings}) (got {per_answer})")
        self.phrasings = phrasings
        self.per_answer = per_answer
        self.rationales = rationales

    def auxiliary_examples(self, task: Task) -> list[tuple[list[Message], list[Message]]]:
        if not (self.rationales and task.solution and task.answer and task.kind == "choice"):
            return []
        content = plain_messages(task)[0]["content"].replace(ANSWER_LINE, RATIONALE_LINE)
        reply = f"{task.solution.strip()}\nSo the answer is: {task.answer}"
        return [([{"role": "user", "content": content}], [{"role": "assistant", "content": reply}])]

    def training_prompts(self, task: Task, passages: list[Passage] | None = None) -> list[list[Message]]:
        if self.phrasings == 1 or task.kind != "choice" or not task.choices:
            return [self.messages(task, passages)]
        head = passages_block(passages) + "\n\n" if passages else ""
        contents = training_contents(task, self.phrasings)
        if self.per_answer is not None and self.per_answer < len(contents):
            rng = random.Random(int(stable_id("per_answer", task.id), 16))
            contents = [contents[i] for i in sorted(rng.sample(range(len(contents)), self.per_answer))]
        return [[{"role": "user", "content": head + content}] for content in contents]

    def messages(self, task: Task, passages: list[Passage] | None = None) -> list[Message]:
        content = plain_messages(task)[0]["content"]
        if task.kind == "numeric":
            content += "\n" + NUMERIC_INSTRUCTION
        if passages:
            content = passages_block(passages) + "\n\n" + content
        return [{"role": "user", "content": content}]

    def _predicted(self, task: Task, reply: str) -> str | None:
        if task.kind == "choice" and task.choices:
            return named_choice(reply, task.choices)
        value = last_number(reply)
        return None if value is None else format_number(value)

    def verify(self, task: Task, reply: str) -> Verdict:
        predicted = self._predicted(task, reply)
        if predicted is None:
            return Verdict(
                False, 0.0, None, "the reply names no option" if task.kind == "choice" else "no number in the reply"
            )
        if task.kind == "choice":
            ok = normalise(predicted) == normalise(task.answer)
        else:
            ok = numbers_match(float(predicted), task.answer)
        return Verdict(ok, 1.0 if ok else 0.0, predicted, "" if ok else f"expected {task.answer}")

    def completion(self, task: Task, reply: str) -> str:
        """The canonical answer a passing reply names: the option as written, or the number."""
        predicted = self._predicted(task, reply)
        return predicted if predicted is not None else reply.strip()

    def reference_completion(self, task: Task) -> str | None:
        if not task.answer or task.kind not in ("choice", "numeric"):
            return None
        return task.answer.strip()


@hookimpl
def kdagent_register_skills(register):
    register("label", Label)
