#!/usr/bin/env python
"""BM25 query throughput: terarag vs rank_bm25.BM25Okapi vs bm25s, same corpus, same tokens.

    python benchmarks/bm25.py                     # scales 1 and 10, 7 repetitions
    python benchmarks/bm25.py --scales 1 --repeats 5
    python benchmarks/bm25.py --scales 420 --repeats 3 --no-datastore --check-queries 40   # 10^6 chunks

Corpus: the five Chroma "general evaluation" corpora, chunked with
``make_chunker("recursive", 200, 0)``; ``--scales`` replicates the chunks N times. Copy 0 is the
original; in copy r >= 1 each token is dropped with probability ``--drop`` (default 0.1), drawn
from ``numpy.random.default_rng(r)`` over the corpus's tokens, so copies differ (lengths, term
frequencies, document frequencies stay realistic), every question still hits real text, and
float ties remain only where copies keep the same tokens. ``--drop 0`` gives identical copies.

Checks (untimed): top-10 against rank_bm25's BM25Okapi up to ``--rank-max-chunks``; above it
(rank_bm25's per-document dicts do not fit), against an independent scipy.sparse BM25Okapi in
float64 with rank_bm25's epsilon idf rule (``sparse_okapi``). ``--check-queries`` samples the
questions for these checks (0: all).
Queries: the 472 questions of ``questions_df.csv``. Tokens: ``datastores.bm25.simple_tokenize``
for every library, for the corpus and for the queries.

Per query, every library is timed doing the same work: tokenize the question, score, top-10.

- terarag: the steps of ``Datastore._bm25_top_k`` on a BM25-only datastore (no embeddings) built
  from ``TermMatrix.from_token_lists`` + ``merge_document_frequencies`` + ``load_global_idf`` +
  ``Bm25Scorer`` per shard: tokenize, idf lookup, ``Bm25Scorer.top_k`` per shard (as
  ``ShardReader.search_bm25``), ``merge_top_k``.
- rank_bm25: ``BM25Okapi.get_scores`` + argsort top-10 (what ``get_top_n`` does).
- bm25s: ``BM25(method="atire", idf_method="robertson")``, the variant closest to BM25Okapi (same
  term-frequency part; its idf is clamped at 0 instead of BM25Okapi's epsilon floor), one
  ``retrieve`` call for all queries (its fastest use), single-threaded, numpy and numba backends.

Optionally (on by default) a real datastore is written with ``DatastoreWriter`` (dummy 8-dim
vectors) and ``Datastore._bm25_top_k`` and ``Datastore.search_many(mode="bm25")`` (which also reads
the hit texts from Parquet) are timed too.

Prints a table and writes ``benchmarks/out/bm25.json``.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from _common import git_state, package_versions, short_path  # noqa: E402
from datastores import Bm25Params, Datastore, DatastoreWriter, Document  # noqa: E402
from datastores.bm25 import (  # noqa: E402
    Bm25Scorer,
    TermMatrix,
    load_global_idf,
    merge_document_frequencies,
    simple_tokenize,
)
from datastores.search import KthBest, ShardResult, merge_top_k  # noqa: E402
from indexers import make_chunker  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "bm25.json"


# -- corpus and queries ----------------------------------------------------------------------

def load_chunks(data: Path, chunk_size: int):
    files = sorted((data / "corpora").glob("*.md"))
    if not files:
        sys.exit(f"no corpora/*.md under {data}; pass --data")
    chunker = make_chunker("recursive", chunk_size, 0)
    chunks = []
    for path in files:
        chunks.extend(chunker.chunk(Document(path.stem, path.read_text(encoding="utf-8"), path.name)))
    return chunks, [p.name for p in files]


def load_questions(data: Path) -> list[str]:
    with open(data / "questions_df.csv", newline="", encoding="utf-8") as handle:
        return [row["question"] for row in csv.DictReader(handle)]


def replicate(base_tokens: list[list[str]], scale: int, drop: float) -> list[list[str]]:
    """``scale`` copies of the token lists; copy r >= 1 drops each token with probability ``drop``
    (``default_rng(r)``), so copies differ. The token strings are shared, not copied."""
    out = list(base_tokens)
    flat = np.array([t for tokens in base_tokens for t in tokens], dtype=object)
    ends = np.cumsum([len(tokens) for tokens in base_tokens])
    for r in range(1, scale):
        if drop <= 0:
            out.extend(base_tokens)
            continue
        keep = np.random.default_rng(r).random(len(flat)) >= drop
        kept = flat[keep].tolist()
        bounds = np.concatenate([[0], np.cumsum(keep)[ends - 1]])
        out.extend(kept[lo:hi] for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()))
    return out


def sparse_okapi(token_lists, epsilon: float = 0.25, k1: float = 1.5, b: float = 0.75):
    """An independent exact BM25Okapi (rank_bm25's formula and epsilon idf rule, float64) over a
    scipy.sparse [documents, terms] count matrix: ``scores(query_tokens) -> float64[documents]``."""
    import scipy.sparse as sp

    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(t, len(vocab)) for tokens in token_lists for t in tokens), dtype=np.int32)
    lengths = np.array([len(tokens) for tokens in token_lists], dtype=np.int64)
    docs = np.repeat(np.arange(len(token_lists), dtype=np.int32), lengths)
    counts = sp.csc_matrix((np.ones(len(ids), dtype=np.float32), (docs, ids)), shape=(len(token_lists), len(vocab)))
    del ids, docs
    counts.sum_duplicates()
    n = len(token_lists)
    df = np.diff(counts.indptr)
    idf = np.log(n - df + 0.5) - np.log(df + 0.5)
    idf = np.where(idf < 0, epsilon * idf.mean(), idf)
    norm = k1 * (1 - b + b * lengths / lengths.mean())

    def scores(query_tokens):
        out = np.zeros(n)
        for t in query_tokens:  # repeats count, like BM25Okapi.get_scores
            j = vocab.get(t)
            if j is not None:
                lo, hi = counts.indptr[j], counts.indptr[j + 1]
                rows, tf = counts.indices[lo:hi], counts.data[lo:hi].astype(np.float64)
                out[rows] += idf[j] * tf * (k1 + 1) / (tf + norm[rows])
        return out

    return scores


# -- the three retrievers ------------------------------------------------------------------------

class Ours:
    """The per-query work of ``Datastore._bm25_top_k``, over shards written to ``folder``."""

    def __init__(self, token_lists, shard_size: int, folder: Path):
        self.params = Bm25Params.rank_bm25()  # the tokens and idf of rank_bm25 and bm25s below
        term_files, folders, self.starts = [], [], []
        for i, lo in enumerate(range(0, len(token_lists), shard_size)):
            shard = folder / f"shard-{i:05d}"
            TermMatrix.from_token_lists(token_lists[lo:lo + shard_size]).save(shard)
            term_files.append(shard / "terms.parquet")
            folders.append(shard)
            self.starts.append(lo)
        total = sum(len(t) for t in token_lists)
        stats = merge_document_frequencies(term_files, folder / "bm25_terms.parquet", len(token_lists), total)
        self.idf = load_global_idf(folder / "bm25_terms.parquet", self.params, stats)
        self.folders, self.stats = folders, stats
        self.scorers = [Bm25Scorer(TermMatrix.load(f), self.params, stats) for f in folders]
        self.backend = self.scorers[0].backend  # bm25_backend(): numba when it imports
        self.num_docs = len(token_lists)
        self.vocabulary = stats.vocabulary

    def with_backend(self, backend: str) -> "Ours":
        """The same shard files, scored by another ``Bm25Scorer`` backend."""
        other = copy.copy(self)
        other.scorers = [Bm25Scorer(TermMatrix.load(f), self.params, self.stats, backend) for f in self.folders]
        other.backend = backend
        return other

    def top_k(self, query: str, k: int) -> list[tuple[int, int, float]]:
        counts = Counter(t for t in self.params.tokenize(query) if t in self.idf)
        if not counts:
            return []
        results, kth = [], KthBest(k)
        for i, scorer in enumerate(self.scorers):  # ShardReader.search_bm25, floor as in Datastore._bm25_ranked
            scores, rows = scorer.top_k(self.idf, counts, k, None, kth.floor)
            results.append(ShardResult(i, scores, rows))
            kth.add(scores)
        return merge_top_k(results, k)

    def global_ids(self, ranked) -> list[int]:
        return [self.starts[shard] + row for shard, row, _ in ranked]

    def all_scores(self, query: str) -> np.ndarray:
        counts = Counter(t for t in self.params.tokenize(query) if t in self.idf)
        out = np.zeros(self.num_docs)
        for start, scorer in zip(self.starts, self.scorers):
            rows, scores = scorer.score(self.idf, counts)
            out[start + rows] = scores
        return out


def rank_top_k(bm, query: str, k: int) -> np.ndarray:
    scores = bm.get_scores(simple_tokenize(query))
    return np.argsort(scores)[::-1][:k]


def make_bm25s(token_lists, backend: str):
    import bm25s

    retriever = bm25s.BM25(k1=1.5, b=0.75, method="atire", idf_method="robertson", backend=backend)
    retriever.index(token_lists, show_progress=False)
    return retriever


def bm25s_retrieve(retriever, queries, k: int):
    return retriever.retrieve([simple_tokenize(q) for q in queries], k=k, show_progress=False, n_threads=0)


def build_real_datastore(chunks, shard_size: int, folder: Path) -> Datastore:
    """A real datastore (DatastoreWriter) whose dense part is dummy 8-dim vectors."""
    dim = 8
    writer = DatastoreWriter.create(folder, {"benchmark": "bm25"}, {"name": "dummy-bm25-benchmark"},
                                    {"name": "recursive"}, Bm25Params.rank_bm25())
    for lo in range(0, len(chunks), shard_size):
        part = chunks[lo:lo + shard_size]
        vectors = np.zeros((len(part), dim), dtype=np.float32)
        vectors[:, 0] = 1.0
        writer.add_shard(part, vectors, lo)
    writer.finish({}, dim)
    return Datastore.open(folder)


# -- timing --------------------------------------------------------------------------------------

def timed(fn) -> float:
    gc.collect()
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def timed_value(fn):
    gc.collect()
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def sample(items: list, count: int) -> list:
    """About ``count`` evenly spaced items (all when ``count`` <= 0)."""
    return items if count <= 0 else items[:: max(1, math.ceil(len(items) / count))]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_retrievers(token_lists, base_chunks, scale: int, args, folder: Path) -> tuple[dict, dict]:
    """Every retriever over the same token lists, and the build seconds of each."""
    from rank_bm25 import BM25Okapi

    built, seconds = {}, {}
    built["ours"], seconds["ours"] = timed_value(lambda: Ours(token_lists, args.shard_size, folder / "ours"))
    if built["ours"].backend != "numpy":  # the plain install's path, over the same shard files
        built["ours_numpy"], seconds["ours_numpy"] = timed_value(lambda: built["ours"].with_backend("numpy"))
    if len(token_lists) <= args.rank_max_chunks:
        built["rank_bm25"], seconds["rank_bm25"] = timed_value(lambda: BM25Okapi(token_lists))
    built["bm25s"], seconds["bm25s"] = timed_value(lambda: make_bm25s(token_lists, "numpy"))
    if not args.no_numba:
        try:
            built["bm25s_numba"], seconds["bm25s_numba"] = timed_value(lambda: make_bm25s(token_lists, "numba"))
        except ImportError as exc:
            print(f"bm25s numba backend unavailable: {exc}", flush=True)
    if not args.no_datastore:
        chunks = [c if i < len(base_chunks) else dataclasses.replace(
                      c, doc_id=f"{c.doc_id}#{i // len(base_chunks)}",
                      text=" ".join(tokens) if args.drop > 0 else c.text)  # the copy's tokens, re-tokenized alike
                  for i, (c, tokens) in enumerate(zip(base_chunks * scale, token_lists))]
        built["datastore"], seconds["datastore_writer"] = timed_value(
            lambda: build_real_datastore(chunks, args.shard_size, folder / "ds"))
    return built, seconds


def check_exact(ours: Ours, reference, questions: list[str], k: int) -> dict:
    """Ours against a reference full scorer (``query tokens -> scores``): top-k (ties by lower
    index) and the largest score difference over every chunk."""
    exact = tie_only = fewer_than_k = 0
    mismatched, max_diff, max_rel = [], 0.0, 0.0
    for qi, q in enumerate(questions):
        full = reference(simple_tokenize(q))
        ref = [int(i) for i in np.lexsort((np.arange(len(full)), -full))[:k] if full[i] > 0]
        fewer_than_k += len(ref) < k
        got = ours.global_ids(ours.top_k(q, k))
        diff = float(np.max(np.abs(ours.all_scores(q) - full)))
        max_diff, max_rel = max(max_diff, diff), max(max_rel, diff / max(float(np.max(np.abs(full))), 1e-300))
        if got == ref:
            exact += 1
            continue
        mismatched.append(qi)
        tie_only += len(got) == len(ref) and np.allclose(full[got], full[ref], rtol=1e-12, atol=1e-12)
    print(f"  top-{k} identical for {exact}/{len(questions)} checked queries"
          + (f" ({tie_only} more differ only among float-equal scores)" if tie_only else "")
          + f"; max |score diff| over all chunks {max_diff:.3g}", flush=True)
    return {"identical_top_k": exact, "checked_queries": len(questions), "differ_only_in_float_ties": tie_only,
            "mismatched_queries": mismatched[:50], "max_abs_score_diff": max_diff,
            "max_rel_score_diff": max_rel, "queries_with_fewer_than_k_hits": fewer_than_k}


def check_bm25s(built: dict, ours_lists: list, questions: list[str], k: int, n: int, rank_questions) -> dict:
    """bm25s's top-k sets against ours, and (with rank_bm25) against rank_bm25 with the idfs it floors
    set to 0: bm25s's robertson idf is BM25Okapi's clamped at 0 (BM25Okapi: epsilon * mean idf),
    scored in float32, so that must be the only difference (up to float32 near-ties)."""
    rank = built.get("rank_bm25")
    clamped = floored = None
    if rank is not None:
        clamped = copy.copy(rank)
        df = Counter(t for freqs in rank.doc_freqs for t in freqs)
        clamped.idf = {t: max(0.0, math.log(n - d + 0.5) - math.log(d + 0.5)) for t, d in df.items()}
        floored = sum(math.log(n - d + 0.5) < math.log(d + 0.5) for d in df.values())
    agree = {}
    for name in ("bm25s", "bm25s_numba"):
        if name not in built:
            continue
        docs, _ = bm25s_retrieve(built[name], questions, k)
        pairs = [(set(map(int, d)), set(o)) for d, o in zip(docs, ours_lists) if len(o) == k]
        same_set = sum(a == b for a, b in pairs)
        overlap = statistics.mean(len(a & b) / k for a, b in pairs) if pairs else None
        agree[name] = {"same_top_k_set_as_ours": same_set, "queries_with_k_hits": len(pairs),
                       "mean_overlap_at_k_with_ours": overlap, "terms_with_floored_idf": floored}
        print(f"  {name}: same top-{k} set as ours for {same_set}/{len(pairs)} checked queries", flush=True)
        if clamped is None:
            continue
        same_clamped = 0
        by_question = dict(zip(questions, docs))
        for q in rank_questions:
            ref_scores = clamped.get_scores(simple_tokenize(q))
            ref = np.lexsort((np.arange(n), -ref_scores))[:k]
            d = list(map(int, by_question[q]))
            same_clamped += set(d) == set(map(int, ref)) or np.allclose(
                np.sort(ref_scores[d]), np.sort(ref_scores[ref]), rtol=1e-5, atol=1e-6)
        agree[name].update({"same_top_k_as_rank_bm25_with_idf_clamped_at_0": same_clamped,
                            "queries_checked_with_clamped_idf": len(rank_questions)})
        print(f"    against rank_bm25 with its {floored} floored idfs set to 0: same top-{k} (up to float32 "
              f"ties) for {same_clamped}/{len(rank_questions)}", flush=True)
    return agree


def time_runners(built: dict, questions: list[str], rank_questions: list[str], k: int, repeats: int) -> dict:
    """Queries/s of every retriever per repetition, interleaved, after a warm-up pass."""
    ours, ds = built["ours"], built.get("datastore")
    runners = {"ours": (questions, lambda qs: [ours.top_k(q, k) for q in qs])}
    if "ours_numpy" in built:
        runners["ours_numpy"] = (questions, lambda qs: [built["ours_numpy"].top_k(q, k) for q in qs])
    if "rank_bm25" in built:
        runners["rank_bm25"] = (rank_questions, lambda qs: [rank_top_k(built["rank_bm25"], q, k) for q in qs])
    for name in ("bm25s", "bm25s_numba"):
        if name in built:
            runners[name] = (questions, lambda qs, r=built[name]: bm25s_retrieve(r, qs, k))
    if ds is not None:
        runners["datastore_top_k"] = (questions, lambda qs: [ds._bm25_top_k(q, k, ds.row_masks()) for q in qs])
        runners["datastore_search"] = (rank_questions, lambda qs: ds.search_many(qs, k=k, mode="bm25"))
    for qs, fn in runners.values():  # warm-up (numba compiles here)
        fn(qs[: max(1, len(qs) // 10)])
    qps = {name: [] for name in runners}
    for rep in range(repeats):
        for name, (qs, fn) in runners.items():
            qps[name].append(len(qs) / timed(lambda: fn(qs)))
        print(f"  repetition {rep + 1}/{repeats} (load {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{name} {v[-1]:,.0f} q/s" for name, v in qps.items()), flush=True)
    return qps


def run_scale(scale: int, base_chunks, questions, args) -> dict:
    k = args.k
    token_lists = replicate([simple_tokenize(c.text) for c in base_chunks], scale, args.drop)
    n, tokens = len(token_lists), int(sum(map(len, token_lists)))
    rank_questions = sample(questions, args.rank_queries)  # rank_bm25 is O(chunks) per query
    check_questions = sample(questions, args.check_queries)
    print(f"\n== scale {scale}: {n:,} chunks, {tokens:,} tokens, {len(questions)} queries ==", flush=True)
    tmp = tempfile.TemporaryDirectory(prefix="terarag-bm25-bench-")
    built, build = build_retrievers(token_lists, base_chunks, scale, args, Path(tmp.name))
    ours = built["ours"]
    print(f"  built (peak RSS {peak_rss_gib():.2f} GiB): "
          + ", ".join(f"{name} {sec:.1f} s" for name, sec in build.items()), flush=True)

    # -- correctness (untimed) --
    if "rank_bm25" in built:
        reference_name, reference = "rank_bm25", built["rank_bm25"].get_scores
    else:
        reference_name, reference = "sparse_okapi", sparse_okapi(token_lists)
    del token_lists
    print(f"checking against {reference_name} on {len(check_questions)} queries ...", flush=True)
    check = check_exact(ours, reference, check_questions, k)
    del reference
    gc.collect()
    ours_lists = [ours.global_ids(ours.top_k(q, k)) for q in check_questions]
    bm25s_agree = check_bm25s(built, ours_lists, check_questions, k, n, sample(check_questions, args.rank_queries))
    numpy_agree = None
    if "ours_numpy" in built:
        numpy_agree = sum(built["ours_numpy"].top_k(q, k) == ours.top_k(q, k) for q in check_questions)
        print(f"  terarag numpy backend: same top-{k} and scores as {ours.backend} for "
              f"{numpy_agree}/{len(check_questions)}", flush=True)
    ds_agree = None
    if "datastore" in built:
        ds = built["datastore"]
        ds_agree = sum([ds.shards[s].info.chunk_id_start + r for s, r, _ in ds._bm25_top_k(q, k, ds.row_masks())] == o
                       for q, o in zip(check_questions, ours_lists))
        print(f"  Datastore._bm25_top_k: same top-{k} as ours for {ds_agree}/{len(check_questions)}", flush=True)

    qps = time_runners(built, questions, rank_questions, k, args.repeats)
    tmp.cleanup()
    medians = {name: statistics.median(v) for name, v in qps.items()}
    return {
        "scale": scale, "drop": args.drop, "chunks": n, "tokens": tokens, "vocabulary": ours.vocabulary,
        "shards": len(ours.scorers), "queries": len(questions), "rank_bm25_timed_queries": len(rank_questions),
        "build_seconds": build, "peak_rss_gib_after_build": peak_rss_gib(), "qps": qps, "median_qps": medians,
        "best_qps": {name: max(v) for name, v in qps.items()},
        "median_ms_per_query": {name: 1000.0 / v for name, v in medians.items()},
        "median_of_per_repetition_ratios_ours_over": {
            name: statistics.median(a / b for a, b in zip(qps["ours"], v)) for name, v in qps.items()},
        "ratio_ours_over": {name: medians["ours"] / v for name, v in medians.items()},
        "reference": reference_name, "check_vs_reference": check,
        "check_vs_bm25s": bm25s_agree, "datastore_top_k_identical_to_ours": ds_agree,
        "ours_backend": ours.backend, "numpy_backend_identical_to_ours": numpy_agree,
    }


def print_table(results: list[dict], k: int) -> None:
    labels = {
        "ours": "terarag (Bm25Scorer.top_k + merge)",
        "ours_numpy": "terarag, numpy backend",
        "rank_bm25": "rank_bm25 BM25Okapi",
        "bm25s": "bm25s numpy backend",
        "bm25s_numba": "bm25s numba backend",
        "datastore_top_k": "terarag Datastore._bm25_top_k",
        "datastore_search": "terarag Datastore.search_many (+texts)",
    }
    print()
    for r in results:
        print(f"scale {r['scale']}: {r['chunks']:,} chunks, vocabulary {r['vocabulary']:,}, "
              f"{r['shards']} shard(s), top-{k}, median of {len(next(iter(r['qps'].values())))} repetitions")
        print(f"  {'retriever':<40} {'median q/s':>10} {'best q/s':>9} {'ms/query':>9} {'ours is':>8} {'build s':>8}")
        for name, med in r["median_qps"].items():
            build = r["build_seconds"].get(name, r["build_seconds"].get("datastore_writer")
                                           if name.startswith("datastore") else None)
            ratio = r["median_qps"]["ours"] / med
            print(f"  {labels[name]:<40} {med:>10,.0f} {r['best_qps'][name]:>9,.0f} {1000 / med:>9.3f} "
                  f"{ratio:>7.2f}x {build if build is not None else float('nan'):>8.2f}")
        c = r["check_vs_reference"]
        print("  " + ", ".join(f"ours/{name} = {ratio:.2f}x" for name, ratio in r["ratio_ours_over"].items()
                               if name != "ours"))
        print(f"  vs {r['reference']}: identical top-{k} for {c['identical_top_k']}/{c['checked_queries']} "
              f"checked queries, max |score diff| {c['max_abs_score_diff']:.2g}; peak RSS "
              f"{r['peak_rss_gib_after_build']:.2f} GiB")
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="chroma_general_eval folder (default: <repo>/../shared/data/chroma_general_eval)")
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10], help="corpus replication factors")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--shard-size", type=int, default=100_000, help="chunks per shard (library default)")
    parser.add_argument("--rank-queries", type=int, default=60,
                        help="time rank_bm25 and Datastore.search_many on about N evenly spaced queries "
                             "(0: all)")
    parser.add_argument("--drop", type=float, default=0.1,
                        help="copies after the first drop each token with this probability (0: identical copies)")
    parser.add_argument("--check-queries", type=int, default=0,
                        help="check top-k against the reference on about N evenly spaced queries (0: all)")
    parser.add_argument("--rank-max-chunks", type=int, default=150_000,
                        help="build rank_bm25 up to this many chunks; above, check against sparse_okapi")
    parser.add_argument("--no-numba", action="store_true", help="skip bm25s's numba backend")
    parser.add_argument("--no-datastore", action="store_true", help="skip the real-datastore rows")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    base_chunks, files = load_chunks(args.data, args.chunk_size)
    questions = load_questions(args.data)
    results = [run_scale(scale, base_chunks, questions, args) for scale in args.scales]
    print_table(results, args.k)
    report = {
        "benchmark": "bm25",
        "machine": {"nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "processor": platform.processor()},
        "versions": package_versions("numpy", "scipy", "rank-bm25", "bm25s", "numba", "terarag"),
        "git": git_state(),
        "data": short_path(args.data),
        "corpus_files": files,
        "settings": {k: (short_path(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "data"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {short_path(args.out)}")


if __name__ == "__main__":
    main()
