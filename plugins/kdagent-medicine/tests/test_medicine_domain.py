import json
from pathlib import Path

import pytest

from kdagent.errors import UserError
from kdagent.plugins import build_plugins
from kdagent.testing import assert_split, shared_data_or_skip
from kdagent_medicine.domain import Medicine
from kdagent_medicine.loaders import PUBMEDQA, load_medmcqa, load_pubmedqa


@pytest.fixture
def shared_data() -> Path:
    return shared_data_or_skip(__file__)


def test_medicine_is_registered_by_its_distribution():
    entry = build_plugins().domains["medicine"]
    assert entry.distribution == "kdagent-medicine" and entry.obj is Medicine


def test_own_tasks_without_data():
    medicine, evals, seeds = assert_split(Medicine, 100, 100)
    assert len(evals) == 14 and len(seeds) == 24
    assert {t.answer for t in evals} >= {"yes", "no", "maybe"}
    assert all(t.choices[t.answer_index] == t.answer for t in evals + seeds if len(t.choices) == 4)
    assert "confidence interval" in next(iter(medicine.corpus())).text
    assert medicine.rubric.strip() and medicine.system_prompt


def test_pubmedqa_and_medmcqa(shared_data):
    medicine, evals, seeds = assert_split(lambda: Medicine(data_dir=str(shared_data)), 80, 120)
    assert {t.source for t in evals} == {"pubmedqa", "medmcqa"}
    raw = json.loads((shared_data / PUBMEDQA).read_text(encoding="utf-8"))
    pubmed = [t for _, t in load_pubmedqa(shared_data, max_chars=1200)]
    assert len(pubmed) == 500
    for task in pubmed:
        item = raw[task.id.rsplit("-", 1)[1]]
        assert task.choices == ["yes", "no", "maybe"] and task.answer == item["final_decision"]
        assert len(task.context) <= 1200  # CONTEXTS joined and cut; LONG_ANSWER (the conclusion) is never added
        assert "\n".join(item["CONTEXTS"]).endswith(task.context.removeprefix("..."))  # the results, at the end, stay
    mcq = [t for _, t in load_medmcqa(shared_data)]
    assert len(mcq) > 2000 and all(len(t.choices) == 4 and t.choices[t.answer_index] == t.answer for t in mcq)


def test_held_out_pubmedqa_stays_put_when_medmcqa_joins(shared_data):
    alone = Medicine(data_dir=str(shared_data), datasets=["pubmedqa"])
    both = Medicine(data_dir=str(shared_data))
    assert {t.id for t in alone.pools[1][0]} == {t.id for t in both.pools[1][0]}


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data_dir: folder .*nope not found"):
        Medicine(data_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="pubmedqa_dev.json not found"):
        Medicine(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown dataset 'medqa'"):
        Medicine(datasets=["medqa"])
