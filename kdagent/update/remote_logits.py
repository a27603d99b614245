"""The teacher-logit cache from a teacher on OpenAI-compatible servers: a large teacher served by vLLM distils a
local student, with no teacher weights on the training machine.

Each training sequence (prompt + completion, the student's token ids) is sent as it is, token ids and all, to
the completions API with `max_tokens: 1` and `prompt_logprobs: k` (vLLM's extension; the response carries, for
each prompt position, the log-probabilities of the top-k tokens there, keyed by token id, plus the prompt's own
token). The rows at the completion positions become the cache's top-k ids, log-probabilities and tail mass, the
same chunk files a local teacher writes (kdagent/update/logit_cache.py), so `distill_cached` trains from them
as from any cache. The requests go through the teacher's `EndpointPool` (kdagent/teachers/pool.py): several
servers share the scoring and one that dies is taken out of rotation while the others finish the chunk.

The token ids only mean the same thing when the server's tokenizer is the student's. Before scoring, the
first example's text is sent to each server's `/tokenize` (vLLM's) and must come back as the student's ids;
a server with another tokenizer, or none to ask, is refused with one line (one that cannot be reached is left to
the pool, as long as one server answered).

A server that does not return `prompt_logprobs` (OpenAI's hosted API, `transformers serve`, which answer 4xx
to the field or to a token-id prompt) is refused with one line naming it; so is one that returns fewer than k
log-probabilities a position (vLLM caps them at its `--max-logprobs`, 20 unless raised).
"""

import hashlib
import math
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from kdagent.errors import UserError, one_line


class RemoteLogitsError(UserError):
    """A server's answer cannot feed the logit cache."""


def top_rows(prompt_logprobs, ids: list[int], start: int, k: int, vocab: int):
    """From one response's `prompt_logprobs` (one entry a prompt token: None for the first, else
    {token id: {"logprob": x, ...}} or {token id: x}), the top-`k` ids, log-probabilities and tail mass at each
    completion position `start .. len(ids) - 1`, as lists of rows."""
    if not isinstance(prompt_logprobs, list) or len(prompt_logprobs) != len(ids):
        got = len(prompt_logprobs) if isinstance(prompt_logprobs, list) else type(prompt_logprobs).__name__
        raise RemoteLogitsError(
            f"the server returned prompt_logprobs for {got} positions, not the {len(ids)} prompt tokens it was sent"
        )
    top_ids, top_logp, tails = [], [], []
    for position in range(start, len(ids)):
        entry = prompt_logprobs[position] or {}
        pairs = sorted(
            ((float(v["logprob"] if isinstance(v, dict) else v), int(t)) for t, v in entry.items()),
            key=lambda pair: (-pair[0], pair[1]),
        )[:k]
        if len(pairs) < k:
            raise RemoteLogitsError(
                f"the server returned {len(pairs)} log-probabilities at a position, fewer than top_k {k} "
                "(vLLM returns at most --max-logprobs, 20 unless the server raises it)"
            )
        if any(not 0 <= t < vocab for _, t in pairs):
            raise RemoteLogitsError(
                f"the server returned a token id outside the student's vocabulary ({vocab}): it serves another tokenizer"
            )
        top_ids.append([t for _, t in pairs])
        top_logp.append([lp for lp, _ in pairs])
        tails.append(max(0.0, 1.0 - sum(math.exp(lp) for lp, _ in pairs)))
    return top_ids, top_logp, tails


def remote_chunk(score, sequences, k: int, vocab: int, workers: int) -> dict:
    """The chunk arrays (logit_cache.pack_chunk) of `sequences` scored by `score(ids, k) -> prompt_logprobs`,
    `workers` requests in flight."""
    from kdagent.update.logit_cache import pack_chunk

    with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
        answers = list(executor.map(lambda seq: score(seq[0], k), sequences))
    ids_rows, logp_rows, tail_rows = [], [], []
    for (ids, start), answer in zip(sequences, answers):
        top_ids, top_logp, tails = top_rows(answer, ids, start, k, vocab)
        ids_rows += top_ids
        logp_rows += top_logp
        tail_rows += tails
    return pack_chunk(sequences, ids_rows, logp_rows, tail_rows, vocab)


class PromptScorer:
    """One endpoint's `invoke(ids, k)`: the completions API's `prompt_logprobs` for a token-id prompt. It stands
    where a chat model stands in an `EndpointPool`, so the pool's fail-over applies; errors are the openai
    client's, which the pool sorts into the endpoint's faults and the request's own."""

    def __init__(self, url: str, model: str, api_key: str, timeout_s: float):
        import openai

        from kdagent.teachers.pool import shown

        self.shown, self.model = shown(url), model
        self.client = openai.OpenAI(base_url=url, api_key=api_key, timeout=timeout_s, max_retries=0)

    def invoke(self, ids: list[int], k: int):
        import openai

        try:
            response = self.client.completions.create(
                model=self.model, prompt=ids, max_tokens=1, temperature=0.0, extra_body={"prompt_logprobs": k}
            )
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code == 429:
                raise  # the endpoint's fault: the pool sends the request elsewhere
            body = (
                exc.body if isinstance(exc.body, dict) else {}
            )  # FastAPI's {"detail"}, or the OpenAI error's {"message"}
            detail = body.get("detail") or body.get("message") or exc.message
            raise RemoteLogitsError(
                f"teacher endpoint {self.shown} refused a prompt_logprobs request (HTTP {exc.status_code}: {one_line(str(detail), 160)}): "
                "the logit cache needs a server that scores token-id prompts with top-k log-probabilities (vLLM's OpenAI server does)"
            ) from None
        choice = response.model_dump()["choices"][0]
        if choice.get("prompt_logprobs") is None:
            raise RemoteLogitsError(
                f"teacher endpoint {self.shown} answered without prompt_logprobs: it cannot feed the logit cache "
                "(vLLM's OpenAI server returns them)"
            )
        return choice["prompt_logprobs"]


def server_root(url: str) -> str:
    """An OpenAI base URL (`http://host:8000/v1`) without its API version: where vLLM serves `/tokenize`."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def check_server_tokenizer(
    url: str, model: str, api_key: str, text: str, expected: list[int], timeout_s: float
) -> bool:
    """Refuse, in one line, a server whose tokenizer does not turn `text` into the student's `expected` ids.
    False when the server cannot be reached (a pool's endpoint that is down: the others may answer)."""
    import httpx

    from kdagent.teachers.pool import shown

    try:
        response = httpx.post(
            f"{server_root(url)}/tokenize",
            json={"model": model, "prompt": text, "add_special_tokens": False},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout_s,
        )
    except httpx.TransportError:
        return False
    try:
        answer = response.json() if response.status_code == 200 else {}
    except ValueError:
        answer = {}
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    if not isinstance(tokens, list):
        raise RemoteLogitsError(
            f"teacher endpoint {shown(url)} has no /tokenize (HTTP {response.status_code}) to show that it shares "
            "the student's tokenizer, which the logit cache needs (vLLM's server has one)"
        )
    if list(tokens) != list(expected):
        raise RemoteLogitsError(
            f"teacher endpoint {shown(url)} tokenizes a training example into {len(tokens)} tokens, the student into "
            f"{len(expected)}, not the same ids: the logit cache needs teacher and student to share a tokenizer"
        )
    return True


def remote_teacher_hash(model: str) -> str:
    """What stands for the weights' hash in a remote teacher's cache key: the served model's name."""
    return hashlib.sha256(f"openai:{model}".encode()).hexdigest()


def build_remote_cache(
    config,
    tokenizer_dir: Path,
    sequences,
    probe: tuple[str, list[int]],
    k: int,
    root: Path,
    chunk_size: int = 64,
    log=None,
    builder: bool = True,
):
    """The logit cache of the teacher served at `config.base_url` (one endpoint or a pool; `config` is the
    recipe's teacher section) over `sequences`, under `root`. `probe` is a training example's text and the
    student's ids for it: each server must tokenize it the same way. No server is asked when the cache is
    complete already, nor by a process that is not the `builder` (it waits for the builder's cache)."""
    import os

    from transformers import AutoTokenizer

    from kdagent.teachers.chat import endpoints
    from kdagent.teachers.pool import Endpoint, EndpointPool, models_probe
    from kdagent.update.logit_cache import cache_key, data_hash, fill_cache, tokenizer_hash

    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    if not sequences:
        raise ValueError("the logit cache needs at least one sequence with a completion")
    urls = endpoints(config)
    if not config.model or not urls:
        raise UserError("teacher: a served teacher needs teacher.model and teacher.base_url")
    key = cache_key(remote_teacher_hash(config.model), tokenizer_hash(tokenizer_dir), data_hash(sequences), k)

    @contextmanager
    def served_teacher():
        api_key = os.environ.get(config.api_key_env, "") if config.api_key_env else "EMPTY"
        if config.api_key_env and not api_key:
            raise UserError(f"teacher.api_key_env: the environment variable {config.api_key_env} is not set")
        vocab = len(AutoTokenizer.from_pretrained(tokenizer_dir))
        if k > vocab:
            raise ValueError(f"top_k {k} exceeds the student's vocabulary ({vocab})")
        text, expected = probe
        checked = [
            check_server_tokenizer(url, config.model, api_key, text, expected, min(config.timeout_s, 30.0))
            for url in urls
        ]
        if not any(checked):
            raise RemoteLogitsError(
                f"no teacher endpoint of {len(urls)} could be reached to compare its tokenizer with the student's "
                "(POST /tokenize at the server's root)"
            )
        pool = EndpointPool(
            [
                Endpoint(
                    url,
                    PromptScorer(url, config.model, api_key, config.timeout_s),
                    models_probe(url, api_key, min(config.timeout_s, 5.0)),
                )
                for url in urls
            ],
            concurrency=config.concurrency,
            max_retries=config.max_retries,
        )
        yield lambda part: remote_chunk(lambda ids, n: pool.invoke(ids, k=n), part, k, vocab, pool.max_in_flight)

    return fill_cache(
        Path(root) / key, sequences, k, chunk_size, f"openai:{config.model}", served_teacher, log=log, builder=builder
    )
