"""kdagent's decode loop (kdagent/generation/decode.py) against plain `model.generate` (Engine backend "hf")."""

import pytest
import torch

PROMPTS = [[{"role": "user", "content": "hi " * k}] for k in (1, 7, 3, 12, 5)]


@pytest.fixture(scope="module")
def tiny(tiny_llama):
    """The tiny llama of conftest, initialised wide enough that greedy decoding does not repeat one token."""
    model, tokenizer = tiny_llama(initializer_range=0.3)
    return model.eval(), tokenizer


def engines(model, tokenizer):
    from kdagent.generation.engine import Engine

    return Engine.from_model(model, tokenizer), Engine.from_model(model, tokenizer, backend="hf")


def test_greedy_equals_model_generate_with_padding_and_callers_order(tiny):
    ours, plain = engines(*tiny)
    got = ours.generate_tokens(PROMPTS, max_new_tokens=12, batch_size=3)
    assert got == plain.generate_tokens(PROMPTS, max_new_tokens=12, batch_size=3)
    assert all(len(row) == 1 and len(row[0]) == 12 for row in got)
    assert len({tuple(row[0]) for row in got}) == len(PROMPTS)
    for prompt, row in zip(PROMPTS, got):  # a left-padded prompt decodes as it does alone
        assert ours.generate_tokens([prompt], max_new_tokens=12) == [row]
    assert ours.generate(PROMPTS, max_new_tokens=12, batch_size=3) == plain.generate(PROMPTS, max_new_tokens=12, batch_size=3)


def test_finished_rows_leave_the_batch_and_the_rest_is_unchanged(tiny):
    model, tokenizer = tiny
    ours, _ = engines(model, tokenizer)
    full = ours.generate_tokens(PROMPTS, max_new_tokens=12, batch_size=3)
    # End the longest prompt's reply at its 4th token: the row leaves the batch early, and the one left
    # with it (shorter, so padded) has its padding cut from the cache.
    eos = full[3][0][3]
    old = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = eos
    try:
        ours, plain = engines(model, tokenizer)
        got = ours.generate_tokens(PROMPTS, max_new_tokens=12, batch_size=3)
        assert got == plain.generate_tokens(PROMPTS, max_new_tokens=12, batch_size=3)
    finally:
        model.generation_config.eos_token_id = old
    assert got[3][0] == full[3][0][:4]
    for before, after in zip(full, got):  # each reply is the old one up to its first `eos`
        cut = before[0].index(eos) + 1 if eos in before[0] else len(before[0])
        assert after[0] == before[0][:cut]


def test_dropping_rows_compacts_the_cache_in_place_as_indexing_would():
    """RoomLayer.batch_select_indices moves the kept rows to the front by block copies (`_moves`): the same
    keys and values as gathering them, for holes at the front, in runs, at the end, and none."""
    import random

    from kdagent.generation.decode import RoomLayer, _moves

    rng = random.Random(0)
    cases = [[1, 2, 3], [0, 1, 2, 3], [0, 2, 3, 4, 5, 9, 10, 11], [5], [0, 1, 7]]
    cases += [sorted(rng.sample(range(12), rng.randint(1, 12))) for _ in range(40)]
    for keep in cases:
        for dst, src, rows in _moves(keep):  # no copy reads what it writes
            assert src >= dst + rows
        layer = RoomLayer()
        layer.capacity = 9
        keys, values = torch.randn(12, 2, 5, 4), torch.randn(12, 2, 5, 4)
        layer.update(keys, values)
        layer.batch_select_indices(torch.tensor(keep))
        assert torch.equal(layer.keys, keys[keep]) and torch.equal(layer.values, values[keep]), keep
        step = torch.randn(len(keep), 2, 1, 4)  # and the next step writes after the kept positions
        k, _ = layer.update(step, step)
        assert torch.equal(k, torch.cat([keys[keep], step], dim=2))


def test_greedy_with_n_repeats_the_one_reply(tiny):
    ours, _ = engines(*tiny)
    got = ours.generate_tokens(PROMPTS[:2], n=3, max_new_tokens=6)
    assert all(len(row) == 3 and row[0] == row[1] == row[2] for row in got)


def test_stop_strings_end_a_reply_and_are_kept(tiny):
    from kdagent.generation.engine import _cut

    ours, _ = engines(*tiny)
    model, tokenizer = tiny
    (full,), = ours.generate_tokens(PROMPTS[:1], max_new_tokens=12)
    text = tokenizer.decode(full, skip_special_tokens=True)
    stop = tokenizer.decode(full[5:6])  # a token in the middle of the reply
    assert stop.strip() and text.index(stop) > 0
    (short,), = ours.generate_tokens(PROMPTS[:1], max_new_tokens=12, stop=[stop])
    assert len(short) < len(full) and full[: len(short)] == short
    (reply,), = ours.generate(PROMPTS[:1], max_new_tokens=12, stop=[stop])
    assert reply == _cut(text, [stop]).strip() and reply.endswith(stop.strip())


def test_sampling_is_seeded_per_batch(tiny):
    ours, _ = engines(*tiny)
    kwargs = dict(n=4, temperature=0.8, top_p=0.9, max_new_tokens=8, batch_size=3)
    first = ours.generate_tokens(PROMPTS, seed=1, **kwargs)
    assert first == ours.generate_tokens(PROMPTS, seed=1, **kwargs)
    assert first != ours.generate_tokens(PROMPTS, seed=2, **kwargs)
    assert all(len(row) == 4 and len({tuple(s) for s in row}) > 1 for row in first)
    # A batch's outputs depend on its own prompts and seed only: the first batch (the three shortest
    # prompts) samples the same with the other prompts gone.
    shortest = [0, 2, 4]
    alone = ours.generate_tokens([PROMPTS[i] for i in shortest], seed=1, **kwargs)
    assert alone == [first[i] for i in shortest]


def test_nucleus_keeps_what_transformers_top_p_keeps():
    from transformers.generation.logits_process import TopPLogitsWarper

    from kdagent.generation.decode import TOP_CANDIDATES, _nucleus, pick_tokens

    torch.manual_seed(0)
    vocab = 1000
    logits = torch.randn(6, vocab) * torch.tensor([8.0, 4.0, 2.0, 1.0, 0.1, 0.05])[:, None]  # peaked to flat
    probs = torch.softmax(logits, dim=-1)
    for top_p in (0.5, 0.9, 0.95):
        values, ids = _nucleus(probs, top_p)
        ours = [set(ids[r][values[r] > 0].tolist()) for r in range(len(probs))]
        theirs = TopPLogitsWarper(top_p)(None, logits.clone())
        assert ours == [set(torch.nonzero(theirs[r] > -float("inf")).flatten().tolist()) for r in range(len(probs))]
        assert max(len(s) for s in ours) > TOP_CANDIDATES  # the flat rows took the full sort
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([pick_tokens(logits, 1.0, 0.5, generator) for _ in range(50)])
    values, ids = _nucleus(probs, 0.5)
    for r in range(len(probs)):
        assert set(draws[:, r].tolist()) <= set(ids[r][values[r] > 0].tolist())
    assert pick_tokens(logits, 0.0, 0.5, None).tolist() == logits.argmax(-1).tolist()


def test_an_unknown_backend_is_refused(tiny):
    from kdagent.generation.engine import Engine

    with pytest.raises(ValueError, match="unknown generation backend 'vllm'"):
        Engine.from_model(*tiny, backend="vllm")


@pytest.mark.integration
def test_greedy_equals_model_generate_on_smollm2(smollm_path):
    from kdagent.generation.engine import Engine
    from kdagent.plugins import build_plugins

    plugins = build_plugins(load_entry_points=False)
    skill = plugins.create("skills", "cot")
    prompts = [skill.messages(t) for t in plugins.create("domains", "arithmetic").seed_tasks(5, 0)]
    prompts.append([{"role": "user", "content": "Write one sentence about the sea."}])  # a shorter prompt: padding
    ours = Engine(smollm_path, device="cpu")
    plain = Engine.from_model(ours.model, ours.tokenizer, backend="hf")
    got = ours.generate_tokens(prompts, max_new_tokens=32, batch_size=6)
    assert got == plain.generate_tokens(prompts, max_new_tokens=32, batch_size=6)
    assert all(len(row[0]) > 8 for row in got)
    ours.close()


def test_stop_check_reads_only_the_reply_tail_and_finds_a_late_stop_string(tiny):
    """The stop check decodes a window of the newest tokens, not the whole reply: checked after each token
    as decode does, it first fires at the same token as a check of the whole text would."""
    _, tokenizer = tiny
    from kdagent.generation.engine import Engine

    text = "word " * 300 + "The answer is 42.\nObservation: done " + "tail " * 20
    ids = tokenizer(text, add_special_tokens=False).input_ids
    for stop in (["Observation:"], ["42.\n", "never there"], ["answer is 42"]):
        check = Engine.from_model(tiny[0], tokenizer)._stopped(stop)
        first = next(k for k in range(1, len(ids) + 1) if check(ids[:k]))
        whole = next(k for k in range(1, len(ids) + 1) if any(s in tokenizer.decode(ids[:k]) for s in stop))
        assert first == whole > 300


def test_teacher_dtype_loads_the_sampling_weights_in_it(tiny_model_dir):
    """`teacher.dtype` (recipe): the self/hf teacher's engine holds its weights in that dtype and samples."""
    from kdagent.recipe import TeacherConfig
    from kdagent.teachers.hf import HFTeacher

    for dtype, expected in (("auto", torch.float32), ("bfloat16", torch.bfloat16)):
        teacher = HFTeacher(tiny_model_dir, TeacherConfig(kind="hf", samples=2, max_new_tokens=6, dtype=dtype), label="t")
        try:
            assert teacher.engine.model.dtype == expected
            replies = teacher.generate(PROMPTS[:2], seed=0)
            assert [len(r) for r in replies] == [2, 2]
        finally:
            teacher.close()


def test_a_conversation_ending_with_an_assistant_message_is_continued(tiny):
    """A prefilled reply: the prompt ends inside the assistant turn, with no new turn opened after it."""
    from kdagent.generation.engine import Engine

    engine = Engine.from_model(*tiny)
    text = engine.render([{"role": "user", "content": "Grade this."}, {"role": "assistant", "content": '{"score":'}])
    assert text.endswith('<|im_start|>assistant\n{"score":')
    assert engine.render([{"role": "user", "content": "Grade this."}]).endswith("<|im_start|>assistant\n")
