"""A LangChain chat model as teacher: any OpenAI-compatible endpoint (`openai`), or any chat model a
plugin wraps with `ChatModelTeacher`.

Each sample is its own request (servers differ on `n`), sent through LangChain's `batch` with bounded
concurrency; each call has a deadline and retries with backoff (the chat model's own `timeout` and
`max_retries`). A request whose retries are exhausted gives an empty reply with its error recorded:
empty replies never become training examples, and the failures are counted.

`teacher.base_url` may list several endpoints serving the same model: they become an `EndpointPool`
(kdagent/teachers/pool.py), `teacher.concurrency` requests in flight on each, with fail-over between them.
"""

import os

from kdagent.errors import UserError, one_line
from kdagent.records import Message


def _as_chat(messages: list[Message]) -> list[tuple[str, str]]:
    """LangChain messages. kdagent's tool results (role `tool`, from the text tool-call format) go as user
    turns: chat APIs accept a `tool` message only as the answer to a native tool call."""
    return [
        ("user", f"Tool result:\n{m['content']}") if m["role"] == "tool" else (m["role"], m["content"])
        for m in messages
    ]


class ChatModelTeacher:
    capabilities: frozenset[str] = frozenset()  # text in, text out: no prefill, no token probabilities

    def __init__(self, chat_model, config, label: str):
        self.chat = chat_model
        self.config = config
        self.label = label
        self.failures: list[str] = []
        self.max_in_flight = getattr(
            chat_model, "max_in_flight", config.concurrency
        )  # a pool: the cap of each endpoint, summed
        from langchain_core.runnables import RunnableLambda

        # one request per sample, each with its own seed so the samples of a prompt differ
        self._call = RunnableLambda(lambda x: self.chat.invoke(x["messages"], seed=x["seed"], **x["extra"]))

    def generate(
        self,
        prompts: list[list[Message]],
        seed: int,
        desc: str = "teacher",
        n: int | None = None,
        temperature: float | None = None,
        stop: list[str] | None = None,
    ) -> list[list[str]]:
        from tqdm.auto import tqdm

        n = n or self.config.samples or 1
        extra = ({} if temperature is None else {"temperature": temperature}) | ({"stop": stop} if stop else {})
        flat = [(p, k) for p in range(len(prompts)) for k in range(n)]
        replies: list[list[str]] = [[""] * n for _ in prompts]
        with tqdm(total=len(flat), desc=desc, unit="request", leave=False) as bar:
            for start in range(0, len(flat), 256):
                part = flat[start : start + 256]
                inputs = [
                    {"messages": _as_chat(prompts[p]), "seed": (seed * 1_000_003 + start + i) % 2**31, "extra": extra}
                    for i, (p, _) in enumerate(part)
                ]
                results = self._call.batch(
                    inputs, config={"max_concurrency": self.max_in_flight}, return_exceptions=True
                )
                for (p, k), result in zip(part, results):
                    if isinstance(result, Exception):
                        self.failures.append(f"{type(result).__name__}: {one_line(str(result), 200)}")
                    elif isinstance(result.content, str) and result.content.strip():
                        replies[p][k] = result.content.strip()
                    else:
                        self.failures.append("empty reply")
                bar.update(len(part))
        return replies

    def close(self) -> None:
        pass


def endpoints(config) -> list[str]:
    """The teacher's endpoint URLs: `teacher.base_url`, one URL or a list."""
    urls = (
        config.base_url if isinstance(config.base_url, (list, tuple)) else [config.base_url] if config.base_url else []
    )
    return list(urls)


def openai_teacher(config, student_path):
    """Any OpenAI-compatible endpoint, or a pool of them. The key is read from the environment variable the recipe names."""
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    urls = endpoints(config)
    if not config.model or not urls:
        raise UserError("teacher: the 'openai' teacher needs teacher.model and teacher.base_url")
    key = "EMPTY"
    if config.api_key_env:
        key = os.environ.get(config.api_key_env, "")
        if not key:
            raise UserError(f"teacher.api_key_env: the environment variable {config.api_key_env} is not set")

    def chat(url: str, max_retries: int):
        return ChatOpenAI(
            model=config.model,
            base_url=url,
            api_key=SecretStr(key),
            temperature=config.temperature,
            top_p=config.top_p,
            max_tokens=config.max_new_tokens,
            timeout=config.timeout_s,
            max_retries=max_retries,
        )

    if len(urls) == 1:
        return ChatModelTeacher(chat(urls[0], config.max_retries), config, label=f"openai:{config.model}")
    from kdagent.teachers.pool import Endpoint, EndpointPool, models_probe

    # each endpoint's own retries are off: a failed request goes to another endpoint instead
    pool = EndpointPool(
        [Endpoint(url, chat(url, 0), models_probe(url, key, min(config.timeout_s, 5.0))) for url in urls],
        concurrency=config.concurrency,
        max_retries=config.max_retries,
    )
    return ChatModelTeacher(pool, config, label=f"openai:{config.model}")
