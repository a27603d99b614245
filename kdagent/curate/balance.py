"""Label balance of the SFT examples of choice tasks, so that a classifier cannot learn a label prior.

An example's label is the reference answer of the task it teaches (`provenance.task_id`), or, for a choice
task without one (an unlabelled task the loop labelled itself), the answer its admitting verdict read
(`provenance.feedback["predicted"]`, the voted label); examples of tasks that are not choice tasks have no
label and are never touched. Pure functions, deterministic.
"""

import random
from collections import Counter
from collections.abc import Iterable, Mapping

from kdagent.records import SFTExample, Task, stable_id


def task_label(task: Task | None) -> str | None:
    """The label a task teaches: the reference answer of a choice task, else None."""
    return task.answer if task is not None and task.kind == "choice" and task.answer else None


def example_label(example: SFTExample, tasks_by_id: Mapping[str, Task]) -> tuple[str | None, bool]:
    """(the label an example teaches, whether it was voted): its task's reference answer, else, for a choice
    task without one, the answer the verdict that admitted it read; (None, False) for other tasks."""
    task = tasks_by_id.get(example.provenance.task_id)
    label = task_label(task)
    if label is not None or task is None or task.kind != "choice":
        return label, False
    voted = example.provenance.feedback.get("predicted")
    return (voted, True) if voted else (None, False)


def label_counts(tasks: Iterable[Task]) -> dict[str, int]:
    """How many choice tasks have each reference answer, labels sorted."""
    counts = Counter(label for label in map(task_label, tasks) if label is not None)
    return dict(sorted(counts.items()))


def balance_examples(
    examples: list[SFTExample],
    tasks_by_id: Mapping[str, Task],
    mode: str,
    seed: int,
) -> tuple[list[SFTExample], dict]:
    """Examples of choice tasks balanced by label.

    'upsample' keeps every example and adds copies of the examples of each rarer label, in turn, until it has
    as many as the most frequent label (the k-th copy of an example has the id stable_id(id, "repeat", k));
    'downsample' keeps, of each label, as many examples as the rarest label has, chosen with `seed`; 'off'
    returns them as they are. Kept examples stay in their order, copies follow. The counts name the labels
    of the examples before and after, those of them voted rather than given (`voted_in`), and (`missing`) the labels of choice tasks that no example teaches,
    which no balancing can restore."""
    groups: dict[str, list[int]] = {}
    voted: Counter = Counter()
    for i, ex in enumerate(examples):
        label, by_vote = example_label(ex, tasks_by_id)
        if label is not None:
            groups.setdefault(label, []).append(i)
            voted[label] += by_vote
    labels_in = {label: len(idx) for label, idx in sorted(groups.items())}
    out = list(examples)
    if mode == "upsample" and groups:
        most = max(labels_in.values())
        for label in sorted(groups):
            idx = groups[label]
            out += [_repeat(examples[idx[j % len(idx)]], j // len(idx) + 1) for j in range(most - len(idx))]
    elif mode == "downsample" and groups:
        fewest = min(labels_in.values())
        rng = random.Random(seed)
        dropped = {i for label in sorted(groups) for i in set(groups[label]) - set(rng.sample(groups[label], fewest))}
        out = [ex for i, ex in enumerate(examples) if i not in dropped]
    elif mode not in ("upsample", "downsample", "off"):
        raise ValueError(f"unknown balance mode {mode!r} (known: upsample, downsample, off)")
    labels_out = Counter(label for label, _ in (example_label(ex, tasks_by_id) for ex in out) if label is not None)
    counts = {"labels_in": labels_in, "labels_out": dict(sorted(labels_out.items())), "mode": mode}
    if +voted:  # of labels_in, the examples of unlabelled tasks, counted under their voted label
        counts["voted_in"] = dict(sorted((+voted).items()))
    missing = sorted(set(label_counts(tasks_by_id.values())) - set(groups))
    return out, counts | ({"missing": missing} if missing else {})


def _repeat(example: SFTExample, k: int) -> SFTExample:
    return example.model_copy(update={"id": stable_id(example.id, "repeat", k)})
