"""Helpers for the tests of domain plugins (the in-repo kdagent-law, -medicine and -finance, and yours).

Imports nothing heavy; pytest is only needed by `shared_data_or_skip`.
"""

from collections.abc import Callable
from pathlib import Path

from kdagent.evaluate.runner import check_tasks


def shared_data_or_skip(test_file: str, up: int = 4) -> Path:
    """The shared data folder beside the repository (`up` folders above `test_file`, then shared/data),
    or a skipped test with a clear message where it is absent."""
    import pytest

    folder = Path(test_file).resolve().parents[up] / "shared" / "data"
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent")
    return folder


def assert_split(make: Callable, n_eval: int, n_seed: int):
    """The domain `make()` builds gives well-formed tasks, deterministic ones, and no seed task (of any
    seed) is a held-out one, by id or by prompt. Returns (domain, eval tasks, seed tasks)."""
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
