"""Learning from few labels: a split domain that keeps only `labelled` gold answers, self-consistency votes
that must be confident and verified against the gold labels, balanced curation that counts a voted example
under its voted label, and a real round on a tiny config-built model where unlabelled tasks are voted on."""

import json
from collections import Counter

import pytest

from kdagent.curate import balance_examples, label_counts
from kdagent.feedback.verifiers import Reference, SelfConsistency, VerifyJob
from kdagent.hookspecs import hookimpl
from kdagent.jsonl import read_jsonl
from kdagent.recipe import Recipe
from kdagent.records import Feedback, Generation, Provenance, SFTExample, Task
from kdagent.splits import SplitDomain

# --- SplitDomain(labelled=k) -------------------------------------------------------------------------


class YesNo(SplitDomain):
    """Two groups of yes/no questions, the second with a gold index (as MedMCQA's records carry)."""

    name = "yesno"

    def public_groups(self):
        def task(group: str, i: int) -> Task:
            answer = "No" if i % 5 == 4 else "Yes"
            extra = {"answer_index": ["Yes", "No"].index(answer)} if group == "b" else {}
            return Task(
                id=f"{group}{i}",
                prompt=f"Is item {i} of group {group} a thing that {'is' if answer == 'Yes' else 'is not'} real?",
                choices=["Yes", "No"],
                answer=answer,
                kind="choice",
                solution=f"Because item {i} says so.",
                **extra,
            )

        return [[(f"{g}{i}", task(g, i)) for i in range(n)] for g, n in (("a", 30), ("b", 20))]


def test_labelled_keeps_the_same_gold_answers_in_every_draw(tmp_path):
    plain = YesNo(data_dir=str(tmp_path))
    few = YesNo(data_dir=str(tmp_path), labelled=6)
    pool = {t.id: t for group in plain.pools[0] for t in group}
    drawn = few.seed_tasks(20, seed=1)
    assert len(drawn) == 20 and len({t.id for t in drawn}) == 20
    gold = [t for t in drawn if t.answer]
    assert len(gold) == 6 and drawn[:6] == gold  # the labelled ones first, as they were
    assert all(t == pool[t.id] for t in gold)
    assert {t.id[0] for t in gold} == {"a", "b"}  # the groups interleaved
    for t in drawn[6:]:  # nothing that gives the answer away
        assert t.answer == "" and t.solution is None and "answer_index" not in t.model_dump()
        assert t.model_dump(exclude={"answer", "solution", "answer_index"}) == pool[t.id].model_dump(
            exclude={"answer", "solution", "answer_index"}
        )
    assert few.seed_tasks(20, seed=1) == drawn  # deterministic in the seed
    other = few.seed_tasks(40, seed=2)  # another round's draw: the same gold tasks, other unlabelled ones
    assert {t.id for t in other if t.answer} == {t.id for t in gold}
    assert {t.id for t in other[6:20]} != {t.id for t in drawn[6:]}
    assert [t.id for t in few.seed_tasks(4, seed=3)] == [t.id for t in few.seed_tasks(40, seed=3)[:4]]
    assert all(t.answer for t in few.seed_tasks(4, seed=3))  # fewer than `labelled`: all gold
    assert few.eval_tasks(100) == plain.eval_tasks(100)  # the held-out set is untouched
    assert plain.seed_tasks(20, seed=1) == YesNo(data_dir=str(tmp_path)).seed_tasks(20, seed=1)
    assert all(t.answer for t in plain.seed_tasks(100, seed=1))
    with pytest.raises(ValueError, match="labelled must be at least 0"):
        YesNo(data_dir=str(tmp_path), labelled=-1)


def test_finance_labelled_on_the_phrasebank(shared_data):
    from kdagent_finance.domain import Finance

    def make(**extra):
        return Finance(
            data_dir=str(shared_data),
            datasets=["phrasebank"],
            agreement="75Agree",
            eval_agreement="AllAgree",
            **extra,
        )

    plain, few = make(), make(labelled=500)
    drawn = few.seed_tasks(1100, seed=1)
    gold = [t for t in drawn if t.answer]
    assert len(drawn) == 1100 and len(gold) == 500 and drawn[:500] == gold
    assert set(label_counts(gold)) == {"negative", "neutral", "positive"}
    assert all(t.answer == "" and t.kind == "choice" for t in drawn[500:])
    assert {t.id for t in few.seed_tasks(2000, seed=2) if t.answer} == {t.id for t in gold}
    assert few.seed_tasks(1100, seed=1) == drawn
    assert few.eval_tasks(300) == plain.eval_tasks(300) and all(t.answer for t in few.eval_tasks(300))
    assert not {t.id for t in few.eval_tasks(10_000)} & {t.id for t in few.seed_tasks(10_000, seed=1)}


def test_law_and_medicine_take_labelled_too(shared_data):
    from kdagent_law.domain import Law
    from kdagent_medicine.domain import Medicine

    for domain in (
        Law(data_dir=str(shared_data), tasks=["overruling", "diversity_1"], labelled=40),
        Medicine(data_dir=str(shared_data), datasets=["pubmedqa"], labelled=40),
    ):
        drawn = domain.seed_tasks(100, seed=0)
        assert len(drawn) == 100 and sum(bool(t.answer) for t in drawn) == 40, domain.name


# --- balance by voted label -------------------------------------------------------------------------


def _example(task: Task, predicted: str | None = None, verifier: str = "self-consistency") -> SFTExample:
    feedback = {"verifier": verifier, "passed": True, **({"predicted": predicted} if predicted else {})}
    return SFTExample(
        id=f"x-{task.id}",
        prompt=[{"role": "user", "content": task.prompt}],
        completion=[{"role": "assistant", "content": task.answer or predicted or "?"}],
        provenance=Provenance(round=1, teacher="t", skill="label", domain="d", task_id=task.id, feedback=feedback),
    )


def test_balance_counts_a_voted_example_under_its_voted_label():
    choices = ["yes", "no", "maybe"]
    gold = [Task(id=f"g{i}", prompt=f"Q{i}?", choices=choices, answer=a, kind="choice") for i, a in enumerate("yyyn")]
    gold = [t.model_copy(update={"answer": {"y": "yes", "n": "no"}[t.answer]}) for t in gold]
    unlabelled = [Task(id=f"u{i}", prompt=f"U{i}?", choices=choices, answer="", kind="choice") for i in range(3)]
    tasks = {t.id: t for t in gold + unlabelled}
    examples = [_example(t) for t in gold] + [
        _example(unlabelled[0], "no"),
        _example(unlabelled[1], "maybe"),
        _example(unlabelled[2], verifier="judge"),  # a judge's pass names no label: not balanced
    ]
    out, counts = balance_examples(examples, tasks, "upsample", seed=0)
    assert counts == {
        "labels_in": {"maybe": 1, "no": 2, "yes": 3},
        "labels_out": {"maybe": 3, "no": 3, "yes": 3},
        "mode": "upsample",
        "voted_in": {"maybe": 1, "no": 1},
    }
    copies = Counter(ex.provenance.task_id for ex in out[len(examples) :])
    assert copies["u1"] == 2 and copies["u2"] == 0 and out[: len(examples)] == examples
    assert label_counts(tasks.values()) == {"no": 1, "yes": 3}  # unlabelled tasks have no label of their own
    down, counts = balance_examples(examples, tasks, "downsample", seed=0)
    assert counts["labels_out"] == {"maybe": 1, "no": 1, "yes": 1} and any(ex.id == "x-u1" for ex in down)


# --- confident, verified votes ------------------------------------------------------------------------


def _job(tasks: list[Task], min_agreement: float, checked: dict | None = None) -> VerifyJob:
    from kdagent.skills.label import Label

    recipe = Recipe.model_validate({"name": "v", "feedback": {"min_agreement": min_agreement}})
    return VerifyJob(recipe, Label(), None, {t.id: t for t in tasks}, 1, None, "", judge=None, checked=checked or {})


def _gens(task: Task, replies: list[str]) -> list[Generation]:
    return [
        Generation(
            id=f"{task.id}-{k}", task_id=task.id, round=1, sample=k, teacher="t", skill="label", messages=[], text=r
        )
        for k, r in enumerate(replies)
    ]


def _choice(i: int, answer: str) -> Task:
    return Task(id=f"t{i}", prompt=f"Question {i}?", choices=["Yes", "No"], answer=answer, kind="choice")


def test_votes_pass_only_when_confident_and_right_on_the_gold_labels():
    gold = [_choice(0, "Yes"), _choice(1, "Yes"), _choice(2, "No"), _choice(3, "No")]
    new = [_choice(4, ""), _choice(5, ""), _choice(6, "")]
    tasks = gold + new

    def votes(gold_replies, job_share):
        gens = [g for t, r in zip(gold, gold_replies) for g in _gens(t, [r] * 4)]
        job = _job(tasks, job_share)
        job.checked.update((f.generation_id, f) for f in Reference().verify(job, gens))
        unlabelled = (
            _gens(new[0], ["Yes", "yes.", "The answer is: Yes", "No"])  # 3 of 4 agree
            + _gens(new[1], ["No", "No", "Yes", "Yes"])  # a tie: no majority
            + _gens(new[2], ["No", "no", "No", "maybe"])  # 3 of 4, one names no option
        )
        return {f.generation_id: f for f in SelfConsistency().verify(job, unlabelled)}

    # a teacher that is right on every gold task: its confident votes are trusted
    out = votes(["Yes", "Yes", "No", "No"], 0.75)
    assert [out[f"t4-{k}"].passed for k in range(4)] == [True, True, True, False]
    assert {out[f"t4-{k}"].predicted for k in range(3)} == {"Yes"}  # read as the option, however written
    assert "right on 2/2 gold-labelled tasks" in out["t4-0"].reason
    assert not any(out[f"t5-{k}"].passed for k in range(4))
    assert [out[f"t6-{k}"].passed for k in range(4)] == [True, True, True, False]
    assert out["t6-3"].predicted is None
    # stricter agreement: 3 of 4 is not enough
    assert not any(f.passed for f in votes(["Yes", "Yes", "No", "No"], 1.0).values())
    # a teacher that says "Yes" to everything: right on half its "Yes" votes and never voted "No"
    out = votes(["Yes"] * 4, 0.75)
    assert not any(f.passed for f in out.values())
    assert out["t4-0"].reason.startswith("unverified vote:") and "right on 2/4" in out["t4-0"].reason
    assert "right on 0/0" in out["t6-0"].reason
    # no gold tasks in the round: agreement alone decides
    job = _job(new, 0.75)
    plain = SelfConsistency().verify(job, _gens(new[0], ["Yes", "Yes", "Yes", "No"]))
    assert [f.passed for f in plain] == [True, True, True, False]


# --- a real round on a tiny model -------------------------------------------------------------------


@pytest.fixture(scope="module")
def yes_teacher_dir(tmp_path_factory, tiny_llama):
    """A tiny config-built llama that replies "Yes" to anything: one dimension of every embedding is large
    and the output head reads only that dimension, into the "Yes" token."""
    import torch

    model, tokenizer = tiny_llama(tie_word_embeddings=False)
    (yes,) = tokenizer.encode("Yes", add_special_tokens=False)
    with torch.no_grad():
        model.model.embed_tokens.weight[:, 0] = 10.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[yes, 0] = 50.0
    out = tmp_path_factory.mktemp("yes-teacher")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


class AllYes(SplitDomain):
    name = "all_yes"

    def public_groups(self):
        return [
            [
                (
                    f"q{i}",
                    Task(
                        id=f"q{i}",
                        prompt=f"Does the {word} number {i} appear in the list of {i * 7} things?",
                        choices=["Yes", "No"],
                        answer="Yes",
                        kind="choice",
                    ),
                )
                for i, word in enumerate(["red", "blue", "green", "small", "large", "odd", "even", "round"] * 2)
            ]
        ]


class Registrations:
    @hookimpl
    def kdagent_register_domains(self, register):
        register("all_yes", AllYes)


def test_a_round_votes_labels_for_the_unlabelled_tasks(tmp_path, yes_teacher_dir):
    from kdagent.loop.runner import run_recipe
    from kdagent.plugins import _collect, build_plugins

    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(Registrations(), name="registrations")
    plugins.domains.clear()
    _collect(plugins, "domains")
    recipe = Recipe.model_validate(
        {
            "name": "few-labels",
            "seed": 1,
            "student": {"model": str(yes_teacher_dir), "max_length": 128},
            "teacher": {"kind": "self", "samples": 4, "temperature": 1.0, "max_new_tokens": 1, "batch_size": 8},
            "domain": {
                "name": "all_yes",
                "seed_tasks": 8,
                "eval_tasks": 2,
                "options": {"data_dir": str(tmp_path), "labelled": 3},
            },
            "skills": ["label"],
            "retrieval": {"enabled": False},
            "feedback": {"unreferenced": "self_consistency", "min_agreement": 0.75, "fallback_to_reference": True},
            "update": {"epochs": 1, "batch_size": 4, "learning_rate": 1e-4},
            "evaluation": {"max_new_tokens": 4, "skill_tasks": 0, "bootstrap": 0},
        }
    )
    metrics = run_recipe(recipe, tmp_path / "run", plugins)
    round_dir = tmp_path / "run" / "round-01"
    tasks = {t.id: t for t in read_jsonl(round_dir / "tasks.jsonl", Task)}
    unlabelled = {tid for tid, t in tasks.items() if not t.answer}
    assert len(tasks) == 8 and len(unlabelled) == 5
    feedback = read_jsonl(round_dir / "feedback.jsonl", Feedback)
    voted = [f for f in feedback if f.task_id in unlabelled]
    assert len(voted) == 20 and {f.verifier for f in voted} == {"self-consistency"}
    assert all(f.passed and f.predicted == "Yes" and "right on 3/3 gold-labelled" in f.reason for f in voted)
    examples = read_jsonl(round_dir / "sft.jsonl", SFTExample)
    taught = [ex for ex in examples if ex.provenance.task_id in unlabelled]
    assert {ex.provenance.task_id for ex in taught} == unlabelled  # one voted reply each (max_per_task 1)
    assert {ex.completion[-1]["content"] for ex in taught} == {"Yes"}
    (entry,) = metrics["rounds"]
    labels = entry["counts"]["labels"]
    assert labels["tasks"] == {"Yes": 3}  # the gold labels only
    assert labels["passed"] == {"Yes": 32} and entry["counts"]["passed"] == 32
    assert labels["sft"]["labels_in"] == {"Yes": 8} and labels["sft"]["voted_in"] == {"Yes": 5}
    assert json.loads((round_dir / "sft.counts.json").read_text())["labels"] == labels["sft"]
