#!/usr/bin/env python
"""Datastore tooling: dedup throughput, peak memory and accuracy on planted near-duplicates;
verify time per GB.

    python benchmarks/tooling.py                 # 3 repetitions, medians
    python benchmarks/tooling.py --repeats 1 --windows 1

Corpus: the five Chroma "general evaluation" corpora cut into passages of ``--words`` words
(``--windows 2`` adds a second pass of passages shifted by half a passage: overlapping but
distinct texts, hard negatives for near-duplicate detection). Planted duplicates, seeded: for a
random ``--planted`` share of the passages one copy is appended at a random later position,
either verbatim with changed case and punctuation (exact) or with 1-3 words substituted,
deleted or inserted (near). The datastore is written by ``DatastoreWriter`` with random unit
vectors of dim 384 (dedup reads only text; the files have the size real embeddings have).

Dedup runs ``datastores.ops.dedup.find_duplicates`` in a child process per configuration and
repetition; peak memory is the child's ``ru_maxrss`` minus that of a child that only streams the
same chunk texts (``scan``), so it is what dedup keeps (signatures, LSH tables, hashes).
Accuracy: recall = planted copies removed / planted copies; recall of detectable copies = the
same over the copies whose exact shingle Jaccard with their source reaches the threshold (for
exact-only: the verbatim copies); planted precision = removed chunks
that are planted copies / removed; pair precision = reported (removed, kept) pairs that are
planted or whose exact shingle Jaccard is >= the threshold (natural duplicates in the corpora
count as correct). Peer: exact all-pairs shingle Jaccard (the quadratic reference) timed on the
first ``--brute`` chunks and extrapolated per chunk at that size.

Verify: ``datastores.verify.verify_datastore`` vs ``sha256sum`` (coreutils) over the same files,
seconds per GB (median). Prints a table and writes ``benchmarks/out/tooling.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from _common import git_state, package_versions  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
DEFAULT_OUT = REPO / "benchmarks" / "out" / "tooling.json"
CONFIGS = {  # name -> find_duplicates keyword arguments
    "exact only": {"exact": True, "near": False},
    "near, shingle 5, J>=0.7": {"exact": True, "near": True, "shingle": 5, "threshold": 0.7},
    "near, shingle 13, J>=0.8 (CLI default)": {"exact": True, "near": True, "shingle": 13, "threshold": 0.8},
}

CHILD = r"""
import json, resource, sys, time
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
root, kwargs = sys.argv[1], json.loads(sys.argv[2])
started = time.perf_counter()
if kwargs.pop("scan", False):
    from datastores.ops.scan import iter_chunk_batches
    n = sum(len(b.chunk_ids) for b in iter_chunk_batches(root, read_manifest(DatastoreLayout(__import__("pathlib").Path(root)))))
    out = {"scanned": n, "pairs": []}
else:
    from datastores.ops.dedup import find_duplicates
    r = find_duplicates(root, max_examples=10**9, **kwargs)
    out = {"scanned": r.scanned, "pairs": [[p.removed, p.kept] for p in r.examples]}
out["seconds"] = time.perf_counter() - started
out["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def passages(data: Path, words: int, windows: int) -> list[str]:
    out = []
    for path in sorted((data / "corpora").glob("*")):
        tokens = path.read_text(encoding="utf-8").split()
        for w in range(windows):
            start = w * words // windows
            out.extend(" ".join(tokens[i:i + words]) for i in range(start, len(tokens) - words + 1, words))
    return out


def near_copy(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(words))
        op = rng.choice(("sub", "del", "ins"))
        if op == "sub":
            words[i] = rng.choice(("alpha", "omega", "delta", "sigma"))
        elif op == "del" and len(words) > 5:
            del words[i]
        else:
            words.insert(i, rng.choice(("indeed", "however", "perhaps")))
    return " ".join(words)


def exact_copy(text: str) -> str:
    return re.sub(r"([.,;:])", r" \1 ", text.upper())


def planted_corpus(base: list[str], share: float, seed: int) -> tuple[list[str], dict[int, int]]:
    """Texts with planted copies and {copy position: source position}."""
    rng = random.Random(seed)
    texts = list(base)
    sources = rng.sample(range(len(base)), round(share * len(base)))
    inserts = []
    for src in sources:
        copy = exact_copy(base[src]) if rng.random() < 0.3 else near_copy(base[src], rng)
        inserts.append((rng.randint(src + 1, len(base)), src, copy))
    # copies land after their source (insertion points counted in the base order)
    inserts.sort(key=lambda x: x[0])
    order: list[tuple[str, int | None]] = [(t, None) for t in base]
    offset = 0
    for pos, src, copy in inserts:
        order.insert(pos + offset, (copy, src))
        offset += 1
    index_of_base = {}
    final, planted = [], {}
    for text, src in order:
        if src is None:
            index_of_base[len(index_of_base)] = len(final)
        final.append(text)
    for i, (text, src) in enumerate(order):
        if src is not None:
            planted[i] = index_of_base[src]
    return final, planted


def write_datastore(root: Path, texts: list[str], shard_size: int) -> None:
    import numpy as np

    from datastores import Bm25Params, DatastoreWriter
    from datastores.records import Chunk

    writer = DatastoreWriter(root, {"benchmark": "tooling"}, {"name": "random-384", "normalized": True},
                             {"name": "words", "chunk_size": 0, "overlap": 0, "tokenizer": "none"}, Bm25Params())
    rng = np.random.default_rng(0)
    for start in range(0, len(texts), shard_size):
        part = texts[start:start + shard_size]
        vectors = rng.standard_normal((len(part), 384)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        writer.add_shard([Chunk(f"p{start + i}", 0, len(t), t) for i, t in enumerate(part)], vectors, start)
    writer.finish({"documents": len(texts)}, 384)


def run_child(root: Path, kwargs: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(root), json.dumps(kwargs)], capture_output=True,
                          text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def shingles(text: str, n: int) -> set:
    from datastores.ops.minhash import word_shingles

    return word_shingles(text, n)


def accuracy(pairs: list[list[int]], planted: dict[int, int], texts: list[str], shingle: int | None,
             threshold: float | None) -> dict:
    removed = {r for r, _ in pairs}
    true_removed = removed & set(planted)
    ok_pairs = 0
    for r, k in pairs:
        if r in planted:
            ok_pairs += 1
        elif shingle is None:
            from datastores.ops.minhash import exact_key
            ok_pairs += exact_key(texts[r]) == exact_key(texts[k])
        else:
            a, b = shingles(texts[r], shingle), shingles(texts[k], shingle)
            ok_pairs += len(a & b) / len(a | b) >= threshold
    if shingle is None:
        from datastores.ops.minhash import exact_key
        detectable = {c for c, src in planted.items() if exact_key(texts[c]) == exact_key(texts[src])}
    else:
        detectable = set()
        for c, src in planted.items():
            a, b = shingles(texts[c], shingle), shingles(texts[src], shingle)
            if len(a & b) / len(a | b) >= threshold:
                detectable.add(c)
    return {"removed": len(removed), "recall": len(true_removed) / len(planted),
            "detectable": len(detectable),
            "recall_detectable": len(removed & detectable) / len(detectable) if detectable else None,
            "planted_precision": len(true_removed) / len(removed) if removed else None,
            "pair_precision": ok_pairs / len(pairs) if pairs else None}


def brute_force_seconds_per_chunk(texts: list[str], shingle: int, threshold: float) -> tuple[float, int]:
    sets = [shingles(t, shingle) for t in texts]
    started = time.perf_counter()
    found = 0
    for i in range(len(sets)):
        a = sets[i]
        for j in range(i):
            b = sets[j]
            inter = len(a & b)
            if inter and inter / (len(a) + len(b) - inter) >= threshold:
                found += 1
                break
    return (time.perf_counter() - started) / len(texts), found


def sha256sum_seconds(files: list[Path]) -> float:
    started = time.perf_counter()
    subprocess.run(["sha256sum", *map(str, files)], capture_output=True, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--words", type=int, default=80)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--planted", type=float, default=0.2)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--brute", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()

    base = passages(args.data, args.words, args.windows)
    texts, planted = planted_corpus(base, args.planted, args.seed)
    work = Path(tempfile.mkdtemp(prefix="terarag-tooling-"))
    try:
        root = work / "ds"
        write_datastore(root, texts, args.shard_size)
        results = {}
        scan = [run_child(root, {"scan": True}) for _ in range(args.repeats)]
        base_rss = statistics.median(r["maxrss_kib"] for r in scan)
        results["scan only (baseline)"] = {"seconds": statistics.median(r["seconds"] for r in scan),
                                           "chunks_per_s": len(texts) / statistics.median(r["seconds"] for r in scan),
                                           "peak_rss_mib": base_rss / 1024, "extra_rss_mib": 0.0}
        for name, kwargs in CONFIGS.items():
            runs = [run_child(root, dict(kwargs)) for _ in range(args.repeats)]
            seconds = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["maxrss_kib"] for r in runs)
            results[name] = {"seconds": seconds, "chunks_per_s": len(texts) / seconds, "peak_rss_mib": rss / 1024,
                             "extra_rss_mib": (rss - base_rss) / 1024,
                             **accuracy(runs[0]["pairs"], planted, texts, kwargs.get("shingle") if kwargs["near"] else None,
                                        kwargs.get("threshold"))}
        brute_per_chunk, _ = brute_force_seconds_per_chunk(texts[:args.brute], 5, 0.7)
        results[f"brute-force exact Jaccard, first {args.brute} chunks"] = {
            "chunks_per_s": 1 / brute_per_chunk, "note": "O(n^2): per-chunk cost grows with n"}

        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.json")
        size = sum(p.stat().st_size for p in files)
        from datastores.verify import verify_datastore

        verify_runs, sum_runs = [], []
        for _ in range(args.repeats):
            report = verify_datastore(root)
            assert report.ok, report.problems
            verify_runs.append(report.seconds)
            sum_runs.append(sha256sum_seconds(files))
        verify = {"bytes": size, "files": len(files),
                  "verify_s_per_gb": statistics.median(verify_runs) / (size / 1e9),
                  "sha256sum_s_per_gb": statistics.median(sum_runs) / (size / 1e9)}
    finally:
        shutil.rmtree(work, ignore_errors=True)

    out = {"corpus": {"chunks": len(texts), "base_passages": len(base), "planted_copies": len(planted),
                      "words_per_passage": args.words, "windows": args.windows, "seed": args.seed},
           "repeats": args.repeats, "dedup": results, "verify": verify, "git": git_state(),
           "versions": package_versions("datasketch", "numpy", "pyarrow", "faiss-cpu")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(texts)} chunks ({len(planted)} planted copies), medians of {args.repeats}")
    print(f"{'configuration':45} {'chunks/s':>10} {'extra MiB':>10} {'recall':>7} {'rec.det':>7} {'prec':>6} "
          f"{'pairs ok':>8}")
    for name, r in results.items():
        fmt = lambda v, f: (f.format(v) if isinstance(v, (int, float)) else "-")
        print(f"{name:45} {r['chunks_per_s']:10.0f} {fmt(r.get('extra_rss_mib'), '{:10.1f}'):>10} "
              f"{fmt(r.get('recall'), '{:.3f}'):>7} {fmt(r.get('recall_detectable'), '{:.3f}'):>7} "
              f"{fmt(r.get('planted_precision'), '{:.3f}'):>6} "
              f"{fmt(r.get('pair_precision'), '{:.3f}'):>8}")
    print(f"verify: {verify['verify_s_per_gb']:.2f} s/GB (sha256sum {verify['sha256sum_s_per_gb']:.2f} s/GB) "
          f"over {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
