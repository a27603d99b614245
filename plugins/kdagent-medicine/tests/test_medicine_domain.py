import json
from pathlib import Path

import pytest

from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks
from kdagent.plugins import build_plugins
from kdagent_medicine.domain import Medicine
from kdagent_medicine.loaders import PUBMEDQA, load_medmcqa, load_pubmedqa

SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"  # beside the repository, as in tests/conftest.py


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def assert_split(make, n_eval: int, n_seed: int):
    """The domain `make()` builds: well-formed tasks, deterministic, and no seed task (of any seed) is a
    held-out one."""
    domain = make()
    evals = domain.eval_tasks(n_eval)
    check_tasks(evals, "eval")
    seeds = domain.seed_tasks(n_seed, seed=1)
    check_tasks(seeds, "seeds")
    every_seed = [t for pool in domain.pools[0] for t in pool]
    assert not {t.id for t in evals} & {t.id for t in every_seed}
    assert not {t.prompt for t in evals} & {t.prompt for t in every_seed}
    assert seeds == domain.seed_tasks(n_seed, seed=1)
    assert evals == make().eval_tasks(n_eval)  # the same on a fresh instance
    return domain, evals, seeds


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
