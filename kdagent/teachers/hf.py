"""A local Hugging Face model as teacher (white-box); `self` is this with the current student."""

from pathlib import Path

from kdagent.generation.engine import Engine
from kdagent.records import Message
from kdagent.teachers import BRANCH_LOGPROBS, CHOICE_LOGPROBS, LOCAL_PATH, PREFILL, TOKEN_LOGPROBS


class HFTeacher:
    capabilities = frozenset({PREFILL, TOKEN_LOGPROBS, CHOICE_LOGPROBS, BRANCH_LOGPROBS, LOCAL_PATH})

    def __init__(self, model_path: Path, config, label: str):
        self.config = config
        self.label = label
        self.path = Path(model_path)
        self.engine = Engine(model_path, dtype=config.dtype, backend=config.backend)

    def generate(
        self,
        prompts: list[list[Message]],
        seed: int,
        desc: str = "teacher",
        n: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> list[list[str]]:
        c = self.config
        return self.engine.generate(
            prompts,
            n=n or c.samples or 1,
            temperature=c.temperature if temperature is None else temperature,
            top_p=c.top_p,
            max_new_tokens=c.max_new_tokens,
            batch_size=c.batch_size,
            seed=seed,
            desc=desc,
            stop=stop,
        )

    def token_logprobs(self, prompts: list[list[Message]], replies: list[str]) -> list[list[float]]:
        """White-box: the teacher's log-probability of each token of each reply."""
        return self.engine.token_logprobs(prompts, replies, batch_size=self.config.batch_size)

    def choice_logprobs(self, prompts: list[list[Message]], choices: list[list[str]]) -> list[list[float]]:
        """White-box: for each prompt, the teacher's log-probability of each choice as its continuation."""
        return self.engine.choice_logprobs(prompts, choices, batch_size=self.config.batch_size)

    def branch_logprobs(self, prompts: list[list[Message]], stems: list[str], leaves: list[str]) -> list[list[float]]:
        """White-box: for each prompt, the log-probability of each stem + leaf as its continuation (`Engine.branch_logprobs`)."""
        return self.engine.branch_logprobs(prompts, stems, leaves)

    def close(self) -> None:
        self.engine.close()
