import pytest

from kdagent.domains.arithmetic import Arithmetic
from kdagent.models import resolve_model
from kdagent.records import Task
from kdagent.retrieval.embedder import Embedder
from kdagent.synth.expand import (
    EVOL_OPERATIONS,
    FORMAT_REASONS,
    NOVELTY_REASONS,
    evol_prompts,
    expand_tasks,
    filter_format,
    filter_novel,
    parse_question,
    self_instruct_prompts,
    strip_prefix,
)

TOM = "Tom has 5 apples. He gets 3 more apples. How many apples does Tom have now?"
TRAIN = "A train travels 120 km in 2 hours. What is its average speed in km per hour?"


@pytest.fixture(scope="module")
def embedder():
    return Embedder(resolve_model("minilm-l6"))


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("1. Tom has 3 pens. How many pens?", "Tom has 3 pens. How many pens?"),
        ("Question 4: What is 2 + 2?\nAnswer: 4", "What is 2 + 2?"),
        ("**Question:** Ana has 5 cats. How many legs do they have?", "Ana has 5 cats. How many legs do they have?"),
        ("Sure! Here is a new question:\nMia has 4 eggs. How many eggs?", "Mia has 4 eggs. How many eggs?"),
        ("#Rewritten Question#:\nLiam buys 3 bags. How many?", "Liam buys 3 bags. How many?"),
        (
            "1.5 liters cost 3 dollars. What is the price per liter?",
            "1.5 liters cost 3 dollars. What is the price per liter?",
        ),
        ("Here are some ideas.\n\n1. What is 3 + 3?\n2. What is 4 + 4?", "What is 3 + 3?"),
        ("Q: Calculate 5 times 6.", "Calculate 5 times 6."),
        ("(2) Find the sum of 4 and 5. Solution: 9", "Find the sum of 4 and 5."),
        (
            "Nora lost 3 shells.\n\nRewrite it to have one answer:\n\nHow many shells are left?",
            "How many shells are left?",
        ),
        ("What a task! Here's a possible answer:\n\nWhat is 9 - 4?\n**Answer:** 5", "What is 9 - 4?"),
        ("", ""),
    ],
)
def test_parse_question_strips_numbering_labels_lead_ins_and_answers(reply, expected):
    assert parse_question(reply) == expected


def test_strip_prefix_keeps_decimals_and_plain_questions():
    assert strip_prefix("  - 3) Question 2: What is 7 x 8?") == "What is 7 x 8?"
    assert strip_prefix("2.5 kg of rice") == "2.5 kg of rice"
    assert strip_prefix("Questions about tax are hard?") == "Questions about tax are hard?"


def test_filter_format_counts_each_reason():
    texts = [
        "short?",
        "x" * 700 + "?",
        "I'm sorry, I cannot write that question?",
        "Tom has 5 pens. Question: how many pens does he have?",
        "Tom has five pens and it is sunny today.",
        "Ana has 7 pens. Calculate how many she has after buying 2 more.",
        TRAIN,
    ]
    kept, counts = filter_format(texts)
    assert kept == texts[5:]
    assert set(counts) == set(FORMAT_REASONS)
    assert counts == {"too_short": 1, "too_long": 1, "refusal": 1, "leftover_prefix": 1, "not_a_question": 1}
    assert filter_format(["What is 2 + 2?"], min_chars=20)[1]["too_short"] == 1


def test_filter_novel_drops_paraphrases_and_duplicates_keeps_new_questions(embedder):
    texts = [
        "Tom has five apples and then gets three more. How many apples does he have now?",  # paraphrase of existing
        TRAIN,
        "  a train travels 120 km in 2 hours.  What is its average speed in km per hour?",  # exact duplicate, folded
        "A train goes 120 km in 2 hours. What is the average speed of the train in km per hour?",  # near copy of a kept one
        "Which organ pumps blood through the human body?",
    ]
    kept, counts = filter_novel(texts, [TOM], embedder, threshold=0.9)
    assert kept == [TRAIN, texts[4]]
    assert counts == {"duplicate": 1, "not_novel": 2}
    assert set(counts) == set(NOVELTY_REASONS)
    kept, counts = filter_novel([TOM, TRAIN], [], embedder)  # nothing existing: both are new
    assert kept == [TOM, TRAIN] and counts == {"duplicate": 0, "not_novel": 0}
    assert filter_novel([TOM], [TOM], embedder) == ([], {"duplicate": 1, "not_novel": 0})


def test_prompt_builders_are_deterministic_in_the_seed():
    seeds = Arithmetic().seed_tasks(5, 0)
    a = self_instruct_prompts(seeds, 6, seed=1, examples_per_prompt=3)
    assert a == self_instruct_prompts(seeds, 6, seed=1, examples_per_prompt=3)
    assert [s for _, s in a] != [s for _, s in self_instruct_prompts(seeds, 6, seed=2, examples_per_prompt=3)]
    for messages, shown in a:
        assert len(shown) == 3 and len({t.id for t in shown}) == 3
        assert all(t.prompt in messages[-1]["content"] for t in shown)
    assert all(len(s) == 2 for _, s in self_instruct_prompts(seeds[:2], 3, seed=0, examples_per_prompt=3))

    e = evol_prompts(seeds, seed=3)
    assert e == evol_prompts(seeds, seed=3)
    assert len(e) == len(seeds) and all(op in EVOL_OPERATIONS for op, _ in e)
    assert all(t.prompt in m[-1]["content"] for t, (_, m) in zip(seeds, e))
    assert {op for op, _ in evol_prompts(seeds, seed=3, operations=("deepen",))} == {"deepen"}
    with pytest.raises(ValueError, match="unknown evol-instruct operation"):
        evol_prompts(seeds, seed=0, operations=("shrink",))
    with pytest.raises(ValueError, match="unknown expansion method"):
        expand_tasks(None, seeds, None, 2, seed=0, method="magic")
    with pytest.raises(ValueError, match="at least one seed"):
        self_instruct_prompts([], 2, seed=0)


@pytest.fixture(scope="module")
def teacher(smollm_path):
    from kdagent.recipe import TeacherConfig
    from kdagent.teachers.hf import HFTeacher

    config = TeacherConfig(
        kind="hf", model=str(smollm_path), samples=1, temperature=0.7, max_new_tokens=48, batch_size=8
    )
    t = HFTeacher(smollm_path, config, label=f"hf:{smollm_path.name}")
    yield t
    t.close()


@pytest.mark.integration
@pytest.mark.parametrize("method", ["self_instruct", "evol_instruct"])
def test_expand_tasks_with_a_real_teacher(teacher, embedder, method):
    seeds = Arithmetic().seed_tasks(4, 0)
    seed_ids = {t.id for t in seeds}
    tasks, counts = expand_tasks(teacher, seeds, embedder, n_new=4, seed=0, method=method, domain="arithmetic")

    assert counts["generated"] == 4
    assert counts["kept"] == len(tasks)
    assert counts["generated"] == counts["kept"] + sum(counts[r] for r in FORMAT_REASONS + NOVELTY_REASONS)
    assert all(isinstance(t, Task) for t in tasks) and len({t.id for t in tasks}) == len(tasks)
    for t in tasks:
        assert t.id.startswith("exp-") and t.answer == "" and t.kind == "numeric" and t.domain == "arithmetic"
        assert t.parent_ids and set(t.parent_ids) <= seed_ids
        if method == "self_instruct":
            assert t.origin == "self_instruct"
        else:
            kind, op = t.origin.split(":", 1)
            assert kind == "evol_instruct" and op in EVOL_OPERATIONS and len(t.parent_ids) == 1
    prompts = [t.prompt for t in tasks]
    assert filter_format(prompts)[0] == prompts
    assert filter_novel(prompts, [t.prompt for t in seeds], embedder)[0] == prompts
