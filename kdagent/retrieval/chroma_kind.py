"""The built-in `chroma` store kind: an embedded Chroma folder in the run directory, or a Chroma server
(`retrieval.server`), registered through the same hook as a plugin's store (kdagent/retrieval/stores.py)."""

from kdagent.hookspecs import hookimpl


def chroma(path, collection, embedder, config):
    """A `ChromaStore` in `path`, or on `retrieval.server` when one is set."""
    from kdagent.retrieval.store import ChromaStore

    return ChromaStore(path, collection=collection, embedder=embedder, server=config.server)


chroma.options_model = None


@hookimpl
def kdagent_register_stores(register):
    register("chroma", chroma)
