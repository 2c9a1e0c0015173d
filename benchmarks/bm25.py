#!/usr/bin/env python
"""BM25 query throughput: terarag vs rank_bm25.BM25Okapi vs bm25s, same corpus, same tokens.

    python benchmarks/bm25.py                     # scales 1 and 10, 7 repetitions
    python benchmarks/bm25.py --scales 1 --repeats 5

Corpus: the five Chroma "general evaluation" corpora, chunked with
``make_chunker("recursive", 200, 0)``; ``--scales`` replicates the chunks N times (the copies are
distinct documents with identical text, so scores tie and tie-breaking is exercised).
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
from datastores.search import ShardResult, merge_top_k  # noqa: E402
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
        self.scorers = [Bm25Scorer(TermMatrix.load(f), self.params, stats) for f in folders]
        self.num_docs = len(token_lists)
        self.vocabulary = stats.vocabulary

    def top_k(self, query: str, k: int) -> list[tuple[int, int, float]]:
        counts = Counter(t for t in self.params.tokenize(query) if t in self.idf)
        if not counts:
            return []
        results = []
        for i, scorer in enumerate(self.scorers):  # ShardReader.search_bm25
            scores, rows = scorer.top_k(self.idf, counts, k)
            results.append(ShardResult(i, scores, rows))
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


def run_scale(scale: int, base_chunks, questions, args) -> dict:
    k = args.k
    chunks = [dataclasses.replace(c, doc_id=f"{c.doc_id}#{r}") if r else c
              for r in range(scale) for c in base_chunks]
    base_tokens = [simple_tokenize(c.text) for c in base_chunks]
    token_lists = [t for _ in range(scale) for t in base_tokens]
    n = len(token_lists)
    # rank_bm25 is O(chunks) per query: time it on an evenly spaced subset (all corpora represented).
    step = 1 if args.rank_queries <= 0 else max(1, math.ceil(len(questions) / args.rank_queries))
    rank_queries = questions[::step]
    print(f"\n== scale {scale}: {n:,} chunks, {sum(map(len, token_lists)):,} tokens, "
          f"{len(questions)} queries ==", flush=True)

    from rank_bm25 import BM25Okapi

    tmp = tempfile.TemporaryDirectory(prefix="terarag-bm25-bench-")
    build = {}
    ours, build["ours"] = timed_value(lambda: Ours(token_lists, args.shard_size, Path(tmp.name) / "ours"))
    rank, build["rank_bm25"] = timed_value(lambda: BM25Okapi(token_lists))
    b_np, build["bm25s"] = timed_value(lambda: make_bm25s(token_lists, "numpy"))
    b_nb = None
    if not args.no_numba:
        try:
            b_nb, build["bm25s_numba"] = timed_value(lambda: make_bm25s(token_lists, "numba"))
        except ImportError as exc:
            print(f"bm25s numba backend unavailable: {exc}")
    ds = None
    if not args.no_datastore:
        ds, build["datastore_writer"] = timed_value(
            lambda: build_real_datastore(chunks, args.shard_size, Path(tmp.name) / "ds"))

    # -- correctness (untimed) --
    print("checking results against rank_bm25 ...", flush=True)
    exact = tie_only = 0
    mismatched = []
    max_diff = 0.0
    max_rel_diff = 0.0
    fewer_than_k = 0
    ours_lists = []
    for qi, q in enumerate(questions):
        full = rank.get_scores(simple_tokenize(q))
        ref = np.lexsort((np.arange(n), -full))[:k]
        ref = [int(i) for i in ref if full[i] > 0]
        fewer_than_k += len(ref) < k
        ranked = ours.top_k(q, k)
        got = ours.global_ids(ranked)
        ours_lists.append(got)
        mine = ours.all_scores(q)
        diff = float(np.max(np.abs(mine - full))) if n else 0.0
        max_diff = max(max_diff, diff)
        max_rel_diff = max(max_rel_diff, diff / max(float(np.max(np.abs(full))), 1e-300))
        if got == ref:
            exact += 1
        elif len(got) == len(ref) and np.allclose(full[got], full[ref], rtol=1e-12, atol=1e-12):
            tie_only += 1
            mismatched.append(qi)
        else:
            mismatched.append(qi)
    print(f"  top-{k} identical for {exact}/{len(questions)} queries"
          + (f" ({tie_only} more differ only among float-equal scores)" if tie_only else "")
          + f"; max |score diff| over all chunks and queries {max_diff:.3g}", flush=True)

    # bm25s's robertson idf is BM25Okapi's before the floor, clamped at 0 (BM25Okapi: epsilon * mean
    # idf) and it scores in float32. Check that this is the only difference: rank_bm25 with its
    # floored idfs set to 0 must give bm25s's top-k (as sets, up to float32 near-ties).
    clamped = copy.copy(rank)
    df = Counter(t for freqs in rank.doc_freqs for t in freqs)
    clamped.idf = {t: max(0.0, math.log(n - d + 0.5) - math.log(d + 0.5)) for t, d in df.items()}
    floored_terms = sum(math.log(n - d + 0.5) < math.log(d + 0.5) for d in df.values())
    bm25s_agree = {}
    for name, retriever in (("bm25s", b_np), ("bm25s_numba", b_nb)):
        if retriever is None:
            continue
        docs, _ = bm25s_retrieve(retriever, questions, k)
        full_k = sum(len(o) == k for o in ours_lists)
        same_set = sum(set(map(int, d)) == set(o) for d, o in zip(docs, ours_lists) if len(o) == k)
        overlap = statistics.mean(len(set(map(int, d)) & set(o)) / k for d, o in zip(docs, ours_lists) if len(o) == k)
        same_clamped = 0
        for q, d in list(zip(questions, docs))[::step]:
            ref_scores = clamped.get_scores(simple_tokenize(q))
            ref = np.lexsort((np.arange(n), -ref_scores))[:k]
            if set(map(int, d)) == set(map(int, ref)) or np.allclose(
                    np.sort(ref_scores[list(map(int, d))]), np.sort(ref_scores[ref]), rtol=1e-5, atol=1e-6):
                same_clamped += 1
        bm25s_agree[name] = {"same_top_k_set_as_ours": same_set, "queries_with_k_hits": full_k,
                             "mean_overlap_at_k_with_ours": overlap,
                             "same_top_k_as_rank_bm25_with_idf_clamped_at_0": same_clamped,
                             "queries_checked_with_clamped_idf": len(rank_queries),
                             "terms_with_floored_idf": floored_terms}
        print(f"  {name}: same top-{k} set as ours for {same_set}/{full_k} queries (mean overlap@{k} "
              f"{overlap:.3f}); {floored_terms} terms occur in more than half of the chunks, where "
              f"BM25Okapi's idf is epsilon * mean idf and bm25s's is 0; against rank_bm25 with those "
              f"idfs set to 0: same top-{k} (up to float32 ties) for {same_clamped}/{len(rank_queries)}",
              flush=True)

    ds_agree = None
    if ds is not None:
        def ds_ids(query):
            return [ds.shards[shard].info.chunk_id_start + row for shard, row, _ in ds._bm25_top_k(query, k, ds.row_masks())]

        same = ds_agree = sum(ds_ids(q) == o for q, o in zip(questions, ours_lists))
        print(f"  Datastore._bm25_top_k: same top-{k} as ours for {same}/{len(questions)} queries", flush=True)

    # -- timing --
    runners = {
        "ours": (questions, lambda qs: [ours.top_k(q, k) for q in qs]),
        "rank_bm25": (rank_queries, lambda qs: [rank_top_k(rank, q, k) for q in qs]),
        "bm25s": (questions, lambda qs: bm25s_retrieve(b_np, qs, k)),
    }
    if b_nb is not None:
        runners["bm25s_numba"] = (questions, lambda qs: bm25s_retrieve(b_nb, qs, k))
    if ds is not None:
        runners["datastore_top_k"] = (questions, lambda qs: [ds._bm25_top_k(q, k, ds.row_masks()) for q in qs])
        runners["datastore_search"] = (rank_queries, lambda qs: ds.search_many(qs, k=k, mode="bm25"))
    for name, (qs, fn) in runners.items():  # warm-up (numba compiles here)
        fn(qs[: max(1, len(qs) // 10)])
    qps = {name: [] for name in runners}
    for rep in range(args.repeats):
        for name, (qs, fn) in runners.items():
            qps[name].append(len(qs) / timed(lambda: fn(qs)))
        print(f"  repetition {rep + 1}/{args.repeats}: "
              + ", ".join(f"{name} {v[-1]:,.0f} q/s" for name, v in qps.items()), flush=True)
    tmp.cleanup()

    medians = {name: statistics.median(v) for name, v in qps.items()}
    per_rep_ratio = {name: statistics.median(a / b for a, b in zip(qps["ours"], v)) for name, v in qps.items()}
    return {
        "scale": scale,
        "chunks": n,
        "tokens": int(sum(map(len, token_lists))),
        "vocabulary": ours.vocabulary,
        "shards": len(ours.scorers),
        "queries": len(questions),
        "rank_bm25_timed_queries": len(rank_queries),
        "build_seconds": build,
        "qps": qps,
        "median_qps": medians,
        "best_qps": {name: max(v) for name, v in qps.items()},
        "median_ms_per_query": {name: 1000.0 / v for name, v in medians.items()},
        "median_of_per_repetition_ratios_ours_over": per_rep_ratio,
        "ratio_ours_over_rank_bm25": medians["ours"] / medians["rank_bm25"],
        "ratio_ours_over_bm25s": medians["ours"] / medians["bm25s"],
        "ratio_ours_over_bm25s_numba": (medians["ours"] / medians["bm25s_numba"]
                                        if "bm25s_numba" in medians else None),
        "check_vs_rank_bm25": {
            "identical_top_k": exact, "differ_only_in_float_ties": tie_only,
            "mismatched_queries": mismatched[:50], "max_abs_score_diff": max_diff,
            "max_rel_score_diff": max_rel_diff, "queries_with_fewer_than_k_hits": fewer_than_k,
        },
        "check_vs_bm25s": bm25s_agree,
        "datastore_top_k_identical_to_ours": ds_agree,
    }



def print_table(results: list[dict], k: int) -> None:
    labels = {
        "ours": "terarag (Bm25Scorer.top_k + merge)",
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
        c = r["check_vs_rank_bm25"]
        print(f"  ours/rank_bm25 = {r['ratio_ours_over_rank_bm25']:.1f}x (target >= 30x), "
              f"ours/bm25s = {r['ratio_ours_over_bm25s']:.2f}x (target >= 1x)"
              + (f", ours/bm25s-numba = {r['ratio_ours_over_bm25s_numba']:.2f}x"
                 if r["ratio_ours_over_bm25s_numba"] else ""))
        print(f"  vs rank_bm25: identical top-{k} for {c['identical_top_k']}/{r['queries']} queries, "
              f"max |score diff| {c['max_abs_score_diff']:.2g}"
              + (f" (rank_bm25 timed on {r['rank_bm25_timed_queries']} queries)"
                 if r["rank_bm25_timed_queries"] != r["queries"] else ""))
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
                             "(0: all); the top-k check against rank_bm25 always uses all queries")
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
