"""An offline teacher-logit cache: the teacher runs once over the training sequences (prompt + completion) and
stores, at each position that predicts a completion token, its top-k token ids, their log-probabilities and the
probability left outside them (the tail mass). A student then trains from the cache with no teacher in memory
(kdagent/update/distill_cached.py; the losses are kdagent/update/losses.py's).

Layout: `<root>/<key>/` holds `chunk-NNNNN.safetensors` files of `chunk_size` sequences each and `cache.json`,
written last, which marks the cache complete. Each chunk holds the sequences' token ids (`input_ids`,
concatenated), `lengths` and `starts` (where each completion begins), and per completion position `topk_ids`,
`topk_logp` (float16) and `tail` (float16); token ids are uint16 when the vocabulary fits, else int32. A chunk is written to
a temporary file and renamed into place, so one that exists is whole: a killed build resumes with the chunks it
lacks, and the teacher's fp32 forward passes over a chunk are the same computation each time, so the resumed
cache is byte-identical to an uninterrupted one.

The key is a hash of the teacher's weights and config (a served teacher's: its model name,
kdagent/update/remote_logits.py), the tokenizer's files, the token sequences (which carry the data, the chat
template and the length limit) and k: a second student of the same teacher on the same data
finds the cache and does not load the teacher at all. At k = 32 a completion token costs 2 x 32 x 2 + 2 = 130
bytes (k = 64: 258) plus its share of the sequences' token ids (2 bytes each, prompt included) and of the chunk
headers; `LogitCache.bytes_per_token` measures it all (the manifest records it).
"""

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = 1
MANIFEST = "cache.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "tokenizer.model",
)


def tokenize_examples(tokenizer, examples, max_length: int) -> list[tuple[list[int], int]]:
    """Each (prompt messages, completion messages) as (token ids of the whole chat, index where the completion
    starts), cut to `max_length` tokens; examples whose completion is cut away entirely are dropped."""
    sequences = []
    for prompt, completion in examples:
        prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full_text = tokenizer.apply_chat_template([*prompt, *completion], tokenize=False)
        if not full_text.startswith(prompt_text):  # a template that rewrites the prompt once a reply follows
            raise ValueError("the chat template renders the prompt differently once the completion follows it")
        start = len(tokenizer(prompt_text, add_special_tokens=False).input_ids)
        ids = tokenizer(full_text, add_special_tokens=False).input_ids[:max_length]
        if 1 <= start < len(ids):
            sequences.append((list(ids), start))
    return sequences


def _sha256_files(paths) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            while block := fh.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def model_hash(folder: Path, memo: Path | None = None) -> str:
    """The hash of a checkpoint's config and weights. Hashing a large model's weights takes seconds, so the result
    is remembered in `memo` (a JSON file) against each file's size and modification time."""
    folder = Path(folder).resolve()
    files = sorted(p for p in folder.iterdir() if p.name == "config.json" or p.suffix in (".safetensors", ".bin"))
    stamp = json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files])
    known = {}
    if memo is not None and memo.is_file():
        try:
            known = json.loads(memo.read_text(encoding="utf-8"))
        except ValueError:
            known = {}
    entry = known.get(str(folder))
    if entry and entry.get("stamp") == stamp:
        return entry["sha256"]
    value = _sha256_files(files)
    if memo is not None:
        known[str(folder)] = {"stamp": stamp, "sha256": value}
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f".{memo.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, memo)
    return value


def tokenizer_hash(folder: Path) -> str:
    return _sha256_files(sorted(p for p in Path(folder).iterdir() if p.name in TOKENIZER_FILES))


def data_hash(sequences) -> str:
    digest = hashlib.sha256()
    for ids, start in sequences:
        digest.update(json.dumps([start, ids], separators=(",", ":")).encode() + b"\n")
    return digest.hexdigest()


def cache_key(teacher: str, tokenizer: str, data: str, k: int) -> str:
    blob = json.dumps(
        {"format": FORMAT, "teacher": teacher, "tokenizer": tokenizer, "data": data, "k": k}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def left_padded(sequences, pad_id: int):
    """A batch of token-id lists as left-padded `input_ids`, `attention_mask` and `position_ids` (counted from each
    sequence's first real token), and `keep`: how many final positions' logits the completions need."""
    import torch

    width = max(len(ids) for ids, _ in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, (ids, _) in enumerate(sequences):
        input_ids[row, width - len(ids) :] = torch.tensor(ids)
        mask[row, width - len(ids) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(ids) - start + 1 for ids, start in sequences)
    return input_ids, mask, positions, keep


def completion_rows(logits, sequences, keep: int):
    """From the logits of the last `keep` positions of a left-padded batch (batch, keep, V), the rows that predict
    each sequence's completion tokens, concatenated in order (sum of completion lengths, V), and those tokens."""
    import torch

    rows, targets = [], []
    for row, (ids, start) in enumerate(sequences):
        n = len(ids) - start  # positions start-1 .. len-2 predict tokens start .. len-1
        rows.append(logits[row, keep - n - 1 : keep - 1])
        targets.extend(ids[start:])
    return torch.cat(rows), torch.tensor(targets, dtype=torch.long, device=logits.device)


@dataclass
class LogitCache:
    """A complete cache folder; `sequence(i)` reads one sequence back (chunks are loaded as they are first used)."""

    path: Path
    k: int
    chunk_size: int
    count: int
    hit: bool = False  # found complete, the teacher not loaded
    built: int = 0  # chunks computed by this build (the rest were found whole)
    _chunks: dict = field(default_factory=dict, repr=False)

    def __len__(self):
        return self.count

    def _chunk(self, index: int) -> dict:
        if index not in self._chunks:
            from safetensors.numpy import load_file

            data = load_file(str(self.path / chunk_name(index)))
            data["offsets"] = _offsets(data["lengths"])
            data["row_offsets"] = _offsets(data["lengths"] - data["starts"])
            self._chunks[index] = data
        return self._chunks[index]

    def sequence(self, i: int) -> dict:
        """Sequence `i`: `input_ids` (int64), `start`, and the teacher's `topk_ids` (int64), `topk_logp` (float32)
        and `tail` (float32) at its completion positions (one row per completion token)."""
        if not 0 <= i < self.count:
            raise IndexError(i)
        data = self._chunk(i // self.chunk_size)
        j = i % self.chunk_size
        a, b = data["offsets"][j], data["offsets"][j + 1]
        r, s = data["row_offsets"][j], data["row_offsets"][j + 1]
        return {
            "input_ids": data["input_ids"][a:b].astype("int64"),
            "start": int(data["starts"][j]),
            "topk_ids": data["topk_ids"][r:s].astype("int64"),
            "topk_logp": data["topk_logp"][r:s].astype("float32"),
            "tail": data["tail"][r:s].astype("float32"),
        }

    def manifest(self) -> dict:
        return json.loads((self.path / MANIFEST).read_text(encoding="utf-8"))

    @property
    def bytes_per_token(self) -> float:
        """Bytes on disk per cached completion token, everything in the folder counted."""
        return self.manifest()["bytes_per_token"]


def chunk_name(index: int) -> str:
    return f"chunk-{index:05d}.safetensors"


def _offsets(lengths):
    import numpy as np

    return np.concatenate([[0], np.cumsum(lengths.astype("int64"))])


def _chunk_whole(path: Path) -> bool:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return {"input_ids", "lengths", "starts", "topk_ids", "topk_logp", "tail"} <= set(f.keys())
    except Exception:  # a file that is not a whole safetensors file (it was renamed into place whole, so: corrupted)
        return False


def pack_chunk(sequences, topk_ids, topk_logp, tail, vocab: int) -> dict:
    """The arrays a chunk file holds: `sequences` ((token ids, completion start) pairs) and, for their completion
    positions in order, the teacher's top-k ids and log-probabilities (rows, k) and tail mass (rows,)."""
    import numpy as np

    id_type = np.uint16 if vocab <= 2**16 else np.int32
    return {
        "input_ids": np.concatenate([np.asarray(ids, dtype=id_type) for ids, _ in sequences]),
        "lengths": np.asarray([len(ids) for ids, _ in sequences], dtype=np.int32),
        "starts": np.asarray([start for _, start in sequences], dtype=np.int32),
        "topk_ids": np.asarray(topk_ids).astype(id_type),
        "topk_logp": np.asarray(topk_logp).astype(np.float16),
        "tail": np.asarray(tail).astype(np.float16),
    }


def teacher_chunk(model, sequences, k: int, pad_id: int, vocab: int, batch_size: int) -> dict:
    """The teacher's top-k over one chunk of sequences, as the arrays a chunk file holds."""
    import torch

    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))  # similar lengths batch together
    ids_out, logp_out, tail_out = [None] * len(sequences), [None] * len(sequences), [None] * len(sequences)
    with torch.inference_mode():
        for b in range(0, len(order), batch_size):
            batch_idx = order[b : b + batch_size]
            batch = [sequences[i] for i in batch_idx]
            input_ids, mask, positions, keep = left_padded(batch, pad_id)
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
            rows, _ = completion_rows(logits.float(), batch, keep)
            logp = torch.log_softmax(rows, dim=-1)
            values, ids = logp.topk(k, dim=-1)
            tail = (1 - values.exp().sum(-1)).clamp(min=0)
            at = 0
            for i, (seq, start) in zip(batch_idx, batch):
                n = len(seq) - start
                ids_out[i], logp_out[i], tail_out[i] = ids[at : at + n], values[at : at + n], tail[at : at + n]
                at += n
    return pack_chunk(
        sequences, torch.cat(ids_out).numpy(), torch.cat(logp_out).numpy(), torch.cat(tail_out).numpy(), vocab
    )


def build_cache(
    teacher: Path,
    tokenizer_dir: Path,
    sequences,
    k: int,
    root: Path,
    chunk_size: int = 64,
    batch_size: int = 4,
    log=None,
    builder: bool = True,
) -> LogitCache:
    """The cache of `teacher`'s top-`k` over `sequences` ((token ids, completion start) pairs, `tokenize_examples`)
    under `root`: found complete (`hit`), or built chunk by chunk, keeping the whole chunks a killed build left.
    The teacher is loaded only when a chunk is missing, and released before this returns. With `builder` False
    (the other ranks of a distributed update) it waits for the builder's cache instead (`fill_cache`)."""
    from contextlib import contextmanager

    if k < 1:
        raise ValueError(f"top_k must be at least 1, got {k}")
    if not sequences:
        raise ValueError("the logit cache needs at least one sequence with a completion")
    root = Path(root)
    key = cache_key(
        model_hash(teacher, root / "model-hashes.json"), tokenizer_hash(tokenizer_dir), data_hash(sequences), k
    )

    @contextmanager
    def local_teacher():
        import gc

        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        from kdagent.models.registry import safetensors_only

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        vocab = AutoConfig.from_pretrained(teacher).vocab_size
        if k > vocab:
            raise ValueError(f"top_k {k} exceeds the teacher's vocabulary ({vocab})")
        model = AutoModelForCausalLM.from_pretrained(teacher, dtype=torch.float32, use_safetensors=safetensors_only())
        model.eval()
        try:
            yield lambda part: teacher_chunk(model, part, k, pad_id, vocab, batch_size)
        finally:
            model = None  # the scoring closure holds the same cell: this frees the weights
            gc.collect()

    return fill_cache(
        root / key, sequences, k, chunk_size, str(Path(teacher).resolve()), local_teacher, log=log, builder=builder
    )


def fill_cache(
    path: Path,
    sequences,
    k: int,
    chunk_size: int,
    teacher_label: str,
    open_teacher,
    log=None,
    builder: bool = True,
    poll_s: float = 0.5,
) -> LogitCache:
    """The cache folder `path` over `sequences`: found complete (`hit`), or completed chunk by chunk. Only when a
    chunk is missing is `open_teacher()` entered: a context manager giving `score(sequences) -> chunk arrays`
    (`pack_chunk`), a local model's forward passes or a server's log-probabilities. With `builder` False the
    cache is not built here: this waits until another process (rank 0 of a distributed update) has completed
    it, so one teacher, not one a rank, does the work; the launcher stops the waiting ranks if the builder fails."""
    import time

    from safetensors.numpy import save_file

    path = Path(path)
    chunks = (len(sequences) + chunk_size - 1) // chunk_size
    cache = LogitCache(path, k, chunk_size, len(sequences))
    while not builder and not (path / MANIFEST).is_file():
        time.sleep(poll_s)
    if (path / MANIFEST).is_file():
        cache.hit = True
        return cache
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob(".*.tmp-*"):  # a chunk a killed build was writing
        stale.unlink(missing_ok=True)
    missing = [c for c in range(chunks) if not _chunk_whole(path / chunk_name(c))]
    if missing:
        with open_teacher() as score:
            for c in missing:
                arrays = score(sequences[c * chunk_size : (c + 1) * chunk_size])
                tmp = path / f".{chunk_name(c)}.tmp-{os.getpid()}"
                save_file(arrays, str(tmp))
                os.chmod(tmp, 0o644)  # shared like a checkpoint's files (safetensors writes 0600)
                os.replace(tmp, path / chunk_name(c))
                cache.built += 1
                if log:
                    log(f"logit cache: chunk {c + 1}/{chunks} written")
    on_disk = sum((path / chunk_name(c)).stat().st_size for c in range(chunks))
    tokens = sum(len(ids) - start for ids, start in sequences)
    manifest = {
        "format": FORMAT,
        "key": path.name,
        "teacher": teacher_label,
        "k": k,
        "chunk_size": chunk_size,
        "sequences": len(sequences),
        "chunks": chunks,
        "completion_tokens": tokens,
        "bytes": on_disk,
        "bytes_per_token": round(on_disk / tokens, 1),
    }
    tmp = path / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path / MANIFEST)
    return cache
