"""The stage table: hooks before and after each stage, seen through a real `run_recipe` (a vetoing plugin stops
the run, `--resume` goes on from the stage files), and the one resume mechanism (partial chunks, the teacher's
failures included)."""

import pytest

from kdagent.hookspecs import hookimpl
from kdagent.loop.round import STAGES, StageVetoed
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe
from kdagent.records import Feedback, Generation, GroundedTask, SFTExample, Task
from kdagent.synth.elicit import elicit


def tiny_recipe(model_dir) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "stages",
            "seed": 2,
            "student": {"model": str(model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 2, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 2},
            "domain": {"name": "arithmetic", "seed_tasks": 3, "eval_tasks": 2},
            "skills": ["cot"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {"max_new_tokens": 8},
        }
    )


class Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def kdagent_before_stage(self, stage, round, inputs, run_dir):
        self.calls.append(("before", stage, round, sorted(inputs)))

    @hookimpl
    def kdagent_after_stage(self, records, counts, stage):  # fewer arguments than the spec, in any order
        self.calls.append(("after", stage, {type(r).__name__ for r in records}, counts))


class StopAfterFeedback:
    @hookimpl
    def kdagent_after_stage(self, stage, records):
        if stage == "feedback":
            return f"{sum(f.passed for f in records)} of {len(records)} samples passed"
        return None


def test_a_plugin_sees_every_stage_and_can_stop_the_run_which_resume_continues(tmp_path, tiny_model_dir):
    recipe, run_dir = tiny_recipe(tiny_model_dir), tmp_path / "run"
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(StopAfterFeedback(), name="stop_after_feedback")
    with pytest.raises(
        StageVetoed,
        match=r"round 1: plugin stop_after_feedback stopped the run after the feedback stage: \d+ of 6 samples passed",
    ):
        run_recipe(recipe, run_dir, plugins)
    round_dir = run_dir / "round-01"
    assert (round_dir / "feedback.jsonl").is_file() and not (round_dir / "sft.jsonl").exists()

    plugins = build_plugins(load_entry_points=False)
    recorder = Recorder()
    plugins.pm.register(recorder, name="recorder")
    metrics = run_recipe(recipe, run_dir, plugins, resume=True)
    names = [s.name for s in STAGES if s.name != "preferences"]  # preferences only with feedback.preferences
    assert [(when, stage) for when, stage, *_ in recorder.calls] == [(w, n) for n in names for w in ("before", "after")]
    befores = {c[1]: c for c in recorder.calls if c[0] == "before"}
    afters = {c[1]: c for c in recorder.calls if c[0] == "after"}
    assert befores["tasks"][2:] == (1, []) and befores["curate"][3] == ["elicit", "feedback", "ground", "tasks"]
    # the finished stages are read back on resume, and their hooks still get their typed records
    assert afters["tasks"][2] == {Task.__name__} and afters["ground"][2] == {GroundedTask.__name__}
    assert afters["elicit"][2] == {Generation.__name__} and afters["feedback"][2] == {Feedback.__name__}
    assert afters["curate"][2] == {SFTExample.__name__} and afters["update"][2] == afters["evaluate"][2] == set()
    (entry,) = metrics["rounds"]
    assert afters["evaluate"][3] == entry["eval"] and afters["update"][3] == entry["update"]
    assert afters["elicit"][3]["teacher_failures"] == entry["counts"]["teacher_failures"] == 0
    assert list(entry["seconds"]) == names


class FlakyTeacher:
    """Answers every prompt; the prompts of `bad` tasks get empty replies, each counted as a failure."""

    label = "flaky"

    def __init__(self, bad: set[str], stop_at: int | None = None):
        self.bad, self.stop_at, self.failures, self.calls = bad, stop_at, [], 0

    def generate(self, prompts, seed, desc="", n=None, **kwargs):
        self.calls += 1
        if self.stop_at is not None and self.calls > self.stop_at:
            raise KeyboardInterrupt  # killed while sampling this chunk
        rows = []
        for p in prompts:
            task_id = p[0]["content"].split(":")[0]
            self.failures += ["empty reply"] * (task_id in self.bad)
            rows.append(["" if task_id in self.bad else f"{task_id} {seed} {k}" for k in range(n or 2)])
        return rows


class Plain:
    name, tools = "plain", []

    def messages(self, task, passages=None):
        return [{"role": "user", "content": f"{task.id}: {task.prompt}"}]


def test_the_teachers_failures_of_a_killed_run_still_count_after_resume(tmp_path):
    grounded = [GroundedTask(task=Task(id=f"t{i}", prompt="2 + 2?", answer="4")) for i in range(6)]

    def sample(teacher, partial):
        failures = []
        gens = elicit(lambda: teacher, Plain(), grounded, 1, 5, {"samples": 2}, partial, chunk=2, failures=failures)
        return gens, failures

    whole, whole_failures = sample(FlakyTeacher({"t1", "t4"}), tmp_path / "whole.partial.jsonl")
    assert whole_failures == ["empty reply"] * 2 and len(whole) == 12

    partial = tmp_path / "killed.partial.jsonl"
    with pytest.raises(KeyboardInterrupt):
        sample(FlakyTeacher({"t1", "t4"}, stop_at=1), partial)  # chunk 1 (t0, t1) finished, then killed
    fresh = FlakyTeacher({"t1", "t4"})
    resumed, failures = sample(fresh, partial)
    assert fresh.calls == 2  # chunks 2 and 3 only
    assert resumed == whole and failures == whole_failures  # t1's failure came from the killed process


def test_the_memory_plan_names_stages_of_the_table_and_each_stage_has_its_own_file(tiny_model_dir):
    from kdagent.memory import memory_plan

    plan = memory_plan(tiny_recipe(tiny_model_dir), tiny_model_dir, tiny_model_dir, "cpu")
    names = [s.name for s in STAGES]
    assert set(plan["stages_mb"]) == {"elicit", "evaluate", "update"} <= set(names)
    assert len(set(names)) == len(names) and [s.file for s in STAGES if s.file] == [
        "tasks",
        "grounded",
        "generations",
        "feedback",
        "sft",
        "preferences",
    ]
