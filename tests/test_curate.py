"""Curation filters on real records with real datasketch MinHash LSH."""

import random

import pytest

from kdagent.curate import (
    FilterConfig,
    contaminated_ids,
    curate_examples,
    decontaminate,
    dedupe_exact,
    dedupe_near,
    example_texts,
    length_quality,
    repeat_ratio,
)
from kdagent.records import PreferencePair, Provenance, SFTExample

SYSTEM = {"role": "system", "content": "You are a careful assistant. Think step by step and give the answer last."}


def _prov(i: int = 0) -> Provenance:
    return Provenance(round=1, teacher="test", skill="cot", domain="test", task_id=f"t{i}")


def sft(prompt: str, reply: str, i: int = 0, context: str | None = None) -> SFTExample:
    messages = (
        [SYSTEM] + ([{"role": "user", "content": context}] if context else []) + [{"role": "user", "content": prompt}]
    )
    return SFTExample(
        id=f"e{i}", prompt=messages, completion=[{"role": "assistant", "content": reply}], provenance=_prov(i)
    )


def pair(prompt: str, chosen: str, rejected: str, i: int = 0) -> PreferencePair:
    return PreferencePair(
        id=f"p{i}",
        prompt=[SYSTEM, {"role": "user", "content": prompt}],
        chosen=[{"role": "assistant", "content": chosen}],
        rejected=[{"role": "assistant", "content": rejected}],
        margin=1.0,
        provenance=_prov(i),
    )


def text(seed: int, words: int = 60) -> str:
    """A deterministic text of made-up words, unrelated to any other seed's."""
    rng = random.Random(seed)
    return " ".join(
        "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8))) for _ in range(words)
    )


def ids(examples) -> list[str]:
    return [ex.id for ex in examples]


# --- texts -----------------------------------------------------------------------------------------


def test_example_texts_sft_and_pair():
    ex = sft("What is 2+2?", "It is 4.", context="Some passage.")
    assert example_texts(ex) == ("What is 2+2?", "It is 4.")
    assert (
        "Some passage." in example_texts(ex, full_prompt=True)[0]
        and SYSTEM["content"] in example_texts(ex, full_prompt=True)[0]
    )
    assert example_texts(pair("Q?", "good", "bad")) == ("Q?", "good")


# --- exact dedup -----------------------------------------------------------------------------------


def test_dedupe_exact_drops_and_counts_ignoring_case_and_whitespace():
    examples = [
        sft("What is 2+2?", "The answer is 4.", 0),
        sft("What is 2+2?", "The answer is 4.", 1),
        sft("what is  2+2?", "the answer\nis 4.", 2),
        sft("What is 2+2?", "Two plus two makes 4.", 3),  # other reply: kept
        sft("What is 3+3?", "The answer is 4.", 4),  # other prompt: kept
        sft("Different context, same question", "The answer is 4.", 5),
    ]
    kept, counts = dedupe_exact(examples)
    assert ids(kept) == ["e0", "e3", "e4", "e5"]
    assert counts == {"duplicate_exact": 2}


def test_dedupe_exact_uses_last_user_message():
    a = sft("Question?", "Reply.", 0, context="passage one")
    b = sft("Question?", "Reply.", 1, context="passage two")
    kept, counts = dedupe_exact([a, b])
    assert ids(kept) == ["e0"] and counts == {"duplicate_exact": 1}


# --- near dedup ------------------------------------------------------------------------------------


def test_dedupe_near_drops_one_word_change_keeps_different_text():
    base = text(1)
    words = base.split()
    words[30] = "changed"
    near = " ".join(words)
    examples = [
        sft("Summarise the notes.", base, 0),
        sft("Other question entirely.", text(2), 1),
        sft("Summarise the notes.", near, 2),
        sft("Summarise the notes.", text(3), 3),  # same prompt, different reply: kept
    ]
    kept, counts = dedupe_near(examples)
    assert ids(kept) == ["e0", "e1", "e3"]
    assert counts == {"duplicate_near": 1}


def test_dedupe_near_needs_prompt_and_reply_both_close():
    reply = text(5)
    examples = [sft(text(10, 30), reply, 0), sft(text(11, 30), reply, 1)]  # same reply, unrelated prompts
    kept, counts = dedupe_near(examples)
    assert ids(kept) == ["e0", "e1"] and counts == {"duplicate_near": 0}


def test_dedupe_near_keeps_one_reply_taught_under_several_phrasings():
    context = text(20, 80)  # a long shared context makes the two phrasings' prompts near-identical
    first = sft(f"{context}\nDoes the study say yes?", "yes", 0)
    rephrased = SFTExample(
        id="e0b",
        prompt=[SYSTEM, {"role": "user", "content": f"{context}\nQuestion: does the study say yes?"}],
        completion=first.completion,
        provenance=first.provenance,
    )
    other_task = SFTExample(id="e1", prompt=rephrased.prompt, completion=first.completion, provenance=_prov(1))
    kept, counts = dedupe_near([first, rephrased, other_task])
    assert ids(kept) == ["e0", "e0b"] and counts == {"duplicate_near": 1}  # another task's near-copy still goes


def test_dedupe_near_is_deterministic_and_keeps_first():
    examples = [sft("Prompt.", text(s % 4), s) for s in range(12)]
    first = dedupe_near(examples)
    assert ids(first[0]) == ["e0", "e1", "e2", "e3"] and first[1] == {"duplicate_near": 8}
    assert ids(dedupe_near(examples)[0]) == ids(first[0])


# --- decontamination -------------------------------------------------------------------------------

EVAL = [
    "A train leaves the station at nine and travels ninety kilometres per hour until noon.",
    "Which enzyme unwinds the double helix during replication of bacterial chromosomes in the cell?",
    "The tenant may terminate the lease with thirty days written notice to the landlord.",
    "Compute the present value of a bond paying five percent annually for ten years.",
]


def test_decontaminate_drops_planted_items_and_keeps_clean():
    examples = [sft(text(100 + i, 20), text(200 + i, 40), i) for i in range(20)]
    examples[3] = sft(f"Solve this. {EVAL[0]} How far does it go?", text(203), 3)  # verbatim in the prompt
    examples[7] = sft(text(107, 20), f"Recall that {EVAL[1]} Helicase.", 7)  # verbatim in the reply
    examples[11] = sft(
        "Answer from the passage.", text(211), 11, context=f"Passage: {EVAL[2]}"
    )  # in another prompt message
    changed = EVAL[3].upper().replace(" ", "  ").replace("value", "value,").rstrip("?.") + "!!"
    examples[15] = sft(changed, text(215), 15)  # case and punctuation changed
    kept, counts = decontaminate(examples, EVAL)
    assert counts == {"contaminated": 4}
    assert ids(kept) == [f"e{i}" for i in range(20) if i not in (3, 7, 11, 15)]


def test_decontaminate_short_eval_text_is_one_gram():
    evals = ["What is the capital of France?", "42", "B"]  # 6 words < n=8; two bare answers
    examples = [
        sft("Question: what is the capital of France? Answer briefly.", "Paris.", 0),
        sft("What is the capital of Spain?", "Madrid.", 1),
        sft("What is 6 times 7?", "6 x 7 = 42", 2),  # a bare answer is not a gram
        sft("Pick one.", "B", 3),
    ]
    kept, counts = decontaminate(examples, evals)
    assert ids(kept) == ["e1", "e2", "e3"] and counts == {"contaminated": 1}
    kept, counts = decontaminate(examples, evals, min_words=1)
    assert ids(kept) == ["e1"] and counts == {"contaminated": 3}


def test_decontaminate_needs_a_full_ngram():
    seven = "the tenant may terminate the lease with"  # 7 of the eval text's words: no 8-gram shared
    kept, counts = decontaminate([sft(f"{seven} something else entirely", "ok", 0)], [EVAL[2]])
    assert len(kept) == 1 and counts == {"contaminated": 0}
    assert decontaminate([sft(f"{seven} something else entirely", "ok", 0)], [EVAL[2]], n=7)[1] == {"contaminated": 1}


def test_contaminated_ids_for_seed_tasks():
    tasks = {"t1": EVAL[1], "t2": "Name the largest planet in the solar system please.", "t3": EVAL[0].lower()}
    assert contaminated_ids(tasks, EVAL) == {"t1", "t3"}
    assert contaminated_ids(tasks, []) == set()


# --- length and quality ----------------------------------------------------------------------------


def test_length_quality_reasons():
    good = "First add the two numbers, then divide by three to get the mean, which is 7."
    examples = [
        sft("q0", good, 0),
        sft("q1", "   ", 1),
        sft("q2", "x" * 9001, 2),
        sft("q3", "I think so. " * 40, 3),
        sft("q4", "ok", 4),
        sft("q5", good + " Done.", 5),
    ]
    kept, counts = length_quality(examples, min_chars=5)
    assert ids(kept) == ["e0", "e5"]
    assert counts == {"too_short": 2, "too_long": 1, "repetitive": 1}


def test_repeat_ratio():
    assert repeat_ratio("") == 0.0 and repeat_ratio("one two") == 0.0
    assert repeat_ratio("a b c d e f") == 0.0
    assert repeat_ratio("the end " * 50) > 0.9


# --- preference pairs and the whole chain ----------------------------------------------------------


def test_preference_pairs_use_the_chosen_reply():
    pairs = [
        pair("Q1?", "Chosen answer one is fine.", "bad", 0),
        pair("Q1?", "chosen answer one is  fine.", "other bad", 1),  # exact dup of the chosen reply
        pair("Q2?", "", "a rejected reply that is long enough", 2),  # empty chosen
        pair("Q3?", f"Note: {EVAL[0]}", "x", 3),
        pair("Q4?", "A clean chosen reply.", f"Rejected reply quoting {EVAL[1]}", 4),  # rejected is not checked
    ]
    kept, counts = curate_examples(pairs, EVAL)
    assert ids(kept) == ["p0", "p4"]
    assert counts == {
        "too_short": 1,
        "too_long": 0,
        "repetitive": 0,
        "duplicate_exact": 1,
        "duplicate_near": 0,
        "contaminated": 1,
    }
    assert all(isinstance(p, PreferencePair) for p in kept)


def test_curate_examples_order_and_counts():
    base = text(50)
    near = base.replace(base.split()[10], "swapped", 1)
    examples = [
        sft("Explain.", base, 0),
        sft("Unrelated.", text(51), 1),
        sft("Explain.", base, 2),  # exact
        sft("Explain.", near, 3),  # near
        sft("Contaminated.", EVAL[2], 4),
        sft("Empty.", "", 5),
        sft("Loop.", "again and again " * 30, 6),
        sft("Another.", text(52), 7),
    ]
    kept, counts = curate_examples(examples, EVAL)
    assert ids(kept) == ["e0", "e1", "e7"]
    assert counts == {
        "too_short": 1,
        "too_long": 0,
        "repetitive": 1,
        "duplicate_exact": 1,
        "duplicate_near": 1,
        "contaminated": 1,
    }
    kept, counts = curate_examples(examples, EVAL, FilterConfig(near_dup_threshold=None))
    assert ids(kept) == ["e0", "e1", "e3", "e7"] and "duplicate_near" not in counts


@pytest.mark.parametrize("fn", [dedupe_exact, dedupe_near, length_quality, lambda xs: decontaminate(xs, EVAL)])
def test_empty_input(fn):
    kept, counts = fn([])
    assert kept == [] and all(v == 0 for v in counts.values())
