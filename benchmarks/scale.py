#!/usr/bin/env python
"""The datastore at scale: build, disk, memory, open, search and verify figures per corpus size.

    python benchmarks/scale.py --sizes 100000,1000000          # one row per size
    python benchmarks/scale.py --merge-chunks 100000           # the same chunks as 1, 10, 100 shards
    python benchmarks/scale.py --compare-cpu-workers 30000     # --cpu-workers 1 vs 2 on the same corpus

The corpus is deterministic synthetic text (Zipf-distributed pseudo-words, one chunk of about
130 cl100k tokens per document, ``token`` chunker) with precomputed 384-d vectors in Parquet
(``rag index --vectors-field``), so the figures are the datastore's, not a model's. The vectors are
synthetic too: unit vectors drawn around 2,000 random centres (a clustered cloud, so that nearest
neighbours mean something); recall figures on them are not recall on real MiniLM vectors. The
corpus is written one 50,000-row file at a time, each reproducible from (seed, file), and the exact
float top-10 of the 200 queries (vectors of the first file plus noise) is kept up to date file by
file, so generating 10^7 chunks needs no more memory than 10^5.

Every build and every measurement runs in a fresh child process, which reports its own peak RSS
(``ru_maxrss``). Per size it reports: build seconds per stage (``BuildReport.timings``: read+chunk,
"embed" (here: stacking the precomputed vectors) and write, which includes BM25 tokenizing) and
wall time; peak RSS of the build; bytes per chunk on disk per layer (chunk Parquet, row store,
dense codes, int8 rescoring vectors, BM25, other); open time (``Datastore.open``) and the first
search (which loads every shard); RSS after open and after searching (the memory a served
datastore holds: the binary codes in RAM, the rest memory-mapped); binary + int8 search latency
(one query at a time on one faiss thread, median of 100; one batch of 200 on every core) and
recall@10 against exact float search at rescore multipliers 4, 10 and 20; float-flat latency
(faiss ``IndexFlatIP`` over the same float32 vectors) up to ``--flat-max`` chunks; ``verify``
seconds per GB. ``--merge-chunks`` builds one corpus as 1, 10 and 100 shards and times the same
searches, which prices the exact cross-shard merge.

Writes ``benchmarks/out/scale.json``; prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import git_state, package_versions  # noqa: E402

DIM = 384
CENTRES = 2000
WORDS_PER_DOC = 50
ROWS_PER_FILE = 50_000
QUERIES = 200
SHARD_SIZE = 100_000
LAYERS = {"chunks.parquet": "chunk table", "rows.bin": "row store", "row_offsets.npy": "row store",
          "row_crc.npy": "row store", "bm25": "BM25"}


def _vocabulary(size: int = 30_000) -> np.ndarray:
    rng = np.random.default_rng(7)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, size=size)
    return np.array(["".join(rng.choice(letters, n)) for n in lengths])


def _block_vectors(centres: np.ndarray, seed: int, block: int, m: int) -> np.ndarray:
    """The unit vectors of one input file: reproducible from (seed, block) alone."""
    rng = np.random.default_rng([seed, block])
    vectors = centres[rng.integers(0, CENTRES, size=m)] + rng.normal(scale=0.6, size=(m, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _block_texts(vocab: np.ndarray, zipf_cdf: np.ndarray, seed: int, block: int, m: int) -> list[str]:
    rng = np.random.default_rng([seed, block, 1])
    words = vocab[np.searchsorted(zipf_cdf, rng.random((m, WORDS_PER_DOC)), side="right").clip(max=len(vocab) - 1)]
    return [" ".join(row) + "." for row in words]


def _merge_top10(best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """The running exact top-10 (scores, rows) after one more block of query x vector scores."""
    part = np.argpartition(-scores, 9, axis=1)[:, :10]
    s = np.concatenate([best[0], np.take_along_axis(scores, part, 1)], axis=1)
    r = np.concatenate([best[1], part + offset], axis=1)
    order = np.lexsort((r, -s), axis=1)[:, :10]
    return np.take_along_axis(s, order, 1), np.take_along_axis(r, order, 1)


def write_corpus(folder: Path, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` documents in Parquet files under ``folder``, streamed one file at a time (memory does
    not grow with ``n``); returns the queries [QUERIES, DIM] (corpus vectors of the first file plus
    noise) and their exact float top-10 rows [QUERIES, 10]."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vocab = _vocabulary()
    ranks = np.arange(1, len(vocab) + 1)
    zipf_cdf = np.cumsum((1 / ranks) / (1 / ranks).sum())
    centres = np.random.default_rng(seed).normal(size=(CENTRES, DIM)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    queries = best = None
    for block, lo in enumerate(range(0, n, ROWS_PER_FILE)):
        m = min(ROWS_PER_FILE, n - lo)
        vectors = _block_vectors(centres, seed, block, m)
        if queries is None:
            queries = _queries(vectors, seed)
            best = (np.full((QUERIES, 0), -np.inf, np.float32), np.zeros((QUERIES, 0), np.int64))
        best = _merge_top10(best, queries @ vectors.T, lo)
        column = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM)
        table = pa.table({"id": pa.array(np.arange(lo, lo + m)), "text": _block_texts(vocab, zipf_cdf, seed, block, m),
                          "emb": column})
        pq.write_table(table, folder / f"part-{block:05d}.parquet")
    return queries, best[1]


def _queries(vectors: np.ndarray, seed: int) -> np.ndarray:
    """QUERIES unit vectors: rows of ``vectors`` plus noise (sigma 0.02)."""
    rng = np.random.default_rng([seed, 1 << 20])
    picked = vectors[rng.choice(len(vectors), min(QUERIES, len(vectors)), replace=False)]
    queries = picked + rng.normal(scale=0.02, size=picked.shape)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def read_corpus_vectors(folder: Path) -> np.ndarray:
    """Every vector of a corpus written by ``write_corpus``, in row order [n, DIM] float32."""
    import pyarrow.parquet as pq

    parts = [pq.read_table(p, columns=["emb"]).column("emb").combine_chunks() for p in sorted(folder.glob("*.parquet"))]
    return np.concatenate([p.values.to_numpy().reshape(-1, DIM) for p in parts]).astype(np.float32, copy=False)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_split_mib() -> dict[str, float]:
    """Resident memory split into anonymous (the process's own) and file-backed (mapped files and
    libraries: page cache the kernel can drop) MiB."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssFile")))
    return {k: int(v.split()[0]) / 1024 for k, v in fields.items()}


def _rss_delta(base: dict[str, float]) -> dict[str, float]:
    now = _rss_split_mib()
    return {"anon": now["RssAnon"] - base["RssAnon"], "file": now["RssFile"] - base["RssFile"]}


def child_build(corpus: str, out: str, cpu_workers: int, shard_size: int = SHARD_SIZE) -> dict:
    from datastores.dense import DenseSpec
    from indexers import BuildConfig, build_datastore
    from indexers.engines import EngineOptions

    config = BuildConfig(chunker="token", chunk_size=256, shard_size=shard_size, vectors_field="emb",
                         embedder="none", dim=DIM, dense=DenseSpec("binary-flat", "int8"))
    load = os.getloadavg()[0]
    started = time.perf_counter()
    report = build_datastore([corpus], out, config, progress=False, engine=EngineOptions(cpu_workers=cpu_workers))
    wall = time.perf_counter() - started
    own = resource.getrusage(resource.RUSAGE_SELF)

    def children_cpu_s() -> float:
        """CPU seconds of this process's children and of the children they reaped (the workers of
        the fork server), from /proc (Linux)."""
        total, tick = 0.0, os.sysconf("SC_CLK_TCK")
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():  # ppid; then utime, stime, cutime, cstime
                total += sum(int(v) for v in fields[11:15]) / tick
        reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
        return total + reaped.ru_utime + reaped.ru_stime

    return {"chunks": report.chunks, "shards": len(report.manifest.shards), "wall_s": wall, "cpu_workers": cpu_workers,
            "stages_s": report.timings, "peak_rss_mib": _peak_rss_mib(),
            # CPU seconds of the build's process and of its worker processes
            "cpu_s": {"build": own.ru_utime + own.ru_stime, "workers": children_cpu_s()},
            "load_average": [load, os.getloadavg()[0]]}


def child_search(out: str, queries: str, truth: str) -> dict:
    from datastores import Datastore
    from datastores.verify import verify_datastore

    q = np.load(queries)
    exact = np.load(truth)
    import duckdb, faiss, pyarrow.parquet  # noqa: F401,E401  (libraries loaded before the baseline)

    base, split = _rss_mib(), _rss_split_mib()
    started = time.perf_counter()
    ds = Datastore.open(out)
    opened = time.perf_counter() - started
    started = time.perf_counter()
    ds.search_vectors(q[:1], k=10)
    first = time.perf_counter() - started
    result = {"open_s": opened, "first_search_s": first, "rss_open_mib": _rss_mib() - base,
              "rss_open_split_mib": _rss_delta(split)}
    for multiplier in (4, 10, 20):
        ds.rescore_multiplier = multiplier
        hits = ds.search_vectors(q, k=10)
        found = [{int(h.doc_id.rsplit("#", 1)[1]) for h in hs} for hs in hits]  # doc id = row of the vectors
        recall = np.mean([len(f & set(exact[i])) / 10 for i, f in enumerate(found)])
        result[f"x{multiplier}"] = {**_latency(lambda x: ds.search_vectors(x, k=10), q, single=100),
                                    "recall_at_10": float(recall)}
    result["rss_searched_mib"] = _rss_mib() - base
    result["rss_searched_split_mib"] = _rss_delta(split)
    size = sum(p.stat().st_size for p in Path(out).rglob("*") if p.is_file())
    t = time.perf_counter()
    verify = verify_datastore(out)
    result["verify_s_per_gb"] = (time.perf_counter() - t) / (size / 1e9)
    result["verify_ok"] = verify.ok
    result["peak_rss_mib"] = _peak_rss_mib()
    return result


def _run_child(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"child {args[0]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def disk_layers(root: Path, chunks: int) -> dict[str, float]:
    """Bytes per chunk on disk, per layer."""
    totals: dict[str, int] = {}
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(root).parts
        key = rel[2] if len(rel) > 2 and rel[0] == "shards" else "global"
        layer = LAYERS.get(key, "dense codes" if key.endswith(".faiss") else
                           "int8 rescoring" if ".i8." in key else "other")
        totals[layer] = totals.get(layer, 0) + path.stat().st_size
    return {k: v / chunks for k, v in sorted(totals.items())}


def corpus_for(work: Path, n: int) -> tuple[Path, float]:
    """The synthetic corpus of ``n`` chunks under ``work`` (written unless a finished one is there,
    with its queries and exact top-10 beside it); seconds spent writing it."""
    corpus = work / f"corpus-{n}"
    if (corpus / "truth.npy").exists():
        return corpus, 0.0
    shutil.rmtree(corpus, ignore_errors=True)
    started = time.perf_counter()
    queries, truth = write_corpus(corpus / "parts", n)
    np.save(corpus / "queries.npy", queries)
    np.save(corpus / "truth.npy", truth)  # written last: marks the corpus finished
    return corpus, time.perf_counter() - started


def measure_size(n: int, work: Path, flat_max: int, cpu_workers: int, keep_corpus: bool) -> dict:
    corpus, generated = corpus_for(work, n)
    out = work / f"ds-{n}"
    shutil.rmtree(out, ignore_errors=True)
    queries, truth = str(corpus / "queries.npy"), str(corpus / "truth.npy")
    build = _run_child("build", str(corpus / "parts"), str(out), str(cpu_workers))
    search = _run_child("search", str(out), queries, truth)
    result = {"chunks": n, "corpus_generation_s": generated, "build": build, "search": search,
              "disk_bytes_per_chunk": disk_layers(out, n), "load_average": os.getloadavg()}
    if n <= flat_max:
        result["float_flat"] = _run_child("flat", str(corpus / "parts"), queries)
    shutil.rmtree(out)
    if not keep_corpus:
        shutil.rmtree(corpus)
    return result


def child_flat(corpus: str, queries: str) -> dict:
    """faiss ``IndexFlatIP`` (what a float-flat shard searches) over the corpus's float32 vectors."""
    import faiss

    vectors = read_corpus_vectors(Path(corpus))
    q = np.load(queries)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    del vectors
    return {**_latency(lambda x: index.search(x, 10), q), "ram_mib": index.ntotal * DIM * 4 / 2**20}


def _latency(search: Callable[[np.ndarray], object], q: np.ndarray, single: int = 50) -> dict:
    """Median ms of one query at a time (``single`` queries, faiss on one thread, as a server running
    queries side by side would) and ms per query of one batch of all (faiss on every core)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    one = []
    for row in q[:single]:
        t = time.perf_counter()
        search(row[None, :])
        one.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    search(q)
    return {"p50_ms": 1000 * float(np.median(one)), "batch_ms_per_query": 1000 * (time.perf_counter() - t) / len(q)}


def child_latency(out: str, queries: str) -> dict:
    """Binary + int8 search latency of a datastore at its default rescoring depth (merge study)."""
    from datastores import Datastore

    ds = Datastore.open(out)
    q = np.load(queries)
    ds.search_vectors(q[:1], k=10)  # opens every shard
    return {"shards": len(ds.manifest.shards), **_latency(lambda x: ds.search_vectors(x, k=10), q, single=100)}


def merge_study(n: int, shard_counts: list[int], work: Path) -> dict:
    """The same ``n`` chunks built as 1, 10, 100... shards: what the exact cross-shard merge costs."""
    corpus = work / f"corpus-merge-{n}"
    queries, _ = write_corpus(corpus, n)
    np.save(work / "queries-merge.npy", queries)
    rows = []
    for shards in shard_counts:
        out = work / f"ds-merge-{shards}"
        build = _run_child("build", str(corpus), str(out), "1", str(-(-n // shards)))
        rows.append({"shards": shards, "build_wall_s": build["wall_s"],
                     **_run_child("latency", str(out), str(work / "queries-merge.npy"))})
        shutil.rmtree(out)
    shutil.rmtree(corpus)
    return {"chunks": n, "rows": rows, "load_average": os.getloadavg()}


def compare_workers(n: int, work: Path, shard_size: int) -> dict:
    """``--cpu-workers`` 1 and 2 on the same corpus, interleaved 1, 2, 1, 2 in fresh processes; medians."""
    corpus = work / f"corpus-{n}"
    write_corpus(corpus, n)
    runs: dict[int, list] = {}
    for workers in (1, 2, 1, 2):
        out = work / f"ds-w{workers}"
        runs.setdefault(workers, []).append(_run_child("build", str(corpus), str(out), str(workers), str(shard_size)))
        shutil.rmtree(out)
    shutil.rmtree(corpus)
    best = {w: min(r["wall_s"] for r in rs) for w, rs in runs.items()}
    median = {w: float(np.median([r["wall_s"] for r in rs])) for w, rs in runs.items()}
    print(f"\n| --cpu-workers | wall s | train s | read+chunk s | write s | CPU s build + workers | peak RSS MiB | "
          f"load before, after |\n|---|---|---|---|---|---|---|---|")
    for w, rs in sorted(runs.items()):
        for r in rs:
            st, cpu = r["stages_s"], r["cpu_s"]
            print(f"| {w} | {r['wall_s']:.1f} | {st['train']:.1f} | {st['read_chunk']:.1f} | {st['write']:.1f} | "
                  f"{cpu['build']:.1f} + {cpu['workers']:.1f} | {r['peak_rss_mib']:.0f} | "
                  f"{r['load_average'][0]:.1f}, {r['load_average'][1]:.1f} |")
    print(f"\nmedian wall: 1 worker {median[1]:.1f} s ({n / median[1]:,.0f} chunks/s), 2 workers {median[2]:.1f} s "
          f"({n / median[2]:,.0f} chunks/s), ratio {median[2] / median[1]:.2f}")
    return {"chunks": n, "shard_size": shard_size, "runs": runs, "best_wall_s": best, "median_wall_s": median,
            "ratio_2_over_1": best[2] / best[1], "median_ratio_2_over_1": median[2] / median[1],
            "load_average": os.getloadavg()}


def _print(results: dict) -> None:
    for size in results.get("sizes", []):
        b, s = size["build"], size["search"]
        print(f"\n### {size['chunks']:,} chunks ({b['shards']} shards)\n")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in b["stages_s"].items())
        print(f"- build wall {b['wall_s']:.1f} s ({b.get('cpu_workers', 1)} CPU workers); stages {stages}; peak RSS {b['peak_rss_mib']:.0f} MiB")
        print("- disk bytes/chunk: " + ", ".join(f"{k} {v:.0f}" for k, v in size["disk_bytes_per_chunk"].items()))
        print(f"- open {1000 * s['open_s']:.0f} ms, first search {1000 * s['first_search_s']:.0f} ms, "
              f"RSS after open {s['rss_open_mib']:.0f} MiB, after searching {s['rss_searched_mib']:.0f} MiB")
        if "rss_searched_split_mib" in s:
            o, r = s["rss_open_split_mib"], s["rss_searched_split_mib"]
            print(f"- of which anonymous (owned) {o['anon']:.0f} / {r['anon']:.0f} MiB, "
                  f"file-backed (mapped pages, reclaimable) {o['file']:.0f} / {r['file']:.0f} MiB")
        for m in (4, 10, 20):
            x = s[f"x{m}"]
            print(f"- binary+int8 x{m}: p50 {x['p50_ms']:.2f} ms, batch {x['batch_ms_per_query']:.2f} ms/query, "
                  f"recall@10 {x['recall_at_10']:.3f}")
        if "float_flat" in size:
            f = size["float_flat"]
            print(f"- float flat (faiss IndexFlatIP): p50 {f['p50_ms']:.2f} ms, batch {f['batch_ms_per_query']:.2f} ms/query, "
                  f"RAM {f['ram_mib']:.0f} MiB")
        print(f"- verify {s['verify_s_per_gb']:.1f} s/GB (ok: {s['verify_ok']})")
    if "merge" in results:
        m = results["merge"]
        print(f"\n### {m['chunks']:,} chunks as 1..N shards (binary + int8, default depth)\n")
        for row in m["rows"]:
            print(f"- {row['shards']} shards: p50 {row['p50_ms']:.2f} ms, batch {row['batch_ms_per_query']:.2f} ms/query, "
                  f"build {row['build_wall_s']:.1f} s")
    if "workers" in results:
        w = results["workers"]
        print(f"\n### --cpu-workers on {w['chunks']:,} chunks, shards of {w['shard_size']:,}: best of 2: 1 worker {w['best_wall_s'][1]:.1f} s, "
              f"2 workers {w['best_wall_s'][2]:.1f} s, ratio {w['ratio_2_over_1']:.2f} (load {w['load_average']})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="", help="comma-separated chunk counts, e.g. 100000,1000000")
    parser.add_argument("--compare-cpu-workers", type=int, default=0, help="chunks for the 1-vs-2 worker builds")
    parser.add_argument("--compare-shard-size", type=int, default=5000,
                        help="shard size of the worker comparison (several shards, so writes run in parallel)")
    parser.add_argument("--keep-corpus", action="store_true",
                        help="keep the synthetic corpus under --work for the next run (it is reused when there)")
    parser.add_argument("--generate-only", action="store_true", help="only write the corpora of --sizes")
    parser.add_argument("--cpu-workers", type=int, default=1, help="--cpu-workers of the --sizes builds")
    parser.add_argument("--flat-max", type=int, default=2_000_000,
                        help="largest size whose float32 vectors are also searched with faiss IndexFlatIP")
    parser.add_argument("--merge-chunks", type=int, default=0, help="chunks of the merge study (0: none)")
    parser.add_argument("--merge-shards", default="1,10,100", help="shard counts of the merge study")
    parser.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "build":
            result = child_build(rest[0], rest[1], *map(int, rest[2:]))
        else:
            result = {"search": child_search, "flat": child_flat, "latency": child_latency}[kind](*rest)
        print(json.dumps(result))
        return
    work = Path(args.work or tempfile.mkdtemp(prefix="terarag-scale-"))
    results: dict = {"git": git_state(), "versions": package_versions("faiss-cpu", "pyarrow", "duckdb", "numpy"),
                     "cpus": os.cpu_count(), "sizes": []}
    out = Path(__file__).resolve().parent / "out" / "scale.json"
    out.parent.mkdir(exist_ok=True)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        if args.generate_only:
            print(f"corpus of {n:,} chunks: {corpus_for(work, n)[1]:.0f} s")
            continue
        results["sizes"].append(measure_size(n, work, args.flat_max, args.cpu_workers, args.keep_corpus))
        out.write_text(json.dumps(results, indent=2))  # each size is kept even if a later one fails
    if args.merge_chunks:
        results["merge"] = merge_study(args.merge_chunks, [int(x) for x in args.merge_shards.split(",")], work)
        out.write_text(json.dumps(results, indent=2))
    if args.compare_cpu_workers:
        results["workers"] = compare_workers(args.compare_cpu_workers, work, args.compare_shard_size)
        out.write_text(json.dumps(results, indent=2))
    _print(results)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
