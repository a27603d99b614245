"""Typed records that flow between stages and are written as JSONL in the run directory."""

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TaskKind = Literal["numeric", "choice", "function_call", "refusal"]
Message = dict[str, str]  # {"role": ..., "content": ...}


def stable_id(*parts: Any, length: int = 16) -> str:
    """A deterministic id: a hash of its parts (JSON-encoded with sorted keys)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


class Task(BaseModel):
    """A task in the evaluation format (docs/evaluation.md), plus what elicitation needs."""

    model_config = ConfigDict(
        extra="allow"
    )  # the format allows extra fields (tools, possible_answer, answer_index, ...)

    id: str = Field(description="Unique id.")
    prompt: str = Field(description="The question or instruction.")
    context: str | None = Field(None, description="Text the model is given with the prompt.")
    choices: list[str] | None = Field(None, description="Options for choice tasks.")
    answer: str = Field(description="The reference answer.")
    kind: TaskKind = Field("numeric", description="How an answer is graded.")
    solution: str | None = Field(None, description="A worked reference solution, where the task's maker has one.")
    domain: str | None = Field(None, description="The domain that made the task.")


class Passage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Content hash of the text.")
    text: str = Field(description="The passage.")
    source: str = Field(description="Where it came from (file or corpus document name).")
    score: float | None = Field(None, description="Retrieval distance, lower is closer.")


class GroundedTask(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task: Task
    passages: list[Passage] = Field(default_factory=list)


class Generation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="Hash of round, seed, task, sample index and teacher settings.")
    task_id: str
    round: int
    sample: int = Field(description="Index of this sample among the task's samples.")
    teacher: str = Field(description="The teacher that wrote it (kind and model).")
    skill: str
    messages: list[Message] = Field(description="The prompt the teacher saw.")
    passage_ids: list[str] = Field(default_factory=list)
    text: str = Field(description="The teacher's reply (its final reply, after any tool calls).")
    trajectory: list[Message] = Field(
        default_factory=list,
        description="With tools: the assistant and tool messages after the prompt, ending with the final reply.",
    )


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")

    generation_id: str
    task_id: str
    verifier: str = Field(description="What judged it, e.g. 'cot/reference'.")
    passed: bool
    score: float
    predicted: str | None = Field(None, description="The answer parsed from the reply.")
    reason: str = ""
    failed: bool = Field(
        False, description="The check itself failed (e.g. a judge's output stayed malformed); never a pass."
    )
    raw: str | None = Field(None, description="The judge's raw output, kept when a judge was used.")


class Provenance(BaseModel):
    model_config = ConfigDict(extra="forbid")

    round: int
    teacher: str
    skill: str
    domain: str
    task_id: str
    generation_id: str | None = Field(None, description="None when the example is the task's reference solution.")
    passage_ids: list[str] = Field(default_factory=list)
    feedback: dict[str, Any] = Field(default_factory=dict, description="The verdict that admitted the example.")


class SFTExample(BaseModel):
    """A conversational prompt/completion pair, the format TRL's SFTTrainer takes as it is."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: list[Message]
    completion: list[Message]
    provenance: Provenance


class PreferencePair(BaseModel):
    """A conversational preference pair, the format TRL's DPOTrainer takes as it is."""

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    margin: float = Field(description="Score of chosen minus score of rejected.")
    provenance: Provenance
