"""Teacher kinds: a factory registered by name (`kdagent_register_teachers`), and what it declares about
its kind as attributes, so that the core asks the kind instead of naming it.

`factory(config, student_path)` returns a `kdagent.teachers.Teacher` for the recipe's `TeacherConfig` and
the current student's folder; one that takes a `plugins` argument also gets the registry, one that takes
`options` gets its validated options. The factory (a function, or a class) may carry:

- `options_model`: a pydantic model (`extra="forbid"`) of the kind's own options, `teacher.options` in a
  recipe, validated when the recipe is checked. A kind without one takes no options.
- `check`: a function of some of `config`, `plugins` and `options` (passed by name) that refuses the
  recipe's teacher settings with a `UserError` naming the field; run by `kdagent validate` and
  `kdagent run` before anything loads.
- `local_path(config, student)`: the folder of the local model the teacher will run, known before it
  loads (its context length, the memory plan); absent for a teacher that runs elsewhere.
- `capabilities`: what its teachers declare (`kdagent.teachers.CAPABILITIES`), known before one is built.

`declare` sets them on a factory function; a class sets them as class attributes (`check` a staticmethod).
"""

from pathlib import Path

from pydantic import BaseModel

from kdagent.errors import kind_options
from kdagent.hookspecs import by_name


def declare(*, options_model=None, check=None, local_path=None, capabilities=()):
    """Decorate a teacher factory function with what its kind declares (see the module's docstring)."""

    def wrap(factory):
        factory.options_model = options_model
        factory.check = check
        factory.local_path = local_path
        factory.capabilities = frozenset(capabilities)
        return factory

    return wrap


def teacher_options(config, factory) -> BaseModel | None:
    """`teacher.options` validated by the kind's `options_model` (None for a kind without one, which takes
    no options). Invalid ones are a one-line UserError naming `teacher.options.<field>`."""
    return kind_options(
        getattr(factory, "options_model", None), config.options, "teacher.options", f"the {config.kind!r} teacher"
    )


def check_teacher(config, plugins) -> None:
    """The recipe's teacher kind accepts its options and settings (before anything loads)."""
    factory = plugins.teachers[config.kind].obj
    options = teacher_options(config, factory)
    check = getattr(factory, "check", None)
    if check is not None:
        check(**by_name(check, config=config, plugins=plugins, options=options))


def create_teacher(config, student_path, plugins):
    """The recipe's teacher, built by its kind's factory."""
    factory = plugins.teachers[config.kind].obj
    options = teacher_options(config, factory)
    return factory(config, student_path, **by_name(factory, plugins=plugins, options=options))


def local_teacher_path(config, plugins, student: Path) -> Path | None:
    """The folder of the local model the recipe's teacher will run, before it loads, or None (a teacher
    that runs elsewhere, or a kind that does not say)."""
    local_path = getattr(plugins.teachers[config.kind].obj, "local_path", None)
    return None if local_path is None else local_path(config, student)


def kind_capabilities(config, plugins) -> frozenset[str]:
    """What the recipe's teacher will be able to do (its kind's declared `capabilities`), before it is built."""
    return frozenset(getattr(plugins.teachers[config.kind].obj, "capabilities", ()))


def runs_locally_white_box(config, plugins) -> bool:
    """Whether the recipe's teacher runs a local model whose token log-probs the student can be trained on
    (its kind declares `local_path` and `token_logprobs`): what white-box distillation needs."""
    from kdagent.teachers import LOCAL_PATH, TOKEN_LOGPROBS

    return {LOCAL_PATH, TOKEN_LOGPROBS} <= kind_capabilities(config, plugins)


def other_teacher_path(config, plugins, student: Path, method: str) -> Path:
    """The local teacher's folder for `method` (a white-box updater), refused in one line when it is the
    student itself: distilling a model into itself teaches nothing."""
    from kdagent.errors import UserError

    path = local_teacher_path(config, plugins, student)
    if path is None or Path(path).resolve() == Path(student).resolve():
        raise UserError(
            f"teacher: update.method {method!r} needs a teacher other than the student, and the {config.kind!r} "
            "teacher runs the student itself; name another local model (teacher.kind: hf, teacher.model: ...)"
        )
    return Path(path)
