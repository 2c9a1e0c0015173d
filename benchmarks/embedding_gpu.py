#!/usr/bin/env python
"""Embedding on a CUDA GPU: plain sentence-transformers against terarag's torch-fp16 path, and the
whole ``rag index`` with and without overlapped reading and writing.

    python benchmarks/embedding_gpu.py --model MODEL_DIR --texts docs.jsonl [--build]

Needs a CUDA GPU (it exits with a message otherwise). Texts: the ``text`` fields of a JSONL file
(``benchmarks/txtai_compare.py`` writes the 5,000-document corpus used in docs/benchmarks.md),
repeated ``--copies`` times so that each repetition takes long enough to time. Systems, all with
the same model folder:

- ``st-fp32``: plain ``SentenceTransformer(path, device="cuda").encode(texts,
  normalize_embeddings=True)``, float32 weights, its default batch size 32: the baseline;
- ``st-fp16``: the same after ``model.half()``, batch 32 and batch 256;
- ``terarag b=N``: ``load_embedder(path, device="cuda", backend="torch", batch_size=N)`` (float16,
  token ids fed straight to the model through pinned, asynchronous copies, one transfer back
  per call; ``indexers.torch_feed``).

Repetitions are interleaved (every system once per round, order rotating); docs/s are medians.
Single-query latency: median of ``--queries`` one-text ``encode`` calls after warm-up. Quality:
cosine of each system's vectors to ``st-fp32``'s, and the overlap of top-10 neighbour lists
(the first 500 texts searched among all texts by dot product) with ``st-fp32``'s; with
``--reference`` (float32 CPU vectors of the first texts, ``.npy``) also the cosine to those.

``--build`` also times ``rag index TEXTS`` in fresh processes (``--device cuda``), with
``--overlap-io`` (default) and ``--no-overlap-io``, ``--build-rounds`` interleaved rounds.
Writes ``--out`` (JSON) and prints tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks._common import git_state, package_versions  # noqa: E402

console = Console(width=130)


def read_texts(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def plain_st(model: str, half: bool, batch_size: int, device: str):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model, device=device, local_files_only=True)
    st = st.half() if half else st.float()

    def encode(texts: list[str]) -> np.ndarray:
        out = st.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False)
        return out.astype(np.float32)
    return encode


def terarag(model: str, batch_size: int, device: str):
    from indexers.embedding import load_embedder

    embedder = load_embedder(model, device=device, backend="torch", batch_size=batch_size).backend

    def encode(texts: list[str]) -> np.ndarray:
        return embedder.encode(texts)
    return encode


def neighbours(vectors: np.ndarray, device: str, queries: int = 500, k: int = 10) -> np.ndarray:
    import torch

    v = torch.from_numpy(vectors).to(device)
    scores = v[:queries] @ v.T
    return torch.topk(scores, k + 1, dim=1).indices[:, 1:].cpu().numpy()


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(x) for x, y in zip(a, b)]))


def copies_of(texts_file: Path, copies: int, folder: Path) -> Path:
    """``texts_file`` repeated ``copies`` times, with distinct document ids."""
    if copies == 1:
        return texts_file
    target = folder / f"{texts_file.stem}-x{copies}.jsonl"
    with open(texts_file, encoding="utf-8") as source, open(target, "w", encoding="utf-8") as out:
        rows = [json.loads(line) for line in source if line.strip()]
        for copy in range(copies):
            for row in rows:
                out.write(json.dumps({**row, "id": f"{row['id']}-{copy}"}) + "\n")
    return target


def time_build(texts_file: Path, model: str, overlap_io: bool, out_root: Path, device: str) -> dict:
    out = out_root / f"ds-{overlap_io}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "ragcli", "index", str(texts_file), "-o", str(out), "--embedder", model,
               "--device", device, "-q", "--overlap-io" if overlap_io else "--no-overlap-io"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    manifest = json.loads((out / "manifest.json").read_text())
    return {"wall_s": round(wall, 2), "chunks": sum(s["rows"] for s in manifest["shards"]),
            "stdout_tail": done.stdout[-1500:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="sentence-transformers model folder")
    parser.add_argument("--texts", required=True, type=Path, help="JSONL with a 'text' field")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch-sizes", default="64,256,1024")
    parser.add_argument("--reference", type=Path, default=None)
    parser.add_argument("--build", action="store_true")
    parser.add_argument("--skip-encode", action="store_true", help="only the --build timings")
    parser.add_argument("--st-systems", default="st-fp32,st-fp16,st-fp16 b=256",
                        help="comma-separated plain sentence-transformers systems to run")
    parser.add_argument("--build-rounds", type=int, default=3)
    parser.add_argument("--build-copies", type=int, default=1, help="index the texts file repeated N times")
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu for a dry run of the script")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "embedding_gpu.json")
    args = parser.parse_args()

    import torch

    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        console.print("no CUDA GPU here: nothing to measure")
        return
    report: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else device,
                    "tokenizers_parallelism": os.environ.get("TOKENIZERS_PARALLELISM"), "git": git_state(),
                    "versions": package_versions("torch", "sentence-transformers", "transformers", "tokenizers")}
    if not args.skip_encode:
        report.update(encode_study(args, device))
    if args.build:
        report["builds"] = build_study(args, device)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    console.print(f"wrote {args.out}")


def encode_study(args: argparse.Namespace, device: str) -> dict:
    """docs/s, single-query latency and agreement of every system on the same texts."""
    import torch

    docs = read_texts(args.texts)
    texts = docs * args.copies
    recipes = {"st-fp32": (False, 32), "st-fp16": (True, 32), "st-fp16 b=256": (True, 256)}
    wanted = ["st-fp32"] + [n for n in args.st_systems.split(",") if n in recipes and n != "st-fp32"]
    systems = {name: plain_st(args.model, recipes[name][0], recipes[name][1], device) for name in wanted
               if device == "cuda" or not recipes[name][0]}
    for b in [int(x) for x in args.batch_sizes.split(",")]:
        systems[f"terarag b={b}"] = terarag(args.model, b, device)
    from indexers.embedding import load_embedder

    counter = load_embedder(args.model, device=device, backend="torch").backend
    counter.encode(docs)
    tokens_per_copy = counter.last_stats.tokens
    truncated = counter.last_stats.truncated

    vectors = {}
    for name, encode in systems.items():  # warm-up (CUDA kernels, allocator), vectors for quality
        vectors[name] = encode(docs)
    times: dict[str, list[float]] = {name: [] for name in systems}
    names = list(systems)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            systems[name](texts)
            times[name].append(time.perf_counter() - started)
    latency = {}
    for name, encode in systems.items():
        samples = []
        for q in docs[:args.queries]:
            started = time.perf_counter()
            encode([q[:200]])
            samples.append(time.perf_counter() - started)
        latency[name] = statistics.median(samples) * 1000
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else device
    base = vectors["st-fp32"]
    base_nn = neighbours(base, device)
    reference = np.load(args.reference) if args.reference else None
    rows = {}
    for name in systems:
        seconds = statistics.median(times[name])
        v = vectors[name]
        cos = np.sum(v * base, axis=1)
        row = {"docs_per_s": round(len(texts) / seconds, 1), "best_docs_per_s": round(len(texts) / min(times[name]), 1),
               "tokens_per_s": round(tokens_per_copy * args.copies / seconds), "seconds": [round(t, 3) for t in times[name]],
               "x_st_fp32": None, "single_query_ms": round(latency[name], 2),
               "cosine_to_st_fp32_min": round(float(cos.min()), 6), "cosine_to_st_fp32_mean": round(float(cos.mean()), 6),
               "top10_overlap_with_st_fp32": round(overlap(neighbours(v, device), base_nn), 4)}
        if reference is not None:
            ref_cos = np.sum(v[:len(reference)] * reference, axis=1)
            row["cosine_to_cpu_fp32_min"] = round(float(ref_cos.min()), 6)
            row["cosine_to_cpu_fp32_mean"] = round(float(ref_cos.mean()), 6)
        rows[name] = row
    for row in rows.values():
        row["x_st_fp32"] = round(row["docs_per_s"] / rows["st-fp32"]["docs_per_s"], 2)

    table = Table(title=f"{len(texts):,} texts ({len(docs):,} x {args.copies}), {tokens_per_copy * args.copies:,} tokens, "
                        f"{device_name}")
    for col in ("system", "docs/s", "best", "tokens/s", "x st-fp32", "1 query ms", "cos min", "top-10 overlap"):
        table.add_column(col, justify="left" if col == "system" else "right")
    for name, row in rows.items():
        table.add_row(name, f"{row['docs_per_s']:,.0f}", f"{row['best_docs_per_s']:,.0f}", f"{row['tokens_per_s']:,}",
                      f"{row['x_st_fp32']:.2f}", f"{row['single_query_ms']:.2f}", f"{row['cosine_to_st_fp32_min']:.5f}",
                      f"{row['top10_overlap_with_st_fp32']:.4f}")
    console.print(table)
    if reference is not None:
        for name, row in rows.items():
            console.print(f"{name}: cosine to CPU float32 vectors min {row['cosine_to_cpu_fp32_min']} "
                          f"mean {row['cosine_to_cpu_fp32_mean']}")

    return {"texts": len(texts), "distinct_texts": len(docs), "tokens": tokens_per_copy * args.copies,
            "truncated_per_copy": truncated, "repeats": args.repeats, "systems": rows}


def build_study(args: argparse.Namespace, device: str) -> dict:
    """Wall time of whole ``rag index`` runs with and without overlapped reading and writing."""
    builds: dict[str, list[dict]] = {"overlap": [], "no-overlap": []}
    with tempfile.TemporaryDirectory() as tmp:
        corpus = copies_of(args.texts, args.build_copies, Path(tmp))
        time_build(corpus, args.model, True, Path(tmp), device)  # warm-up: file cache, CUDA init
        for r in range(args.build_rounds):
            order = [True, False] if r % 2 == 0 else [False, True]
            for overlap_io in order:
                builds["overlap" if overlap_io else "no-overlap"].append(
                    time_build(corpus, args.model, overlap_io, Path(tmp), device))
    result = {k: {"wall_s": [b["wall_s"] for b in v], "median_s": statistics.median(b["wall_s"] for b in v),
                  "chunks": v[0]["chunks"]} for k, v in builds.items()}
    console.print(result)
    console.print(builds["overlap"][0]["stdout_tail"])
    console.print(builds["no-overlap"][0]["stdout_tail"])
    return result


if __name__ == "__main__":
    main()
