"""Samples that paste retrieved reference material back fail their check, with a counted reason."""

from kdagent.feedback.copying import copied_span

PASSAGE = (
    "Worked example.\nQuestion: Tom has 12 pens and buys 7 more at the shop. How many pens does he have now?\n"
    "Answer: Tom starts with 12 pens. He buys 7 more, so 12 + 7 = 19. The answer is 19."
)


def test_a_reply_that_pastes_a_passage_is_caught():
    reply = "Worked example. Question: Tom has 12 pens and buys 7 more at the shop. How many pens does he have now? The answer is 19."
    assert copied_span(reply, [PASSAGE], "Ann has 3 cats and gets 2 more. How many cats?") is not None


def test_restating_its_own_question_or_answering_in_few_words_is_not_a_copy():
    own = "Tom has 12 pens and buys 7 more at the shop. How many pens does he have now?"
    reply = (
        "Tom has 12 pens and buys 7 more at the shop. How many pens does he have now? 12 + 7 = 19. The answer is 19."
    )
    assert copied_span(reply, [PASSAGE], own) is None  # the run is its own task's text
    assert copied_span("He buys 7 more, so 12 + 7 = 19.", [PASSAGE], "another question") is None  # shorter than n words
    assert copied_span("anything at all here", [], "") is None


def test_the_feedback_stage_fails_a_passing_copy_and_counts_it(tmp_path):
    """The reference check passes both replies (they end with the right answer); the stage fails the one
    that pastes the passage back, says why, and counts it; with reject_copies off it passes."""
    from types import SimpleNamespace

    from kdagent.feedback import stage as feedback_stage
    from kdagent.loop.rundir import RunDir
    from kdagent.plugins import build_plugins
    from kdagent.recipe import Recipe
    from kdagent.records import Generation, GroundedTask, Passage, Task

    task = Task(
        id="t1", prompt="Ann has 3 cats and gets 2 more. How many cats does she have?", answer="5", kind="numeric"
    )
    grounded = [GroundedTask(task=task, passages=[Passage(id="p1", text=PASSAGE, source="worked-example/x")])]
    replies = {
        "copy": "Question: Tom has 12 pens and buys 7 more at the shop. How many pens does he have now? So 3 + 2 = 5. The answer is 5.",
        "own": "Ann has 3 cats. She gets 2 more, so 3 + 2 = 5. The answer is 5.",
    }
    gens = [
        Generation(
            id=k, task_id="t1", round=1, sample=i, teacher="self", skill="cot", messages=[], passage_ids=["p1"], text=v
        )
        for i, (k, v) in enumerate(replies.items())
    ]
    plugins = build_plugins()
    for reject, failed in ((12, {"copy"}), (None, set())):
        recipe = Recipe.model_validate({"name": "x", "skills": ["cot"], "feedback": {"reject_copies": reject}})
        ctx = SimpleNamespace(
            recipe=recipe,
            skill=plugins.instantiate("skills", "cot", "skills[0].options", {}),
            domain=None,
            rd=RunDir(tmp_path),
            plugins=plugins,
        )
        verdicts, counts = feedback_stage.run(ctx, 1, {"t1": task}, grounded, gens, teacher=None)
        assert {v.generation_id for v in verdicts if not v.passed} == failed
        assert counts["dropped"].get("copied_passage", 0) == len(failed)
    assert next(
        v
        for v in feedback_stage.run(
            SimpleNamespace(
                recipe=Recipe.model_validate({"name": "x", "skills": ["cot"]}),
                skill=ctx.skill,
                domain=None,
                rd=ctx.rd,
                plugins=plugins,
            ),
            1,
            {"t1": task},
            grounded,
            gens,
            None,
        )[0]
        if v.generation_id == "copy"
    ).reason.startswith("copies a retrieved passage")
