"""Phrasings of choice prompts: the evaluation's own comes first, the reserved one is never taught."""

import pytest

from kdagent.default_plugins.label import Label
from kdagent.evaluate.runner import plain_messages
from kdagent.phrasings import TRAINING_LAYOUTS, questions, training_contents, unseen_content
from kdagent.records import Task


def task(**extra) -> Task:
    return Task(id="t1", prompt="Sentence: Profit rose 5%.\nSentiment for an investor?", choices=["positive", "negative", "neutral"],
                answer="positive", kind="choice", **extra)


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
    t = task(context="Q3 report.", rephrasings=["Good or bad: profit rose 5%."], unseen_question="Is this positive, negative or neutral?")
    unseen = unseen_content(t)
    assert "Is this positive, negative or neutral?" in unseen and "Q3 report." in unseen
    taught = training_contents(t, 16)
    assert unseen not in taught
    assert not any("The possible answers are" in c or "positive, negative or neutral?" in c for c in taught)
    assert "Sentiment for an investor?" in unseen_content(task())  # without a reserved wording, the prompt in the reserved layout


def test_label_skill_teaches_choice_tasks_under_several_phrasings():
    skill = Label(phrasings=3)
    prompts = skill.training_prompts(task(rephrasings=["Profit rose 5%. Good or bad?"]))
    assert len(prompts) == 3 and prompts[0] == skill.messages(task())
    numeric = Task(id="n", prompt="2+2?", answer="4", kind="numeric")
    assert skill.training_prompts(numeric) == [skill.messages(numeric)]
    assert Label().training_prompts(task()) == [Label().messages(task())]
    with pytest.raises(ValueError, match="phrasings"):
        Label(phrasings=0)
