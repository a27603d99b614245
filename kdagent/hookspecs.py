"""Every kdagent hook, grouped by phase. A hook is an empty function; its docstring is its documentation.

Implementations may take fewer arguments than a spec (pluggy), so specs can grow without breaking plugins.
A plugin is a module or object with functions decorated by `kdagent.hookimpl`, exposed through the
entry-point group `kdagent`:

    [project.entry-points.kdagent]
    my_plugin = "my_package.plugin"
"""

import inspect

import pluggy

hookspec = pluggy.HookspecMarker("kdagent")
hookimpl = pluggy.HookimplMarker("kdagent")


# --- Registration: called once when the plugin manager is built --------------------------------------


@hookspec
def kdagent_register_skills(register):
    """Register skills: `register(name, factory)`; `factory(**options)` returns a `kdagent.skill.Skill`."""


@hookspec
def kdagent_register_domains(register):
    """Register domains: `register(name, factory)`; `factory(**options)` returns a `kdagent.domain.Domain`."""


@hookspec
def kdagent_register_teachers(register):
    """Register teacher kinds: `register(kind, factory)`; `factory(config, student_path)` returns a
    `kdagent.teachers.Teacher` for a `TeacherConfig` and the current student's folder. The factory may
    declare its kind's own options (`options_model`, given in a recipe as `teacher.options` and passed to
    the factory as `options=`), a `check` of the recipe's teacher settings, the `local_path` of the model
    it runs and its `capabilities` (kdagent/teachers/kinds.py)."""


@hookspec
def kdagent_register_chat_models(register):
    """Register LangChain chat models for the `langchain` teacher kind: `register(name, factory)`;
    `factory(config)` returns a LangChain chat model (`BaseChatModel`) for a `TeacherConfig`. A recipe then
    names it: `teacher: {kind: langchain, model: <name>}`."""


@hookspec
def kdagent_register_tools(register):
    """Register tools: `register(name, tool)`; `tool` is a LangChain tool (`@tool`) or a callable with a
    docstring. Model-written code still runs only in kdagent's sandbox."""


@hookspec
def kdagent_register_updaters(register):
    """Register updaters (training methods): `register(name, updater)`; `updater` is a
    `kdagent.update.updater.Updater` (its own options model, a check against the recipe, a memory estimate
    and `train`). A recipe names it in `update.method` and gives its options under `update.options.<name>`."""


@hookspec
def kdagent_register_verifiers(register):
    """Register verifiers (how the feedback stage checks samples): `register(name, verifier)`; `verifier` is a
    `kdagent.feedback.verifiers.Verifier` whose `verify(job, generations)` returns one Feedback per generation.
    A recipe names it in `feedback.verifier` (or `feedback.unreferenced`)."""


@hookspec
def kdagent_register_stores(register):
    """Register retrieval store kinds: `register(name, factory)`; `factory(path, collection, embedder)` returns a
    `kdagent.retrieval.stores.Store`. A factory may declare its kind's own options (`options_model`, given in a
    recipe as `retrieval.options` and passed as `options=`) and take the recipe's `RetrievalConfig` as `config=`
    (kdagent/retrieval/stores.py). A recipe names it in `retrieval.store`."""


# --- Round: called by the loop -------------------------------------------------------------------------


@hookspec
def kdagent_round_start(round, run_dir, recipe):
    """A round begins. `round` counts from 1; `run_dir` is the run's folder (a Path)."""


@hookspec
def kdagent_round_end(round, run_dir, recipe, metrics):
    """A round ended; `metrics` is the round's entry of metrics.json (a dict, read-only by convention)."""


@hookspec
def kdagent_before_stage(stage, round, inputs, recipe, run_dir):
    """A stage of a round begins (its name, as in `kdagent.loop.round.STAGES`: tasks, ground, elicit, feedback,
    curate, preferences, update, evaluate). `inputs` maps each earlier stage of the round to its typed records
    (read-only by convention). Return a reason (str) to stop the run before the stage, or None."""


@hookspec
def kdagent_after_stage(stage, round, records, counts, recipe, run_dir):
    """A stage of a round ended, or was read back on --resume: `records` are its typed records (none for update
    and evaluate), `counts` what it kept and dropped (the update's report, the evaluation's summary). Return a
    reason (str) to stop the run after the stage, or None; the stage's files stay written."""


# --- Records: called for each record in a stage ---------------------------------------------------------


@hookspec
def kdagent_transform_task(task, recipe):
    """Return a replacement `Task` (or None to keep it). Plugins are applied in turn, each seeing the
    previous one's result."""


@hookspec
def kdagent_veto_example(example, recipe):
    """Return a reason (str) to keep `example` (an SFTExample or PreferencePair) out of training, or None
    to allow it. Any reason vetoes the example; the reasons are counted in the round's metrics."""


def by_name(fn, **available) -> dict:
    """The keyword arguments among `available` that `fn` takes (all of them where it takes **kwargs): how the
    core calls a plugin's optional arguments (a teacher kind's `check`, an updater's `check`), so that a plugin
    declares only the ones it needs."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return available
    return {k: v for k, v in available.items() if k in params}
