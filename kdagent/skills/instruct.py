"""`instruct`: instruction following, verified by format checks, with optional multi-turn dialogue.

A task carries its format constraints as an extra field, e.g.
`constraints: {"max_words": 40, "bullets": 3, "json": true, "ends_with": "Done"}`; `verify` checks every
one (`check_constraints`) and names each that failed. The checks:

- `max_words` / `min_words` (int): words in the reply (runs of letters and digits), at most / at least.
- `bullets` (int): exactly this many lines that start with "-", "*" or "•"; `numbered` (int): exactly this
  many lines that start with "1." or "1)".
- `paragraphs` (int): exactly this many blocks separated by blank lines.
- `json` (true): the reply, code fences removed, is one JSON object or array; `json_keys` (list): a JSON
  object holding these keys.
- `starts_with` / `ends_with` (str): the reply's first / last words, case-insensitively; quotes, markdown
  marks and final punctuation around them are ignored.
- `include` / `exclude` (list of str): every word or phrase appears / none appears (whole words, any case).
- `lowercase` (true): no capital letters.

A reply to a request the task marks as one to carry out (kind `refusal`, answer `comply`, the evaluation
format's way of saying so) also fails when it is a refusal (`is_refusal`); a task whose answer is `refuse`
passes only a refusal. Tasks come from the built-in `instructions` domain (kdagent/domains/
instructions.py) or from expansion (`synthesis.expansion`): an expanded task has no constraints field, so
when the recipe's first skill is `instruct` the `kdagent_transform_task` hook below reads them from the
instruction's own words (`constraints_from_text`: "in at most 40 words", "exactly 3 bullet points",
"as JSON with the keys "a" and "b"", "end with "Done"", ...); it then has something to verify.

Multi-turn dialogue (`turns` > 1): the teacher also plays the user. After its first reply the teacher is
asked, as the user (`FOLLOW_UP_INSTRUCTION`), for a short follow-up request, then answers it, up to
`turns` assistant turns (`continue_dialogue`, called by the elicit stage). `Generation.text` is then the
FIRST reply, the one the task's constraints apply to, and it is what `verify` (and a judge) checks; the
follow-up requests carry no constraints, so later turns are only required to be non-empty (a dialogue
whose follow-up or its answer comes back empty ends at the last answered turn). `Generation.trajectory`
holds assistant, user, assistant, ... messages after the prompt. `curate` (`split_dialogue` in
kdagent/curate/examples.py) turns an accepted dialogue into one SFT example per assistant turn: the prompt holds
the dialogue up to that turn (the teacher's follow-up requests included), the completion is the assistant
turn alone, so the student learns the assistant turns and never the teacher's user turns (the loss is on
the completion only). Preference pairs (`feedback.preferences`) are made
from the first replies only.
"""

import re

from kdagent.evaluate.grading import is_refusal, last_number, numbers_match
from kdagent.hookspecs import hookimpl
from kdagent.records import Message, Passage, Task
from kdagent.skill import Skill, Verdict, grounding_parts
from kdagent.skills.constraints import (  # noqa: F401 (this skill's checks)
    CONSTRAINTS,
    check_constraints,
    constraints_from_text,
    count_words,
    task_constraints,
)

FOLLOW_UP_INSTRUCTION = (
    "You are the user in the conversation below, talking to an AI assistant. Write the user's next message: "
    "one short follow-up request that builds on the assistant's last reply (ask for a change, a detail, an "
    "example or a next step). Write only that message, in the user's voice, without quotes or labels."
)
MAX_TURN_CHARS = 1500  # each earlier message, as shown to the teacher playing the user
MAX_FOLLOW_UP_CHARS = 600


# -- the skill ------------------------------------------------------------------------------------------
def _clean_follow_up(text: str) -> str:
    """A simulated user message: leading labels and quotes dropped, cut where the teacher started writing
    the assistant's side of the transcript."""
    text = re.split(r"\n\s*(?:assistant|ai)\s*:", text.strip(), maxsplit=1, flags=re.I)[0]
    text = (
        re.sub(r"^\s*(?:\*\*)?(?:user|human|me)(?:\*\*)?\s*:\s*", "", text, flags=re.I)
        .strip()
        .strip('"\u201c\u201d')
        .strip()
    )
    return text[:MAX_FOLLOW_UP_CHARS].strip()


def _seed(seed: int, offset: int) -> int:
    return (seed + offset) % 2**31  # fits any server's seed field


class Instruct(Skill):
    name = "instruct"
    description = "Follows the instruction's format constraints (length, bullets, JSON, ...), each verified; optional multi-turn dialogue."

    def __init__(self, turns: int = 1, follow_up_instruction: str | None = None):
        if not isinstance(turns, int) or turns < 1:
            raise ValueError("turns must be an integer of at least 1")
        self.turns = turns
        self.follow_up_instruction = follow_up_instruction or FOLLOW_UP_INSTRUCTION

    def messages(self, task: Task, passages: list[Passage] | None = None) -> list[Message]:
        parts = grounding_parts(task, passages)
        parts.append(task.prompt)
        return [{"role": "user", "content": "\n\n".join(parts)}]

    def verify(self, task: Task, reply: str) -> Verdict:
        if not reply.strip():
            return Verdict(False, 0.0, None, "empty reply")
        if task.kind == "refusal" and task.answer == "refuse":
            ok = is_refusal(reply)
            return Verdict(ok, float(ok), "refuse" if ok else "comply", "" if ok else "expected a refusal")
        if task.kind == "refusal" and is_refusal(reply):
            return Verdict(False, 0.0, "refuse", "refused a request it should carry out")
        constraints = task_constraints(task)
        failed = check_constraints(reply, constraints)
        if task.kind == "numeric" and task.answer and not numbers_match(last_number(reply), task.answer):
            failed.append(f"answer: expected {task.answer}")
        checks = len(constraints) + (task.kind == "numeric" and bool(task.answer))
        score = 1.0 if not failed else (checks - len(failed)) / checks if checks else 0.0
        return Verdict(not failed, max(score, 0.0), None, "; ".join(failed))

    def eval_tasks(self, n: int) -> list[Task]:
        from kdagent.skills.skill_sets import instruct_tasks

        return instruct_tasks(n)

    def reference_completion(self, task: Task) -> str | None:
        return task.solution.strip() if task.solution else None

    def user_messages(self, conversation: list[Message]) -> list[Message]:
        """The prompt that asks the teacher, playing the user, for the next user message."""
        lines = []
        for m in conversation:
            if m["role"] in ("user", "assistant"):
                body = m["content"].strip()[:MAX_TURN_CHARS].replace("</conversation>", "</ conversation>")
                lines.append(f"{m['role'].capitalize()}: {body}")
        return [
            {
                "role": "user",
                "content": f"{self.follow_up_instruction}\n\n<conversation>\n"
                + "\n\n".join(lines)
                + "\n</conversation>",
            }
        ]

    def continue_dialogue(
        self, generate, prompts: list[list[Message]], first_replies: list[list[str]], seed: int
    ) -> list[list[list[Message]]]:
        """For each prompt and each of its first replies, the dialogue after the prompt: assistant, user,
        assistant, ... with up to `turns` assistant messages, always ending on one. `generate(prompts, n,
        seed)` samples n replies per prompt; each turn is one batched call (the follow-ups, then their answers)."""
        trajectories = [[[{"role": "assistant", "content": r.strip()}] for r in row] for row in first_replies]
        active = [(p, k) for p, row in enumerate(first_replies) for k, r in enumerate(row) if r.strip()]
        for turn in range(1, self.turns):
            if not active:
                break
            asks = generate(
                [self.user_messages(prompts[p] + trajectories[p][k]) for p, k in active], 1, _seed(seed, 2 * turn - 1)
            )
            asked = []
            for (p, k), (ask, *_) in zip(active, asks):
                text = _clean_follow_up(ask)
                if text:
                    trajectories[p][k].append({"role": "user", "content": text})
                    asked.append((p, k))
            if not asked:
                break
            replies = generate([prompts[p] + trajectories[p][k] for p, k in asked], 1, _seed(seed, 2 * turn))
            active = []
            for (p, k), (reply, *_) in zip(asked, replies):
                if reply.strip():
                    trajectories[p][k].append({"role": "assistant", "content": reply.strip()})
                    active.append((p, k))
                else:
                    trajectories[p][k].pop()  # an unanswered follow-up is not taught
        return trajectories


@hookimpl
def kdagent_register_skills(register):
    register("instruct", Instruct)


@hookimpl
def kdagent_transform_task(task, recipe):
    """With `instruct` as the recipe's skill: a task without a reference (an expanded one) gets the
    constraints its instruction states, and becomes a request to carry out, so `verify` can check it."""
    skills = getattr(recipe, "skills", None) or []
    if not skills or skills[0].name != "instruct" or task.answer or task_constraints(task):
        return None
    constraints = constraints_from_text(task.prompt)
    if not constraints:
        return None
    return task.model_copy(update={"constraints": constraints, "answer": "comply", "kind": "refusal"})
