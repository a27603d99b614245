from pathlib import Path

import pytest

from kdagent.errors import UserError
from kdagent.evaluate.grading import parse_number
from kdagent.plugins import build_plugins
from kdagent.testing import assert_split, shared_data_or_skip
from kdagent_finance.domain import Finance
from kdagent_finance.loaders import SENTIMENTS, load_convfinqa, load_phrasebank, load_tatqa


@pytest.fixture
def shared_data() -> Path:
    return shared_data_or_skip(__file__)


def test_finance_is_registered_by_its_distribution():
    entry = build_plugins().domains["finance"]
    assert entry.distribution == "kdagent-finance" and entry.obj is Finance


def test_own_tasks_without_data():
    finance, evals, seeds = assert_split(Finance, 100, 100)
    assert len(evals) == 14 and len(seeds) == 22
    assert {t.kind for t in evals} == {"choice", "numeric"}
    assert all(parse_number(t.answer) is not None for t in evals + seeds if t.kind == "numeric")
    assert "Percentage change" in next(iter(finance.corpus())).text
    assert finance.rubric.strip() and finance.system_prompt


def test_public_datasets(shared_data):
    finance, evals, seeds = assert_split(lambda: Finance(data_dir=str(shared_data)), 90, 150)
    assert {t.source for t in evals} == {"phrasebank", "tatqa", "convfinqa"}
    assert all(t.kind == ("choice" if t.source == "phrasebank" else "numeric") for t in evals + seeds)
    bank = [t for _, t in load_phrasebank(shared_data)]
    assert len(bank) == len({t.prompt for t in bank}) > 1500  # one task per distinct sentence
    assert all(t.choices == SENTIMENTS for t in bank)
    for load in (load_tatqa, load_convfinqa):
        tasks = [t for _, t in load(shared_data)]
        assert len(tasks) > 300 and all(parse_number(t.answer) is not None and t.context for t in tasks)


def test_a_sentence_is_held_out_at_every_agreement_level(shared_data):
    strict = Finance(data_dir=str(shared_data), datasets=["phrasebank"])
    loose = Finance(data_dir=str(shared_data), datasets=["phrasebank"], agreement="50Agree")  # a latin-1 file
    loose_seeds = {t.prompt for t in loose.pools[0][0]}
    assert not {t.prompt for t in strict.pools[1][0]} & loose_seeds
    assert len(loose_seeds) > len(strict.pools[0][0])


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data_dir: folder .*nope not found"):
        Finance(data_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="Sentences_AllAgree.txt not found"):
        Finance(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown agreement"):
        Finance(agreement="most")


def test_training_on_a_looser_file_holds_out_only_sentences_everyone_agreed_on(shared_data):
    d = Finance(data_dir=str(shared_data), datasets=["phrasebank"], agreement="75Agree", eval_agreement="AllAgree")
    strict = {t.id: t.answer for _, t in load_phrasebank(shared_data, "AllAgree")}
    seeds, held_out = d.pools[0][0], d.pools[1][0]
    assert len(held_out) >= 200 and all(strict.get(t.id) == t.answer for t in held_out)
    assert len(seeds) > 2 * len(held_out) and not {t.id for t in seeds} & {t.id for t in held_out}
    assert {t.answer for t in seeds} == {t.answer for t in held_out} == {"positive", "negative", "neutral"}
    t = held_out[0]
    assert t.unseen_question not in t.rephrasings and t.prompt not in t.rephrasings
    with pytest.raises(ValueError, match="eval_agreement"):
        Finance(data_dir=str(shared_data), eval_agreement="Most")
