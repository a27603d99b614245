"""The offline teacher-logit cache (kdagent/update/logit_cache.py) with a tiny config-built teacher and the real
SmolLM2 tokenizer: build, reuse, resume from the chunks a killed build left, and what it stores is the teacher's."""

import shutil

import pytest
import torch

from kdagent.update import logit_cache

K = 8


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_llama):
    model, tokenizer = tiny_llama(num_hidden_layers=3)
    with torch.no_grad():  # a peakier distribution than the tiny init's near-uniform one, so top-k means something
        model.lm_head.weight.mul_(8)
    out = tmp_path_factory.mktemp("teacher")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def sequences(teacher_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    words = [
        "profit rose",
        "the company lost its biggest client",
        "sales were flat",
        "shares fell sharply after the report",
    ]
    examples = [
        (
            [{"role": "user", "content": f"Sentiment of: {words[i % 4]} (item {i})"}],
            [{"role": "assistant", "content": ["positive", "negative", "neutral"][i % 3] * (1 + i % 2)}],
        )
        for i in range(10)
    ]
    return logit_cache.tokenize_examples(tokenizer, examples, max_length=256)


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_build_then_reuse_then_resume_to_identical_bytes(teacher_dir, sequences, tmp_path):
    root = tmp_path / "cache"
    cache = logit_cache.build_cache(teacher_dir, teacher_dir, sequences, K, root, chunk_size=4, batch_size=3)
    assert (cache.hit, cache.built, len(cache)) == (False, 3, 10)
    manifest = cache.manifest()
    assert manifest["completion_tokens"] == sum(len(ids) - start for ids, start in sequences)
    # 8 uint16 ids + 8 fp16 log-probs + an fp16 tail = 34 bytes a completion token, plus the token ids and headers
    assert 34 <= cache.bytes_per_token < 34 + 200

    again = logit_cache.build_cache(teacher_dir, teacher_dir, sequences, K, root, chunk_size=4, batch_size=3)
    assert (again.hit, again.built, again.path) == (True, 0, cache.path)
    other_k = logit_cache.build_cache(teacher_dir, teacher_dir, sequences, 4, root, chunk_size=4, batch_size=3)
    assert other_k.path != cache.path and not other_k.hit

    # what a build killed during its third chunk leaves: two whole chunks, a half-written temporary file, no manifest
    whole = _files(cache.path)
    partial = tmp_path / "partial"
    shutil.copytree(cache.path, partial / cache.path.name)
    (partial / cache.path.name / logit_cache.MANIFEST).unlink()
    (partial / cache.path.name / logit_cache.chunk_name(2)).unlink()
    (partial / cache.path.name / f".{logit_cache.chunk_name(2)}.tmp-999").write_bytes(b"\0" * 100)
    shutil.copy(root / "model-hashes.json", partial / "model-hashes.json")
    resumed = logit_cache.build_cache(teacher_dir, teacher_dir, sequences, K, partial, chunk_size=4, batch_size=3)
    assert (resumed.hit, resumed.built) == (False, 1)
    assert _files(resumed.path) == whole  # byte-identical, and the temporary file is gone


def test_stored_topk_is_the_teachers(teacher_dir, sequences, tmp_path):
    from transformers import AutoModelForCausalLM

    cache = logit_cache.build_cache(teacher_dir, teacher_dir, sequences, K, tmp_path, chunk_size=4, batch_size=3)
    model = AutoModelForCausalLM.from_pretrained(teacher_dir, dtype=torch.float32).eval()
    agree = total = 0
    for i, (ids, start) in enumerate(sequences):
        row = cache.sequence(i)
        assert row["input_ids"].tolist() == ids and row["start"] == start
        with torch.no_grad():  # unpadded, one sequence at a time: the direct computation
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)[start - 1 : len(ids) - 1]
        stored_ids = torch.from_numpy(row["topk_ids"])
        assert stored_ids.shape == (len(ids) - start, K)
        real_values, real_ids = logp.topk(K, dim=-1)
        torch.testing.assert_close(
            torch.from_numpy(row["topk_logp"]), logp.gather(-1, stored_ids), atol=1e-2, rtol=1e-3
        )
        torch.testing.assert_close(torch.from_numpy(row["tail"]), 1 - real_values.exp().sum(-1), atol=2e-3, rtol=1e-2)
        for a, b in zip(stored_ids.tolist(), real_ids.tolist()):
            agree += len(set(a) & set(b))
            total += K
    assert agree / total > 0.98  # near-ties may swap at the k-th place between padded and unpadded passes
