"""Sparse BM25 with statistics shared by every shard.

Default (``Bm25Params()``, chosen on nine collections in docs/benchmarks.md, "Retrieval defaults"):
English text through a Snowball (Porter2) stemmer after Lucene's English stop words are dropped,
Lucene's always-positive idf, k1 = 1.5, b = 0.75 (what bm25s does with a stemmer):

    idf(t)   = ln(1 + (N - df + 0.5) / (df + 0.5))
    score(q) = sum over query tokens t (repeats count) of
               idf(t) * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))

``Bm25Params.rank_bm25()`` (``tokenizer="simple"``, ``stopwords="none"``, ``idf="rank-bm25"``,
the default before issue 18) gives scores equal to rank-bm25's ``BM25Okapi`` for the same tokens:
its idf is ``ln(N - df + 0.5) - ln(df + 0.5)`` and, where that is negative, epsilon * (mean idf
over the whole vocabulary).

N, df and avglen are global: each shard stores raw term frequencies, and the datastore stores
document frequencies merged across shards, so sharding never changes a score.

Options (``Bm25Params``, recorded in the manifest's ``bm25`` dict, so a datastore keeps the
options it was built with; a manifest from before the options were recorded means rank-bm25's):
``tokenizer`` is ``simple`` (lower-cased runs of word characters), ``stemmed`` /
``stemmed:LANGUAGE`` (those runs through a Snowball stemmer, PyStemmer; English by default) or
``hf:NAME_OR_PATH`` (a Hugging Face tokenizer's tokens, lower-cased); ``stopwords="english"``
drops Lucene's English stop set before stemming, ``"none"`` keeps every token.
"""

from __future__ import annotations

import functools
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from datastores.errors import DatastoreError, UserError
from datastores.models import EmbedderError, locate_model
from datastores.search import top_k_dense, top_k_rows

_WORD = re.compile(r"\w+")


def simple_tokenize(text: str) -> list[str]:
    """Lower-cased runs of word characters (Unicode-aware)."""
    return _WORD.findall(text.lower())


TOKENIZERS = ("simple", "stemmed", "stemmed:LANGUAGE", "hf:NAME_OR_PATH")
#: Lucene's default English stop set (``EnglishAnalyzer.ENGLISH_STOP_WORDS_SET``).
STOPWORDS = {
    "none": frozenset(),
    "english": frozenset("a an and are as at be but by for if in into is it no not of on or such that the their "
                         "then there these they this to was will with".split()),
}
IDF_VARIANTS = ("rank-bm25", "lucene")


def _stemmer(language: str):
    try:
        import Stemmer
    except ImportError as exc:
        raise UserError("the stemmed BM25 tokenizer needs PyStemmer (pip install PyStemmer)") from exc
    try:
        return Stemmer.Stemmer(language)
    except KeyError:
        raise UserError(f"no Snowball stemmer for {language!r}; known: {', '.join(Stemmer.algorithms())}") from None


def _hf_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        name = locate_model(name).path_or_name  # the bundled MiniLM package, by name
    except EmbedderError:  # only a convenience; a path or cached name works without it
        pass
    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load the Hugging Face tokenizer {name!r} from local files: {exc}") from exc


@functools.lru_cache(maxsize=16)
def make_tokenizer(tokenizer: str = "simple", stopwords: str = "none"):
    """``text -> list[str]`` for a tokenizer spec (see the module docstring), loaded once per spec."""
    if stopwords not in STOPWORDS:
        raise UserError(f"unknown BM25 stopwords {stopwords!r}; choose one of {', '.join(STOPWORDS)}")
    stop = STOPWORDS[stopwords]

    def unstopped(tokens: list[str]) -> list[str]:
        return [t for t in tokens if t not in stop] if stop else tokens

    kind, _, arg = tokenizer.partition(":")
    if tokenizer == "simple":
        return (lambda text: unstopped(simple_tokenize(text))) if stop else simple_tokenize
    if kind == "stemmed":
        stemmer = _stemmer(arg or "english")
        return lambda text: stemmer.stemWords(unstopped(simple_tokenize(text)))  # stop words go before stemming
    if kind == "hf" and arg:
        hf = _hf_tokenizer(arg)
        return lambda text: unstopped([t.lower() for t in hf.tokenize(text)])
    raise UserError(f"unknown BM25 tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")


#: What a manifest written before the options were recorded was built with (rank-bm25 parity).
LEGACY_OPTIONS = {"tokenizer": "simple", "stopwords": "none", "idf": "rank-bm25"}


@dataclass(frozen=True)
class Bm25Params:
    """BM25 parameters: k1, b, rank-bm25's epsilon, the tokenizer, stop words and idf variant
    (defaults: English stemming and stop words, Lucene idf; see the module docstring)."""

    # ``metadata``: the help of the ``rag index --bm25-*`` option each field declares (ragcli.config_options)
    k1: float = field(default=1.5, metadata={"help": "BM25 k1 (default 1.5)."})
    b: float = field(default=0.75, metadata={"help": "BM25 b (default 0.75)."})
    epsilon: float = field(default=0.25, metadata={"help": "rank-bm25 idf only: floor for negative idf."})
    tokenizer: str = field(default="stemmed",
                           metadata={"help": "BM25 tokens: simple | stemmed[:LANGUAGE] | hf:NAME_OR_PATH."})
    stopwords: str = field(default="english", metadata={"help": "Stop words BM25 drops.",
                                                        "choices": tuple(STOPWORDS)})
    idf: str = field(default="lucene", metadata={"help": "BM25 idf variant.", "choices": IDF_VARIANTS})

    def __post_init__(self) -> None:
        if self.idf not in IDF_VARIANTS:
            raise UserError(f"unknown BM25 idf {self.idf!r}; choose one of {', '.join(IDF_VARIANTS)}")
        if self.k1 < 0 or not 0.0 <= self.b <= 1.0:
            raise UserError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (got k1={self.k1}, b={self.b})")
        make_tokenizer(self.tokenizer, self.stopwords)  # fails early on an unknown or unloadable tokenizer

    @classmethod
    def rank_bm25(cls, **kwargs) -> "Bm25Params":
        """rank-bm25's ``BM25Okapi`` (simple tokens, no stop words, its idf): the default before issue 18."""
        return cls(**{**LEGACY_OPTIONS, **kwargs})

    @classmethod
    def from_manifest(cls, bm25: dict) -> "Bm25Params":
        """The parameters a manifest's ``bm25`` dict records; options an older manifest lacks are
        the ones it was built with (``LEGACY_OPTIONS``), never today's defaults."""
        names = ("k1", "b", "epsilon", "tokenizer", "stopwords", "idf")
        return cls(**{**LEGACY_OPTIONS, **{name: bm25[name] for name in names if name in bm25}})

    def tokenize(self, text: str) -> list[str]:
        return make_tokenizer(self.tokenizer, self.stopwords)(text)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TermMatrix:
    """Term frequencies of one shard: CSC matrix [documents, terms] plus its sorted terms."""

    terms: list[str]
    tf: sp.csc_matrix
    doc_len: np.ndarray

    @classmethod
    def from_token_lists(cls, token_lists: Sequence[Sequence[str]]) -> "TermMatrix":
        counters = [Counter(tokens) for tokens in token_lists]
        terms = sorted(set().union(*counters)) if counters else []
        column = {term: j for j, term in enumerate(terms)}
        rows = np.repeat(np.arange(len(counters), dtype=np.int64), [len(c) for c in counters])
        cols = np.fromiter((column[t] for c in counters for t in c), dtype=np.int64, count=len(rows))
        data = np.fromiter((n for c in counters for n in c.values()), dtype=np.int32, count=len(rows))
        tf = sp.csc_matrix((data, (rows, cols)), shape=(len(counters), len(terms)), dtype=np.int32)
        tf.sort_indices()
        doc_len = np.array([len(tokens) for tokens in token_lists], dtype=np.int64)
        return cls(terms, tf, doc_len)

    @property
    def document_frequencies(self) -> np.ndarray:
        return np.diff(self.tf.indptr).astype(np.int64)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "indptr.npy", self.tf.indptr.astype(np.int64))
        np.save(folder / "indices.npy", self.tf.indices.astype(np.int32))
        np.save(folder / "data.npy", self.tf.data.astype(np.int32))
        np.save(folder / "doc_len.npy", self.doc_len)
        table = pa.table({"term": pa.array(self.terms, pa.string()),
                          "df": pa.array(self.document_frequencies, pa.int64())})
        pq.write_table(table, folder / "terms.parquet", compression="zstd")

    @classmethod
    def load(cls, folder: Path) -> "TermMatrix":
        try:
            indptr = np.load(folder / "indptr.npy", mmap_mode="r")
            indices = np.load(folder / "indices.npy", mmap_mode="r")
            data = np.load(folder / "data.npy", mmap_mode="r")
            doc_len = np.load(folder / "doc_len.npy")
            terms = pq.read_table(folder / "terms.parquet", columns=["term"]).column("term").to_pylist()
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DatastoreError(f"BM25 files in {folder} are unreadable: {exc}") from exc
        if len(indptr) != len(terms) + 1 or indptr[-1] != len(indices) or len(indices) != len(data):
            raise DatastoreError(f"BM25 files in {folder} are inconsistent (truncated or altered)")
        tf = sp.csc_matrix((data, indices, indptr), shape=(len(doc_len), len(terms)))
        return cls(terms, tf, doc_len)


@dataclass(frozen=True)
class Bm25GlobalStats:
    """Statistics over the whole datastore, stored in the manifest."""

    documents: int
    total_length: int
    vocabulary: int
    average_idf: float

    @property
    def avgdl(self) -> float:
        return self.total_length / self.documents if self.documents else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "avgdl": self.avgdl}

    @classmethod
    def from_dict(cls, data: dict) -> "Bm25GlobalStats":
        return cls(int(data["documents"]), int(data["total_length"]), int(data["vocabulary"]),
                   float(data["average_idf"]))


def raw_idf(df: np.ndarray, documents: int) -> np.ndarray:
    """rank-bm25's idf before the epsilon floor."""
    df = np.asarray(df, dtype=np.float64)
    return np.log(documents - df + 0.5) - np.log(df + 0.5)


def merge_document_frequencies(shard_term_files: Sequence[Path], out: Path,
                               documents: int, total_length: int) -> Bm25GlobalStats:
    """Sum per-shard document frequencies into ``out`` (term, df) and return global statistics."""
    paths = "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in shard_term_files) + "]"
    tmp = out.with_name(f".{out.name}.tmp")
    with duckdb.connect() as con:
        if shard_term_files:
            table = con.sql(
                f"SELECT term, CAST(sum(df) AS BIGINT) AS df FROM read_parquet({paths}) GROUP BY term ORDER BY term"
            ).to_arrow_table()
        else:
            table = pa.table({"term": pa.array([], pa.string()), "df": pa.array([], pa.int64())})
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(out)
    df = table.column("df").to_numpy()
    average_idf = float(raw_idf(df, documents).sum() / len(df)) if len(df) else 0.0
    return Bm25GlobalStats(documents, total_length, len(df), average_idf)


BM25_BACKENDS = ("auto", "numba", "numpy")
BACKEND_ENV = "TERARAG_BM25_BACKEND"


def bm25_backend(name: str | None = None) -> str:
    """The BM25 top-k backend to use, ``"numba"`` or ``"numpy"``: ``name``, else the environment
    variable ``TERARAG_BM25_BACKEND``, else ``"auto"`` (compiled when numba imports, the ``fast``
    extra, and can cache its compiled code). Both give the same rows and scores
    (``datastores.bm25_numba``)."""
    name = name or os.environ.get(BACKEND_ENV) or "auto"
    if name not in BM25_BACKENDS:
        raise UserError(f"unknown BM25 backend {name!r} ({BACKEND_ENV}); choose one of {', '.join(BM25_BACKENDS)}")
    if name == "numpy":
        return name
    try:
        from datastores.bm25_numba import CACHED  # imports numba
    except ImportError as exc:
        if name == "numba":
            raise UserError(f"the numba BM25 backend needs numba (pip install 'terarag[fast]'): {exc}") from exc
        return "numpy"
    return "numba" if CACHED or name == "numba" else "numpy"


class Bm25Scorer:
    """Scores one shard's documents against a query with global statistics; ``top_k`` runs on the
    ``backend`` that ``bm25_backend`` picks."""

    def __init__(self, matrix: TermMatrix, params: Bm25Params, stats: Bm25GlobalStats,
                 backend: str | None = None):
        self.params = params
        self.stats = stats
        self.column = {term: j for j, term in enumerate(matrix.terms)}
        tf = matrix.tf
        self.indptr = np.asarray(tf.indptr, dtype=np.int64)
        self.rows = np.asarray(tf.indices)
        tf_values = np.asarray(tf.data, dtype=np.float64)
        length_norm = 1.0 - params.b + params.b * matrix.doc_len[self.rows] / max(stats.avgdl, 1e-12)
        # BM25 term weight without idf, one value per stored (document, term) pair.
        self.weights = tf_values * (params.k1 + 1.0) / (tf_values + params.k1 * length_norm)
        self.num_docs = len(matrix.doc_len)
        self.backend = bm25_backend(backend)
        self._compiled = None
        if self.backend == "numba":
            from datastores.bm25_numba import Scratch, column_max, compiled_top_k

            self.col_max = column_max(self.weights, self.indptr)  # MaxScore's term bounds, without idf
            self._scratch = Scratch(self.num_docs)
            self._compiled = compiled_top_k

    def _terms(self, query_idf: dict[str, float], query_counts: Counter) -> tuple[np.ndarray, np.ndarray]:
        """CSC columns (in query order) and weights (count × idf) of the query terms this shard has."""
        found = [(j, count * query_idf[term]) for term, count in query_counts.items()
                 if (j := self.column.get(term)) is not None]
        return np.array([j for j, _ in found], dtype=np.int64), np.array([w for _, w in found], dtype=np.float64)

    def _dense_scores(self, cols: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores of every row (one ``np.bincount`` over the concatenated postings) and the rows."""
        spans = [(int(self.indptr[j]), int(self.indptr[j + 1])) for j in cols.tolist()]
        rows = np.concatenate([self.rows[lo:hi] for lo, hi in spans])
        values = np.concatenate([w * self.weights[lo:hi] for (lo, hi), w in zip(spans, weights.tolist())])
        return np.bincount(rows, weights=values, minlength=self.num_docs), rows

    def score(self, query_idf: dict[str, float], query_counts: Counter) -> tuple[np.ndarray, np.ndarray]:
        """Rows that contain a query term (ascending) and their scores."""
        cols, weights = self._terms(query_idf, query_counts)
        if not len(cols):
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        scores, rows = self._dense_scores(cols, weights)
        matched = np.flatnonzero(np.bincount(rows, minlength=self.num_docs))
        return matched, scores[matched]

    def top_k(self, query_idf: dict[str, float], query_counts: Counter, k: int,
              allowed: np.ndarray | None = None, floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, rows), best first, ties by lower row, among rows that contain a
        query term (and are ``allowed``, a boolean mask over this shard's rows, when one is given).

        ``floor``: a lower bound of the k-th best score of the merged result (``KthBest`` of the
        shards searched before); rows scoring below it may be left out (the compiled backend
        prunes with it), so merging stays exact."""
        cols, weights = self._terms(query_idf, query_counts)
        if not len(cols):
            return np.zeros(0, np.float64), np.zeros(0, np.int64)
        if self._compiled is not None:
            return self._compiled(self.indptr, self.rows, self.weights, self.col_max, cols, weights, k, allowed,
                                  self._scratch, floor)
        if (weights <= 0).any():
            # A term with idf <= 0 can leave a matching row at score <= 0: select among matches.
            rows, scores = self.score(query_idf, query_counts)
            if allowed is not None:
                keep = allowed[rows]
                rows, scores = rows[keep], scores[keep]
            return top_k_rows(scores, rows, k)
        # Every weight is positive, so a row matches exactly when its score is positive.
        scores, _ = self._dense_scores(cols, weights)
        if allowed is not None:
            scores[~allowed] = 0.0
        return top_k_dense(scores, k)


def load_global_idf(terms_file: Path, params: Bm25Params, stats: Bm25GlobalStats) -> dict[str, float]:
    """Global idf of every term (epsilon floor applied), read once from ``bm25_terms.parquet``."""
    try:
        table = pq.read_table(terms_file)
    except (OSError, pa.ArrowException) as exc:
        raise DatastoreError(f"{terms_file} is unreadable: {exc}") from exc
    if table.num_rows != stats.vocabulary:
        raise DatastoreError(
            f"{terms_file} holds {table.num_rows} terms but the manifest says {stats.vocabulary}"
        )
    df = table.column("df").to_numpy()
    if params.idf == "lucene":
        idf = np.log1p((stats.documents - df + 0.5) / (df + 0.5))
    else:
        idf = raw_idf(df, stats.documents)
        idf = np.where(idf < 0, params.epsilon * stats.average_idf, idf)
    return dict(zip(table.column("term").to_pylist(), idf.tolist()))
