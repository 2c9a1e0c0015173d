#!/usr/bin/env python
"""Index throughput and peak memory of the streaming build, for two corpus sizes at one shard size.

    python benchmarks/build.py                          # example corpus vs example + Chroma corpora
    python benchmarks/build.py --stub-embedder --replicate 10   # no model: 10x bigger, seconds

Each build runs in a fresh child process doing what ``rag index INPUTS -o OUT --shard-size N``
does (``indexers.build_datastore`` with the same config; the embedder is loaded first so its load
time is reported apart). The child samples its own RSS every 10 ms and reports:

- ``RSS after model``: resident memory once the embedding model is loaded (the fixed cost);
- ``peak RSS during build``: the highest sample while ``build_datastore`` ran;
- ``build over model``: the difference, i.e. what the build itself holds (should not grow with
  the corpus: one shard of chunks and vectors is in memory at a time);
- ``ru_maxrss``: the kernel's lifetime peak of the child, model loading included.

Throughput is chunks / (read+chunk + embed + write), from ``BuildReport.timings``.

``--stub-embedder`` replaces the model by a deterministic hash-seeded random unit-vector embedder
(same 384 dims) so that much larger corpora can be built quickly to check memory and the
non-embedding stages; its figures say nothing about embedding speed.

Prints a table and writes ``benchmarks/out/build.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import git_state, package_versions, short_path  # noqa: E402  (benchmarks/ is sys.path[0])

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "build.json"
EXAMPLE_CORPUS = REPO / "examples" / "corpus"
MIB = 1024 * 1024


# -- child ---------------------------------------------------------------------------------------

class StubEmbedder:
    """Deterministic random unit vectors (seeded by the text's hash); no model, no torch."""

    dim = 384
    name = "stub-random-384"

    @property
    def spec(self) -> dict:
        return {"name": self.name, "weights_sha256": None, "normalized": True, "max_seq_length": 256,
                "backend": "benchmark-stub"}

    def encode(self, texts, batch_size=None, progress=None):
        import numpy as np

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        if progress is not None:
            progress(len(texts))
        return out

    __call__ = encode


class RssSampler(threading.Thread):
    """Samples this process's RSS; ``peak_since_mark`` is the highest sample after ``mark()``."""

    def __init__(self, interval: float = 0.01):
        super().__init__(daemon=True)
        import psutil

        self.process = psutil.Process()
        self.interval = interval
        self.peak_since_mark = 0
        self.peak_since_window = 0
        self.samples = 0
        self._halt = threading.Event()

    def mark(self) -> int:
        rss = self.process.memory_info().rss
        self.peak_since_mark = rss
        return rss

    def window_peak(self) -> int:
        """Peak since the last ``window_peak`` call (or ``mark``), then start a new window."""
        rss = self.process.memory_info().rss
        peak = max(self.peak_since_window, rss)
        self.peak_since_window = rss
        return peak

    def run(self) -> None:
        while not self._halt.is_set():
            rss = self.process.memory_info().rss
            self.peak_since_mark = max(self.peak_since_mark, rss)
            self.peak_since_window = max(self.peak_since_window, rss)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


class ShardProbe:
    """Wraps the embedder; ``encode`` is called once per shard, so it records the RSS peak of each
    stretch between two shards (read+chunk of one shard, embedding it, writing the one before)."""

    def __init__(self, embedder, sampler: RssSampler):
        self.embedder = embedder
        self.sampler = sampler
        self.peaks: list[int] = []
        self.dim = embedder.dim
        self.spec = embedder.spec
        self.name = embedder.name

    def encode(self, texts, batch_size=None, progress=None):
        self.peaks.append(self.sampler.window_peak())
        return self.embedder.encode(texts, batch_size, progress=progress)


def child(spec_file: Path) -> None:
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    sampler = RssSampler()
    sampler.start()
    started = time.perf_counter()
    from indexers import Embedder, build_datastore, load_embedder
    from indexers.config import BuildConfig

    config = BuildConfig().replace(chunk_size=spec["chunk_size"], shard_size=spec["shard_size"],
                                   batch_size=spec["batch_size"], device=spec["device"])
    rss_imports = sampler.mark()
    embedder = StubEmbedder() if spec["stub"] else load_embedder(config.embedder, config.device, config.batch_size).backend
    if not spec["stub"]:
        import torch

        torch_threads = torch.get_num_threads()
    else:
        torch_threads = None
    load_seconds = time.perf_counter() - started
    rss_model = sampler.mark()
    sampler.window_peak()
    probe = ShardProbe(embedder, sampler)
    build_started = time.perf_counter()
    report = build_datastore(spec["inputs"], spec["output"], config, embedder=Embedder(backend=probe), progress=False)
    build_seconds = time.perf_counter() - build_started
    peak_build = sampler.peak_since_mark
    # per_shard[i]: peak while shard i was read, chunked and embedded (and shard i-1 written);
    # the last entry also covers writing the last shard and the manifest.
    per_shard = probe.peaks[1:] + [sampler.window_peak()]
    sampler.stop()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    manifest = report.manifest
    result = {
        "chunks": report.chunks,
        "shards": len(manifest.shards),
        "documents": manifest.stats.get("documents"),
        "files": manifest.stats.get("files"),
        "tokens": manifest.stats.get("tokens"),
        "characters": manifest.stats.get("characters"),
        "timings": report.timings,
        "build_seconds": build_seconds,
        "startup_and_model_load_seconds": load_seconds,
        "rss_after_imports": rss_imports,
        "rss_after_model": rss_model,
        "peak_rss_during_build": peak_build,
        "ru_maxrss": maxrss,
        "rss_samples": sampler.samples,
        "peak_rss_per_shard": per_shard,
        "torch_threads": torch_threads,
        "embedder": manifest.embedder.get("name"),
    }
    Path(spec["result"]).write_text(json.dumps(result), encoding="utf-8")


# -- parent --------------------------------------------------------------------------------------

def replicate(paths: list[Path], copies: int, folder: Path) -> list[Path]:
    """``copies`` copies of every file under ``paths`` with distinct names (so distinct doc ids)."""
    files = []
    for p in paths:
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    for r in range(copies):
        for f in files:
            target = folder / f"copy{r:03d}" / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    return [folder]


def run_child(name: str, inputs: list[Path], args, work: Path) -> dict:
    output = work / f"ds-{name}"
    spec = {"inputs": [str(p) for p in inputs], "output": str(output), "chunk_size": args.chunk_size,
            "shard_size": args.shard_size, "batch_size": args.batch_size, "device": args.device,
            "stub": args.stub_embedder, "result": str(work / f"{name}.json")}
    spec_file = work / f"{name}-spec.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    print(f"building {name}: {', '.join(short_path(p) for p in inputs)} ...", flush=True)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file)],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        sys.exit(f"the {name} build failed (exit {proc.returncode})")
    result = json.loads((work / f"{name}.json").read_text(encoding="utf-8"))
    result.update(name=name, inputs=[short_path(p) for p in inputs], child_wall_seconds=wall)
    t = result["timings"]
    result["stage_seconds"] = sum(t.values())
    result["chunks_per_second"] = result["chunks"] / result["stage_seconds"]
    result["build_over_model"] = result["peak_rss_during_build"] - result["rss_after_model"]
    per_shard = result["peak_rss_per_shard"]
    half = max(1, len(per_shard) // 2)
    result["peak_rss_first_half_of_shards"] = max(per_shard[:half])
    result["peak_rss_second_half_of_shards"] = max(per_shard[half:] or per_shard)
    if not args.keep:
        shutil.rmtree(output, ignore_errors=True)
    print(f"  {result['chunks']:,} chunks in {result['stage_seconds']:.1f}s "
          f"({result['chunks_per_second']:.1f} chunks/s), peak RSS {result['peak_rss_during_build'] / MIB:,.0f} MiB",
          flush=True)
    return result



def print_table(results: list[dict], args) -> None:
    print()
    print(f"shard size {args.shard_size}, chunk size {args.chunk_size} tokens, batch {args.batch_size}, "
          f"embedder {results[0]['embedder']}, {os.cpu_count()} CPUs")
    head = (f"{'corpus':<7} {'docs':>5} {'chunks':>7} {'shards':>6} {'read+chunk':>10} {'embed':>8} {'write':>7} "
            f"{'chunks/s':>8} {'RSS model':>10} {'peak build':>10} {'build-model':>11} {'ru_maxrss':>10}")
    print(head)
    for r in results:
        t = r["timings"]
        print(f"{r['name']:<7} {r['documents']:>5,} {r['chunks']:>7,} {r['shards']:>6} {t['read_chunk']:>9.1f}s "
              f"{t['embed']:>7.1f}s {t['write']:>6.1f}s {r['chunks_per_second']:>8.1f} "
              f"{r['rss_after_model'] / MIB:>6,.0f} MiB {r['peak_rss_during_build'] / MIB:>6,.0f} MiB "
              f"{r['build_over_model'] / MIB:>7,.0f} MiB {r['ru_maxrss'] / MIB:>6,.0f} MiB")
    print("peak RSS per shard (MiB):")
    for r in results:
        peaks = [round(p / MIB) for p in r["peak_rss_per_shard"]]
        print(f"  {r['name']:<7} " + " ".join(map(str, peaks)))
    if len(results) >= 2:
        a, b = results[0], results[-1]
        print(f"\n{b['name']} has {b['chunks'] / a['chunks']:.1f}x the chunks of {a['name']}; peak RSS during the "
              f"build changes by {(b['peak_rss_during_build'] - a['peak_rss_during_build']) / MIB:+.0f} MiB "
              f"({b['peak_rss_during_build'] / a['peak_rss_during_build']:.2f}x), the build's own share by "
              f"{(b['build_over_model'] - a['build_over_model']) / MIB:+.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="chroma_general_eval folder (default: <repo>/../shared/data/chroma_general_eval)")
    parser.add_argument("--small", type=Path, nargs="+", default=None,
                        help="inputs of the small build (default: <repo>/examples/corpus)")
    parser.add_argument("--large", type=Path, nargs="+", default=None,
                        help="inputs of the large build (default: the small inputs plus <data>/corpora)")
    parser.add_argument("--replicate", type=int, default=1,
                        help="copy the large inputs N times (distinct file names) into a temp folder")
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--chunk-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stub-embedder", action="store_true",
                        help="random unit vectors instead of the model (memory and non-embedding stages only)")
    parser.add_argument("--keep", action="store_true", help="keep the two datastores in benchmarks/out/datastores/")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default benchmarks/out/build.json, build-stub.json with --stub-embedder)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return

    small = args.small or [EXAMPLE_CORPUS]
    large = args.large or [*small, args.data / "corpora"]
    for p in [*small, *large]:
        if not p.exists():
            sys.exit(f"{p} does not exist (pass --data, --small or --large)")
    out = args.out or DEFAULT_OUT.with_name("build-stub.json" if args.stub_embedder else "build.json")
    with tempfile.TemporaryDirectory(prefix="terarag-build-bench-") as tmp:
        work = Path(tmp)
        if args.replicate > 1:
            large = replicate(large, args.replicate, work / "large-inputs")
        results = [run_child("small", small, args, work), run_child("large", large, args, work)]
        if args.keep:
            kept = REPO / "benchmarks" / "out" / "datastores"
            shutil.rmtree(kept, ignore_errors=True)
            for name in ("small", "large"):
                shutil.copytree(work / f"ds-{name}", kept / name)
            print(f"datastores kept in {short_path(kept)}")
    print_table(results, args)
    report = {
        "benchmark": "build",
        "machine": {"nproc": os.cpu_count(), "sched_affinity": len(os.sched_getaffinity(0)),
                    "platform": platform.platform(), "processor": platform.processor()},
        "versions": package_versions("torch", "sentence-transformers", "numpy", "faiss-cpu", "pyarrow", "duckdb", "terarag"),
        "git": git_state(),
        "data": short_path(args.data),
        "settings": {k: ([short_path(p) for p in v] if isinstance(v, list) else (short_path(v) if isinstance(v, Path) else v))
                     for k, v in vars(args).items() if k not in ("child", "data")},
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {short_path(out)}")


if __name__ == "__main__":
    main()
