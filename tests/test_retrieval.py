import pytest

from kdagent.domain import Document
from kdagent.domains.arithmetic import Arithmetic
from kdagent.errors import UserError
from kdagent.models import resolve_model
from kdagent.retrieval.embedder import Embedder
from kdagent.retrieval.store import ChromaStore, chunk


@pytest.fixture(scope="module")
def embedder():
    return Embedder(resolve_model("minilm-l6"))


def test_chunk_packs_paragraphs_and_cuts_long_ones():
    text = "a" * 10 + "\n\n" + "b" * 10 + "\n\n" + " ".join(["word"] * 60)
    parts = chunk(text, 50)
    assert parts[0] == "a" * 10 + "\n\n" + "b" * 10
    assert all(len(p) <= 50 for p in parts)
    assert "".join(parts).count("word") == 60


def test_embeddings_are_normalised_and_meaningful(embedder):
    a, b, c = embedder.embed(
        ["Tom has 5 apples and buys 3 more.", "Ana has 7 pears and gets 2 more.", "The statute defines a dependent."]
    )

    def dot(x, y):
        return sum(i * j for i, j in zip(x, y))

    assert abs(dot(a, a) - 1) < 1e-4
    assert dot(a, b) > dot(a, c)


def test_index_is_idempotent_and_retrieves_the_right_kind_of_example(tmp_path, embedder):
    store = ChromaStore(tmp_path / "chroma", "arithmetic", embedder)
    domain = Arithmetic(corpus_examples=30)
    written = store.index(domain.corpus(), 800)
    assert written == store.count() > 30
    assert store.index(domain.corpus(), 800) == written and store.count() == written  # upsert by content hash
    store.release()

    reopened = ChromaStore(tmp_path / "chroma", "arithmetic", embedder)  # persistent on disk
    assert reopened.count() == written
    (hits,) = reopened.query(["Mia buys 4 bags with 6 cards in each bag. How many cards does Mia buy?"], 2)
    assert len(hits) == 2 and "bags" in hits[0].text and hits[0].score <= hits[1].score
    assert hits[0].id and hits[0].source.startswith("worked-example/")


def test_second_writer_is_refused(tmp_path, embedder):
    first = ChromaStore(tmp_path / "chroma", "c", embedder)
    first.index([Document("a", "one passage")], 100)
    second = ChromaStore(tmp_path / "chroma", "c", embedder)
    with pytest.raises(UserError, match="being written by another process"):
        second.index([Document("b", "another passage")], 100)
    first.release()
    assert second.index([Document("b", "another passage")], 100) == 1
    second.release()


def test_task_index_gives_nearest_similarity(tmp_path, embedder):
    index = ChromaStore(tmp_path / "chroma", "arithmetic-tasks", embedder)
    assert index.max_similarity(["anything"]) == [-1.0]
    index.add_texts(["Tom has 5 apples and buys 3 more. How many apples does he have?"], source="seed")
    index.add_texts(["Tom has 5 apples and buys 3 more. How many apples does he have?"], source="seed")  # idempotent
    assert index.count() == 1
    near, far = index.max_similarity(
        ["Tom has 5 apples and buys 3 more apples. How many does he have?", "Which court hears appeals?"]
    )
    assert near > 0.9 > far
    from kdagent.synth.expand import filter_novel

    kept, counts = filter_novel(
        [
            "Tom has 5 apples and he buys 3 more. How many apples does he have now?",
            "A train leaves at 3 pm; when does it arrive?",
        ],
        [],
        embedder,
        0.9,
        index=index,
    )
    assert kept == ["A train leaves at 3 pm; when does it arrive?"] and counts["not_novel"] == 1
    index.release()
