"""Label-balanced curation: unit tests on real records, and a real round on the tiny config-built model
with a lopsided choice domain."""

import json
from collections import Counter

import pytest

from kdagent.curate import balance_examples, label_counts
from kdagent.domain import Domain
from kdagent.hookspecs import hookimpl
from kdagent.jsonl import read_jsonl, write_jsonl
from kdagent.records import Feedback, Provenance, SFTExample, Task


def choice(i: int, answer: str) -> Task:
    return Task(id=f"c{i}", prompt=f"Question {i}?", choices=["yes", "no", "maybe"], answer=answer, kind="choice")


def numeric(i: int) -> Task:
    return Task(id=f"n{i}", prompt=f"What is {i} + 1?", answer=str(i + 1), kind="numeric")


def example(task: Task, n: int = 0) -> SFTExample:
    return SFTExample(
        id=f"{task.id}-{n}",
        prompt=[{"role": "user", "content": task.prompt}],
        completion=[{"role": "assistant", "content": task.answer}],
        provenance=Provenance(round=1, teacher="reference", skill="label", domain="test", task_id=task.id),
    )


def labels(examples, tasks) -> Counter:
    return Counter(
        tasks[ex.provenance.task_id].answer for ex in examples if tasks[ex.provenance.task_id].kind == "choice"
    )


@pytest.fixture
def lopsided():
    tasks = (
        [choice(i, "yes") for i in range(7)]
        + [choice(7, "no"), choice(8, "no"), choice(9, "maybe")]
        + [numeric(i) for i in range(3)]
    )
    examples = [example(t) for t in tasks] + [example(tasks[0], 1)]  # two completions of one task
    return examples, {t.id: t for t in tasks}


def test_upsample_keeps_every_example_and_equalises_the_labels(lopsided):
    examples, tasks = lopsided
    out, counts = balance_examples(examples, tasks, "upsample", seed=1)
    assert out[: len(examples)] == examples  # nothing dropped, order kept, copies after
    assert counts == {
        "labels_in": {"maybe": 1, "no": 2, "yes": 8},
        "labels_out": {"maybe": 8, "no": 8, "yes": 8},
        "mode": "upsample",
    }
    assert labels(out, tasks) == Counter(counts["labels_out"])
    assert len({ex.id for ex in out}) == len(out) == len(examples) + 7 + 6
    # the rarer labels' examples repeat in turn: c7 and c8 three times each, c9 seven times
    copies = Counter(ex.provenance.task_id for ex in out[len(examples) :])
    assert copies == {"c7": 3, "c8": 3, "c9": 7}
    assert [ex for ex in out if ex.provenance.task_id.startswith("n")] == [
        ex for ex in examples if ex.provenance.task_id.startswith("n")
    ]
    again, _ = balance_examples(examples, tasks, "upsample", seed=2)
    assert [ex.id for ex in again] == [ex.id for ex in out]  # deterministic


def test_downsample_keeps_as_many_of_each_label_as_the_rarest_has(lopsided):
    examples, tasks = lopsided
    out, counts = balance_examples(examples, tasks, "downsample", seed=1)
    assert counts["labels_out"] == {"maybe": 1, "no": 1, "yes": 1} and counts["labels_in"]["yes"] == 8
    assert labels(out, tasks) == Counter(counts["labels_out"])
    assert sum(ex.provenance.task_id.startswith("n") for ex in out) == 3  # the numeric ones all stay
    assert [ex.id for ex in out] == [ex.id for ex in examples if ex in out]  # order kept
    assert [ex.id for ex in balance_examples(examples, tasks, "downsample", seed=1)[0]] == [ex.id for ex in out]
    assert len({ex.id for ex in out}) == len(out)


def test_off_and_non_choice_examples_pass_untouched(lopsided):
    examples, tasks = lopsided
    out, counts = balance_examples(examples, tasks, "off", seed=1)
    assert out == examples and counts["labels_out"] == counts["labels_in"] and counts["mode"] == "off"
    plain = [ex for ex in examples if ex.provenance.task_id.startswith("n")]
    for mode in ("upsample", "downsample"):
        assert balance_examples(plain, tasks, mode, seed=1)[0] == plain


def test_a_label_without_examples_is_reported_missing(lopsided):
    examples, tasks = lopsided
    without_maybe = [ex for ex in examples if ex.provenance.task_id != "c9"]
    out, counts = balance_examples(without_maybe, tasks, "upsample", seed=1)
    assert counts["missing"] == ["maybe"] and counts["labels_out"] == {"no": 8, "yes": 8}
    assert label_counts(tasks.values()) == {"maybe": 1, "no": 2, "yes": 7}


def test_each_accepted_completion_is_taught_under_every_training_prompt():
    from kdagent.curate.examples import curate
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe
    from kdagent.records import Feedback, Generation, GroundedTask
    from kdagent.skills.label import Label

    class TwoPhrasings(Label):
        def training_prompts(self, task, passages=None):
            return [
                self.messages(task, passages),
                [{"role": "user", "content": f"{task.prompt}\nReply with yes, no or maybe."}],
            ]

    recipe = Recipe.model_validate(
        {"name": "r", "feedback": {"fallback_to_reference": True}, "curation": {"max_per_task": 1}}
    )
    plugins = build_plugins(load_entry_points=False)
    solved, unsolved = choice(0, "no"), choice(1, "yes")
    gens = [
        Generation(id=f"g{k}", task_id=solved.id, round=1, sample=k, teacher="t", skill="label", messages=[], text="no")
        for k in range(2)
    ]
    verdicts = [
        Feedback(generation_id=g.id, task_id=solved.id, verifier="label/reference", passed=True, score=1.0)
        for g in gens
    ]
    grounded = [GroundedTask(task=solved), GroundedTask(task=unsolved)]
    one, _ = curate(Label(), recipe, plugins, 1, grounded, gens, verdicts)
    two, counts = curate(TwoPhrasings(), recipe, plugins, 1, grounded, gens, verdicts)
    assert counts == {"over_per_task_cap": 1, "reference_fallback": 1}  # the cap counts completions, not prompts
    assert len(one) == 2 and len(two) == 4 and len({ex.id for ex in two}) == 4
    assert [ex.id for ex in two[::2]] == [ex.id for ex in one]  # the first prompt's ids are a one-prompt skill's
    assert [ex.completion for ex in two] == [[{"role": "assistant", "content": a}] for a in ("no", "no", "yes", "yes")]
    assert two[1].prompt[-1]["content"].endswith("yes, no or maybe.") and two[0].prompt == one[0].prompt


def test_a_tasks_rationale_is_taught_beside_its_answer():
    from kdagent.curate.examples import curate
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe
    from kdagent.records import GroundedTask
    from kdagent.skills.label import Label

    recipe = Recipe.model_validate({"name": "r", "feedback": {"fallback_to_reference": True}})
    task = choice(0, "no").model_copy(update={"solution": "The trial found no effect."})
    plain, _ = curate(Label(), recipe, build_plugins(load_entry_points=False), 1, [GroundedTask(task=task)], [], [])
    both, counts = curate(
        Label(rationales=True), recipe, build_plugins(load_entry_points=False), 1, [GroundedTask(task=task)], [], []
    )
    assert counts == {"reference_fallback": 1, "auxiliary": 1} and both[0] == plain[0] and len(both) == 2
    assert both[1].completion[0]["content"] == "The trial found no effect.\nSo the answer is: no"
    assert both[1].provenance.feedback == {"verifier": "reference-auxiliary"} and both[1].id != both[0].id


# A real round: a random tiny model answers nothing right, so every task teaches its reference label
# (fallback_to_reference); six of the eight seed tasks are "Yes".
SEEDS = [
    ("Does water freeze at zero degrees Celsius under normal pressure?", "Yes"),
    ("Is Paris the capital city of France?", "Yes"),
    ("Do spiders have eight legs?", "Yes"),
    ("Is the Pacific the largest ocean on Earth?", "Yes"),
    ("Can penguins swim underwater to catch fish?", "Yes"),
    ("Does a triangle have exactly three sides?", "Yes"),
    ("Is the moon made of green cheese?", "No"),
    ("Do trout breathe air through lungs like whales?", "No"),
]


class Parity(Domain):
    name = "parity"

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        return [
            Task(id=f"parity-{i}", prompt=p, choices=["Yes", "No"], answer=a, kind="choice", domain="parity")
            for i, (p, a) in enumerate(SEEDS[:n])
        ]

    def eval_tasks(self, n: int) -> list[Task]:
        return []


class Registrations:
    @hookimpl
    def kdagent_register_domains(self, register):
        register("parity", Parity)


def test_a_round_with_a_lopsided_choice_domain_teaches_every_label(tmp_path, tiny_model_dir):
    from kdagent.loop.runner import run_recipe
    from kdagent.plugins import _collect, build_plugins
    from kdagent.recipe import Recipe

    evaluation = tmp_path / "eval.jsonl"
    write_jsonl(
        evaluation,
        [
            Task(id=f"e{i}", prompt=f"Is {n} an odd count of apples?", choices=["Yes", "No"], answer=a, kind="choice")
            for i, (n, a) in enumerate([(7, "Yes"), (14, "No")])
        ],
    )  # evaluation.data: the domain holds none out
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(Registrations(), name="registrations")
    plugins.domains.clear()
    _collect(plugins, "domains")
    recipe = Recipe.model_validate(
        {
            "name": "lopsided",
            "seed": 1,
            "student": {"model": str(tiny_model_dir), "max_length": 128},
            "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 4, "batch_size": 8},
            "domain": {"name": "parity", "seed_tasks": 8, "eval_tasks": 2},
            "skills": ["label"],
            "retrieval": {"enabled": False},
            "feedback": {"fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-3},
            "evaluation": {"data": str(evaluation), "max_new_tokens": 4, "skill_tasks": 0, "bootstrap": 0},
        }
    )
    metrics = run_recipe(recipe, tmp_path / "run", plugins)
    round_dir = tmp_path / "run" / "round-01"
    examples = read_jsonl(round_dir / "sft.jsonl", SFTExample)
    taught = Counter(ex.completion[-1]["content"] for ex in examples)
    assert taught == {"Yes": 6, "No": 6}  # every label, the rarer one repeated up to the other
    assert len({ex.id for ex in examples}) == len(examples)
    counts = json.loads((round_dir / "sft.counts.json").read_text())
    assert counts["labels"] == {"labels_in": {"No": 2, "Yes": 6}, "labels_out": {"No": 6, "Yes": 6}, "mode": "upsample"}
    assert json.loads((round_dir / "tasks.counts.json").read_text())["labels"] == {"No": 2, "Yes": 6}
    (entry,) = metrics["rounds"]
    labels = entry["counts"]["labels"]
    assert labels["tasks"] == {"No": 2, "Yes": 6} and labels["sft"] == counts["labels"]
    feedback = read_jsonl(round_dir / "feedback.jsonl", Feedback)  # the labels the samples named, and those that passed
    assert labels.get("samples", {}) == dict(Counter(f.predicted for f in feedback if f.predicted))
    assert sum(labels.get("passed", {}).values()) == sum(f.passed for f in feedback)
    assert entry["counts"]["sft_examples"] == 12
