from pathlib import Path

import pytest

from kdagent.errors import UserError
from kdagent.evaluate.runner import check_tasks
from kdagent.plugins import build_plugins
from kdagent.testing import assert_split, shared_data_or_skip
from kdagent_law.domain import Law
from kdagent_law.legalbench import SARA, YES_NO, load_task


@pytest.fixture
def shared_data() -> Path:
    return shared_data_or_skip(__file__)


def test_law_is_registered_by_its_distribution():
    entry = build_plugins().domains["law"]
    assert entry.distribution == "kdagent-law" and entry.obj is Law


def test_own_tasks_without_data():
    law, evals, seeds = assert_split(Law, 100, 100)
    assert len(evals) == 18 and len(seeds) == 25  # all of them when fewer than asked
    assert seeds != law.seed_tasks(100, seed=2)  # another seed, another order
    assert {t.answer for t in evals} == {"Yes", "No"}
    notes = "\n".join(d.text for d in law.corpus())
    assert "complete diversity" in notes.lower()
    assert law.rubric.strip() and law.system_prompt


def test_legalbench_tasks_and_statutes(shared_data):
    law, evals, seeds = assert_split(lambda: Law(data_dir=str(shared_data)), 80, 120)
    assert {t.source for t in evals} == set(YES_NO)  # every task has held-out items, interleaved
    assert law.eval_tasks(20) == evals[:20]
    assert all(t.choices == ["Yes", "No"] and t.answer in ("Yes", "No") for t in evals + seeds)
    assert all(len(t.prompt) < 1300 for t in evals)  # texts cut to max_chars
    sources = {d.source for d in law.corpus()}
    assert "sara/section63.txt" in sources and "kdagent_law/notes.md" in sources


def test_sara_cases(shared_data):
    sara = Law(data_dir=str(shared_data), tasks=[SARA])
    pool = [t for group in sara.pools[0] + sara.pools[1] for t in group]
    kinds = {t.kind for t in pool}
    assert kinds == {"choice", "numeric"}
    assert all(float(t.answer) > 0 for t in pool if t.kind == "numeric")
    check_tasks(pool, "sara")


def test_missing_data_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="data_dir: folder .*nope not found"):
        Law(data_dir=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="CUAD_Governing_Law/test.tsv not found"):
        Law(data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown LegalBench task 'rule_qa'"):
        Law(tasks=["rule_qa"])


def test_train_tasks_train_with_every_row_and_hold_none_out(shared_data):
    small = ["CUAD_Most_Favored_Nation", "CUAD_Price_Restrictions"]
    scored = Law(data_dir=str(shared_data), tasks=["overruling", "diversity_1"])
    law = Law(data_dir=str(shared_data), tasks=["overruling", "diversity_1"], train_tasks=small)
    assert law.eval_tasks(10_000) == scored.eval_tasks(10_000)  # the held-out set is the scored tasks' alone
    seeds = law.seed_tasks(100_000, seed=0)
    for task in small:  # every distinct row of the file
        distinct = {t.id for _, t in load_task(shared_data, task, law.max_chars)}
        assert {t.id for t in seeds if t.source == task} == distinct and len(distinct) > 20
    assert {t.source for t in law.seed_tasks(40, seed=0)} >= set(small)  # interleaved with the scored tasks
    assert not {t.id for t in seeds} & {t.id for t in law.eval_tasks(10_000)}
    with pytest.raises(ValueError, match="'diversity_1' is in both tasks and train_tasks"):
        Law(tasks=["diversity_1"], train_tasks=["diversity_1"])
    with pytest.raises(ValueError, match="unknown LegalBench task 'rule_qa'"):
        Law(train_tasks=["rule_qa"])
