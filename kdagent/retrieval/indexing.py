"""The run's retrieval: the embedder (for retrieval, and for task expansion) and the passage store, with the
domain's corpus and `retrieval.corpus_dir` indexed into it."""

import sys
import time
from pathlib import Path


def _log(message: str) -> None:
    print(f"[kdagent] {message}", file=sys.stderr, flush=True)


def open_retrieval(recipe, domain, folder: Path, quarantine: list, plugins) -> tuple:
    """`(store, embedder)`, each None where the recipe needs none; the store (of the kind `retrieval.store`
    names) persists in `folder`, and the corpus folder's malformed records go to `quarantine`."""
    from kdagent.models import resolve_model

    store = embedder = None
    if recipe.retrieval.enabled or recipe.synthesis.expansion is not None:
        from kdagent.retrieval.embedder import Embedder

        embedder = Embedder(resolve_model(recipe.retrieval.embedder))
    if recipe.retrieval.enabled:
        from kdagent.retrieval.corpus import load_folder

        started = time.time()
        store = plugins.create_store(recipe.retrieval, folder, collection=recipe.domain.name, embedder=embedder)
        documents = list(domain.corpus()) if recipe.retrieval.domain_corpus else []
        if recipe.retrieval.corpus_dir:
            documents += list(load_folder(recipe.retrieval.corpus_dir, quarantine))
        indexed = store.index(documents, recipe.retrieval.chunk_chars)
        _log(f"indexed {indexed} passages into {store.location} ({time.time() - started:.1f}s)")
    return store, embedder
