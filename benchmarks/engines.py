#!/usr/bin/env python
"""Build throughput and peak memory versus shard size: the local engine vs the Ray engine.

    python benchmarks/engines.py                         # stub embedder, Chroma corpora at 100 tokens, 3 reps
    python benchmarks/engines.py --real-rows             # also one real-embedder (MiniLM) pair of rows

Each build runs in a fresh child process (``indexers.build_datastore`` with ``EngineOptions``;
for Ray the child starts a local cluster with ``--cpus`` CPUs first and reports that start-up
apart). A sampler thread adds up the RSS of the child and all its descendants every 20 ms (for
Ray: the raylet, GCS and the worker processes; shared pages are counted once per process, so
the sum over-counts) and reports:

- ``peak tree RSS``: the highest sum during ``build_datastore``;
- ``peak driver RSS``: the child's own peak (the process that reads, chunks and commits).

Throughput is chunks / wall seconds of ``build_datastore`` (Ray: worker start-up and model loads
included, cluster start-up not). Medians over ``--reps`` runs. Every Ray build is checked to have
the content checksum of the local build at the same shard size.

``--stub`` (default) embeds with the deterministic hash-seeded random-vector embedder of
``benchmarks/build.py`` so that the engines' own costs (scheduling, transfer, writing) are visible;
``--real-rows`` adds all-MiniLM-L6-v2 rows (ONNX on CPU) on a smaller corpus.
Writes ``benchmarks/out/engines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for path in (REPO, HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import git_state, package_versions  # noqa: E402

CHROMA = REPO.parent / "shared" / "data" / "chroma_general_eval" / "corpora"
SOTU = REPO / "examples" / "corpus" / "sotu"
OUT = REPO / "benchmarks" / "out" / "engines.json"
MIB = 1024 * 1024


class TreeRss(threading.Thread):
    """Peak RSS of this process alone and of it plus all descendants, sampled every ``interval`` s."""

    def __init__(self, interval: float = 0.02):
        super().__init__(daemon=True)
        import psutil

        self.psutil = psutil
        self.process = psutil.Process()
        self.interval = interval
        self.peak_tree = 0
        self.peak_self = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        total = own = self.process.memory_info().rss
        for child in self.process.children(recursive=True):
            try:
                total += child.memory_info().rss
            except self.psutil.Error:
                pass
        self.peak_tree = max(self.peak_tree, total)
        self.peak_self = max(self.peak_self, own)

    def reset(self) -> None:
        self.peak_tree = self.peak_self = 0
        self.sample()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def child(spec: dict) -> dict:
    from indexers import build_datastore
    from indexers.config import BuildConfig
    from indexers.engines import EngineOptions

    sampler = TreeRss()
    sampler.start()
    config = BuildConfig(chunk_size=spec["chunk_size"], overlap=0, shard_size=spec["shard_size"], device="cpu")
    startup = 0.0
    factory = None
    if spec["stub"]:
        from build import StubEmbedder

        embedder = StubEmbedder()
        factory = StubEmbedder
    else:
        from indexers.embedding import load_embedder

        embedder = load_embedder(config.embedder, "cpu", config.batch_size)
    engine = EngineOptions(spec["engine"]) if spec["engine"] == "local" else EngineOptions("ray", max_retries=1)
    if spec["engine"] == "ray":
        import ray

        if spec["stub"]:  # benchmarks/ is not importable in the workers: ship the stub by value
            ray.cloudpickle.register_pickle_by_value(sys.modules[StubEmbedder.__module__])
        started = time.perf_counter()
        ray.init(num_cpus=spec["cpus"], include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        startup = time.perf_counter() - started
    sampler.reset()
    started = time.perf_counter()
    report = build_datastore(spec["inputs"], spec["output"], config, embedder=embedder, progress=False,
                             engine=engine, embedder_factory=factory)
    seconds = time.perf_counter() - started
    sampler.stop()
    if spec["engine"] == "ray":
        import ray

        ray.shutdown()
    return {"chunks": report.chunks, "shards": len(report.manifest.shards), "seconds": seconds,
            "chunks_per_s": report.chunks / seconds, "peak_tree_rss": sampler.peak_tree,
            "peak_driver_rss": sampler.peak_self, "ray_startup_s": startup,
            "checksum": report.manifest.content_checksum, "timings": report.timings}


def run_child(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        spec = {**spec, "output": str(Path(tmp) / "ds"), "inputs": [str(Path(p).resolve()) for p in spec["inputs"]]}
        result_file = Path(tmp) / "result.json"
        code = (f"import json, sys; sys.path[:0] = {[str(REPO), str(HERE)]!r}; import engines; "
                f"json.dump(engines.child(json.loads(sys.argv[1])), open(sys.argv[2], 'w'))")
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec), str(result_file)],
                              cwd=HERE, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed ({spec['engine']}, shard {spec['shard_size']}):\n{proc.stderr[-3000:]}")
        return json.loads(result_file.read_text())


def median_row(runs: list[dict]) -> dict:
    out = {k: runs[0][k] for k in ("chunks", "shards", "checksum")}
    for key in ("seconds", "chunks_per_s", "peak_tree_rss", "peak_driver_rss", "ray_startup_s"):
        out[key] = statistics.median(r[key] for r in runs)
    out["runs"] = [{k: r[k] for k in ("seconds", "chunks_per_s", "peak_tree_rss", "peak_driver_rss")} for r in runs]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", nargs="+", default=[str(CHROMA)])
    parser.add_argument("--chunk-size", type=int, default=100)
    parser.add_argument("--shard-sizes", default="100,400,1600")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--real-rows", action="store_true", help="add MiniLM rows on --real-inputs")
    parser.add_argument("--real-inputs", nargs="+", default=[str(SOTU)])
    parser.add_argument("--real-shard-size", type=int, default=100)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    rows = []

    def measure(label: str, inputs: list[str], shard_size: int, stub: bool, reps: int) -> None:
        checksums = {}
        for engine in ("local", "ray"):
            spec = {"inputs": inputs, "chunk_size": args.chunk_size, "shard_size": shard_size, "stub": stub,
                    "engine": engine, "cpus": args.cpus}
            runs = [run_child(spec) for _ in range(reps)]
            row = {"embedder": label, "engine": engine, "shard_size": shard_size, **median_row(runs)}
            checksums[engine] = row["checksum"]
            rows.append(row)
            print(f"{label:8s} {engine:5s} shard {shard_size:5d}: {row['chunks']} chunks in {row['shards']} shards, "
                  f"{row['chunks_per_s']:8.1f} chunks/s, peak tree RSS {row['peak_tree_rss'] / MIB:7.0f} MiB, "
                  f"driver {row['peak_driver_rss'] / MIB:6.0f} MiB"
                  + (f", ray start {row['ray_startup_s']:.1f}s" if engine == "ray" else ""), flush=True)
        same = checksums["local"] == checksums["ray"]
        rows[-1]["same_datastore_as_local"] = rows[-2]["same_datastore_as_local"] = same
        if not same:
            print("  !! the Ray build differs from the local build", flush=True)

    for shard_size in (int(s) for s in args.shard_sizes.split(",")):
        measure("stub", args.inputs, shard_size, True, args.reps)
    if args.real_rows:
        measure("MiniLM", args.real_inputs, args.real_shard_size, False, 1)
    result = {"rows": rows, "settings": vars(args), "cpu_count": os.cpu_count(), "git": git_state(),
              "versions": package_versions("ray", "faiss-cpu", "onnxruntime", "numpy"),
              "note": "machine shared with other jobs during the run"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
