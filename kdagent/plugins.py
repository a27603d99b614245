"""Build a plugin manager: built-in plugins, then the entry-point group `kdagent`, filtered by the
`KDAGENT_PLUGINS` allowlist. There is no module-global manager: callers build one and pass it on.

`KDAGENT_PLUGINS` unset loads every installed plugin; set, it is a comma-separated list of entry-point or
distribution names to load (empty: none). Built-ins always load. A plugin that fails to import or to
register is recorded by name in `failures`, and everything else keeps working.
"""

import importlib
import importlib.metadata
import os
from dataclasses import dataclass, field
from typing import Any

import pluggy

from kdagent import hookspecs
from kdagent.errors import one_line

ENTRY_POINT_GROUP = "kdagent"
DEFAULT_PLUGINS = (
    "kdagent.skills.cot",
    "kdagent.skills.qa",
    "kdagent.skills.label",
    "kdagent.skills.tool_use",
    "kdagent.skills.alignment",
    "kdagent.skills.instruct",
    "kdagent.domains.arithmetic",
    "kdagent.domains.math",
    "kdagent.domains.assistant",
    "kdagent.domains.instructions",
    "kdagent.teachers.builtin",
    "kdagent.tools.builtin",
    "kdagent.feedback.verifiers",
    "kdagent.retrieval.chroma_kind",
    "kdagent.update.sft",
    "kdagent.update.dpo",
    "kdagent.update.distill",
    "kdagent.update.grpo",
    "kdagent.update.kto",
    "kdagent.update.rloo",
    "kdagent.update.distill_cached",
)
KINDS = ("skills", "domains", "teachers", "chat_models", "tools", "verifiers", "updaters", "stores")


@dataclass(frozen=True)
class Registered:
    name: str
    obj: Any
    plugin: str
    distribution: str


@dataclass
class Plugins:
    pm: pluggy.PluginManager
    distributions: dict[str, str] = field(default_factory=dict)  # plugin name -> distribution
    failures: list[tuple[str, str]] = field(default_factory=list)  # (plugin or thing, one-line error)
    skills: dict[str, Registered] = field(default_factory=dict)
    domains: dict[str, Registered] = field(default_factory=dict)
    teachers: dict[str, Registered] = field(default_factory=dict)
    chat_models: dict[str, Registered] = field(default_factory=dict)
    tools: dict[str, Registered] = field(default_factory=dict)
    verifiers: dict[str, Registered] = field(default_factory=dict)
    updaters: dict[str, Registered] = field(default_factory=dict)
    stores: dict[str, Registered] = field(default_factory=dict)

    # -- calls the loop makes -------------------------------------------------------------------------
    def transform_task(self, task, recipe):
        """Apply every `kdagent_transform_task` in turn."""
        for impl in self.pm.hook.kdagent_transform_task.get_hookimpls():  # registration order
            kwargs = {"task": task, "recipe": recipe}
            result = impl.function(*[kwargs[a] for a in impl.argnames])
            if result is not None:
                task = result
        return task

    def veto_reasons(self, example, recipe) -> list[str]:
        return [r for r in self.pm.hook.kdagent_veto_example(example=example, recipe=recipe) if r]

    def round_start(self, **kwargs) -> None:
        self.pm.hook.kdagent_round_start(**kwargs)

    def round_end(self, **kwargs) -> None:
        self.pm.hook.kdagent_round_end(**kwargs)

    def create(self, kind: str, name: str, *args, **kwargs):
        """Instantiate a registered skill, domain or teacher by name; a skill gets the tools it names."""
        entry = getattr(self, kind)[name]
        obj = entry.obj(*args, **kwargs)
        if kind == "skills" and getattr(obj, "tool_names", ()):
            unknown = [t for t in obj.tool_names if t not in self.tools]
            if unknown:
                raise ValueError(f"unknown tool {unknown[0]!r} (registered: {', '.join(sorted(self.tools))})")
            obj.bind_tools({t: self.tools[t].obj for t in obj.tool_names})
        return obj

    def create_teacher(self, config, student_path):
        """The recipe's teacher; a factory that takes a `plugins` argument gets this registry too, one that
        takes `options` its kind's validated `teacher.options` (kdagent/teachers/kinds.py)."""
        from kdagent.teachers.kinds import create_teacher

        return create_teacher(config, student_path, self)

    def create_store(self, config, path, collection: str, embedder):
        """A retrieval store of the recipe's kind (`retrieval.store`, with its validated `retrieval.options`)
        in `path`, holding `collection` (kdagent/retrieval/stores.py)."""
        from kdagent.retrieval.stores import create_store

        return create_store(config, self, path, collection, embedder)

    def instantiate(self, kind: str, name: str, path: str, options: dict):
        """A skill or domain from the recipe; options it rejects are a UserError naming the recipe field."""
        from kdagent.errors import UserError

        try:
            return self.create(kind, name, **options)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{path}: {name}: {exc}") from None

    def blame(self, exc: BaseException) -> str | None:
        """The outside plugin whose code raised `exc` (its innermost frame of the traceback), as
        "name (distribution) in function (file:line)", or None when no outside plugin's code is on it."""
        import inspect
        import traceback

        roots = {}
        for name, plugin in self.pm.list_name_plugin():
            if self.distributions.get(name, "kdagent") == "kdagent":
                continue  # built-ins are kdagent's own code
            module = plugin if inspect.ismodule(plugin) else inspect.getmodule(plugin)
            file = getattr(module, "__file__", None)
            if file:
                root = os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file
                roots[os.path.realpath(root)] = f"{name} ({self.distributions.get(name, '?')})"
        seen = set()
        while exc is not None and id(exc) not in seen:  # the exception, then the ones it came from
            seen.add(id(exc))
            culprit = None
            for frame in traceback.extract_tb(exc.__traceback__):
                path = os.path.realpath(frame.filename)
                for root, label in roots.items():
                    if path == root or path.startswith(root + os.sep):
                        culprit = f"{label} in {frame.name} ({os.path.basename(frame.filename)}:{frame.lineno})"
            if culprit:
                return culprit
            exc = exc.__cause__ or exc.__context__
        return None

    def as_rows(self) -> list[dict]:
        rows = []
        for kind in KINDS:
            for entry in getattr(self, kind).values():
                rows.append(
                    {
                        "kind": kind[:-1].replace("chat_model", "chat-model"),
                        "name": entry.name,
                        "plugin": entry.plugin,
                        "distribution": entry.distribution,
                    }
                )
        return rows


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {one_line(text[0], 300)}" if text else exc.__class__.__name__


def _allowlist() -> set[str] | None:
    raw = os.environ.get("KDAGENT_PLUGINS")
    if raw is None:
        return None
    return {name.strip() for name in raw.split(",") if name.strip()}


def build_plugins(load_entry_points: bool = True) -> Plugins:
    pm = pluggy.PluginManager("kdagent")
    pm.add_hookspecs(hookspecs)
    plugins = Plugins(pm=pm)

    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
        plugins.distributions[module_name] = "kdagent"

    if load_entry_points:
        allowed = _allowlist()
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            if allowed is not None and ep.name not in allowed and dist not in allowed:
                continue
            if pm.get_plugin(ep.name) is not None:
                continue  # the same entry point seen twice on sys.path
            try:
                module = ep.load()
                pm.register(module, name=ep.name)
                pm.check_pending()  # a hook name that no spec has (a misspelt hook)
            except Exception as exc:  # a broken plugin must not break the CLI
                if pm.get_plugin(ep.name) is not None:
                    pm.unregister(name=ep.name)
                plugins.failures.append((f"{ep.name} ({dist})", _one_line(exc)))
                continue
            plugins.distributions[ep.name] = dist
    pm.check_pending()

    for kind in KINDS:
        _collect(plugins, kind)
    return plugins


def _collect(plugins: Plugins, kind: str) -> None:
    hook = getattr(plugins.pm.hook, f"kdagent_register_{kind}")
    registry: dict[str, Registered] = getattr(plugins, kind)
    for impl in hook.get_hookimpls():  # registration order: built-ins first
        dist = plugins.distributions.get(impl.plugin_name, "?")

        def register(name: str, obj: Any, _plugin=impl.plugin_name, _dist=dist) -> None:
            if name in registry:
                plugins.failures.append(
                    (
                        f"{_plugin} ({_dist})",
                        f"{kind[:-1]} {name!r} is already registered by {registry[name].plugin}; kept the first",
                    )
                )
                return
            registry[name] = Registered(name, obj, _plugin, _dist)

        try:
            impl.function(*[register for _ in impl.argnames])  # the spec's only argument, if taken
        except Exception as exc:
            plugins.failures.append(
                (f"{impl.plugin_name} ({dist})", f"kdagent_register_{kind} raised {_one_line(exc)}")
            )
