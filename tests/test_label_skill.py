from kdagent.plugins import build_plugins
from kdagent.records import Passage, Task
from kdagent.skill import plain_messages
from kdagent.skills.label import Label, named_choice

CHOICE = Task(
    id="c",
    prompt="Is the news good for investors?",
    context="Profit doubled.",
    choices=["positive", "negative", "neutral"],
    answer="positive",
    kind="choice",
)
NUMERIC = Task(id="n", prompt="Revenue rose from 80 to 100. By what percent?", answer="25", kind="numeric")


def test_label_prompts_as_the_evaluation_scores():
    skill = Label()
    assert skill.messages(CHOICE) == plain_messages(CHOICE)
    grounded = skill.messages(CHOICE, [Passage(id="p1", text="Profit up means positive.", source="s")])[0]["content"]
    assert grounded.startswith("Use these passages") and grounded.endswith(plain_messages(CHOICE)[0]["content"])
    assert '<passage n="1" id="p1">' in grounded
    assert skill.messages(NUMERIC)[0]["content"].endswith("Answer with the final number only.")


def test_label_verifies_the_named_option():
    skill = Label()
    for reply in [
        "positive",
        "Positive.",
        "- positive",
        "The answer is: positive",
        "Positive, because profit doubled.",
    ]:
        verdict = skill.verify(CHOICE, reply)
        assert verdict.passed and verdict.predicted == "positive", reply
        assert skill.completion(CHOICE, reply) == "positive"
    assert not skill.verify(CHOICE, "neutral").passed
    assert skill.verify(CHOICE, "neutral").predicted == "neutral"
    assert skill.verify(CHOICE, "It could be positive or negative.").predicted is None  # unclear: no option named
    assert named_choice("maybe yes", ["yes", "no", "maybe"]) == "maybe"  # the option it starts with wins
    assert named_choice("I am not sure", ["yes", "no", "maybe"]) is None


def test_label_verifies_numbers_and_teaches_the_reference():
    skill = Label()
    assert skill.verify(NUMERIC, "It rose by 25.0%.").passed
    assert skill.completion(NUMERIC, "It rose by 25.0%.") == "25"
    assert not skill.verify(NUMERIC, "20").passed and not skill.verify(NUMERIC, "twenty").passed
    assert skill.reference_completion(CHOICE) == "positive" and skill.reference_completion(NUMERIC) == "25"
    assert skill.reference_completion(Task(id="r", prompt="p", answer="refuse", kind="refusal")) is None


def test_label_is_a_builtin_skill():
    plugins = build_plugins(load_entry_points=False)
    assert plugins.skills["label"].distribution == "kdagent"
    assert isinstance(plugins.create("skills", "label"), Label)
