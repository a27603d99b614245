"""The update stage: run the recipe's methods in order (e.g. [sft, dpo]); each starts from the previous
one's student. Each method's checkpoint is a folder in the round directory; a finished one is reused on
resume."""

from pathlib import Path

from kdagent.models import resolve_model


def _reward_function(ctx, tasks: dict, round_: int, student: Path):
    """A TRL reward function: the skill's verifier score, blended with the teacher's judgement (score/10)
    when `update.grpo.judge_weight` > 0. A judge output that stays malformed counts as 0."""
    skill, weight = ctx.skill, ctx.recipe.update.grpo.judge_weight
    judge = None
    if weight > 0:
        from kdagent.loop.round import LazyTeacher

        judge = LazyTeacher(ctx.plugins, ctx.recipe.teacher, student)
    calls = [0]

    def reward(prompts, completions, task_id, **kwargs) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        scores = [float(skill.verify(tasks[tid], text).score) for text, tid in zip(texts, task_id)]
        if judge is None:
            return scores
        from kdagent.feedback import DEFAULT_RUBRIC, judge_replies
        from kdagent.records import Generation

        calls[0] += 1
        items = [
            (tasks[tid], Generation(id=f"grpo-{calls[0]}-{i}", task_id=tid, round=round_, sample=i, teacher="student", skill=skill.name, messages=[], text=text))
            for i, (text, tid) in enumerate(zip(texts, task_id))
        ]
        rubric = ctx.recipe.feedback.rubric or getattr(ctx.domain, "rubric", None) or DEFAULT_RUBRIC
        verdicts = judge_replies(judge.get(), items, rubric, seed=ctx.recipe.seed * 1000 + round_ + calls[0],
                                 max_attempts=ctx.recipe.feedback.judge_attempts, score=ctx.recipe.feedback.judge_score)
        return [(1 - weight) * s + weight * (0.0 if v.failed else v.score) for s, v in zip(scores, verdicts)]

    reward.__name__ = f"{skill.name}_verifier" + ("_and_judge" if judge is not None else "")
    reward.close = judge.close if judge is not None else (lambda: None)
    return reward


def run_methods(ctx, round_: int, round_dir: Path, student: Path, examples, pairs, tasks: list) -> tuple[Path, dict]:
    r = ctx.recipe
    methods = r.update.methods()
    if not methods:
        return student, {"skipped": "update.method is none"}
    reports: dict = {}
    for i, method in enumerate(methods):
        out = round_dir / ("student" if i == len(methods) - 1 else f"student-{i + 1}-{method}")
        report_name = f"update-{i + 1}-{method}.json" if len(methods) > 1 else "update.json"
        if out.is_dir() and (out.is_symlink() or (round_dir / report_name).exists()):  # finished before an interruption
            reports[method] = ctx.rd.read_json(round_dir / report_name) or {}
            student = out.resolve() if out.is_symlink() else out
            continue
        if out.is_dir():  # killed between renaming the student into place and writing its report: train it again
            import shutil

            shutil.rmtree(out)
        seed = r.seed + round_
        try:
            report = _train(ctx, method, round_, student, out, examples, pairs, tasks, seed)
        except ValueError as exc:  # settings the trainer cannot use are the recipe's fault
            from kdagent.errors import UserError

            raise UserError(f"update.{method}: {exc}") from None
        if report is None:
            reports[method] = {"skipped": SKIPPED[method]}
            continue
        ctx.rd.write_json(round_dir / report_name, report)
        reports[method] = report
        student = out
    final = round_dir / "student"
    if student != final and student.parent == round_dir and not final.exists():
        final.symlink_to(student.name)  # the last method was skipped: round-NN/student is the last trained one
        student = final
    return student, reports if len(methods) > 1 else reports[methods[0]]


SKIPPED = {"sft": "no training examples", "dpo": "no preference pairs", "grpo": "no tasks with a reference answer to reward"}


def _train(ctx, method: str, round_: int, student: Path, out: Path, examples, pairs, tasks, seed: int) -> dict | None:
    """One method's training from `student` into `out`; None when it has nothing to train on."""
    r = ctx.recipe
    if method == "sft":
        if not examples:
            return None
        from kdagent.update.sft import train_sft

        return train_sft(examples, student, out, r.update, r.student.max_length, seed)
    if method == "dpo":
        if not pairs:
            return None
        from kdagent.update.dpo import train_dpo

        return train_dpo(pairs, student, out, r.update, r.student.max_length, seed, beta=r.update.dpo.beta, loss_type=r.update.dpo.loss_type)
    if method == "distill":
        from kdagent.update.distill import train_distill

        o = r.update.distill
        prompts = [ex.prompt for ex in examples] or [ctx.skill.messages(t) for t in tasks]
        completions = [ex.completion[-1]["content"] for ex in examples] or None
        return train_distill(
            prompts, resolve_model(r.teacher.model), student, out, r.update, r.student.max_length, seed,
            divergence=o.divergence, beta=o.beta, lmbda=o.lmbda, temperature=o.temperature,
            max_completion_length=o.max_completion_length, completions=completions,
        )
    from kdagent.update.grpo import train_grpo

    o = r.update.grpo
    referenced = [t for t in tasks if t.answer]
    if not referenced:
        return None
    reward = _reward_function(ctx, {t.id: t for t in referenced}, round_, student)
    try:
        return train_grpo(
            [ctx.skill.messages(t) for t in referenced], reward, student, out,
            r.update, r.student.max_length, seed, num_generations=o.num_generations,
            max_completion_length=o.max_completion_length, beta=o.beta, extra_columns={"task_id": [t.id for t in referenced]},
        )
    finally:
        reward.close()
