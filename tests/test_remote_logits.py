"""The teacher-logit cache from served log-probabilities (kdagent/update/remote_logits.py).

No server that runs here returns per-position top-k log-probabilities: `transformers serve` refuses the
`prompt_logprobs` field and token-id prompts, and vLLM and SGLang need a GPU. So the answers of vLLM's OpenAI
server (`prompt_logprobs`: one {token id: {"logprob", "rank", "decoded_token"}} a prompt position, the top k and
the prompt's own token) are computed here from a real tiny teacher's forward passes, as vLLM computes them, and
go through JSON: the cache they fill must hold what the local teacher's cache holds, and `distill_cached` trains
a student from it with the recipe's teacher on a server that is never reached (the cache is complete). The
refusals of a server that cannot feed the cache are shown against a real `transformers serve`."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from conftest import label_examples
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe, TeacherConfig
from kdagent.recipe_io import check_names
from kdagent.update import logit_cache
from kdagent.update.remote_logits import (
    PromptScorer,
    RemoteLogitsError,
    build_remote_cache,
    check_server_tokenizer,
    remote_chunk,
    remote_teacher_hash,
    top_rows,
)
from kdagent.update.updater import UpdateJob, options_for

K = 8
SERVED = "teacher-7b"  # the served model's name: it keys the cache in place of the weights' hash


@pytest.fixture(scope="module")
def sequences(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return logit_cache.tokenize_examples(tokenizer, [(e.prompt, e.completion) for e in label_examples()], max_length=64)


def vllm_prompt_logprobs(model, tokenizer, ids: list[int], k: int) -> list:
    """What vLLM's completions API returns as `prompt_logprobs` for a token-id prompt with `prompt_logprobs: k`:
    None at the first token, then at each token the k most likely ids (ranks 1..k) and the token itself."""
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), dim=-1)
    out = [None]
    for p in range(1, len(ids)):
        row = logp[p - 1]
        values, top = row.topk(k)
        entry = {
            str(int(t)): {"logprob": float(v), "rank": r + 1, "decoded_token": tokenizer.decode([int(t)])}
            for r, (v, t) in enumerate(zip(values, top))
        }
        own = ids[p]
        entry.setdefault(
            str(own),
            {
                "logprob": float(row[own]),
                "rank": int((row > row[own]).sum()) + 1,
                "decoded_token": tokenizer.decode([own]),
            },
        )
        out.append(entry)
    return json.loads(json.dumps(out))  # as it crosses the wire: string keys


@pytest.fixture(scope="module")
def served_answers(peaked_teacher_dir, sequences):
    model = AutoModelForCausalLM.from_pretrained(peaked_teacher_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(peaked_teacher_dir)
    return {tuple(ids): vllm_prompt_logprobs(model, tokenizer, ids, K) for ids, _ in sequences}


def test_served_log_probs_fill_the_cache_the_local_teacher_would(
    peaked_teacher_dir, tiny_model_dir, sequences, served_answers, tmp_path
):
    from contextlib import contextmanager

    vocab = len(AutoTokenizer.from_pretrained(tiny_model_dir))
    asked = []

    @contextmanager
    def served():
        def score(ids, k):
            asked.append(k)
            return served_answers[tuple(ids)]

        yield lambda part: remote_chunk(score, part, K, vocab, workers=4)

    remote = logit_cache.fill_cache(tmp_path / "remote", sequences, K, 3, f"openai:{SERVED}", served)
    local = logit_cache.build_cache(peaked_teacher_dir, tiny_model_dir, sequences, K, tmp_path / "local", chunk_size=3)
    assert (remote.built, len(remote), set(asked), len(asked)) == (3, len(sequences), {K}, len(sequences))
    assert remote.manifest()["teacher"] == f"openai:{SERVED}"
    assert remote.manifest()["completion_tokens"] == local.manifest()["completion_tokens"]
    for i in range(len(sequences)):
        r, c = remote.sequence(i), local.sequence(i)
        assert np.array_equal(r["input_ids"], c["input_ids"]) and r["start"] == c["start"]
        assert np.array_equal(r["topk_ids"], c["topk_ids"])  # the teacher's own top-k, in its order
        assert np.allclose(r["topk_logp"], c["topk_logp"], atol=2e-3) and np.allclose(r["tail"], c["tail"], atol=2e-3)
        assert (r["tail"] > 0.01).all()  # k = 8 of a 49k vocabulary leaves mass outside
    assert logit_cache.fill_cache(
        tmp_path / "remote", sequences, K, 3, f"openai:{SERVED}", None
    ).hit  # complete: no server asked


def test_top_rows_keeps_the_top_k_and_refuses_what_cannot_feed_the_cache(sequences, served_answers):
    ids, start = sequences[0]
    answer = served_answers[tuple(ids)]
    top_ids, top_logp, tails = top_rows(answer, ids, start, K, vocab=49152)
    assert len(top_ids) == len(ids) - start and all(len(row) == K for row in top_ids)
    assert all(
        a >= b for row in top_logp for a, b in zip(row, row[1:])
    )  # the prompt's own token, ranked below k, is left out
    assert all(0 < t < 1 for t in tails)
    fewer = top_rows(answer, ids, start, K - 2, vocab=49152)
    assert fewer[0] == [row[: K - 2] for row in top_ids]
    with pytest.raises(RemoteLogitsError, match=f"fewer than top_k {K + 4}.*--max-logprobs"):
        top_rows(answer, ids, start, K + 4, vocab=49152)
    with pytest.raises(RemoteLogitsError, match="for 3 positions, not the"):
        top_rows(answer[:3], ids, start, K, vocab=49152)
    with pytest.raises(RemoteLogitsError, match="outside the student's vocabulary"):
        top_rows(answer, ids, start, K, vocab=10)


def test_distill_cached_trains_from_a_served_teachers_cache_without_the_teacher(
    tiny_model_dir, sequences, served_answers, tmp_path
):
    """The recipe's teacher is a pool of two servers that are never reached: the cache of what they serve is
    complete, keyed by the served model's name, the student's tokenizer, the data and k."""
    from contextlib import contextmanager

    root = tmp_path / "cache"
    key = logit_cache.cache_key(
        remote_teacher_hash(SERVED), logit_cache.tokenizer_hash(tiny_model_dir), logit_cache.data_hash(sequences), K
    )

    @contextmanager
    def served():
        yield lambda part: remote_chunk(lambda ids, k: served_answers[tuple(ids)], part, K, 49152, workers=2)

    logit_cache.fill_cache(root / key, sequences, K, 4, f"openai:{SERVED}", served)
    recipe = Recipe.model_validate(
        {
            "name": "remote",
            "student": {"model": str(tiny_model_dir), "max_length": 64},
            "teacher": {
                "kind": "openai",
                "model": SERVED,
                "base_url": ["http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"],
            },
            "update": {
                "method": "distill_cached",
                "epochs": 4,
                "batch_size": 4,
                "learning_rate": 3e-3,
                "warmup_ratio": 0.0,
                "options": {"distill_cached": {"top_k": K, "cache_dir": str(root), "chunk_size": 4}},
            },
        }
    )
    plugins = build_plugins(load_entry_points=False)
    check_names(recipe, plugins)  # a served teacher passes the updater's check
    updater = plugins.updaters["distill_cached"].obj
    updater.check_models(recipe, options_for(recipe.update, "distill_cached", updater), tiny_model_dir, plugins)
    report = updater.train(
        UpdateJob(
            recipe,
            options_for(recipe.update, "distill_cached", updater),
            tiny_model_dir,
            tmp_path / "student",
            seed=0,
            examples=label_examples(),
        )
    )
    assert report["cache"]["hit"] is True and report["cache"]["path"] == str(root / key)
    assert report["steps"] == 8 and report["losses"][-1] < report["losses"][0]
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "student").config.num_hidden_layers == 2


def test_a_teacher_without_endpoints_or_weights_is_refused(tiny_model_dir):
    from kdagent.errors import UserError

    plugins = build_plugins(load_entry_points=False)
    recipe = Recipe.model_validate(
        {
            "name": "d",
            "student": {"model": str(tiny_model_dir)},
            "teacher": {"kind": "langchain", "model": "any"},  # a chat model: no local weights, no endpoints
            "update": {"method": "distill_cached"},
        }
    )
    updater = plugins.updaters["distill_cached"].obj
    with pytest.raises(UserError, match="or one served at OpenAI-compatible endpoints that return prompt_logprobs"):
        updater.check(recipe, options_for(recipe.update, "distill_cached", updater), plugins)


def test_transformers_serve_cannot_feed_the_cache_and_is_refused_in_one_line(openai_server, tmp_path):
    """A real `transformers serve`: it answers the `prompt_logprobs` request with a 4xx and has no /tokenize."""
    url, model = openai_server
    tokenizer = AutoTokenizer.from_pretrained(model)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}], tokenize=False
    )
    ids = tokenizer(text, add_special_tokens=False).input_ids
    with pytest.raises(RemoteLogitsError, match=r"refused a prompt_logprobs request \(HTTP 4\d\d") as refused:
        PromptScorer(f"{url}/v1", model, "EMPTY", 60.0).invoke(ids, K)
    assert "\n" not in str(refused.value)
    with pytest.raises(RemoteLogitsError, match="has no /tokenize"):
        check_server_tokenizer(f"{url}/v1", model, "EMPTY", text, ids, 30.0)
    config = TeacherConfig(kind="openai", model=model, base_url=f"{url}/v1")
    start = len(
        tokenizer(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False
            ),
            add_special_tokens=False,
        ).input_ids
    )
    with pytest.raises(RemoteLogitsError):
        build_remote_cache(config, model, [(ids, start)], (text, ids), K, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob(logit_cache.MANIFEST))


def test_a_rank_that_is_not_the_builder_waits_for_its_cache(sequences, served_answers, tmp_path):
    """Under `accelerate launch` rank 0 fills the cache and the other ranks wait for it: one teacher's work, not
    one a rank."""
    import threading
    from contextlib import contextmanager

    @contextmanager
    def served():
        yield lambda part: remote_chunk(lambda ids, k: served_answers[tuple(ids)], part, K, 49152, workers=2)

    @contextmanager
    def never():
        raise AssertionError("a waiting rank asked the teacher")
        yield

    found = {}
    waiter = threading.Thread(
        target=lambda: found.update(
            cache=logit_cache.fill_cache(tmp_path / "c", sequences, K, 4, "openai:t", never, builder=False, poll_s=0.05)
        )
    )
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive() and not (tmp_path / "c" / logit_cache.MANIFEST).exists()
    built = logit_cache.fill_cache(tmp_path / "c", sequences, K, 4, "openai:t", served)
    waiter.join(timeout=10)
    assert not waiter.is_alive() and built.built == 2 and found["cache"].hit
    assert np.array_equal(found["cache"].sequence(7)["topk_ids"], built.sequence(7)["topk_ids"])


def test_no_reachable_server_is_refused_before_any_chunk(tiny_model_dir, sequences, tmp_path):
    from conftest import free_port

    urls = [f"http://127.0.0.1:{free_port()}/v1", f"http://127.0.0.1:{free_port()}/v1"]  # nothing listens there
    assert check_server_tokenizer(urls[0], SERVED, "EMPTY", "text", [1], 2.0) is False
    config = TeacherConfig(kind="openai", model=SERVED, base_url=urls, timeout_s=2.0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = tokenizer.decode(sequences[0][0])
    with pytest.raises(RemoteLogitsError, match="no teacher endpoint of 2 could be reached"):
        build_remote_cache(config, tiny_model_dir, sequences, (text, sequences[0][0]), K, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("chunk-*"))
