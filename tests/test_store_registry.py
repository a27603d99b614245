"""Retrieval store kinds are registered (`kdagent_register_stores`): the built-in `chroma` kind through the same
hook, a plugin's in-memory store (exact cosine search over the real embedder's vectors) grounding a real
`run_recipe`, and the recipe's `retrieval.store` / `retrieval.options` checked in one line each."""

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, Field

from conftest import run_cli
from kdagent.errors import UserError
from kdagent.hookspecs import hookimpl
from kdagent.loop.runner import run_recipe
from kdagent.plugins import _collect, build_plugins
from kdagent.recipe import Recipe
from kdagent.records import GroundedTask, Passage, stable_id
from kdagent.retrieval.store import ChromaStore, chunk
from kdagent.retrieval.stores import Store


class MemoryOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tag: str = Field(description="Put before each passage's source.")
    min_score: float = Field(-1.0, ge=-1.0, le=1.0, description="Passages below this cosine similarity are left out.")
    api_token: str | None = Field(None, description="A credential, masked in the run's recipe.yaml.")


class MemoryStore:
    """Passages in a dict, searched by exact cosine similarity with numpy; no folder, no lock."""

    def __init__(self, collection, embedder, options):
        self.embedder, self.options = embedder, options
        self.location = f"memory:{collection}"
        self.rows: dict[str, tuple[str, str]] = {}
        self.vectors: dict[str, np.ndarray] = {}
        self.queries = 0

    def _add(self, pairs: dict[str, tuple[str, str]]) -> None:
        new = [i for i in pairs if i not in self.rows]
        if new:
            for i, v in zip(new, self.embedder.embed([pairs[i][0] for i in new])):
                v = np.asarray(v, dtype=np.float64)
                self.rows[i], self.vectors[i] = pairs[i], v / np.linalg.norm(v)

    def index(self, documents, chunk_chars):
        pairs = {}
        for doc in documents:
            for piece in chunk(doc.text, chunk_chars):
                pairs.setdefault(stable_id(piece), (piece, f"{self.options.tag}:{doc.source}"))
        self._add(pairs)
        return len(pairs)

    def add_texts(self, texts, source):
        self._add({stable_id(t): (t, f"{self.options.tag}:{source}") for t in texts})

    def _scores(self, texts):
        q = np.asarray(self.embedder.embed(texts), dtype=np.float64)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        return q @ np.stack(list(self.vectors.values())).T

    def query(self, texts, k):
        self.queries += 1
        if not texts or not self.rows:
            return [[] for _ in texts]
        ids = list(self.vectors)
        out = []
        for row in self._scores(texts):
            best = [j for j in np.argsort(-row)[:k] if row[j] >= self.options.min_score]
            out.append(
                [
                    Passage(id=ids[j], text=self.rows[ids[j]][0], source=self.rows[ids[j]][1], score=float(1 - row[j]))
                    for j in best
                ]
            )
        return out

    def max_similarity(self, texts):
        if not self.rows:
            return [-1.0] * len(texts)
        return [float(r.max()) for r in self._scores(texts)]

    def release(self):
        pass


class MemoryPlugin:
    def __init__(self):
        self.stores: list[MemoryStore] = []

    @hookimpl
    def kdagent_register_stores(self, register):
        def memory(path, collection, embedder, options):
            self.stores.append(MemoryStore(collection, embedder, options))
            return self.stores[-1]

        memory.options_model = MemoryOptions
        register("memory", memory)


def plugins_with_memory():
    plugins = build_plugins(load_entry_points=False)
    plugin = MemoryPlugin()
    plugins.pm.register(plugin, name="memory-plugin")
    plugins.stores.clear()
    _collect(plugins, "stores")
    assert plugins.failures == [] and plugins.stores["memory"].plugin == "memory-plugin"
    return plugins, plugin


def tiny_recipe(model_dir, **retrieval) -> Recipe:
    return Recipe.model_validate(
        {
            "name": "stores",
            "seed": 2,
            "student": {"model": str(model_dir), "max_length": 256},
            "teacher": {"kind": "self", "samples": 1, "temperature": 1.0, "max_new_tokens": 4, "batch_size": 2},
            "domain": {"name": "arithmetic", "seed_tasks": 2, "eval_tasks": 2, "options": {"corpus_examples": 6}},
            "skills": ["cot"],
            "retrieval": {"top_k": 2, **retrieval},
            "feedback": {"fallback_to_reference": True},
            "update": {"method": "none"},
            "evaluation": {"max_new_tokens": 4, "bootstrap": 0},
        }
    )


def test_the_built_in_chroma_kind_registers_through_the_hook():
    plugins = build_plugins(load_entry_points=False)
    assert set(plugins.stores) == {"chroma"}
    assert plugins.stores["chroma"].plugin == "kdagent.retrieval.chroma_kind"
    assert {
        "kind": "store",
        "name": "chroma",
        "plugin": "kdagent.retrieval.chroma_kind",
        "distribution": "kdagent",
    } in (plugins.as_rows())


def test_a_plugin_store_grounds_a_real_run_and_holds_the_tasks_expansion_checks(tmp_path, tiny_model_dir):
    plugins, plugin = plugins_with_memory()
    recipe = tiny_recipe(tiny_model_dir, store="memory", options={"tag": "mem", "api_token": "s3cret"})
    recipe = Recipe.model_validate({**recipe.model_dump(), "synthesis": {"expansion": {"n_new": 2}}})
    run_recipe(recipe, tmp_path / "run", plugins)

    passages_store, tasks_index = plugin.stores
    assert passages_store.location == "memory:arithmetic" and passages_store.queries >= 1
    grounded = [GroundedTask.model_validate_json(line) for line in (tmp_path / "run/round-01/grounded.jsonl").open()]
    passages = [p for g in grounded for p in g.passages]
    assert len(grounded) >= 2 and len(passages) == 2 * len(grounded)  # top_k each
    for p in passages:
        assert p.source.startswith("mem:") and passages_store.rows[p.id] == (p.text, p.source)
    assert tasks_index.location == "memory:arithmetic-tasks"
    assert {source for _, source in tasks_index.rows.values()} == {"mem:round-01/seed"}
    assert not (tmp_path / "run" / "chroma").exists()  # Chroma was never opened
    written = (tmp_path / "run/recipe.yaml").read_text()
    assert "store: memory" in written and "tag: mem" in written and "s3cret" not in written  # secrets masked


def test_the_chroma_kind_builds_todays_store(tmp_path):
    from kdagent.models import resolve_model
    from kdagent.retrieval.embedder import Embedder

    plugins = build_plugins(load_entry_points=False)
    config = tiny_recipe("smollm2-135m-instruct").retrieval
    store = plugins.create_store(
        config, tmp_path / "chroma", collection="arithmetic", embedder=Embedder(resolve_model("minilm-l6"))
    )
    assert isinstance(store, ChromaStore) and isinstance(store, Store)
    assert store.location == str(tmp_path / "chroma") and store.collection.name == "kdagent-arithmetic"
    store.add_texts(["What is 2 + 2?"], source="t")
    assert [p.id for p in store.query(["2 + 2"], 1)[0]] == [stable_id("What is 2 + 2?")]
    store.release()


def test_the_example_in_docs_hooks_md_is_a_working_store(tmp_path):
    import re
    import types

    from conftest import REPO
    from kdagent.domain import Document
    from kdagent.models import resolve_model
    from kdagent.retrieval.embedder import Embedder

    section = (REPO / "docs" / "hooks.md").read_text().split("## kdagent_register_stores", 1)[1].split("\n## ", 1)[0]
    module = types.ModuleType("docs_list_store")
    exec(re.search(r"```python\n(.*?)```", section, re.S).group(1), module.__dict__)
    plugins = build_plugins(load_entry_points=False)
    plugins.pm.register(module, name="docs_list_store")
    plugins.stores.clear()
    _collect(plugins, "stores")
    config = tiny_recipe("smollm2-135m-instruct", store="list").retrieval
    store = plugins.create_store(config, tmp_path, collection="c", embedder=Embedder(resolve_model("minilm-l6")))
    assert isinstance(store, Store)
    docs = [Document(text="Paris is the capital of France.", source="a"), Document(text="Cats purr.", source="b")]
    assert store.index(docs, 800) == 2 and store.max_similarity(["cats"])[0] > 0.3
    (hits,) = store.query(["What is the capital of France?"], 1)
    assert [(p.text, p.source) for p in hits] == [("Paris is the capital of France.", "a")]


@pytest.mark.parametrize(
    "retrieval, message",
    [
        (
            {"store": "chrome"},
            r"^retrieval\.store: unknown store 'chrome' \(registered: chroma, memory\); did you mean 'chroma'\?$",
        ),
        ({"store": "memory"}, r"^retrieval\.options\.tag: Field required$"),
        ({"store": "memory", "options": {"tag": ["a"]}}, r"^retrieval\.options\.tag: Input should be a valid string$"),
        (
            {"store": "memory", "options": {"tag": "a", "min_scor": 0.5}},
            r"^unknown key 'retrieval\.options\.min_scor' \(did you mean 'retrieval\.options\.min_score'\?\)$",
        ),
        (
            {"store": "memory", "options": {"tag": "a", "min_score": 2}},
            r"^retrieval\.options\.min_score: Input should be less than or equal to 1$",
        ),
        ({"options": {"tag": "a"}}, r"^retrieval\.options: the 'chroma' store takes no options \(got 'tag'\)$"),
    ],
)
def test_a_wrong_store_or_option_is_one_line_before_anything_loads(tmp_path, tiny_model_dir, retrieval, message):
    plugins, plugin = plugins_with_memory()
    with pytest.raises(UserError, match=message) as info:
        run_recipe(tiny_recipe(tiny_model_dir, **retrieval), tmp_path / "run", plugins)
    assert "\n" not in str(info.value) and plugin.stores == []
    assert not (tmp_path / "run" / "round-01").exists()


def test_the_cli_refuses_an_unknown_store_with_exit_2(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "name: r\ndomain: {name: arithmetic}\nretrieval: {store: chromadb, server: 'http://127.0.0.1:8000'}\n"
    )
    result = run_cli("validate", str(recipe), env={"KDAGENT_PLUGINS": ""})
    assert result.returncode == 2, result.stderr
    assert "retrieval.store: unknown store 'chromadb' (registered: chroma); did you mean 'chroma'?" in result.stderr
