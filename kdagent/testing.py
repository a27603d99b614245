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


def make_job(student, out, *, update=None, max_length: int = 64, seed: int = 0, options=None, **data):
    """A real UpdateJob for calling an updater's `train_*` wrapper directly: a validated recipe whose student
    is the checkpoint `student` with `max_length`, whose `update` section is `update` (UpdateConfig's defaults
    when None), the updater's validated `options` (none when None), and the job's records and the rest as
    keywords (`examples`, `pairs`, `tasks`, `skill`, ...). Training starts from `student` and saves to `out`."""
    from kdagent.recipe import Recipe, UpdateConfig
    from kdagent.update.updater import NoOptions, UpdateJob

    recipe = Recipe.model_validate(
        {
            "name": "test",
            "student": {"model": str(student), "max_length": max_length},
            "update": update if update is not None else UpdateConfig(),
        }
    )
    return UpdateJob(recipe, options if options is not None else NoOptions(), Path(student), Path(out), seed, **data)
