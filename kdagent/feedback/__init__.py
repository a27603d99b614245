"""Feedback beyond the skill's reference check: an LLM judge, self-consistency voting, preference pairs."""

from kdagent.feedback.consistency import consistency_feedback, majority_vote, self_consistency
from kdagent.feedback.judge import DEFAULT_RUBRIC, JudgeStats, JudgeVerdict, judge_replies, judge_with_stats
from kdagent.feedback.ranking import rank_pairs

__all__ = [
    "DEFAULT_RUBRIC",
    "JudgeStats",
    "JudgeVerdict",
    "consistency_feedback",
    "judge_replies",
    "judge_with_stats",
    "majority_vote",
    "rank_pairs",
    "self_consistency",
]
