"""Chroma as a persistent passage store: embedded (a folder) or a Chroma server (`retrieval.server`).

Passages are chunks of corpus documents; their ids are content hashes written with upsert, so indexing
the same corpus twice changes nothing. kdagent passes its own embeddings, so Chroma's default embedding
function (which would download a model) is never used. One process writes a store at a time: a second
writer gets a UserError (kdagent/retrieval/writer.py).

On a server, a store is still the run's own: its collections are named after the store's folder too
(`kdagent-<name>-<12 hex digits of the folder's path>`), so runs sharing a server never see each other's
passages or tasks, and a resumed run finds its own.
"""

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from kdagent.domain import Document
from kdagent.errors import UserError
from kdagent.records import Passage, stable_id


def chunk(text: str, max_chars: int) -> list[str]:
    """Split on blank lines, packing paragraphs up to `max_chars`; an overlong paragraph is cut on spaces."""
    chunks, current = [], ""
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        while len(para) > max_chars:
            cut = para.rfind(" ", 0, max_chars)
            cut = cut if cut > 0 else max_chars
            if current:
                chunks.append(current)
                current = ""
            chunks.append(para[:cut].strip())
            para = para[cut:].strip()
        if current and len(current) + 2 + len(para) > max_chars:
            chunks.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        chunks.append(current)
    return chunks


def collection_name(name: str) -> str:
    """A Chroma-valid collection name (3-512 of [a-zA-Z0-9._-], alphanumeric at both ends) for any name."""
    cleaned = re.sub(r"[^a-zA-Z0-9._-]+", "-", name).strip("._-")
    return f"kdagent-{cleaned or 'store'}"[:512]


def connect(server: str):
    """A chromadb HttpClient for `http(s)://host:port`; an unreachable server is a UserError naming it."""
    import chromadb
    from chromadb.config import Settings

    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"retrieval.server: {server!r} is not an http(s)://host:port URL")
    port = parts.port or (443 if parts.scheme == "https" else 8000)
    try:
        return chromadb.HttpClient(
            host=parts.hostname, port=port, ssl=parts.scheme == "https", settings=Settings(anonymized_telemetry=False)
        )
    except (
        Exception
    ) as exc:  # chromadb says ValueError("Could not connect to a Chroma server...") or raises httpx's errors
        from kdagent.errors import one_line

        raise UserError(
            f"retrieval.server: cannot reach the Chroma server at {server} ({one_line(str(exc), 160)}); start it with "
            f"`chroma run --host {parts.hostname} --port {port} --path FOLDER`"
        ) from None


class ChromaStore:
    def __init__(self, path: Path, collection: str, embedder, server: str | None = None, lease_s: float = 30.0):
        from chromadb.config import Settings

        from kdagent.retrieval.writer import FileWriterLock, ServerWriterLock

        self.path = Path(path)
        self.server = server
        self.embedder = embedder
        if server is None:
            import chromadb

            self.path.mkdir(parents=True, exist_ok=True)
            self.client = chromadb.PersistentClient(path=str(self.path), settings=Settings(anonymized_telemetry=False))
            name = collection_name(collection)
        else:
            self.client = connect(server)
            name = collection_name(f"{collection}-{stable_id(str(self.path.resolve()))[:12]}")
        self.collection = self.client.get_or_create_collection(
            name=name, embedding_function=None, metadata={"hnsw:space": "cosine"}
        )
        self.location = f"{server}/{name}" if server else str(self.path)
        self._writer = (
            FileWriterLock(self.path, self.collection.name)
            if server is None
            else ServerWriterLock(self.client, self.collection.name, self.location, lease_s=lease_s)
        )

    def _acquire_write_lock(self) -> None:
        self._writer.acquire()

    def release(self) -> None:
        self._writer.release()

    def index(self, documents: Iterable[Document], chunk_chars: int, batch: int = 256) -> int:
        """Chunk, embed and upsert; returns the number of distinct passages written."""
        self._acquire_write_lock()
        seen: dict[str, tuple[str, str]] = {}
        for doc in documents:
            for piece in chunk(doc.text, chunk_chars):
                seen.setdefault(stable_id(piece), (piece, doc.source))
        ids = list(seen)
        for start in range(0, len(ids), batch):
            part = ids[start : start + batch]
            texts = [seen[i][0] for i in part]
            self.collection.upsert(
                ids=part,
                documents=texts,
                embeddings=self.embedder.embed(texts),
                metadatas=[{"source": seen[i][1]} for i in part],
            )
        return len(ids)

    def add_texts(self, texts: list[str], source: str) -> None:
        """Upsert short texts (such as task prompts) whole, keyed by content hash."""
        self._acquire_write_lock()
        unique = {stable_id(t): t for t in texts}
        ids = list(unique)
        for start in range(0, len(ids), 256):
            part = ids[start : start + 256]
            docs = [unique[i] for i in part]
            self.collection.upsert(
                ids=part,
                documents=docs,
                embeddings=self.embedder.embed(docs),
                metadatas=[{"source": source}] * len(part),
            )

    def max_similarity(self, texts: list[str]) -> list[float]:
        """For each text, the cosine similarity of its nearest neighbour in the store (-1 when it is empty)."""
        if not texts:
            return []
        if self.count() == 0:
            return [-1.0] * len(texts)
        res = self.collection.query(query_embeddings=self.embedder.embed(texts), n_results=1, include=["distances"])
        return [1.0 - float(d[0]) for d in res["distances"]]

    def count(self) -> int:
        return self.collection.count()

    def query(self, texts: list[str], k: int) -> list[list[Passage]]:
        if not texts:
            return []
        k = min(k, self.count())
        if k == 0:
            return [[] for _ in texts]
        res = self.collection.query(
            query_embeddings=self.embedder.embed(texts), n_results=k, include=["documents", "metadatas", "distances"]
        )
        return [
            [
                Passage(id=i, text=d, source=(m or {}).get("source", ""), score=float(s))
                for i, d, m, s in zip(ids, docs, metas, dists)
            ]
            for ids, docs, metas, dists in zip(res["ids"], res["documents"], res["metadatas"], res["distances"])
        ]
