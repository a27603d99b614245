"""White-box distillation (logits, token log-probabilities) needs teacher and student to share a
vocabulary. This check runs before any model is loaded; text-level distillation works either way."""

from pathlib import Path

from kdagent.errors import UserError


def vocabulary_difference(teacher: Path, student: Path) -> tuple[int, int, int]:
    """(teacher vocabulary size, student vocabulary size, tokens whose ids differ or are missing)."""
    from transformers import AutoTokenizer

    t = AutoTokenizer.from_pretrained(teacher).get_vocab()
    s = AutoTokenizer.from_pretrained(student).get_vocab()
    differ = sum(1 for token, idx in t.items() if s.get(token) != idx) + sum(1 for token in s if token not in t)
    return len(t), len(s), differ


def require_shared_vocabulary(teacher: Path, student: Path, what: str = "white-box distillation") -> None:
    t, s, differ = vocabulary_difference(teacher, student)
    if differ:
        raise UserError(
            f"{what} needs teacher and student to share a vocabulary: the teacher has {t} tokens, the student {s}, "
            f"and {differ} differ; use text-level distillation (update.method: sft) with this teacher instead"
        )
