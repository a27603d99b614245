"""`cot`: step-by-step rationales ending in a fixed, parseable final answer, verified against references."""

import re

from kdagent.evaluate.grading import format_number, last_number, numbers_match, parse_number
from kdagent.hookspecs import hookimpl
from kdagent.records import Message, Passage, Task
from kdagent.skill import Skill, Verdict, grounding_parts, question_text

# "The answer is 29." / "The answer is 41 - 10 = 29 stickers left." : the clause up to the end of its sentence.
_ANNOTATION = re.compile(r"<<[^<>]*>>")
_FINAL = re.compile(r"answer is:?\s*(.*?)(?:\.(?=\s|$)|\n|$)", re.IGNORECASE)


class ChainOfThought(Skill):
    name = "cot"
    description = "Step-by-step rationale, then 'The answer is X.'; verified against the reference answer."

    def __init__(self, instruction: str | None = None):
        self.instruction = instruction

    def _instruction(self, task: Task) -> str:
        if self.instruction:
            return self.instruction
        if task.kind == "choice" and task.choices:
            return (
                "Think step by step, then end with 'The answer is X.' where X is one of the options, written exactly."
            )
        return "Think step by step, then end with 'The answer is N.' where N is the final number."

    def messages(self, task: Task, passages: list[Passage] | None = None) -> list[Message]:
        parts = grounding_parts(task, passages)
        question = question_text(task)
        parts.append(("Question: " if passages else "") + question + "\n" + self._instruction(task))
        return [{"role": "user", "content": "\n\n".join(parts)}]

    @staticmethod
    def final_answer(reply: str, kind: str = "numeric") -> tuple[str | None, str]:
        """(the final answer, the reply cut after the sentence that states it)."""
        for match in _FINAL.finditer(reply):
            clause = match.group(1).strip().strip("*").strip()
            if kind == "choice":
                answer = clause or None
            else:
                value = last_number(clause)
                answer = None if value is None else format_number(value)
            if answer is not None:
                return answer, reply[: match.end()].strip()
        return None, reply.strip()

    def verify(self, task: Task, reply: str) -> Verdict:
        answer, _ = self.final_answer(reply, task.kind)
        if answer is None:
            return Verdict(False, 0.0, None, "no final answer in the form 'The answer is ...'")
        if task.kind == "choice":
            ok = answer.strip().lower() == task.answer.strip().lower()
        else:
            ok = numbers_match(parse_number(answer), task.answer)
        return Verdict(ok, 1.0 if ok else 0.0, answer, "" if ok else f"expected {task.answer}")

    def eval_tasks(self, n: int) -> list[Task]:
        from kdagent.skills.skill_sets import cot_tasks

        return cot_tasks(n)

    def completion(self, task: Task, reply: str) -> str:
        return self.final_answer(reply, task.kind)[1]

    def reference_completion(self, task: Task) -> str | None:
        if not task.solution:
            return None
        text = _ANNOTATION.sub("", task.solution).strip()  # GSM8K's <<48/2=24>> calculator marks
        if self.final_answer(text, task.kind)[0] is None:
            text += f" The answer is {task.answer}."
        return text


@hookimpl
def kdagent_register_skills(register):
    register("cot", ChainOfThought)
