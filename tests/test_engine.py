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
    assert ours.generate(PROMPTS, max_new_tokens=12, batch_size=3) == plain.generate(
        PROMPTS, max_new_tokens=12, batch_size=3
    )


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
    """RoomLayer.batch_select_indices moves the kept rows by block copies (`_moves`), for the kept rows in order
    and for decode's order (`fill_holes`: rows past the new end fill the dropped ones' places), and gathers for
    any other order: the same keys and values as indexing, for holes at the front, in runs, at the end, and
    none."""
    import random

    from kdagent.generation.cache import RoomLayer, _moves, fill_holes

    rng = random.Random(0)
    cases = [[1, 2, 3], [0, 1, 2, 3], [0, 2, 3, 4, 5, 9, 10, 11], [5], [0, 1, 7]]
    cases += [sorted(rng.sample(range(12), rng.randint(1, 12))) for _ in range(40)]
    assert fill_holes([0, 2, 3, 4, 5, 9, 10, 11]) == [0, 9, 2, 3, 4, 5, 10, 11]
    moved = 0
    for keep in cases:
        for order in (keep, fill_holes(keep), rng.sample(keep, len(keep))):
            moves = _moves(order)
            if order != sorted(order) and order != fill_holes(keep):
                assert moves is None or all(row == i or row >= len(order) for i, row in enumerate(order))
            written = set()
            for dst, src, rows in moves or []:  # no copy reads what it or an earlier one wrote
                assert not written & set(range(src, src + rows)) and src >= dst + rows
                written |= set(range(dst, dst + rows))
            if order == fill_holes(keep):
                assert sum(rows for _, _, rows in moves) == sum(row != i for i, row in enumerate(order))
                moved += len(written)
            layer = RoomLayer()
            layer.capacity = 9
            keys, values = torch.randn(12, 2, 5, 4), torch.randn(12, 2, 5, 4)
            layer.update(keys, values)
            layer.batch_select_indices(torch.tensor(order))
            assert torch.equal(layer.keys, keys[order]) and torch.equal(layer.values, values[order]), order
            step = torch.randn(len(order), 2, 1, 4)  # and the next step writes after the kept positions
            k, _ = layer.update(step, step)
            assert torch.equal(k, torch.cat([keys[order], step], dim=2))
    assert moved < sum(len(keep) - next((i for i, row in enumerate(keep) if row != i), len(keep)) for keep in cases)


def test_greedy_with_n_repeats_the_one_reply(tiny):
    ours, _ = engines(*tiny)
    got = ours.generate_tokens(PROMPTS[:2], n=3, max_new_tokens=6)
    assert all(len(row) == 3 and row[0] == row[1] == row[2] for row in got)


def test_stop_strings_end_a_reply_and_are_kept(tiny):
    from kdagent.generation.engine import _cut

    ours, _ = engines(*tiny)
    model, tokenizer = tiny
    ((full,),) = ours.generate_tokens(PROMPTS[:1], max_new_tokens=12)
    text = tokenizer.decode(full, skip_special_tokens=True)
    stop = tokenizer.decode(full[5:6])  # a token in the middle of the reply
    assert stop.strip() and text.index(stop) > 0
    ((short,),) = ours.generate_tokens(PROMPTS[:1], max_new_tokens=12, stop=[stop])
    assert len(short) < len(full) and full[: len(short)] == short
    ((reply,),) = ours.generate(PROMPTS[:1], max_new_tokens=12, stop=[stop])
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


def test_samples_share_their_prompt_in_attention_and_sample_as_with_a_repeated_cache(tiny, monkeypatch):
    """Sampling reads each prompt's keys and values once for its n samples (SharedPrefix): the same draws as
    decoding on the prompt repeated n times in the cache, with rows finishing early and whole prompts
    leaving the batch, and the model back on its own attention afterwards."""
    from transformers import AttentionInterface

    from kdagent.generation import decode as decoding

    model, tokenizer = tiny
    ours, _ = engines(model, tokenizer)
    ids = [tokenizer(ours.render(m), add_special_tokens=False).input_ids for m in PROMPTS]
    calls = []
    real = decoding._shared_prefix_attention

    def spy(module, query, key, value, *args, shared_prefix=None, **kwargs):
        calls.append((len(shared_prefix.prompts), query.shape[0], query.shape[0] < len(shared_prefix.prompts) * 4))
        return real(module, query, key, value, *args, shared_prefix=shared_prefix, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, decoding.SHARED_PREFIX, spy)

    def sample(eos_ids, stopped=None):
        return decoding.decode(
            model,
            ids,
            n=4,
            temperature=0.8,
            top_p=0.9,
            max_new_tokens=10,
            eos_ids=eos_ids,
            pad_id=tokenizer.pad_token_id,
            generator=torch.Generator().manual_seed(3),
            stopped=stopped,
        )

    full = sample(set())
    assert calls and all(c == (len(PROMPTS), len(PROMPTS) * 4, False) for c in calls)
    assert model.config._attn_implementation == "sdpa"
    # every sample of the first prompt ends at its first token (drawn before any row leaves), and a row whose
    # first token is even ends at its third
    eos = {s[0] for s in full[0]}

    def stopped(tokens):
        return len(tokens) >= 3 and tokens[0] % 2 == 0

    calls.clear()
    shared = sample(eos, stopped)
    assert all(len(s) == 1 for s in shared[0]) and any(len(s) == 3 for row in shared for s in row)
    assert any(gaps for _, _, gaps in calls) and max(p for p, _, _ in calls) == len(PROMPTS) - 1
    monkeypatch.setattr(decoding, "_shares_prefix", lambda model, cache: False)
    calls.clear()
    assert shared == sample(eos, stopped) and not calls


def test_shared_prefix_attention_equals_sdpa_over_the_whole_sequence(tiny):
    """The prompts' part and the samples' own part, joined by their log-sum-exps, give sdpa's attention over
    prompt + own tokens (with padding), for every running row, also after rows left and in any order; the
    fallback (for attention it does not compute, here a sliding window kwarg) gives the same."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from kdagent.generation.decode import SharedPrefix, _shared_prefix_attention

    model, _ = tiny
    module = model.model.layers[1].self_attn
    torch.manual_seed(0)
    prompts, copies, width, own, heads, kv_heads, dim = 3, 4, 9, 5, 4, 2, 16
    mask = torch.ones(prompts, width, dtype=torch.long)
    mask[0, :3] = 0  # left padding
    mask[2, :1] = 0

    class Cache:
        layers = [
            type(
                "Layer",
                (),
                {
                    "keys": torch.randn(prompts, kv_heads, width, dim),
                    "values": torch.randn(prompts, kv_heads, width, dim),
                },
            )()
            for _ in range(2)
        ]

    prefix = SharedPrefix(Cache, mask, copies)
    # all rows; some finished (prompt 1's all), in order and in the order `fill_holes` leaves; two of one prompt
    for rows in (list(range(prompts * copies)), [0, 2, 3, 9, 10, 11], [11, 0, 9, 2, 10, 3], [8, 11]):
        if len(rows) < prompts * copies:
            prefix.keep(rows)
        query = torch.randn(len(rows), heads, 1, dim)
        key, value = torch.randn(len(rows), kv_heads, own, dim), torch.randn(len(rows), kv_heads, own, dim)
        got, _ = _shared_prefix_attention(module, query, key, value, None, scaling=0.25, shared_prefix=prefix)
        fallback, _ = _shared_prefix_attention(
            module, query, key, value, None, scaling=0.25, shared_prefix=prefix, sliding_window=4096
        )
        source = torch.tensor(rows) // copies
        keys = torch.cat([Cache.layers[1].keys[source], key], 2)
        values = torch.cat([Cache.layers[1].values[source], value], 2)
        allowed = torch.cat([mask[source].bool(), torch.ones(len(rows), own, dtype=torch.bool)], 1)[:, None, None, :]
        expected, _ = sdpa_attention_forward(module, query, keys, values, allowed, scaling=0.25)
        assert got.shape == expected.shape == (len(rows), 1, heads, dim)
        assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(fallback, expected, atol=1e-6)


def test_nucleus_keeps_what_transformers_top_p_keeps():
    from transformers.generation.logits_process import TopPLogitsWarper

    from kdagent.generation.decode import TOP_CANDIDATES, _nucleus, pick_tokens

    torch.manual_seed(0)
    vocab = 49152
    logits = torch.randn(6, vocab) * torch.tensor([20.0, 12.0, 8.0, 4.0, 0.1, 0.05])[:, None]  # peaked to flat
    probs = torch.softmax(logits, dim=-1)
    for top_p in (0.5, 0.9, 0.95):
        values, ids = _nucleus(logits.clone(), 1.0, top_p)
        kept = values > 0  # the candidates' probabilities are the softmax's, and the temperature divides
        assert torch.allclose(values[kept], probs.gather(-1, ids)[kept], rtol=1e-5, atol=1e-9)
        hot_values, hot_ids = _nucleus(logits * 2, 2.0, top_p)
        assert torch.equal(hot_ids[kept], ids[kept]) and torch.allclose(hot_values, values, rtol=1e-5, atol=1e-9)
        ours = [set(ids[r][values[r] > 0].tolist()) for r in range(len(probs))]
        theirs = TopPLogitsWarper(top_p)(None, logits.clone())
        assert ours == [set(torch.nonzero(theirs[r] > -float("inf")).flatten().tolist()) for r in range(len(probs))]
        assert max(len(s) for s in ours) > TOP_CANDIDATES  # the flat rows took the full sort
        assert min(len(s) for s in ours) < TOP_CANDIDATES  # and the peaked ones did not
    generator = torch.Generator().manual_seed(0)
    before = logits.clone()
    draws = torch.stack([pick_tokens(logits, 1.0, 0.5, generator) for _ in range(50)])
    assert torch.equal(logits, before)  # not overwritten unless asked
    values, ids = _nucleus(logits.clone(), 1.0, 0.5)
    for r in range(len(probs)):
        assert set(draws[:, r].tolist()) <= set(ids[r][values[r] > 0].tolist())
    assert pick_tokens(logits, 0.0, 0.5, None).tolist() == logits.argmax(-1).tolist()


def test_sliced_head_gives_the_same_logits_bit_for_bit(tiny):
    """The output projection in slices (`_sliced_head`, on while decoding on the CPU) writes each slice's
    logits in place: the same bits as the model's own head, and the head restored after; a head with a bias
    is left as it is."""
    from kdagent.generation.decode import _sliced_head

    model, _ = tiny
    head = model.get_output_embeddings()
    torch.manual_seed(0)
    with torch.inference_mode():  # as decode runs it
        for hidden in (torch.randn(3, 64), torch.randn(5, 1, 64), torch.randn(2, 7, 64)):
            expected = head(hidden)
            with _sliced_head(model):
                assert "forward" in vars(head)
                got = head(hidden)
            assert torch.equal(got, expected) and "forward" not in vars(head)
        head.bias = torch.nn.Parameter(torch.zeros(head.out_features))
        try:
            with _sliced_head(model):
                assert "forward" not in vars(head)
        finally:
            head.bias = None


def test_top_k_by_blocks_equals_topk():
    from kdagent.generation.decode import _top_k

    torch.manual_seed(0)
    for width, scale in ((49152, 3.0), (49152, 30.0), (1000, 1.0), (4096 + 1, 1.0)):  # blocks, and plain topk
        x = torch.randn(7, width) * scale
        x[0, :64] = 50.0  # one block holds the top 64, tied
        for k in (1, 16, 64):
            values, ids = _top_k(x, k)
            expected = x.topk(k, dim=-1)
            assert torch.equal(values, expected.values)
            assert torch.equal(x.gather(-1, ids), values) and all(len(set(r.tolist())) == k for r in ids)


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
        teacher = HFTeacher(
            tiny_model_dir, TeacherConfig(kind="hf", samples=2, max_new_tokens=6, dtype=dtype), label="t"
        )
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


def test_sampling_lays_weights_out_column_major_and_restores_them(tiny, monkeypatch):
    """`column_major` stores the float32 linear weights transposed, the same values in the same parameters,
    and lays them out row-major again on exit, also after an error; the output projection and a nested
    `column_major` leave theirs alone. The engine uses it when it samples on one CPU thread, once per call: the
    same draws as the decode loop under the plain layout, and the weights left as they were; on more threads,
    or greedy, it is not used."""
    import contextlib

    from kdagent.generation import decode as decoding
    from kdagent.generation.engine import _batch_seed

    model, tokenizer = tiny
    head = model.get_output_embeddings()
    linears = [m for m in model.modules() if type(m) is torch.nn.Linear and m is not head]
    before = {name: (p, p.detach().clone()) for name, p in model.named_parameters()}
    with decoding.column_major(model):
        assert all(m.weight.stride() == (1, m.weight.shape[0]) for m in linears)
        assert head.weight.is_contiguous()
        with decoding.column_major(model):  # nested: nothing more to move, nothing restored early
            pass
        assert all(not m.weight.is_contiguous() for m in linears)
        for name, p in model.named_parameters():
            assert p is before[name][0] and torch.equal(p, before[name][1])
    assert all(p.is_contiguous() and torch.equal(p, before[n][1]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError, match="boom"):
        with decoding.column_major(model):
            raise RuntimeError("boom")
    assert all(p.is_contiguous() for p in model.parameters())

    entered = []
    real = decoding.column_major

    @contextlib.contextmanager
    def spy(m):  # records whether this entry lays the weights out (a nested one finds them laid out)
        entered.append(all(x.weight.is_contiguous() for x in linears))
        with real(m):
            assert all(not x.weight.is_contiguous() for x in linears)
            yield

    monkeypatch.setattr(decoding, "column_major", spy)
    ours, _ = engines(model, tokenizer)
    prompts = [PROMPTS[i] for i in (0, 2, 4)]  # shortest first: one batch, in the engine's order
    ids = [tokenizer(ours.render(m), add_special_tokens=False).input_ids for m in prompts]
    kwargs = dict(n=4, temperature=0.8, top_p=0.9, max_new_tokens=8)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        got = ours.generate_tokens(prompts, batch_size=2, seed=5, **kwargs)  # two batches, one layout
        assert entered.count(True) == 1 and all(p.is_contiguous() for p in model.parameters())
        entered.clear()
        ours.generate_tokens(prompts, max_new_tokens=4)  # greedy
        assert not entered
    finally:
        torch.set_num_threads(threads)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert ours.generate_tokens(prompts, batch_size=2, seed=5, **kwargs) == got and not entered
    monkeypatch.setattr(decoding, "column_major", lambda model: contextlib.nullcontext())
    expected = decoding.decode(
        model,
        ids[:2],
        eos_ids=ours._eos_ids(),
        pad_id=ours._pad_id,
        generator=torch.Generator().manual_seed(_batch_seed(5, 0)),
        **kwargs,
    )
    assert got[:2] == expected
