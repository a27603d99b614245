"""The update stage: run the recipe's methods in order (e.g. [sft, dpo]); each starts from the previous
one's student. Each method's checkpoint is a folder in the round directory; a finished one is reused on
resume."""

from pathlib import Path

from kdagent.models import resolve_model


def _reward_function(ctx, tasks: dict):
    """A TRL reward function from the skill's verifier (and, weighted, nothing else yet)."""
    skill = ctx.skill

    def reward(prompts, completions, task_id, **kwargs) -> list[float]:
        scores = []
        for completion, tid in zip(completions, task_id):
            text = completion[-1]["content"] if isinstance(completion, list) else str(completion)
            scores.append(float(skill.verify(tasks[tid], text).score))
        return scores

    reward.__name__ = f"{skill.name}_verifier"
    return reward


def run_methods(ctx, round_: int, round_dir: Path, student: Path, examples, pairs, tasks: list) -> tuple[Path, dict]:
    r = ctx.recipe
    methods = r.update.methods()
    if not methods:
        return student, {"skipped": "update.method is none"}
    reports: dict = {}
    for i, method in enumerate(methods):
        out = round_dir / ("student" if i == len(methods) - 1 else f"student-{i + 1}-{method}")
        report_name = f"update-{method}.json" if len(methods) > 1 else "update.json"
        if out.is_dir():  # finished before an interruption
            reports[method] = ctx.rd.read_json(round_dir / report_name) or {}
            student = out
            continue
        seed = r.seed + round_
        if method == "sft":
            if not examples:
                reports[method] = {"skipped": "no training examples"}
                continue
            from kdagent.update.sft import train_sft

            report = train_sft(examples, student, out, r.update, r.student.max_length, seed)
        elif method == "dpo":
            if not pairs:
                reports[method] = {"skipped": "no preference pairs"}
                continue
            from kdagent.update.dpo import train_dpo

            report = train_dpo(pairs, student, out, r.update, r.student.max_length, seed, beta=r.update.dpo.beta, loss_type=r.update.dpo.loss_type)
        elif method == "distill":
            from kdagent.update.distill import train_distill

            o = r.update.distill
            prompts = [ex.prompt for ex in examples] or [ctx.skill.messages(t) for t in tasks]
            completions = [ex.completion[-1]["content"] for ex in examples] or None
            report = train_distill(
                prompts, resolve_model(r.teacher.model), student, out, r.update, r.student.max_length, seed,
                divergence=o.divergence, beta=o.beta, lmbda=o.lmbda, temperature=o.temperature,
                max_completion_length=o.max_completion_length, completions=completions,
            )
        else:  # grpo
            from kdagent.update.grpo import train_grpo

            o = r.update.grpo
            referenced = [t for t in tasks if t.answer]
            if not referenced:
                reports[method] = {"skipped": "no tasks with a reference answer to reward"}
                continue
            report = train_grpo(
                [ctx.skill.messages(t) for t in referenced], _reward_function(ctx, {t.id: t for t in referenced}), student, out,
                r.update, r.student.max_length, seed, num_generations=o.num_generations,
                max_completion_length=o.max_completion_length, beta=o.beta, extra_columns={"task_id": [t.id for t in referenced]},
            )
        ctx.rd.write_json(round_dir / report_name, report)
        reports[method] = report
        student = out
    return student, reports if len(methods) > 1 else reports[methods[0]]
