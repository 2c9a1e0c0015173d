"""Chunking evaluation (Chroma's protocol) through the project's real datastore and search code.

1. Every corpus of the dataset is chunked with ``indexers.chunkers.make_chunker``; chunk spans
   are exact (``corpus[start:end] == text``).
2. The chunks of ALL corpora go into ONE datastore (``doc_id`` = corpus id), written by
   ``indexers.build_datastore`` exactly as ``rag index`` writes them (the model's passage prefix,
   the same embedding blocks, so the same vectors), so chunks of other corpora act as distractors.
3. Each question is searched with ``datastores.Datastore.search_many``: ``dense`` = exact inner
   product over unit vectors (cosine) in a FAISS flat index (engine ``faiss-flat-ip``), the
   question encoded with the model's query prefix, or ``bm25`` (engine ``bm25``, exact scoring
   over all chunks).
4. The top-k of each question are scored by :mod:`evaluators.spans`.

``k`` is an int or ``"min"`` (per question, the number of chunks that contain reference
characters, capped at 20).

:class:`ChunkIndex` does steps 1–2 once and then scores any number of (k, mode, unit) settings
from one search per mode (sweeps use it); :func:`evaluate_chunking` is one index, one setting.
The embedding chunkers (``cluster``, ``kamradt``) get the evaluation's embedder (with its passage
prefix, as in ``rag index``) for their pieces.

Duplicate chunk texts. Some corpora repeat passages (Recursive 200/0 gives 768 finance chunks in
325 groups of identical text). No retriever can tell identical texts apart, so which copy lands in
the top-k is decided by floating-point noise (FAISS scores identical vectors differently by an ulp
depending on their position), yet with exact spans only the copy at the reference offset earns
credit: on the Chroma set this moves Recall by about one point between runs or engines. With
``duplicate_ties="document-order"`` (default), within each question's hit list, the copies
retrieved of a text are reassigned to that text's chunks in document order (the first copy
retrieved becomes the first occurrence, and so on; the number of copies and their ranks are
kept). This matches the data set's convention that
a stored reference offset is the first occurrence, and BM25's own tie-breaking (lower chunk id
first). ``duplicate_ties="engine"`` keeps the engine's choice. The reference implementation
goes further and maps every copy onto the first occurrence.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datastores import Datastore
from datastores.errors import UserError
from datastores.records import Chunk, Document
from evaluators.datasets import EvalDataset, load_dataset
from evaluators.spans import MIN_K_CAP, UNITS, RetrievedSpan, SpanScorer, SpanScores, SpanSummary, summarize
from indexers.build import build_datastore
from indexers.build_input import BuildInput
from indexers.chunkers import EMBEDDING_CHUNKERS, Chunker, make_chunker
from indexers.config import BuildConfig
from indexers.embedding import AUTO_PREFIX
from indexers.tokenizers import DEFAULT_TOKENIZER

logger = logging.getLogger("terarag.evaluators")

MODES = ("dense", "bm25")
ENGINES = {"dense": "faiss-flat-ip", "bm25": "bm25"}
DUPLICATE_TIES = ("document-order", "engine")


def parse_k(k: int | str) -> int | str:
    """A positive int, or ``"min"``; anything else raises ``ValueError``."""
    if isinstance(k, str):
        text = k.strip().lower()
        if text == "min":
            return "min"
        try:
            k = int(text)
        except ValueError:
            raise UserError(f"k must be a positive integer or 'min' (got {k!r})") from None
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"k must be a positive integer or 'min' (got {k!r})")
    return k


@dataclass
class ChunkingEvaluation:
    """Per-question rows, their summary (×100) and the settings that produced them."""

    rows: list[SpanScores]
    summary: SpanSummary
    settings: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """One flat JSON-ready object: the metric means/stds (×100), counts, settings."""
        return {**self.summary.to_dict(per_corpus=False), **self.settings,
                "per_corpus": self.summary.to_dict()["per_corpus"],
                "timings": {k: round(v, 3) for k, v in self.timings.items()}}

    def write_rows(self, path: str | Path) -> Path:
        """Write the per-question rows (with the settings as columns) to Parquet, CSV or JSONL."""
        import pyarrow as pa

        path = Path(path)
        settings = {k: v for k, v in self.settings.items() if not isinstance(v, (dict, list))}
        records = [{**{f"setting_{k}": str(v) for k, v in settings.items()}, **r.to_dict()} for r in self.rows]
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".jsonl":
            import json

            with open(path, "w", encoding="utf-8") as handle:
                for record in records:
                    clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in record.items()}
                    handle.write(json.dumps(clean, ensure_ascii=False) + "\n")
            return path
        table = pa.Table.from_pylist(records)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            pcsv.write_csv(table, path)
        elif suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pq.write_table(table, path)
        else:
            raise UserError(f"cannot write rows to {path}: use a .parquet, .csv or .jsonl file")
        return path


def chunk_corpora(corpora: dict[str, str], chunker: Chunker) -> list[Chunk]:
    """Chunks of every corpus (sorted by id), ``doc_id`` = corpus id; spans are checked exact."""
    chunks: list[Chunk] = []
    for corpus_id in sorted(corpora):
        text = corpora[corpus_id]
        for chunk in chunker.chunk(Document(corpus_id, text, corpus_id)):
            if text[chunk.start:chunk.end] != chunk.text:
                raise RuntimeError(f"chunker {chunker.name} returned a span that does not match its text "
                                   f"in {corpus_id} [{chunk.start}, {chunk.end})")
            chunks.append(chunk)
    return chunks


def duplicate_groups(chunks: Sequence[Chunk]) -> tuple[list[int], list[list[int]]]:
    """(group of each chunk, members of each group in chunk order); a group = one distinct text."""
    first: dict[str, int] = {}
    group_of = [first.setdefault(c.text, len(first)) for c in chunks]
    members: list[list[int]] = [[] for _ in first]
    for index, group in enumerate(group_of):
        members[group].append(index)
    return group_of, members


def in_document_order(chunk_ids: Sequence[int], group_of: Sequence[int],
                      members: Sequence[Sequence[int]]) -> tuple[list[int], int]:
    """Reassign retrieved copies of identical texts to that text's chunks in chunk order.

    Returns the new id list (same length, same ranks) and how many ids changed.
    """
    taken: dict[int, int] = {}
    out, changed = [], 0
    for chunk_id in chunk_ids:
        group = members[group_of[chunk_id]]
        if len(group) == 1:
            out.append(chunk_id)
            continue
        position = taken.get(group_of[chunk_id], 0)
        taken[group_of[chunk_id]] = position + 1
        out.append(group[position])
        changed += group[position] != chunk_id
    return out, changed


def _index_chunks(root: Path, chunks: Sequence[Chunk], embedder: Any, chunker: Chunker,
                  batch_size: int | None, timings: dict[str, float]) -> Datastore:
    """One datastore of ``chunks`` built by ``build_datastore`` with the prefixed ``embedder``;
    opened with its query encoder. Adds ``embed`` and ``write`` seconds to ``timings``."""
    config = BuildConfig(embedder=embedder.name, batch_size=batch_size, query_prefix=embedder.query_prefix,
                         passage_prefix=embedder.passage_prefix)
    report = build_datastore(BuildInput(chunks=chunks, chunker=chunker, name="chunking-evaluation"), root, config,
                             embedder=embedder, progress=False)
    for name in ("embed", "write"):
        timings[name] = timings.get(name, 0.0) + report.timings[name]
    return Datastore.open(root, query_encoder=embedder.encode_queries)


def _check_options(mode: str | None = None, unit: str | None = None, duplicate_ties: str | None = None) -> None:
    if mode is not None and mode not in MODES:
        raise UserError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    if unit is not None and unit not in UNITS:
        raise UserError(f"unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    if duplicate_ties is not None and duplicate_ties not in DUPLICATE_TIES:
        raise UserError(f"unknown duplicate_ties {duplicate_ties!r}; choose one of {', '.join(DUPLICATE_TIES)}")


class ChunkIndex:
    """The chunks of a dataset under one chunker, embedded and written ONCE into one datastore,
    then searched and scored for any number of (k, mode, unit) settings.

    ``timings`` holds ``chunk``, ``embed`` and ``write`` seconds (for embedding chunkers,
    ``chunk`` includes embedding their pieces); :meth:`search` adds ``search_<mode>``. Chunks
    are embedded with the model's passage prefix and questions with its query prefix (``"auto"``:
    the model's saved prompts, else its family's; see ``indexers.embedding``), as ``rag index`` and ``rag search`` do.
    Use as a context manager, or call :meth:`close`, to remove a temporary datastore.
    """

    def __init__(self, dataset: EvalDataset, chunker: Chunker, embedder: Any, *,
                 workdir: str | Path | None = None, batch_size: int | None = None,
                 query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX):
        self.dataset = dataset
        self.chunker = chunker
        self.embedder = embedder.with_prefixes(query_prefix, passage_prefix)
        self.timings: dict[str, float] = {}
        started = time.perf_counter()
        self.chunks = chunk_corpora(dataset.corpora, chunker)
        if not self.chunks:
            raise UserError("the chunker produced no chunks")
        self.timings["chunk"] = time.perf_counter() - started
        self.chunks_by_corpus = {cid: [(c.start, c.end) for c in self.chunks if c.doc_id == cid]
                                 for cid in dataset.corpora}
        self.group_of, self.members = duplicate_groups(self.chunks)
        self._tmp: tempfile.TemporaryDirectory | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="terarag-eval-")
            root = Path(self._tmp.name) / "datastore"
        else:
            root = Path(workdir)
        logger.info("embedding %d chunks of %d corpora", len(self.chunks), len(dataset.corpora))
        try:
            self.datastore = _index_chunks(root, self.chunks, self.embedder, chunker, batch_size, self.timings)
        except BaseException:
            self.close()
            raise
        self._hits: dict[str, tuple[int, list]] = {}
        self._scorers: dict[tuple[str, str | None], SpanScorer] = {}

    # -- life cycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "ChunkIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- statistics ---------------------------------------------------------------------------

    @property
    def num_chunks(self) -> int:
        return len(self.chunks)

    def mean_chunk_tokens(self) -> float:
        """Mean chunk length in tokens of the chunker's tokenizer."""
        count = self.chunker.tokenizer.count
        return float(np.mean([count(c.text) for c in self.chunks]))

    def mean_chunk_chars(self) -> float:
        return float(np.mean([c.end - c.start for c in self.chunks]))

    # -- search and scoring -------------------------------------------------------------------

    def scorer(self, unit: str = "char", unit_tokenizer: str | None = None, mode: str = "dense") -> SpanScorer:
        _check_options(unit=unit)
        key = (unit, unit_tokenizer if unit == "token" else None)
        if key not in self._scorers:
            tokenizer = (unit_tokenizer or getattr(self.chunker.tokenizer, "name", DEFAULT_TOKENIZER)) \
                if unit == "token" else None
            self._scorers[key] = SpanScorer(self.chunks_by_corpus, unit, self.dataset.corpora, tokenizer)
        scorer = self._scorers[key]
        scorer.engine = ENGINES[mode]
        return scorer

    def question_ks(self, k: int | str) -> list[int]:
        """Each question's k: ``k`` itself, or under "min" its |A| capped at 20."""
        k = parse_k(k)
        questions = self.dataset.questions
        if k == "min":
            scorer = self.scorer("char")
            return [scorer.min_k(q.corpus_id, q.references, MIN_K_CAP) for q in questions]
        return [k] * len(questions)

    def search(self, mode: str, k_max: int) -> list[list[Any]]:
        """Top-``k_max`` hits of every question; a search with a larger k is reused by smaller ones."""
        _check_options(mode=mode)
        cached = self._hits.get(mode)
        if cached is not None and cached[0] >= k_max:
            return [hits[:k_max] for hits in cached[1]]
        started = time.perf_counter()
        questions = self.dataset.questions
        if k_max > 0:
            hits = self.datastore.search_many([q.text for q in questions], k=k_max, mode=mode)
        else:
            hits = [[] for _ in questions]
        self.timings[f"search_{mode}"] = self.timings.get(f"search_{mode}", 0.0) + time.perf_counter() - started
        self._hits[mode] = (k_max, hits)
        return hits

    def evaluate(self, k: int | str = 5, mode: str = "dense", unit: str = "char", *,
                 unit_tokenizer: str | None = None, duplicate_ties: str = "document-order") -> ChunkingEvaluation:
        """Retrieve the top-k of every question in ``mode`` and score it in ``unit``."""
        _check_options(mode, unit, duplicate_ties)
        k = parse_k(k)
        timings = {name: self.timings[name] for name in ("chunk", "embed", "write") if name in self.timings}
        timings["embed_and_write"] = timings.get("embed", 0.0) + timings.get("write", 0.0)
        ks = self.question_ks(k)
        all_hits = self.search(mode, max(ks, default=0))
        # The search of a mode is shared by every k scored over it; report its full time.
        timings["search"] = self.timings.get(f"search_{mode}", 0.0)
        started = time.perf_counter()
        scorer = self.scorer(unit, unit_tokenizer, mode)
        chunks = self.chunks
        rows = []
        reassigned = 0
        for question, k_q, found in zip(self.dataset.questions, ks, all_hits):
            found = found[:k_q]
            for h in found:  # the datastore returns the chunks it was given
                c = chunks[h.chunk_id]
                if (h.doc_id, h.start, h.end) != (c.doc_id, c.start, c.end):
                    raise RuntimeError(f"datastore hit {h.chunk_id} does not match the chunk written with that id")
            ids = [h.chunk_id for h in found]
            if duplicate_ties == "document-order":
                ids, changed = in_document_order(ids, self.group_of, self.members)
                reassigned += changed
            retrieved = [RetrievedSpan(chunks[i].doc_id, chunks[i].start, chunks[i].end) for i in ids]
            rows.append(scorer.score(question.index, question.corpus_id, question.references, retrieved, k_q))
        timings["score"] = time.perf_counter() - started
        summary = summarize(rows)
        chunker = self.chunker
        settings = {
            "dataset": str(self.dataset.path) if self.dataset.path else None,
            "corpora": sorted(self.dataset.corpora),
            "chunker": chunker.name,
            "chunk_size": chunker.chunk_size,
            "overlap": chunker.overlap,
            "tokenizer": chunker.tokenizer.name,
            "k": k,
            "unit": unit,
            "unit_tokenizer": scorer.tokenizer_name,
            "mode": mode,
            "engine": ENGINES[mode],
            "embedder": self.embedder.name,
            "query_prefix": self.embedder.query_prefix,
            "passage_prefix": self.embedder.passage_prefix,
            "chunks": len(chunks),
            "chunks_per_corpus": {cid: len(spans) for cid, spans in self.chunks_by_corpus.items()},
            "duplicate_chunks": sum(len(m) for m in self.members if len(m) > 1),
            "duplicate_ties": duplicate_ties,
            "duplicate_hits_reassigned": reassigned,
        }
        return ChunkingEvaluation(rows, summary, settings, timings)


def evaluate_chunking(dataset_dir: str | Path | EvalDataset, chunker: str | Chunker = "recursive",
                      chunk_size: int = 200, overlap: int = 0, k: int | str = 5, unit: str = "char",
                      mode: str = "dense", embedder: Any = None, *, tokenizer: str = DEFAULT_TOKENIZER,
                      unit_tokenizer: str | None = None, corpora: Sequence[str] | None = None,
                      workdir: str | Path | None = None, device: str = "auto",
                      batch_size: int | None = None, duplicate_ties: str = "document-order",
                      query_prefix: str = AUTO_PREFIX, passage_prefix: str = AUTO_PREFIX) -> ChunkingEvaluation:
    """Evaluate a chunker on a Chroma-format dataset; see the module docstring for the protocol.

    ``chunker`` is a name for ``make_chunker`` (sizes in tokens of ``tokenizer``) or a chunker
    instance (then ``chunk_size``/``overlap`` are ignored). ``embedder`` defaults to
    all-MiniLM-L6-v2; it embeds the chunks in both modes (the datastore always holds vectors),
    the questions in dense mode, and the pieces of the embedding chunkers (``cluster``,
    ``kamradt``), with the model's passage prefix for passages and its query prefix for questions
    (``query_prefix`` / ``passage_prefix``; ``"auto"``: the family's). ``unit_tokenizer`` names the tokenizer of the token unit (default:
    ``tokenizer``). ``corpora`` restricts the dataset. The datastore is written under ``workdir``
    (which must not hold one already) or a temporary folder that is removed after. To score many
    k, modes or units over one index, use :class:`ChunkIndex`.
    """
    _check_options(mode, unit, duplicate_ties)
    k = parse_k(k)
    dataset = dataset_dir if isinstance(dataset_dir, EvalDataset) else load_dataset(dataset_dir)
    if corpora is not None:
        dataset = dataset.subset(corpora)
    if embedder is None:
        from indexers.embedding import load_embedder

        embedder = load_embedder(device=device)
    embedder = embedder.with_prefixes(query_prefix, passage_prefix)
    started = time.perf_counter()
    if isinstance(chunker, str):
        chunker = make_chunker(chunker, chunk_size, overlap, tokenizer,
                               embedder=embedder if chunker in EMBEDDING_CHUNKERS else None)
    setup = time.perf_counter() - started
    with ChunkIndex(dataset, chunker, embedder, workdir=workdir, batch_size=batch_size, query_prefix=query_prefix,
                    passage_prefix=passage_prefix) as index:
        index.timings["chunk"] += setup
        return index.evaluate(k, mode, unit, unit_tokenizer=unit_tokenizer, duplicate_ties=duplicate_ties)


__all__ = ["DUPLICATE_TIES", "ENGINES", "MODES", "ChunkIndex", "ChunkingEvaluation", "chunk_corpora",
           "duplicate_groups", "evaluate_chunking", "in_document_order", "parse_k"]
