"""The updater interface: a training method that a recipe names in `update.method`.

An updater is registered through the hook `kdagent_register_updaters` (`register(name, updater)`); the
built-in `sft`, `dpo`, `distill` and `grpo` register the same way, each from its own module in this folder.
A recipe picks updaters by name and gives each its options: the built-ins' under `update.<name>` (such as
`update.dpo.beta`), any other's under `update.options.<name>`. Each updater validates its options with its
own pydantic model (`options_model`), checks the rest of the recipe (`check`), estimates the memory its
training needs (`memory_mb`) and trains (`train`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from kdagent.errors import UserError, did_you_mean, options_error
from kdagent.hookspecs import by_name

ACTIVATION_FACTOR = 20  # values a token a layer keeps for backward, in hidden-size units (a llama block: norms, q/k/v/o, residuals, ~4 x 2.7 h of MLP)
MB = 2**20


class NoOptions(BaseModel):
    """The options of an updater that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class UpdateJob:
    """One updater's training within a round: the checkpoint it starts from and the folder it saves to, the
    round's records, and what it may consult (the recipe, its own options, the skill that prompts and
    verifies, the domain and the plugins)."""

    recipe: Any
    options: BaseModel
    student: Path  # the checkpoint training starts from
    out: Path  # where the trained student goes, renamed into place once whole
    seed: int
    round: int = 1
    examples: list = field(default_factory=list)  # SFTExample
    pairs: list = field(default_factory=list)  # PreferencePair
    tasks: list = field(default_factory=list)  # Task
    skill: Any = None
    domain: Any = None
    plugins: Any = None

    @property
    def update(self):
        """The recipe's `update` section (learning rate, batch size, LoRA, ...)."""
        return self.recipe.update

    @property
    def max_length(self) -> int:
        return self.recipe.student.max_length

    def teacher_path(self) -> Path | None:
        """The folder of the local model the recipe's teacher runs (its kind's `local_path`), or None for a
        teacher that runs elsewhere. The built-in plugins stand in when the job carries none."""
        from kdagent.plugins import build_plugins
        from kdagent.teachers.kinds import local_teacher_path

        plugins = self.plugins if self.plugins is not None else build_plugins(load_entry_points=False)
        return local_teacher_path(self.recipe.teacher, plugins, self.student)


class Updater:
    """A training method. Subclasses set `options_model` and implement `train`; the other methods have
    defaults that fit a trainer on one batch of `update.batch_size` sequences with no frozen model."""

    options_model: ClassVar[type[BaseModel]] = NoOptions
    skipped: ClassVar[str] = "nothing to train on"  # the round's report when `train` returns None
    tool_calls: ClassVar[bool] = False  # whether it trains on examples of a skill with tools (their tool loop)

    def check(self, recipe, options: BaseModel) -> None:
        """Refuse settings of the recipe this updater cannot train with: raise a UserError naming the field.
        Called by `kdagent validate` and `kdagent run` before anything loads. An override may also take
        `plugins` (the registry, passed by name), to ask the teacher's kind what it can do."""

    def check_models(self, recipe, options: BaseModel, student: Path) -> None:
        """Checks that need the training libraries or the models' files (not run by `validate`), made by
        `kdagent run` before any model loads; `student` is the starting checkpoint's folder. An override may
        also take `plugins`, passed by name."""

    def memory_mb(self, recipe, options: BaseModel, student: dict, teacher: dict | None, act_bytes: int) -> float:
        """Peak MiB of training, before the runtime's share. `student` and `teacher` are shapes read from the
        checkpoints' files (`params`, `layers`, `hidden`, `vocab`); `teacher` is None unless it is local."""
        return training_mb(recipe, student, act_bytes)

    def train(self, job: UpdateJob) -> dict | None:
        """Train from `job.student` into `job.out` and return the report (metrics, written to update.json),
        or None when the round gave it nothing to train on. A ValueError is the recipe's fault and becomes
        a UserError naming `update.<name>`."""
        raise NotImplementedError


def training_mb(recipe, student: dict, act_bytes: int, frozen_bytes: float = 0, rows_per_example: int = 1) -> float:
    """The training estimate every updater shares: fp32 weights, gradients and AdamW's two moments (16 bytes
    a parameter; a LoRA adapter trains only its own few, so 4 bytes a base parameter), `frozen_bytes` for
    what the method keeps frozen (a reference model, a teacher), activations (`ACTIVATION_FACTOR` hidden-size
    vectors a token a layer, at `act_bytes` each) and the logits (fp32, three copies: logits, softmax,
    gradient) of one batch: `update.batch_size x rows_per_example` sequences of `student.max_length` tokens."""
    update = recipe.update
    states = student["params"] * (16 if update.lora is None else 4)
    tokens = update.batch_size * rows_per_example * recipe.student.max_length
    activations = tokens * student["layers"] * student["hidden"] * ACTIVATION_FACTOR * act_bytes
    logits = tokens * student["vocab"] * 4 * 3
    return (states + frozen_bytes + activations + logits) / MB


def check_completion_length(path: str, recipe, length: int) -> None:
    """A completion of `length` tokens (the option at `path`) leaves room for a prompt in `student.max_length`."""
    if length >= recipe.student.max_length:
        raise UserError(f"{path}: {length} must be below student.max_length ({recipe.student.max_length})")


def options_for(update, name: str, updater: Updater) -> BaseModel:
    """The options of updater `name`, validated by its own model: the recipe's typed block `update.<name>`
    for a built-in, else `update.options.<name>` (defaults when absent). Invalid ones are a UserError."""
    raw = update.options.get(name)
    typed = getattr(update, name, None) if name in type(update).model_fields else None
    if isinstance(typed, BaseModel):
        if raw is not None:
            raise UserError(f"update.options.{name}: the options of {name!r} go under update.{name}")
        if isinstance(typed, updater.options_model):
            return typed
        raw, where = typed.model_dump(), f"update.{name}"
    else:
        where = f"update.options.{name}"
    try:
        return updater.options_model.model_validate(raw or {})
    except ValidationError as exc:
        raise options_error(exc, where, updater.options_model) from None


def updater_named(plugins, name: str, path: str = "update.method") -> Updater:
    """The registered updater `name`; an unknown name is a UserError that lists the registered ones."""
    registered = plugins.updaters
    if name not in registered:
        close = did_you_mean(name, registered)
        raise UserError(
            f"{path}: unknown updater {name!r} (registered: {', '.join(sorted(registered)) or 'none'})"
            + (f"; did you mean {close!r}?" if close else "")
        )
    return registered[name].obj


def check_updaters(recipe, plugins) -> None:
    """The recipe's updaters exist, their options are valid, and each accepts the recipe (`Updater.check`)."""
    for name in recipe.update.options:
        updater_named(plugins, name, f"update.options.{name}")
    for name in recipe.update.methods():
        updater = updater_named(plugins, name)
        options = options_for(recipe.update, name, updater)
        updater.check(**by_name(updater.check, recipe=recipe, options=options, plugins=plugins))
