"""Retrieval store kinds: a factory registered by name (`kdagent_register_stores`), chosen in a recipe by
`retrieval.store` with its own options in `retrieval.options`.

`factory(path, collection, embedder)` returns a `Store`: `path` is the store's folder in the run directory,
`collection` names what it holds (the domain's passages, or the tasks of earlier rounds), and `embedder` turns
texts into vectors (`embed(texts)`). A factory that takes `options` gets its validated options, one that takes
`config` the recipe's `RetrievalConfig`. It may carry `options_model`, a pydantic model (`extra="forbid"`) of
the kind's own options; a kind without one takes none.
"""

import inspect
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from pydantic import BaseModel

from kdagent.errors import UserError, did_you_mean, kind_options


@runtime_checkable
class Store(Protocol):
    """What the run asks of a passage store. Ids are content hashes, so writing the same text twice changes
    nothing; a store that one process at a time may write takes its lock on the first write."""

    location: str  # where the store lives, for the log

    def index(self, documents: Iterable, chunk_chars: int) -> int:
        """Chunk (`kdagent.retrieval.store.chunk`), embed and write corpus documents; the number of distinct passages."""

    def add_texts(self, texts: list[str], source: str) -> None:
        """Write short texts (such as task prompts) whole."""

    def query(self, texts: list[str], k: int) -> list[list]:
        """For each text, its `k` nearest passages (`kdagent.records.Passage`, best first)."""

    def max_similarity(self, texts: list[str]) -> list[float]:
        """For each text, the cosine similarity of its nearest neighbour in the store (-1 when it is empty)."""

    def release(self) -> None:
        """Give up the writer's lock (a no-op where there is none)."""


def declare(*, options_model=None):
    """Decorate a store factory function with its kind's options model."""

    def wrap(factory):
        factory.options_model = options_model
        return factory

    return wrap


def store_kind(config, plugins):
    """The registered factory of `retrieval.store`; an unknown name is a UserError listing the registered ones."""
    registered = plugins.stores
    if config.store not in registered:
        close = did_you_mean(config.store, registered)
        raise UserError(
            f"retrieval.store: unknown store {config.store!r} (registered: {', '.join(sorted(registered)) or 'none'})"
            + (f"; did you mean {close!r}?" if close else "")
        )
    return registered[config.store].obj


def store_options(config, factory) -> BaseModel | None:
    """`retrieval.options` validated by the kind's `options_model` (None for a kind without one, which takes
    no options). Invalid ones are a one-line UserError naming `retrieval.options.<field>`."""
    return kind_options(
        getattr(factory, "options_model", None), config.options, "retrieval.options", f"the {config.store!r} store"
    )


def check_store(config, plugins) -> None:
    """The recipe's store kind is registered and accepts its options (before anything loads)."""
    store_options(config, store_kind(config, plugins))


def create_store(config, plugins, path, collection: str, embedder) -> Store:
    """A store of the recipe's kind in `path`, holding `collection`."""
    factory = store_kind(config, plugins)
    available = {"options": store_options(config, factory), "config": config}
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        available = {k: v for k, v in available.items() if k in params}
    return factory(path, collection, embedder, **available)
