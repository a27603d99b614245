import math

import pytest

from kdagent.errors import UserError
from kdagent.generation.engine import Engine
from kdagent.models import resolve_model
from kdagent.teachers.vocab import require_shared_vocabulary, vocabulary_difference


def test_token_logprobs_are_per_token_and_sum_to_choice_scores(tiny_model_dir):
    engine = Engine(tiny_model_dir, device="cpu")
    prompts = [[{"role": "user", "content": "Pick one."}]] * 2
    per_token = engine.token_logprobs(prompts, ["yes", "no thanks"])
    assert len(per_token) == 2 and all(len(row) >= 1 and all(lp <= 0 for lp in row) for row in per_token)
    sums = engine.choice_logprobs(prompts[:1], [["yes", "no thanks"]])[0]
    assert sums == pytest.approx([sum(per_token[0]), sum(per_token[1])], rel=1e-5)
    n_tokens = len(engine.tokenizer(engine.render(prompts[0]) + "no thanks", add_special_tokens=False).input_ids) - len(
        engine.tokenizer(engine.render(prompts[0]), add_special_tokens=False).input_ids
    )
    assert len(per_token[1]) == n_tokens
    assert all(math.isfinite(lp) for row in per_token for lp in row)


def _direct_logprobs(engine, messages, reply):
    """The reply's token log-probabilities from one plain forward over prompt + reply."""
    import torch

    prefix = engine.render(messages)
    cut = len(engine.tokenizer(prefix, add_special_tokens=False).input_ids)
    ids = engine.tokenizer(prefix + reply, add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)[cut - 1 :].tolist()


def test_shared_prompt_prefill_gives_the_direct_forward_log_probs(tiny_model_dir):
    """Prompts of different lengths (left-padded together), options of 1 to several tokens sharing each prompt's
    prefill, an empty reply, and pairs out of prompt order: each row equals a plain forward over prompt + reply."""
    engine = Engine(tiny_model_dir, device="cpu")
    short, long = (
        [{"role": "user", "content": "Pick one."}],
        [{"role": "user", "content": "Context: " + "the cat sat " * 30 + "\nPick one."}],
    )
    pairs = [
        (short, "yes"),
        (long, "no thanks, not today"),
        (short, "maybe so"),
        (long, "yes"),
        (short, ""),
        (long, "maybe"),
    ]
    got = engine.token_logprobs([m for m, _ in pairs], [r for _, r in pairs], batch_size=2)
    for (messages, reply), row in zip(pairs, got):
        assert row == pytest.approx(_direct_logprobs(engine, messages, reply), abs=1e-4)
    assert got[4] == [] and len(got[1]) > 3
    one_by_one = engine.token_logprobs([m for m, _ in pairs], [r for _, r in pairs], batch_size=1)  # no padding
    assert all(a == pytest.approx(b, abs=1e-5) for a, b in zip(one_by_one, got))


def test_branches_packed_in_one_sequence_give_the_choice_log_probs(tiny_model_dir, monkeypatch):
    """`branch_logprobs` packs a prompt and its stems (of different lengths) into one masked sequence; each
    stem + leaf equals `choice_logprobs` of that whole continuation, and so does the fallback, taken when a
    leaf is more than one token."""
    engine = Engine(tiny_model_dir, device="cpu")
    prompts = [
        [{"role": "user", "content": "Grade it."}, {"role": "assistant", "content": '{"score":'}],
        [{"role": "user", "content": "Context: " + "the cat sat " * 20 + "\nGrade it."}],
    ]
    stems = [' 1, "passed":', ' 10, "passed":', " 7"]
    leaves = [" true", " false"]
    assert all(len(engine.tokenizer(leaf, add_special_tokens=False).input_ids) == 1 for leaf in leaves)
    direct = engine.choice_logprobs(prompts, [[s + leaf for s in stems for leaf in leaves]] * 2, batch_size=1)
    with monkeypatch.context() as m:  # the packed path, not the fallback
        m.setattr(engine, "choice_logprobs", lambda *a, **k: pytest.fail("fell back to choice_logprobs"))
        got = engine.branch_logprobs(prompts, stems, leaves)
    assert [len(row) for row in got] == [6, 6]
    for row, want in zip(got, direct):
        assert row == pytest.approx(want, abs=1e-4)
    long_leaf = [" true", " not at all"]  # two or more tokens: every combination is scored as a choice
    want = engine.choice_logprobs(prompts, [[s + leaf for s in stems for leaf in long_leaf]] * 2)
    assert engine.branch_logprobs(prompts, stems, long_leaf) == want


def test_white_box_needs_a_shared_vocabulary(tiny_model_dir, smollm_path):
    require_shared_vocabulary(smollm_path, tiny_model_dir)  # same tokenizer: fine
    minilm = resolve_model("minilm-l6")  # a BERT WordPiece vocabulary
    t, s, differ = vocabulary_difference(smollm_path, minilm)
    assert (t, s) == (49152, 30522) and differ > 0
    with pytest.raises(UserError, match="share a vocabulary: the teacher has 49152 tokens, the student 30522"):
        require_shared_vocabulary(smollm_path, minilm)
