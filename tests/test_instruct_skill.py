"""The `instruct` skill (format constraints, multi-turn dialogue) and the `instructions` domain, with the
config-built tiny model for elicitation and a tiny round."""

import pytest

from kdagent.curate import contaminated_ids
from kdagent.curate.examples import split_dialogue
from kdagent.domains.instructions import HELD_OUT, SEED, Instructions, check_builtin
from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks
from kdagent.jsonl import read_jsonl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import build_plugins
from kdagent.recipe import Recipe, TeacherConfig
from kdagent.records import GroundedTask, SFTExample, Task
from kdagent.skills.instruct import Instruct, check_constraints, constraints_from_text
from kdagent.synth.elicit import elicit

# (constraints, a reply that meets them, a reply that breaks them, the name the failure starts with)
CASES = [
    ({"max_words": 5}, "One two three four five.", "One two three four five six.", "max_words"),
    ({"min_words": 4}, "It is a fine day.", "Fine day.", "min_words"),
    ({"bullets": 2}, "- apples\n* pears", "- apples\n- pears\n- plums", "bullets"),
    ({"numbered": 2}, "1. Wash.\n2) Dry.", "1. Wash.\nThen dry.", "numbered"),
    ({"paragraphs": 2}, "First part.\n\nSecond part.", "First part.\nSecond part.", "paragraphs"),
    ({"json": True}, '```json\n{"a": 1}\n```', "a = 1", "json"),
    ({"json": True}, "[1, 2]", '"just a string"', "json"),
    ({"json_keys": ["a", "b"]}, '{"a": 1, "b": 2}', '{"a": 1}', "json_keys"),
    ({"starts_with": "Yes"}, '"Yes, it does."', "It does, yes.", "starts_with"),
    ({"ends_with": "Done."}, "All tasks finished. Done", "Done. All tasks finished.", "ends_with"),
    ({"include": ["salt", "sea breeze"]}, "Salt hung in the sea breeze.", "Salt hung in the sea air.", "include"),
    ({"exclude": ["hot"]}, "A shot of espresso in the heat.", "It is Hot today.", "exclude"),
    ({"lowercase": True}, "all quiet here.", "All quiet here.", "lowercase"),
]


@pytest.mark.parametrize("constraints, good, bad, name", CASES)
def test_each_constraint_passes_and_fails(constraints, good, bad, name):
    assert check_constraints(good, constraints) == []
    (failure,) = check_constraints(bad, constraints)
    assert failure.startswith(name + ":")


def test_unknown_constraint_never_passes():
    with pytest.raises(ValueError, match="unknown constraint 'rhymes'"):
        check_constraints("text", {"rhymes": True})


def test_verify_names_every_failed_constraint_and_scores_the_share_met():
    skill = Instruct()
    task = Task(
        id="t",
        prompt="p",
        answer="comply",
        kind="refusal",
        constraints={"max_words": 3, "lowercase": True, "bullets": 1},
    )
    v = skill.verify(task, "Far Too Many Words Here")
    assert not v.passed and v.score == pytest.approx(0.0)
    assert v.reason.count(";") == 2 and "max_words" in v.reason and "lowercase" in v.reason and "bullets" in v.reason
    v = skill.verify(task, "- one two")
    assert v.passed and v.score == 1.0 and v.reason == ""
    v = skill.verify(task, "- One two")
    assert not v.passed and v.score == pytest.approx(2 / 3) and v.reason.startswith("lowercase")
    assert not skill.verify(task, "   ").passed
    assert skill.verify(task, "i'm sorry, i can't").reason == "refused a request it should carry out"
    harmful = Task(id="h", prompt="p", answer="refuse", kind="refusal")
    assert skill.verify(harmful, "I can't help with that.").passed and not skill.verify(harmful, "Sure.").passed
    assert skill.verify(Task(id="n", prompt="p", answer="7"), "It is 7.").passed


def test_constraints_are_read_from_the_instruction():
    assert constraints_from_text('Answer in fewer than 15 words, starting with "Because".') == {
        "max_words": 14,
        "starts_with": "Because",
    }
    assert constraints_from_text("In no more than 20 words, say it.") == {"max_words": 20}
    assert constraints_from_text("Write more than 25 words.") == {"min_words": 26}
    assert constraints_from_text('Give it as JSON with the keys "a", "b" and "c".') == {
        "json": True,
        "json_keys": ["a", "b", "c"],
    }
    assert constraints_from_text('Use the words "x" and "y", end with "Bye." and do not use the word "z".') == {
        "include": ["x", "y"],
        "ends_with": "Bye.",
        "exclude": ["z"],
    }
    assert constraints_from_text("Give four bullet points, all lowercase, in 3 paragraphs.") == {
        "bullets": 4,
        "paragraphs": 3,
        "lowercase": True,
    }
    assert constraints_from_text("What is the capital of France?") == {}


def test_builtin_instructions_meet_their_own_constraints():
    assert check_builtin() == []
    assert len(SEED) >= 30 and len(HELD_OUT) >= 10


def test_domain_gives_disjoint_deterministic_tasks_in_the_evaluation_format():
    domain = Instructions()
    seeds = domain.seed_tasks(len(SEED), seed=3)
    assert [t.id for t in seeds] == [t.id for t in Instructions().seed_tasks(len(SEED), seed=3)]
    assert [t.id for t in domain.seed_tasks(5, seed=4)] != [t.id for t in domain.seed_tasks(5, seed=5)]
    held_out = domain.eval_tasks(len(HELD_OUT))
    assert held_out == Instructions().eval_tasks(len(HELD_OUT))
    check_tasks(seeds, "seed")
    check_tasks(held_out, "held-out")
    assert not {t.prompt for t in seeds} & {t.prompt for t in held_out}
    assert all(t.kind == "refusal" and t.answer == "comply" and t.constraints and t.solution for t in seeds)
    assert all(t.kind == "choice" and t.answer == t.choices[0] and len(t.choices) == 2 for t in held_out)
    eval_texts = [x for t in held_out for x in (t.prompt, t.answer)]
    assert contaminated_ids({t.id: t.prompt + "\n" + t.solution for t in seeds}, eval_texts, n=13) == set()
    only = Instructions(kinds=["max_words"]).seed_tasks(4, seed=0)
    assert all(set(t.constraints) == {"max_words"} for t in only)
    with pytest.raises(ValueError, match="has 4 seed tasks"):
        Instructions(kinds=["max_words"]).seed_tasks(5, seed=0)
    with pytest.raises(UserError, match="unknown constraint kind 'rhyme'"):
        build_plugins(load_entry_points=False).instantiate(
            "domains", "instructions", "domain.options", {"kinds": ["rhyme"]}
        )


def test_expanded_tasks_get_the_constraints_their_instruction_states():
    plugins = build_plugins(load_entry_points=False)
    expanded = Task(id="x", prompt="Describe a river in at most 12 words, all lowercase.", answer="")
    recipe = Recipe.model_validate({"name": "r", "skills": ["instruct"], "domain": {"name": "instructions"}})
    task = plugins.transform_task(expanded, recipe)
    assert (task.kind, task.answer, task.constraints) == ("refusal", "comply", {"max_words": 12, "lowercase": True})
    assert plugins.transform_task(expanded, Recipe.model_validate({"name": "r", "skills": ["cot"]})) == expanded
    plain = Task(id="y", prompt="Tell me about rivers.", answer="")
    assert plugins.transform_task(plain, recipe) == plain


@pytest.fixture(scope="module")
def tiny_teacher(tiny_model_dir):
    from kdagent.teachers.hf import HFTeacher

    config = TeacherConfig(
        kind="hf", model=str(tiny_model_dir), samples=2, temperature=1.0, max_new_tokens=6, batch_size=4
    )
    teacher = HFTeacher(tiny_model_dir, config, "hf:tiny")
    yield teacher
    teacher.close()


def test_multi_turn_elicitation_alternates_assistant_and_user(tiny_teacher):
    skill = Instruct(turns=3)
    grounded = [GroundedTask(task=t) for t in Instructions().seed_tasks(2, seed=0)]
    settings = tiny_teacher.config.model_dump(mode="json")
    gens = elicit(lambda: tiny_teacher, skill, grounded, 1, 0, settings)
    assert len(gens) == 4 and {g.sample for g in gens} == {0, 1}
    for g in gens:
        roles = [m["role"] for m in g.trajectory]
        assert roles == ["assistant", "user", "assistant", "user", "assistant"][: len(roles)] and len(roles) % 2 == 1
        assert g.text == g.trajectory[0]["content"]  # the first reply, which the constraints apply to
        assert all(m["content"] for m in g.trajectory)
    assert max(len(g.trajectory) for g in gens) == 5
    again = elicit(lambda: tiny_teacher, skill, grounded, 1, 0, settings)
    assert [g.trajectory for g in again] == [g.trajectory for g in gens]  # seeded, so resumable
    # the teacher playing the user sees the conversation, delimited, and the instruction to write a follow-up
    shown = skill.user_messages(gens[0].messages + gens[0].trajectory[:1])[0]["content"]
    assert shown.startswith("You are the user") and "<conversation>\nUser: " in shown and "\n\nAssistant: " in shown


def test_a_tiny_multi_turn_round_trains_on_each_assistant_turn_only(tmp_path, tiny_model_dir):
    recipe = Recipe.model_validate(
        {
            "name": "tiny-instruct",
            "seed": 1,
            "student": {"model": str(tiny_model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 8, "batch_size": 4},
            "domain": {"name": "instructions", "seed_tasks": 3, "eval_tasks": 2, "options": {"kinds": ["max_words"]}},
            "skills": [{"name": "instruct", "options": {"turns": 2}}],
            "retrieval": {"enabled": False},
            "update": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-3},
            "evaluation": {"max_new_tokens": 4},
        }
    )
    metrics = run_recipe(recipe, tmp_path / "run", build_plugins(load_entry_points=False))
    (entry,) = metrics["rounds"]
    assert 0 <= metrics["baseline"]["accuracy"] <= 1 and entry["eval"]["n"] == 2
    examples = read_jsonl(tmp_path / "run" / "round-01" / "sft.jsonl", SFTExample)
    assert examples and entry["counts"]["sft_examples"] == len(examples)
    assert all([m["role"] for m in ex.completion] == ["assistant"] for ex in examples)  # only what the assistant says
    follow_ups = [ex for ex in examples if len(ex.prompt) == 3]  # the second turn: the dialogue so far in the prompt
    assert follow_ups, [ex.prompt for ex in examples]
    firsts = {ex.provenance.generation_id: ex for ex in examples if len(ex.prompt) == 1}
    for ex in follow_ups:
        assert [m["role"] for m in ex.prompt] == ["user", "assistant", "user"] and "words" in ex.prompt[0]["content"]
        first = firsts[ex.provenance.generation_id]  # the same dialogue's first turn is an example too
        assert ex.prompt[:2] == first.prompt + first.completion and ex.id != first.id
        assert ex.provenance.skill == "instruct" and ex.provenance.feedback["passed"]
    assert entry["update"]["steps"] >= 1


def test_split_dialogue_makes_one_example_per_assistant_turn():
    a1, u2, a2 = ({"role": r, "content": c} for r, c in (("assistant", "A1"), ("user", "U2"), ("assistant", "A2")))
    assert split_dialogue([a1, u2, a2]) == [([], [a1]), ([a1, u2], [a2])]
    assert split_dialogue([a1, u2]) == [([], [a1])]  # a trailing user turn without an answer teaches nothing
    calls = [
        {"role": "assistant", "content": "<tool_call>..."},
        {"role": "tool", "content": "5"},
        {"role": "assistant", "content": "5"},
    ]
    assert split_dialogue(calls) == [([], calls)]  # tool calls and results stay one example
