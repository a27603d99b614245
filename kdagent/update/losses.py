"""Distillation losses as pure functions: token-level divergences between a teacher's and a student's next-token
distributions, and feature (hidden-state) distillation.

Every divergence takes log-probabilities over the same categories in the last dimension, the teacher's `t` and the
student's `s` (p = exp(t), q = exp(s)), and returns one value per position:

- ``forward_kl``: KL(p || q) = sum p (log p - log q) (mode-covering; TRL's generalised JSD at beta 0);
- ``reverse_kl``: KL(q || p) = sum q (log q - log p) (mode-seeking; TRL's beta 1);
- ``jsd``: beta KL(p || m) + (1 - beta) KL(q || m) with m = beta p + (1 - beta) q, TRL's
  `GKDTrainer.generalized_jsd_loss` for 0 < beta < 1 (beta 0 and 1 are the two KLs above, as in TRL);
- ``skew_kl``: KL(p || a p + (1 - a) q), DistiLLM's a-skew KL (Ko et al. 2024, eq. 4; a = `skew`, 0.1 there);
- ``skew_reverse_kl``: KL(q || (1 - a) p + a q), DistiLLM's a-skew reverse KL;
- ``tvd``: total variation distance, 1/2 sum |p - q|.

`token_loss` averages one of them over the positions of a mask (the completion tokens), as TRL's "batchmean" with
labels does. The teacher may be whole logits, or its top-k log-probabilities with the tail mass (the offline cache
of kdagent/update/logit_cache.py): `topk_distributions` then folds both distributions onto the k teacher tokens
plus one "rest of the vocabulary" category, p's tail being the stored tail mass and q's the student's probability
outside those k tokens. Any divergence above is then computed exactly on those k + 1 categories: it equals the
full-vocabulary divergence where the teacher's tail is 0, and otherwise can only be lower (merging categories never
raises an f-divergence), so the loss still vanishes exactly when the student matches the teacher.

`feature_loss` is hidden-state distillation: the mean squared error between mapped layers' hidden states (a
student layer -> teacher layer map, `layer_map` by default spaces them evenly) at the masked positions, through a
learned linear projection (`FeatureProjector`) where the widths differ.
"""

import math

DIVERGENCES = ("forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd")
TAIL_FLOOR = 1e-8  # the smallest tail probability taken: log(0) would make the tail category's terms 0 * inf


def _kl(log_a, log_b):
    """KL(a || b) per position, from log-probabilities (finite ones: log-softmax outputs, as TRL's F.kl_div)."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _log_mix(log_a, log_b, weight_a: float):
    """log(w a + (1 - w) b), for 0 < w < 1, computed in log space."""
    import torch

    return torch.logsumexp(torch.stack([log_a + math.log(weight_a), log_b + math.log1p(-weight_a)]), dim=0)


def forward_kl(teacher_logp, student_logp):
    return _kl(teacher_logp, student_logp)


def reverse_kl(teacher_logp, student_logp):
    return _kl(student_logp, teacher_logp)


def jsd(teacher_logp, student_logp, beta: float = 0.5):
    """TRL's generalised Jensen-Shannon divergence (beta 0: forward KL, beta 1: reverse KL)."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"jsd beta must be between 0 and 1, got {beta}")
    if beta == 0.0:
        return forward_kl(teacher_logp, student_logp)
    if beta == 1.0:
        return reverse_kl(teacher_logp, student_logp)
    mixture = _log_mix(teacher_logp, student_logp, beta)
    return beta * _kl(teacher_logp, mixture) + (1 - beta) * _kl(student_logp, mixture)


def skew_kl(teacher_logp, student_logp, skew: float = 0.1):
    """DistiLLM's skew KL: KL(p || skew p + (1 - skew) q); skew 0 is the forward KL."""
    if not 0.0 <= skew < 1.0:
        raise ValueError(f"skew must be in [0, 1), got {skew}")
    if skew == 0.0:
        return forward_kl(teacher_logp, student_logp)
    return _kl(teacher_logp, _log_mix(teacher_logp, student_logp, skew))


def skew_reverse_kl(teacher_logp, student_logp, skew: float = 0.1):
    """DistiLLM's skew reverse KL: KL(q || (1 - skew) p + skew q); skew 0 is the reverse KL."""
    if not 0.0 <= skew < 1.0:
        raise ValueError(f"skew must be in [0, 1), got {skew}")
    if skew == 0.0:
        return reverse_kl(teacher_logp, student_logp)
    return _kl(student_logp, _log_mix(student_logp, teacher_logp, skew))


def tvd(teacher_logp, student_logp):
    """Total variation distance, 1/2 sum |p - q|."""
    return 0.5 * (teacher_logp.exp() - student_logp.exp()).abs().sum(-1)


def divergence(name: str, teacher_logp, student_logp, beta: float = 0.5, skew: float = 0.1):
    """The divergence `name` (one of DIVERGENCES) per position."""
    if name == "jsd":
        return jsd(teacher_logp, student_logp, beta)
    if name == "skew_kl":
        return skew_kl(teacher_logp, student_logp, skew)
    if name == "skew_reverse_kl":
        return skew_reverse_kl(teacher_logp, student_logp, skew)
    functions = {"forward_kl": forward_kl, "reverse_kl": reverse_kl, "tvd": tvd}
    if name not in functions:
        raise ValueError(f"unknown divergence {name!r}; choose one of: {', '.join(DIVERGENCES)}")
    return functions[name](teacher_logp, student_logp)


def topk_distributions(student_logp, topk_ids, topk_logp, tail_mass):
    """Fold both distributions onto the teacher's k tokens plus one tail category.

    `student_logp` (..., V) are the student's log-probabilities, `topk_ids` (..., k) and `topk_logp` (..., k) the
    teacher's top-k tokens and their log-probabilities, `tail_mass` (...) the teacher's probability outside them.
    Returns (teacher, student) log-probabilities of shape (..., k + 1), the tail last."""
    import torch

    student_logp = student_logp.float()
    picked = student_logp.gather(-1, topk_ids.long())
    student_tail = (1 - picked.exp().sum(-1)).clamp(min=TAIL_FLOOR).log()
    teacher_tail = tail_mass.float().clamp(min=TAIL_FLOOR).log()
    teacher = torch.cat([topk_logp.float(), teacher_tail.unsqueeze(-1)], dim=-1)
    teacher = teacher - teacher.logsumexp(-1, keepdim=True)  # quantised log-probs and tail sum to 1 again
    return teacher, torch.cat([picked, student_tail.unsqueeze(-1)], dim=-1)


def masked_mean(values, mask):
    """The mean of `values` over the positions where `mask` is true (0 when none is)."""
    mask = mask.bool()
    return values[mask].sum() / mask.sum().clamp(min=1)


def token_loss(
    name: str,
    student_logits,
    mask,
    teacher_logits=None,
    topk_ids=None,
    topk_logp=None,
    tail_mass=None,
    beta: float = 0.5,
    skew: float = 0.1,
    temperature: float = 1.0,
):
    """A divergence between teacher and student, averaged over the positions where `mask` (..., ) is true.

    The teacher is either `teacher_logits` (..., V), scaled like the student's by `temperature`, or its cached
    `topk_ids`, `topk_logp` and `tail_mass` (taken at temperature 1, so `temperature` must then be 1)."""
    import torch.nn.functional as F

    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student_logp = F.log_softmax(student_logits.float() / temperature, dim=-1)
    if teacher_logits is not None:
        teacher_logp = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    else:
        if temperature != 1.0:
            raise ValueError("a top-k teacher is stored at temperature 1: its tail cannot be rescaled")
        teacher_logp, student_logp = topk_distributions(student_logp, topk_ids, topk_logp, tail_mass)
    return masked_mean(divergence(name, teacher_logp, student_logp, beta, skew), mask)


def layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student layer -> teacher layer, spaced evenly, last onto last: indices of `output_hidden_states`
    (1..n: each layer's output; 0, the embeddings, is not mapped)."""
    return {i: max(1, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)}


def feature_projector(student_width: int, teacher_width: int, layers):
    """A `FeatureProjector` for the mapped `layers` (student indices): a learned linear map from the student's
    width to the teacher's where they differ, none where they match."""
    import torch

    class FeatureProjector(torch.nn.Module):
        """One linear projection per mapped student layer (trained with the student, not saved with it)."""

        def __init__(self):
            super().__init__()
            self.same = student_width == teacher_width
            self.maps = torch.nn.ModuleDict(
                {} if self.same else {str(i): torch.nn.Linear(student_width, teacher_width, bias=False) for i in layers}
            )

        def forward(self, layer: int, hidden):
            return hidden if self.same else self.maps[str(layer)](hidden)

    return FeatureProjector()


def feature_loss(student_hidden, teacher_hidden, mapping: dict[int, int], mask, projector=None):
    """Hidden-state distillation: for each student layer i -> teacher layer j of `mapping`, the mean squared error
    (over the hidden dimension) between the student's hidden state i, projected to the teacher's width by
    `projector` when given, and the teacher's hidden state j, averaged over the masked positions and the layers.
    `student_hidden` and `teacher_hidden` are the `output_hidden_states` tuples ((batch, seq, width) each)."""
    if not mapping:
        raise ValueError("feature_loss needs at least one mapped layer")
    total = 0.0
    for s, t in mapping.items():
        h = student_hidden[s].float()
        if projector is not None:
            h = projector(s, h)
        target = teacher_hidden[t].float()
        if h.shape[-1] != target.shape[-1]:
            raise ValueError(
                f"student layer {s} has width {h.shape[-1]} and teacher layer {t} {target.shape[-1]}: give a projector"
            )
        total = total + masked_mean((h - target).pow(2).mean(-1), mask)
    return total / len(mapping)
