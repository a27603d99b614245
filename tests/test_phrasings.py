"""Phrasings of choice prompts: the evaluation's own comes first, the reserved one is never taught."""

import pytest

from kdagent.phrasings import TRAINING_LAYOUTS, questions, training_contents, unseen_content
from kdagent.records import Task
from kdagent.skill import plain_messages
from kdagent.skills.label import Label


def task(id: str = "t1", **extra) -> Task:
    return Task(
        id=id,
        prompt="Sentence: Profit rose 5%.\nSentiment for an investor?",
        choices=["positive", "negative", "neutral"],
        answer="positive",
        kind="choice",
        **extra,
    )


def test_the_first_training_phrasing_is_the_evaluation_prompt():
    for t in (task(), task(context="Q3 report.", rephrasings=["Profit rose 5%. Good or bad?"])):
        assert training_contents(t, 1) == [plain_messages(t)[0]["content"]]


def test_phrasings_are_distinct_deterministic_and_use_the_domain_wordings():
    t = task(rephrasings=["Profit rose 5%.\nGood news for investors?", "Classify: Profit rose 5%."])
    every = training_contents(t, 16)
    assert len(every) == len(set(every)) == len(questions(t)) * len(TRAINING_LAYOUTS)
    assert training_contents(t, 4) == training_contents(t, 4)
    assert any("Good news for investors?" in c for c in every) and all("positive" in c for c in every)


def test_the_reserved_phrasing_is_never_a_training_prompt():
    t = task(
        context="Q3 report.",
        rephrasings=["Good or bad: profit rose 5%."],
        unseen_question="Is this positive, negative or neutral?",
    )
    unseen = unseen_content(t)
    assert "Is this positive, negative or neutral?" in unseen and "Q3 report." in unseen
    taught = training_contents(t, 16)
    assert unseen not in taught
    assert not any("The possible answers are" in c or "positive, negative or neutral?" in c for c in taught)
    assert "Sentiment for an investor?" in unseen_content(
        task()
    )  # without a reserved wording, the prompt in the reserved layout


def test_label_skill_teaches_choice_tasks_under_several_phrasings():
    skill = Label(phrasings=3)
    prompts = skill.training_prompts(task(rephrasings=["Profit rose 5%. Good or bad?"]))
    assert len(prompts) == 3 and prompts[0] == skill.messages(task())
    numeric = Task(id="n", prompt="2+2?", answer="4", kind="numeric")
    assert skill.training_prompts(numeric) == [skill.messages(numeric)]
    assert Label().training_prompts(task()) == [Label().messages(task())]
    with pytest.raises(ValueError, match="phrasings"):
        Label(phrasings=0)


def test_per_answer_teaches_each_answer_under_some_of_the_phrasings_drawn_per_task():
    skill = Label(phrasings=2, per_answer=1)
    tasks = [task(id=f"t{i}", rephrasings=["Profit rose 5%. Good or bad?"]) for i in range(40)]
    taught = [skill.training_prompts(t) for t in tasks]
    assert all(len(p) == 1 for p in taught)
    assert taught == [skill.training_prompts(t) for t in tasks]  # the same draw on every run
    every = [Label(phrasings=2).training_prompts(t) for t in tasks]
    assert all(p[0] in e for p, e in zip(taught, every, strict=True))
    firsts = sum(p == e[:1] for p, e in zip(taught, every, strict=True))
    assert 0 < firsts < len(tasks)  # some tasks get the evaluation's phrasing, others the other one
    assert Label(phrasings=3, per_answer=3).training_prompts(tasks[0]) == Label(phrasings=3).training_prompts(tasks[0])
    with pytest.raises(ValueError, match="per_answer"):
        Label(phrasings=2, per_answer=3)


def test_evaluation_scores_choice_tasks_under_the_reserved_phrasing(tiny_model_dir):
    from kdagent.evaluate.runner import evaluate
    from kdagent.generation.engine import Engine

    tasks = [
        task(unseen_question="Is this positive, negative or neutral?"),
        Task(
            id="t2",
            prompt="Sentence: Costs fell.\nSentiment for an investor?",
            choices=["positive", "negative", "neutral"],
            answer="neutral",
            kind="choice",
        ),
    ]
    engine = Engine(tiny_model_dir)
    try:
        own, own_rows = evaluate(engine, tasks, Label(), bootstrap=0)
        unseen, unseen_rows = evaluate(engine, tasks, Label(), bootstrap=0, phrasing="unseen")
        direct = engine.choice_logprobs(
            [[{"role": "user", "content": unseen_content(t)}] for t in tasks], [t.choices for t in tasks]
        )
    finally:
        engine.close()
    assert own["n"] == unseen["n"] == 2 and "histogram" in unseen
    assert [r["scores"] for r in unseen_rows] == direct  # the reserved prompt is what was scored
    assert [r["scores"] for r in own_rows] != [r["scores"] for r in unseen_rows]


def test_a_tasks_rule_opens_every_phrasing_and_the_evaluation_prompt():
    t = task(rule="Sentiment is judged from an investor's view.", rephrasings=["Good or bad: profit rose 5%."])
    prompts = training_contents(t, 8) + [unseen_content(t), plain_messages(t)[0]["content"]]
    assert all(p.startswith("Sentiment is judged from an investor's view.\n\n") for p in prompts)
    assert training_contents(t, 1) == [plain_messages(t)[0]["content"]]


def test_label_skill_teaches_a_rationale_beside_the_answer_when_asked():
    t = task(solution="Profit growth is good news for shareholders.")
    ((prompt, completion),) = Label(rationales=True).auxiliary_examples(t)
    assert "Explain briefly" in prompt[0]["content"] and "Answer with one of the options." not in prompt[0]["content"]
    assert prompt[0]["content"].startswith("Sentence: Profit rose 5%.")
    assert completion[0]["content"] == "Profit growth is good news for shareholders.\nSo the answer is: positive"
    assert Label().auxiliary_examples(t) == [] and Label(rationales=True).auxiliary_examples(task()) == []
