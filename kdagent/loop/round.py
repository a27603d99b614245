"""One round: the stages of `STAGES`, in order. The loop only sequences; each stage's work lives in its room
(`synth/` makes tasks and elicits, `feedback/` verifies, `curate/` builds SFT examples and pairs, `update/`
trains, `evaluate/` scores).

A stage's name keys its timer, its peak memory, its memory-plan entry and its hooks. A stage with a records
file is finished once the file exists and is read back on --resume; a stage that calls the teacher saves its
chunks as they finish (kdagent/resume.py). Plugins see each stage before and after it
(`kdagent_before_stage`, `kdagent_after_stage`) and may stop the run there (`StageVetoed`).
"""

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdagent.curate import label_counts
from kdagent.curate.examples import curate_stage
from kdagent.curate.pairs import preference_pairs
from kdagent.errors import WorkError
from kdagent.feedback.stage import run as verify, sample_labels
from kdagent.memory import gpu_peak_mb, peak_rss_mb, reset_peak_rss
from kdagent.records import Feedback, Generation, GroundedTask, PreferencePair, SFTExample, Task
from kdagent.resume import finished_or_run
from kdagent.synth.elicit import elicit_stage
from kdagent.synth.tasks import eval_texts, ground, make_tasks
from kdagent.teachers.kinds import local_teacher_path
from kdagent.teachers.lazy import LazyTeacher
from kdagent.update.stage import run_methods


@dataclass
class Context:
    recipe: object
    rd: object  # RunDir
    plugins: object
    domain: object
    skill: object
    eval_tasks: list[Task]
    store: object  # ChromaStore or None
    embedder: object  # Embedder or None
    resume: bool
    evaluate: object  # callable(model_path, out_path, desc) -> summary
    skill_eval_tasks: list[Task] = field(
        default_factory=list
    )  # the skills' own held-out sets, kept out of training too

    def eval_texts(self) -> list[str]:
        return eval_texts(self.eval_tasks + self.skill_eval_tasks)


@dataclass
class Round:
    """What a round's stages share: the run's context, the round's number, its student (the update stage replaces
    it), the teacher (loaded on first use), and each finished stage's records and counts by stage name."""

    ctx: Context
    number: int
    student: Path
    teacher: LazyTeacher
    records: dict[str, list] = field(default_factory=dict)
    counts: dict[str, dict] = field(default_factory=dict)

    def __getitem__(self, stage: str) -> list:
        return self.records.get(stage, [])

    @property
    def dir(self) -> Path:
        return self.ctx.rd.round_dir(self.number)

    def tasks(self) -> dict[str, Task]:
        return {t.id: t for t in self["tasks"]}


@dataclass(frozen=True)
class Stage:
    """`run(round) -> (records, counts)`. `file` is the stem of the stage's records and counts in the round's folder
    (a stage without one, update and evaluate, resumes by its own files); `when(recipe)` leaves a stage out of a
    recipe; `frees_teacher` closes the teacher after the stage."""

    name: str
    run: Callable[[Round], tuple[list, dict]]
    file: str | None = None
    record: type | None = None
    when: Callable[[object], bool] = lambda recipe: True
    frees_teacher: bool = False


class StageVetoed(WorkError):
    """A plugin's `kdagent_before_stage` or `kdagent_after_stage` returned a reason to stop the run (one line, exit 1)."""


def _update(s: Round) -> tuple[list, dict]:
    s.student, report = run_methods(s.ctx, s.number, s.dir, s.student, s["curate"], s["preferences"], s["tasks"])
    return [], report


STAGES = [
    Stage("tasks", lambda s: make_tasks(s.ctx, s.number, s.teacher), "tasks", Task),
    Stage(
        "ground",
        lambda s: (ground(s["tasks"], s.ctx.store, s.ctx.recipe.retrieval.top_k), {}),
        "grounded",
        GroundedTask,
    ),
    Stage(
        "elicit",
        lambda s: elicit_stage(
            s.teacher,
            s.ctx.skill,
            s.ctx.recipe,
            s.number,
            s["ground"],
            local_teacher_path(s.ctx.recipe.teacher, s.ctx.plugins, s.student),
            s.dir / "generations.partial.jsonl",
        ),
        "generations",
        Generation,
    ),
    Stage(
        "feedback",
        lambda s: verify(s.ctx, s.number, s.tasks(), s["ground"], s["elicit"], s.teacher),
        "feedback",
        Feedback,
        frees_teacher=True,
    ),
    Stage(
        "curate",
        lambda s: curate_stage(
            s.ctx.skill,
            s.ctx.recipe,
            s.ctx.plugins,
            s.number,
            s["ground"],
            s["elicit"],
            s["feedback"],
            s.tasks(),
            s.student,
            s.ctx.eval_texts(),
        ),
        "sft",
        SFTExample,
    ),
    Stage(
        "preferences",
        lambda s: preference_pairs(
            s.ctx.skill,
            s.ctx.recipe,
            s.ctx.plugins,
            s.number,
            s["ground"],
            s["elicit"],
            s["feedback"],
            s.ctx.eval_texts(),
        ),
        "preferences",
        PreferencePair,
        when=lambda recipe: recipe.feedback.preferences,
    ),
    Stage("update", _update),
    Stage(
        "evaluate",
        lambda s: ([], s.ctx.evaluate(s.student, s.dir / "eval-predictions.jsonl", f"round {s.number}: evaluate")),
    ),
]


def run_round(ctx: Context, round_: int, student: Path) -> tuple[dict, Path]:
    """Run the recipe's stages in order; returns the round's entry of metrics.json and the student it ends with."""
    s = Round(ctx, round_, student, LazyTeacher(ctx.plugins, ctx.recipe.teacher, student))
    laps = Laps()
    for stage in [x for x in STAGES if x.when(ctx.recipe)]:
        _hook(s, "before", stage, inputs=dict(s.records))
        laps.start()
        if stage.file:
            path = s.dir / f"{stage.file}.jsonl"
            s.records[stage.name], s.counts[stage.name] = finished_or_run(
                path, stage.record, ctx.resume, lambda stage=stage: stage.run(s)
            )
        else:
            s.records[stage.name], s.counts[stage.name] = stage.run(s)
        if stage.frees_teacher:
            s.teacher.close()
        laps.stop(stage.name)
        _hook(s, "after", stage, records=s.records[stage.name], counts=s.counts[stage.name])
    return round_entry(s, laps), s.student


def _hook(s: Round, when: str, stage: Stage, **kwargs) -> None:
    """Call every `kdagent_<when>_stage`; the first reason one returns stops the run."""
    kwargs |= {"stage": stage.name, "round": s.number, "recipe": s.ctx.recipe, "run_dir": s.ctx.rd.path}
    for impl in getattr(s.ctx.plugins.pm.hook, f"kdagent_{when}_stage").get_hookimpls():  # registration order
        reason = impl.function(*[kwargs[a] for a in impl.argnames])
        if reason:
            raise StageVetoed(
                f"round {s.number}: plugin {impl.plugin_name} stopped the run {when} the {stage.name} stage: {reason}"
            )


class Laps:
    """Each stage's seconds and its own peak memory: RSS where the high-water mark can be reset (Linux), GPU allocated."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.rss: dict[str, float] = {}
        self.gpu: dict[str, float] = {}

    def start(self) -> None:
        self.clock = time.time()
        reset_peak_rss()
        gpu_peak_mb()  # resets the GPU's counter too

    def stop(self, name: str) -> None:
        self.seconds[name] = round(time.time() - self.clock, 1)
        self.rss[name] = peak_rss_mb()
        gpu = gpu_peak_mb()
        if gpu is not None:
            self.gpu[name] = gpu


def round_entry(s: Round, laps: Laps) -> dict:
    """The round's entry of metrics.json: its student, its evaluation, what each stage kept and dropped, the update's
    report, and each stage's seconds and peak memory."""
    tasks, feedback, c = s["tasks"], s["feedback"], s.counts
    task_counts, elicit_counts, feedback_counts, pair_counts = (
        c["tasks"],
        c["elicit"],
        c["feedback"],
        c.get("preferences", {}),
    )
    dropped = Counter()
    for part in (task_counts, elicit_counts, feedback_counts, c["curate"]):
        dropped.update(part.get("dropped", {}))
    counts = {
        "tasks": len(tasks),
        "expanded": task_counts.get("expanded", 0),
        "generations": len(s["elicit"]),
        "teacher_failures": elicit_counts.get("teacher_failures", 0),
        "passed": sum(f.passed for f in feedback),
        "failed_checks": sum(f.failed for f in feedback),
        "sft_examples": len(s["curate"]),
        "preference_pairs": len(s["preferences"]),
        "labels": {
            "tasks": label_counts(tasks),
            **sample_labels(s.tasks(), feedback),
            "sft": c["curate"].get("labels", {}),
        },
        "dropped": dict(sorted(dropped.items())),
        **(
            {"pairs_dropped": pair_counts.get("dropped", {}), "ranking": pair_counts.get("ranking", {})}
            if pair_counts
            else {}
        ),
        **{key: task_counts[key] for key in ("mined_failures", "expansion") if key in task_counts},
        **({"judge": feedback_counts["judge"]} if "judge" in feedback_counts else {}),
        **(
            {"python_tool_isolation": elicit_counts["python_tool_isolation"]}
            if "python_tool_isolation" in elicit_counts
            else {}
        ),
    }
    return {
        "round": s.number,
        "student": str(s.student),
        "eval": c["evaluate"],
        "counts": counts,
        "update": c["update"],
        "seconds": laps.seconds,
        "peak_rss_mb": laps.rss,
        **({"peak_gpu_allocated_mb": laps.gpu} if laps.gpu else {}),
    }
