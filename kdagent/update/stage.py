"""The update stage: run the recipe's updaters in order (e.g. [sft, dpo]); each starts from the previous
one's student. Each updater's checkpoint is a folder in the round directory; a finished one is reused on
resume."""

import shutil
from pathlib import Path

from kdagent.errors import UserError
from kdagent.update.updater import UpdateJob, options_for


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
            shutil.rmtree(out)
        updater = ctx.plugins.updaters[method].obj
        job = UpdateJob(
            recipe=r,
            options=options_for(r.update, method, updater),
            student=student,
            out=out,
            seed=r.seed + round_,
            round=round_,
            examples=examples,
            pairs=pairs,
            tasks=tasks,
            skill=ctx.skill,
            domain=ctx.domain,
            plugins=ctx.plugins,
        )
        try:
            # in this process, or under `accelerate launch` (update.launcher)
            from kdagent.update.launch import train as launch_train

            report = launch_train(updater, job)
        except ValueError as exc:  # settings the trainer cannot use are the recipe's fault
            raise UserError(f"update.{method}: {exc}") from None
        if report is None:
            reports[method] = {"skipped": updater.skipped}
            continue
        ctx.rd.write_json(round_dir / report_name, report)
        reports[method] = report
        student = out
    final = round_dir / "student"
    if student != final and student.parent == round_dir and not final.exists():
        final.symlink_to(student.name)  # the last method was skipped: round-NN/student is the last trained one
        student = final
    return student, reports if len(methods) > 1 else reports[methods[0]]
