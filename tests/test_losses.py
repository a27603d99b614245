"""kdagent/update/losses.py against direct computations on random tensors (float64, written out term by term)."""

import math

import pytest
import torch

from kdagent.update import losses

B, T, V = 2, 5, 11


def _random(seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    teacher = torch.randn(B, T, V, generator=g, dtype=torch.float64) * scale
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, 0] = True
    return student, teacher, mask


def _direct(name, p, q, beta=0.5, skew=0.1):
    """One position's divergence from probability lists, as the papers write it."""
    kl = lambda a, b: sum(x * math.log(x / y) for x, y in zip(a, b) if x > 0)  # noqa: E731
    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "jsd":
        m = [beta * x + (1 - beta) * y for x, y in zip(p, q)]
        return beta * kl(p, m) + (1 - beta) * kl(q, m)
    if name == "skew_kl":
        return kl(p, [skew * x + (1 - skew) * y for x, y in zip(p, q)])
    if name == "skew_reverse_kl":
        return kl(q, [(1 - skew) * x + skew * y for x, y in zip(p, q)])
    if name == "tvd":
        return 0.5 * sum(abs(x - y) for x, y in zip(p, q))
    raise AssertionError(name)


def _direct_mean(name, p_rows, q_rows, mask, **kw):
    values = [_direct(name, p, q, **kw) for p, q, m in zip(p_rows, q_rows, mask.flatten().tolist()) if m]
    return sum(values) / len(values)


@pytest.mark.parametrize("name", losses.DIVERGENCES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_full_vocabulary_divergences_match_the_direct_computation(name, temperature):
    student, teacher, mask = _random()
    p = torch.softmax(teacher / temperature, -1).reshape(-1, V).tolist()
    q = torch.softmax(student / temperature, -1).reshape(-1, V).tolist()
    for beta, skew in [(0.5, 0.1), (0.3, 0.4)]:
        got = losses.token_loss(
            name, student, mask, teacher_logits=teacher, beta=beta, skew=skew, temperature=temperature
        )
        assert got.item() == pytest.approx(_direct_mean(name, p, q, mask, beta=beta, skew=skew), rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0])
def test_jsd_is_trl_generalised_jsd(beta):
    from kdagent.update.distill import _gkd

    student, teacher, mask = _random(1)
    labels = torch.where(mask, 0, -100)
    trl = _gkd().GKDTrainer.generalized_jsd_loss(
        student.float(), teacher.float(), labels=labels, beta=beta, reduction="batchmean"
    )
    ours = losses.token_loss("jsd", student.float(), mask, teacher_logits=teacher.float(), beta=beta)
    assert ours.item() == pytest.approx(trl.item(), rel=1e-5)


def test_skews_of_zero_are_the_plain_kls_and_all_vanish_when_equal():
    student, teacher, mask = _random(2)
    for skewed, plain in [("skew_kl", "forward_kl"), ("skew_reverse_kl", "reverse_kl")]:
        a = losses.token_loss(skewed, student, mask, teacher_logits=teacher, skew=0.0)
        assert a.item() == pytest.approx(losses.token_loss(plain, student, mask, teacher_logits=teacher).item())
    for name in losses.DIVERGENCES:
        assert losses.token_loss(name, teacher, mask, teacher_logits=teacher).item() == pytest.approx(0.0, abs=1e-6)


def _topk(teacher, k):
    logp = torch.log_softmax(teacher, -1)
    values, ids = logp.topk(k, dim=-1)
    return ids, values, 1 - values.exp().sum(-1)


@pytest.mark.parametrize("name", losses.DIVERGENCES)
def test_topk_with_tail_matches_the_direct_computation_on_k_plus_one_categories(name):
    student, teacher, mask = _random(3)
    k = 4
    ids, values, tail = _topk(teacher, k)
    got = losses.token_loss(name, student, mask, topk_ids=ids, topk_logp=values, tail_mass=tail)
    p_full = torch.softmax(teacher, -1).reshape(-1, V)
    q_full = torch.softmax(student, -1).reshape(-1, V)
    p_rows, q_rows = [], []
    for p, q, row in zip(p_full.tolist(), q_full.tolist(), ids.reshape(-1, k).tolist()):
        p_rows.append([p[i] for i in row] + [1 - sum(p[i] for i in row)])
        q_rows.append([q[i] for i in row] + [1 - sum(q[i] for i in row)])
    assert got.item() == pytest.approx(_direct_mean(name, p_rows, q_rows, mask), rel=1e-5, abs=1e-7)
    full = losses.token_loss(name, student, mask, teacher_logits=teacher)
    assert got.item() <= full.item() + 1e-9  # merging categories never raises the divergence


def test_topk_of_the_whole_vocabulary_is_the_full_divergence():
    student, teacher, mask = _random(4)
    ids, values, tail = _topk(teacher, V)
    for name in losses.DIVERGENCES:
        got = losses.token_loss(name, student, mask, topk_ids=ids, topk_logp=values, tail_mass=tail.clamp(min=0))
        assert got.item() == pytest.approx(
            losses.token_loss(name, student, mask, teacher_logits=teacher).item(), rel=1e-4, abs=1e-6
        )


def test_topk_loss_from_fp16_values_has_a_finite_gradient():
    student, teacher, mask = _random(5)
    ids, values, tail = _topk(teacher.float(), 3)
    student = student.float().requires_grad_()
    loss = losses.token_loss(
        "skew_reverse_kl", student, mask, topk_ids=ids.to(torch.int32), topk_logp=values.half(), tail_mass=tail.half()
    )
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        losses.token_loss("tvd", student, mask, topk_ids=ids, topk_logp=values, tail_mass=tail, temperature=2.0)
    with pytest.raises(ValueError, match="unknown divergence"):
        losses.token_loss("kl", student, mask, teacher_logits=teacher)


def test_feature_loss_with_a_layer_map_and_a_projection():
    g = torch.Generator().manual_seed(6)
    student_hidden = [torch.randn(B, T, 8, generator=g) for _ in range(3)]  # embeddings + 2 layers
    teacher_hidden = [torch.randn(B, T, 12, generator=g) for _ in range(5)]  # embeddings + 4 layers
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[0, 0] = True
    mapping = losses.layer_map(2, 4)
    assert mapping == {1: 2, 2: 4}
    projector = losses.feature_projector(8, 12, mapping)
    loss = losses.feature_loss(student_hidden, teacher_hidden, mapping, mask, projector)
    direct = 0.0
    for s, t in mapping.items():
        w = projector.maps[str(s)].weight.detach()
        errors = [
            ((student_hidden[s][b, i] @ w.T - teacher_hidden[t][b, i]) ** 2).mean().item()
            for b in range(B)
            for i in range(T)
            if mask[b, i]
        ]
        direct += sum(errors) / len(errors)
    assert loss.item() == pytest.approx(direct / len(mapping), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in projector.parameters())
    same = losses.feature_projector(12, 12, mapping)
    assert not list(same.parameters())
    assert losses.feature_loss(teacher_hidden[:3], teacher_hidden, {1: 1, 2: 2}, mask, same).item() == 0.0
    with pytest.raises(ValueError, match="projector"):
        losses.feature_loss(student_hidden, teacher_hidden, mapping, mask)
