#!/usr/bin/env python
"""Embedding throughput on this machine: plain sentence-transformers vs terarag's backends.

    python benchmarks/embedding.py                       # 500 chunks, 3 repetitions, quality on Chroma
    python benchmarks/embedding.py --repeats 5 --no-quality

Texts: the first ``--limit`` chunks of ``examples/corpus`` (``make_chunker("recursive", 200, 0)``,
200 cl100k tokens, about 170 MiniLM tokens each). Systems, all with all-MiniLM-L6-v2 on CPU:

- ``st``: plain ``SentenceTransformer(path).encode(texts, normalize_embeddings=True)`` (its default
  batch size 32) -- the baseline;
- ``torch``: terarag's torch backend (``load_embedder(backend="torch")``, batch 64, sorted by
  token length);
- ``onnx``: the ONNX Runtime float32 backend (the default ``auto`` on CPU);
- ``onnx-int8``: dynamic int8 quantization (opt-in).

Each repetition walks the texts in blocks of ``--block`` (100) texts and every system encodes every
block in turn (one ``encode`` call, its own sorting and batching; the order rotates per block), so
that load from other processes on a shared machine spreads evenly over the systems; a system's
time for a repetition is its sum over the blocks. docs/s and tokens/s are medians over
repetitions ("best": the fastest repetition). Tokens are model tokens after
truncation (the same for every system). Single-query latency: median over ``--queries`` Chroma
questions, one ``encode([q])`` call each, after warm-up.

Also measured:

- the int8 quality cost on the Chroma general-evaluation set: the 5 corpora chunked like above,
  each question searched exactly (numpy dot products) in its own corpus with float32 and with int8
  vectors (queries and chunks by the same backend); overlap of the top-10 lists (recall@10 of int8
  against float32), top-1 agreement and cosine of the vectors; the same for onnx float32 against
  torch as a control;
- padding: padded tokens per real token for token-length buckets, character-length sorting and
  input order, at batch 64;
- ``--workers``: 2 processes x 1 ONNX thread against 1 process x 2 threads on the same texts;
- ``--settings``: the default ONNX path (batch 64 run in pieces of at most 1,024 padded tokens,
  ONNX Runtime's default threads, spinning) against whole batches of 32, 64 and 128 and
  non-spinning threads (``--settings-only "LABEL;LABEL"`` picks some), plus the share of time
  spent tokenizing.

Prints tables and writes ``benchmarks/out/embedding.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import git_state, package_versions  # noqa: E402  (benchmarks/ is sys.path[0])

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from ragcli.embed_bench import count_tokens, load_texts, quality_against, results_table, run_benchmark  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
MODEL = "all-MiniLM-L6-v2"
console = Console(width=120)


def padding_study(texts: list[str], batch_size: int = 64) -> dict:
    """Padded tokens per real token at ``batch_size`` for three batch orders (no model run)."""
    from indexers.embedding import token_lengths
    from indexers.embedding.onnx_backend import load_fast_tokenizer
    from indexers.embedding import locate_model

    lengths, _ = token_lengths(load_fast_tokenizer(locate_model(MODEL).path_or_name, 256), texts)
    orders = {"token-length buckets (onnx, torch)": np.argsort(-lengths, kind="stable"),
              "character-length sort (before)": np.argsort([-len(t) for t in texts], kind="stable"),
              "input order": np.arange(len(texts))}
    out = {}
    for label, order in orders.items():
        padded = sum(int(lengths[order[lo:lo + batch_size]].max()) * len(order[lo:lo + batch_size])
                     for lo in range(0, len(texts), batch_size))
        out[label] = round(padded / int(lengths.sum()) - 1.0, 4)
    return out


# ---------------------------------------------------------------------------------------------
# int8 quality on Chroma


def chroma_quality(data: Path, backends: list[str], reference: dict[str, str], k: int = 10) -> dict:
    """Top-k overlap of each backend against its reference backend on the Chroma questions."""
    from datastores.records import Document
    from evaluators.datasets import load_dataset
    from indexers import make_chunker, load_embedder

    dataset = load_dataset(data)
    chunker = make_chunker("recursive", 200, 0)
    chunks = {cid: [c.text for c in chunker.chunk(Document(cid, text, cid))] for cid, text in dataset.corpora.items()}
    questions = [(q.text, q.corpus_id) for q in dataset.questions]
    all_chunks = [t for cid in sorted(chunks) for t in chunks[cid]]
    offsets, start = {}, 0
    for cid in sorted(chunks):
        offsets[cid] = (start, start + len(chunks[cid]))
        start += len(chunks[cid])
    vectors, seconds = {}, {}
    for backend in backends:
        embedder = load_embedder(MODEL, device="cpu", backend=backend).backend
        started = time.perf_counter()
        docs = embedder.encode(all_chunks)
        seconds[backend] = round(time.perf_counter() - started, 1)
        queries = embedder.encode([q for q, _ in questions])
        vectors[backend] = (docs, queries)
        console.print(f"[dim]chroma: {backend} embedded {len(all_chunks)} chunks in {seconds[backend]}s[/dim]")

    def top_k(backend: str) -> list[np.ndarray]:
        docs, queries = vectors[backend]
        out = []
        for (_, cid), query in zip(questions, queries):
            lo, hi = offsets[cid]
            scores = docs[lo:hi] @ query
            out.append(np.argsort(-scores, kind="stable")[:k])
        return out

    tops = {b: top_k(b) for b in backends}
    results = {}
    for backend, ref in reference.items():
        overlap = [len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(tops[backend], tops[ref])]
        top1 = [a[0] == b[0] for a, b in zip(tops[backend], tops[ref])]
        cos_docs = np.sum(vectors[backend][0] * vectors[ref][0], axis=1)
        cos_queries = np.sum(vectors[backend][1] * vectors[ref][1], axis=1)
        results[f"{backend} vs {ref}"] = {
            "recall_at_10": round(float(np.mean(overlap)), 4),
            "questions_with_identical_top10_set": int(sum(o == 1.0 for o in overlap)),
            "top1_agreement": round(float(np.mean(top1)), 4),
            "min_overlap": min(overlap),
            "cosine_chunks_min": round(float(cos_docs.min()), 5),
            "cosine_chunks_mean": round(float(cos_docs.mean()), 5),
            "cosine_queries_min": round(float(cos_queries.min()), 5),
            "cosine_queries_mean": round(float(cos_queries.mean()), 5),
        }
    return {"chunks": len(all_chunks), "questions": len(questions), "k": k,
            "corpora": {cid: len(v) for cid, v in chunks.items()}, "embed_seconds": seconds, "comparisons": results}


# ---------------------------------------------------------------------------------------------
# workers


_WORKER = None


def _init_worker(threads: int) -> None:
    global _WORKER
    from indexers.embedding.onnx_backend import OnnxBackend

    _WORKER = OnnxBackend(MODEL, device="cpu", threads=threads)


def _work(texts: list[str]) -> np.ndarray:
    return _WORKER.encode(texts, 64)


def workers_study(texts: list[str], repeats: int) -> dict:
    """1 process x 2 ONNX threads vs 2 processes x 1 thread (tokenization + inference in each)."""
    from indexers.embedding.onnx_backend import OnnxBackend

    single = OnnxBackend(MODEL, device="cpu")
    pool = multiprocessing.get_context("spawn").Pool(2, initializer=_init_worker, initargs=(1,))
    try:
        pool.map(_work, [texts[:4], texts[4:8]])  # load and warm up both workers
        lengths = np.array([len(t) for t in texts])
        order = np.argsort(-lengths, kind="stable")
        parts = [[texts[i] for i in order[w::2]] for w in range(2)]  # equal work per worker
        times = {"1 process x 2 threads": [], "2 processes x 1 thread": []}
        for _ in range(repeats):
            started = time.perf_counter()
            single.encode(texts, 64)
            times["1 process x 2 threads"].append(time.perf_counter() - started)
            started = time.perf_counter()
            pool.map(_work, parts)
            times["2 processes x 1 thread"].append(time.perf_counter() - started)
    finally:
        pool.close()
        pool.join()
    return {label: {"seconds": [round(t, 2) for t in ts], "docs_per_s": round(len(texts) / statistics.median(ts), 1)}
            for label, ts in times.items()}


# ---------------------------------------------------------------------------------------------
# ONNX Runtime settings

#: Settings tried against the default path: (batch size, intra-op threads, session config entries,
#: padded tokens per ONNX Runtime call; 0 = the whole batch at once).
SETTINGS = {
    "default (batch 64, <= 1,024 tokens per run)": (64, None, {}, 1024),
    "batch 64, <= 2,048 tokens per run": (64, None, {}, 2048),
    "batch 64, <= 6,144 tokens per run (before)": (64, None, {}, 6144),
    "batch 64 in one run": (64, None, {}, 0),
    "batch 32 in one run": (32, None, {}, 0),
    "no thread spinning": (64, None, {"session.intra_op.allow_spinning": "0"}, 1024),
}


def settings_study(texts: list[str], repeats: int, only: list[str] | None = None) -> dict:
    """The default ONNX float32 path against other batch sizes and session settings.

    Interleaved like the main run (one ``encode`` of all texts per setting per repetition, the
    order rotating); wall and CPU seconds (medians), min cosine to the default's vectors, and the
    share of the time spent tokenizing.
    """
    from indexers.embedding import tokenize
    from indexers.embedding.onnx_backend import OnnxBackend, make_session

    embedder = OnnxBackend(MODEL, device="cpu")
    sessions = {label: (batch, make_session(embedder.onnx_path, "cpu", threads, config), max_tokens)
                for label, (batch, threads, config, max_tokens) in SETTINGS.items()
                if not only or label in only or label.startswith("default")}
    labels = list(sessions)
    wall: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    vectors: dict[str, np.ndarray] = {}
    for label in labels:  # warm-up
        _, embedder.session, embedder.call_tokens = sessions[label]
        embedder.encode(texts[:8], sessions[label][0])
    for repeat in range(repeats):
        for label in labels[repeat % len(labels):] + labels[:repeat % len(labels)]:
            batch, embedder.session, embedder.call_tokens = sessions[label]
            gc.collect()
            w, c = time.perf_counter(), time.process_time()
            vectors[label] = embedder.encode(texts, batch)
            wall[label].append(time.perf_counter() - w)
            cpu[label].append(time.process_time() - c)
    started = time.perf_counter()
    tokenize(embedder.tokenizer, texts)
    tokenize_s = time.perf_counter() - started
    reference = vectors[labels[0]]
    base = statistics.median(wall[labels[0]])
    out = {}
    for label in labels:
        median = statistics.median(wall[label])
        out[label] = {"wall_s": round(median, 2), "runs": [round(x, 2) for x in wall[label]],
                      "cpu_s": round(statistics.median(cpu[label]), 2), "docs_per_s": round(len(texts) / median, 1),
                      "vs_default": round(base / median, 3),
                      "min_cosine_to_default": round(float(np.min(np.sum(vectors[label] * reference, axis=1))), 6)}
    return {"texts": len(texts), "settings": out, "tokenize_s": round(tokenize_s, 3),
            "tokenize_share": round(tokenize_s / base, 4)}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", default=str(REPO / "examples" / "corpus"))
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block", type=int, default=100, help="texts per interleaving block")
    parser.add_argument("--queries", type=int, default=50, help="single-query encodes to time per system")
    parser.add_argument("--backends", default="st,torch,onnx,onnx-int8")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Chroma general-evaluation folder")
    parser.add_argument("--no-quality", action="store_true", help="skip the int8 quality measurement")
    parser.add_argument("--workers", action="store_true", help="also time 2 processes x 1 thread")
    parser.add_argument("--settings", action="store_true",
                        help="also time the ONNX default against other batch sizes and session settings")
    parser.add_argument("--settings-only", default="", help="';'-separated SETTINGS labels (the default always runs)")
    parser.add_argument("--study-texts", type=int, default=256, help="texts for --workers and --settings")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "embedding.json"))
    args = parser.parse_args()
    backends = [b for b in args.backends.split(",") if b]

    load_before = os.getloadavg()
    started = time.perf_counter()
    texts = load_texts([args.texts], args.limit, 200)
    tokens, truncated = count_tokens(MODEL, texts)
    queries: list[str] = []
    if Path(args.data).is_dir():
        from evaluators.datasets import load_dataset

        queries = [q.text for q in load_dataset(args.data).questions][: args.queries]
    else:
        queries = [t.split(".")[0][:120] for t in texts[: args.queries]]
    console.print(f"{len(texts)} chunks, {tokens:,} model tokens ({tokens / len(texts):.0f} per chunk), "
                  f"{truncated} truncated; backends {', '.join(backends)}; {args.repeats} repetitions")
    results = run_benchmark(MODEL, texts, backends, args.repeats, 64, queries, block=args.block,
                            log=lambda m: console.print(f"[dim]{m}[/dim]"))
    rows = [results[b].summary(len(texts), tokens) for b in backends]
    reference = "torch" if "torch" in results else backends[0]
    cosine = quality_against(results, reference)
    from indexers.embedding.onnx_backend import cache_dir
    from indexers.embedding import MINILM_SHA256

    meta_path = cache_dir(MINILM_SHA256) / "meta.json"
    export = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    padding = padding_study(texts)
    quality = None
    if not args.no_quality and Path(args.data).is_dir():
        quality = chroma_quality(Path(args.data), ["torch", "onnx", "onnx-int8"],
                                 {"onnx": "torch", "onnx-int8": "onnx"})
    workers = workers_study(texts[:args.study_texts], args.repeats) if args.workers else None
    only = [label.strip() for label in args.settings_only.split(";") if label.strip()]
    settings = settings_study(texts[:args.study_texts], args.repeats, only) if args.settings else None
    load_after = os.getloadavg()

    baseline = "st" if "st" in results else reference
    console.print(results_table(f"{MODEL} on {os.cpu_count()} CPU cores: {len(texts)} chunks, "
                                f"{tokens:,} tokens, median of {args.repeats}", rows, baseline, cosine, reference))
    table = Table(title="padding at batch 64 (padded tokens / real tokens - 1)", title_justify="left")
    table.add_column("batch order")
    table.add_column("padding", justify="right")
    for label, value in padding.items():
        table.add_row(label, f"{value:.1%}")
    console.print(table)
    if quality:
        table = Table(title=f"retrieval agreement on Chroma ({quality['questions']} questions, "
                            f"{quality['chunks']} chunks, exact top-10)", title_justify="left")
        for column in ("comparison", "recall@10", "identical top-10", "top-1 agree", "cos chunks min/mean",
                       "cos queries min/mean"):
            table.add_column(column, justify="left" if column == "comparison" else "right")
        for label, r in quality["comparisons"].items():
            table.add_row(label, f"{r['recall_at_10']:.4f}", f"{r['questions_with_identical_top10_set']}",
                          f"{r['top1_agreement']:.4f}", f"{r['cosine_chunks_min']:.4f} / {r['cosine_chunks_mean']:.4f}",
                          f"{r['cosine_queries_min']:.4f} / {r['cosine_queries_mean']:.4f}")
        console.print(table)
    if workers:
        for label, r in workers.items():
            console.print(f"workers: {label}: {r['docs_per_s']} docs/s ({r['seconds']})")
    if settings:
        table = Table(title=f"onnx float32 settings ({settings['texts']} texts, median of {args.repeats}; "
                            f"tokenizing: {settings['tokenize_share']:.1%} of the default's time)", title_justify="left")
        for column in ("setting", "docs/s", "× default", "wall s", "cpu s", "min cos to default"):
            table.add_column(column, justify="left" if column == "setting" else "right")
        for label, r in settings["settings"].items():
            table.add_row(label, f"{r['docs_per_s']:.1f}", f"{r['vs_default']:.3f}", f"{r['wall_s']:.2f}",
                          f"{r['cpu_s']:.2f}", f"{r['min_cosine_to_default']:.6f}")
        console.print(table)
    console.print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
                  f"total {time.perf_counter() - started:.0f}s")

    out = {
        "model": MODEL, "texts": {"source": "examples/corpus", "chunks": len(texts), "tokens": tokens,
                                  "truncated": truncated, "chunker": "recursive 200 cl100k, overlap 0"},
        "batch_size": {"st": "32 (SentenceTransformer.encode default)", "others": 64},
        "repeats": args.repeats, "block": args.block, "results": rows, "cosine_vs": reference, "cosine": cosine,
        "padding_at_batch_64": padding, "chroma_quality": quality, "workers": workers,
        "settings": settings,
        "onnx_export": {k: export.get(k) for k in ("fused", "opset", "onnx_bytes", "export_seconds",
                                                   "validation_min_cosine", "int8")},
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after,
                    "platform": platform.platform(), "processor": platform.processor()},
        "versions": package_versions("numpy", "torch", "transformers", "sentence-transformers", "onnxruntime", "onnx", "tokenizers"), "git": git_state(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
