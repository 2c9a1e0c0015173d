#!/usr/bin/env python
"""Datastore tooling: dedup throughput, peak memory and accuracy on planted near-duplicates;
verify time per GB.

    python benchmarks/tooling.py                 # 3 repetitions, medians
    python benchmarks/tooling.py --repeats 1 --windows 1

Corpus: the five Chroma "general evaluation" corpora cut into passages of ``--words`` words
(``--windows 2`` adds a second pass of passages shifted by half a passage: overlapping but
distinct texts, hard negatives for near-duplicate detection). Planted duplicates, seeded: for a
random ``--planted`` share of the passages one copy is appended at a random later position,
either verbatim with changed case and punctuation (exact, 30 %) or with one word replaced by a
new one ``k`` words from the end, ``k`` in ``LEVEL_EDITS``, which sets the copy's exact 13-word
shingle Jaccard with its source to about ``(S − k) / (S + k)`` for ``S`` shingles: levels from
0.70 to 0.92, around the default threshold 0.8. The datastore is written by ``DatastoreWriter``
with random unit vectors of dim 384 (dedup reads only text; the files have the size real
embeddings have).

Dedup runs ``datastores.ops.dedup.find_duplicates`` in a child process per configuration and
repetition; peak memory is the child's ``ru_maxrss`` minus that of a child that only streams the
same chunk texts (``scan``), so it is what dedup keeps (signatures, LSH tables, shingle hashes).

Accuracy is measured against the exact reference: all-pairs shingle Jaccard of every chunk with
every other (a sparse chunk × shingle incidence product, so no pair is skipped) and the same
rule dedup applies (a chunk is removed when its Jaccard with an earlier kept chunk reaches the
threshold; for exact-only, when its normalised text equals an earlier kept one). Precision =
removed chunks the reference removes / removed; recall = reference removals found / reference
removals. Per level: the planted near copies grouped by their exact Jaccard with their source,
with how many the reference removes and how many dedup removes (below the threshold, any removal
is a false positive). The LSH column gives the chance that a pair at the level is proposed:
``1 − (1 − J^r)^b`` for the bands and rows dedup uses, and for datasketch's default for the same
threshold (its ``MinHashLSH(threshold=0.8, num_perm=128)`` picks 9 bands of 13 rows). Peer:
exact all-pairs shingle Jaccard with Python sets (the quadratic reference) timed on the first
``--brute`` chunks and extrapolated per chunk at that size.

Decontamination: ``--copies`` questions per copy length ``L`` in ``COPY_LENGTHS`` quote ``L``
consecutive normalised words (lower-cased ``\\w+`` runs, the unit of the rules) of a random
chunk; per method and length (one run per length), the share of them
whose source chunk is flagged (other chunks holding the same words, e.g. planted copies, are
flagged too and counted in "flagged chunks"), and the chunks flagged by the 472 real Chroma
questions (``questions_df.csv``).

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

import numpy as np

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


#: A near copy replaces the word ``k`` positions from the end: with 13-word shingles it changes
#: ``k`` of the ``S`` shingles, so its Jaccard with the source is about (S − k) / (S + k).
LEVEL_EDITS = (3, 4, 5, 6, 7, 8, 9, 10, 11)
#: Similarity levels reported (lower bounds of the bins of exact Jaccard with the source).
LEVEL_BINS = (0.0, 0.70, 0.75, 0.775, 0.80, 0.825, 0.85, 0.90, 0.95)


def near_copy(text: str, rng: random.Random, serial: int) -> str:
    """``text`` with one word, ``k`` from the end, replaced by a word found nowhere else."""
    words = text.split()
    k = min(rng.choice(LEVEL_EDITS), len(words))
    words[len(words) - k] = f"planted{serial}x"
    return " ".join(words)


def exact_copy(text: str) -> str:
    return re.sub(r"([.,;:])", r" \1 ", text.upper())


def planted_corpus(base: list[str], share: float, seed: int) -> tuple[list[str], dict[int, int]]:
    """Texts with planted copies and {copy position: source position}."""
    rng = random.Random(seed)
    texts = list(base)
    sources = rng.sample(range(len(base)), round(share * len(base)))
    inserts = []
    for serial, src in enumerate(sources):
        copy = exact_copy(base[src]) if rng.random() < 0.3 else near_copy(base[src], rng, serial)
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

    writer = DatastoreWriter.create(root, {"benchmark": "tooling"}, {"name": "random-384", "normalized": True},
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


def jaccard_pairs(texts: list[str], shingle: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` sharing a shingle, with its exact Jaccard: ``(i, j, J)``, from the
    sparse product of the chunk × shingle incidence matrix with itself (no pair is skipped)."""
    from scipy import sparse

    from datastores.ops.minhash import normalise_words, shingle_hashes

    hashes = [shingle_hashes(normalise_words(t), shingle) for t in texts]
    rows = np.repeat(np.arange(len(texts)), [len(h) for h in hashes])
    _, cols = np.unique(np.concatenate(hashes), return_inverse=True)
    x = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)))
    common = sparse.triu(x @ x.T, k=1).tocoo()
    sizes = np.diff(x.indptr)
    return common.row, common.col, common.data / (sizes[common.row] + sizes[common.col] - common.data)


def greedy_removals(n: int, i: np.ndarray, j: np.ndarray) -> set[int]:
    """Dedup's rule on explicit duplicate pairs ``(i < j)``: in order, a chunk is removed when it
    duplicates an earlier chunk that was kept."""
    order = np.lexsort((i, j))
    earlier: dict[int, list[int]] = {}
    for a, b in zip(i[order].tolist(), j[order].tolist()):
        earlier.setdefault(b, []).append(a)
    removed: set[int] = set()
    for b in sorted(earlier):
        if any(a not in removed for a in earlier[b]):
            removed.add(b)
    return removed


def reference_removals(texts: list[str], shingle: int | None, threshold: float | None) -> set[int]:
    """What exact all-pairs dedup removes (exact keys when ``shingle`` is None)."""
    if shingle is None:
        from datastores.ops.minhash import exact_key

        first: dict[bytes, int] = {}
        return {c for c, t in enumerate(texts) if first.setdefault(exact_key(t), c) != c}
    i, j, similarity = jaccard_pairs(texts, shingle)
    keep = similarity >= threshold
    return greedy_removals(len(texts), i[keep], j[keep])


def accuracy(pairs: list[list[int]], reference: set[int]) -> dict:
    removed = {r for r, _ in pairs}
    found = len(removed & reference)
    return {"removed": len(removed), "reference_removed": len(reference),
            "precision": found / len(removed) if removed else None,
            "recall": found / len(reference) if reference else None}


def level_table(pairs: list[list[int]], reference: set[int], planted: dict[int, int], texts: list[str],
                shingle: int, threshold: float, num_perm: int) -> list[dict]:
    """Planted near copies binned by exact Jaccard with their source: reference and dedup removals."""
    from datasketch import MinHashLSH

    from datastores.ops.minhash import candidate_probability, exact_key, lsh_params

    bands, rows = lsh_params(threshold, num_perm)
    default = MinHashLSH(threshold=threshold, num_perm=num_perm)
    removed = {r for r, _ in pairs}
    near = [(c, len(shingles(texts[c], shingle) & shingles(texts[s], shingle))
             / len(shingles(texts[c], shingle) | shingles(texts[s], shingle)))
            for c, s in planted.items() if exact_key(texts[c]) != exact_key(texts[s])]
    out = []
    for lo, hi in zip(LEVEL_BINS, (*LEVEL_BINS[1:], 1.0001)):
        copies = [c for c, jac in near if lo <= jac < hi]
        if not copies:
            continue
        mid = float(np.mean([jac for c, jac in near if lo <= jac < hi]))
        in_reference = [c for c in copies if c in reference]
        out.append({"jaccard_from": lo, "jaccard_to": min(hi, 1.0), "mean_jaccard": mid, "copies": len(copies),
                    "reference_removes": len(in_reference),
                    "dedup_removes": sum(c in removed for c in copies),
                    "dedup_removes_of_reference": sum(c in removed for c in in_reference),
                    "lsh_probability": float(candidate_probability(mid, bands, rows)),
                    "datasketch_default_probability": float(candidate_probability(mid, default.b, default.r))})
    return out


#: words copied verbatim from a chunk into a planted evaluation question
COPY_LENGTHS = (8, 12, 13, 20, 32, 70)
DECONTAMINATION_METHODS = {"ngram (13-gram Jaccard >= 0.8)": {"method": "ngram"},
                           "longest (run >= 32 words)": {"method": "longest", "min_words": 32},
                           "either (default: Jaccard >= 0.8 or run >= 13)": {"method": "either"}}


def planted_questions(texts: list[str], per_length: int, seed: int) -> tuple[list, dict[str, int]]:
    """Questions quoting ``L`` consecutive normalised words of a random chunk of at least ``L + 5``
    such words, for each ``L`` in ``COPY_LENGTHS``: evaluation texts and {label: source chunk}."""
    from datastores.ops.decontaminate import EvalText
    from datastores.ops.minhash import normalise_words

    rng = random.Random(seed)
    evals, sources = [], {}
    words_of = [normalise_words(t) for t in texts]
    for length in COPY_LENGTHS:
        pool = [i for i, w in enumerate(words_of) if len(w) >= length + 5]
        for j in range(per_length):
            source = rng.choice(pool)
            words = words_of[source]
            start = rng.randrange(len(words) - length)
            label = f"copy{length}-{j}"
            evals.append(EvalText(label, f"Which passage says {' '.join(words[start:start + length])}?\nunknown"))
            sources[label] = source
    return evals, sources


def decontamination(root: Path, texts: list[str], data: Path, per_length: int, seed: int) -> dict:
    """Per method: share of planted questions whose source chunk is flagged, by copy length; chunks
    flagged by the real Chroma questions; seconds."""
    from datastores.ops.decontaminate import find_contaminated, load_eval_texts

    evals, sources = planted_questions(texts, per_length, seed)
    chroma = load_eval_texts(data / "questions_df.csv")
    out = {}
    for name, kwargs in DECONTAMINATION_METHODS.items():
        by_length, flagged_chunks, seconds = {}, 0, 0.0
        for length in COPY_LENGTHS:  # one run per copy length, so a chunk is credited to its own length
            group = [e for e in evals if e.label.startswith(f"copy{length}-")]
            started = time.perf_counter()
            flagged = {m.chunk_id for m in find_contaminated(root, group, **kwargs).matches}
            seconds += time.perf_counter() - started
            flagged_chunks += len(flagged)
            by_length[length] = sum(sources[e.label] in flagged for e in group) / len(group)
        real = find_contaminated(root, chroma, **kwargs).matches
        out[name] = {"caught_by_copy_length": by_length, "flagged_chunks": flagged_chunks,
                     "seconds": seconds, "chroma_questions": len(chroma),
                     "chunks_flagged_by_chroma_questions": len({m.chunk_id for m in real})}
    return out


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


def chunker_builds(corpus: Path, chunkers: list[str], chunk_size: int, out: Path) -> None:
    """``build_datastore`` of ``corpus`` once per chunker with one loaded embedder (CPU, ONNX):
    documents, chunks, corpus tokens, seconds per stage and throughput; written to ``out``."""
    from indexers.build import build_datastore
    from indexers.config import BuildConfig
    from indexers.embedding import load_embedder

    embedder = load_embedder(device="cpu")
    rows = {}
    for name in chunkers:
        with tempfile.TemporaryDirectory(prefix="terarag-chunker-build-") as work:
            config = BuildConfig(chunker=name, chunk_size=chunk_size, device="cpu", shard_size=200)
            started = time.perf_counter()
            report = build_datastore([corpus], Path(work) / "ds", config, embedder=embedder, progress=False)
            seconds = time.perf_counter() - started
        stats = report.manifest.stats
        rows[name] = {"documents": stats["documents"], "chunks": report.chunks, "tokens": stats["tokens"],
                      "seconds": seconds, **{f"{k}_s": v for k, v in report.timings.items()},
                      "tokens_per_s": stats["tokens"] / seconds, "chunks_per_s": report.chunks / seconds,
                      "load_average": os.getloadavg()[0]}
        print(f"{name:10} {report.chunks:6d} chunks {seconds:8.1f} s  read+chunk {report.timings['read_chunk']:7.1f} s  "
              f"embed {report.timings['embed']:6.1f} s  {stats['tokens'] / seconds:7.0f} corpus tokens/s", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"corpus": str(corpus.relative_to(REPO)), "chunk_size": chunk_size, "builds": rows,
                               "cpus": os.cpu_count(), "git": git_state(),
                               "versions": package_versions("onnxruntime", "sentence-transformers")}, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunker-build", nargs="*", metavar="CHUNKER",
                        help="instead: build examples/corpus once per chunker (default recursive cluster kamradt) "
                             "and report build throughput (benchmarks/out/chunker_build.json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--words", type=int, default=80)
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--planted", type=float, default=0.2)
    parser.add_argument("--shard-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--brute", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copies", type=int, default=50, help="planted questions per copy length")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if args.chunker_build is not None:
        chunker_builds(REPO / "examples" / "corpus", args.chunker_build or ["recursive", "cluster", "kamradt"], 200,
                       args.out.with_name("chunker_build.json"))
        return

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
        levels = {}
        for name, kwargs in CONFIGS.items():
            runs = [run_child(root, dict(kwargs)) for _ in range(args.repeats)]
            seconds = statistics.median(r["seconds"] for r in runs)
            rss = statistics.median(r["maxrss_kib"] for r in runs)
            shingle, threshold = (kwargs.get("shingle"), kwargs.get("threshold")) if kwargs["near"] else (None, None)
            started = time.perf_counter()
            reference = reference_removals(texts, shingle, threshold)
            results[name] = {"seconds": seconds, "chunks_per_s": len(texts) / seconds, "peak_rss_mib": rss / 1024,
                             "extra_rss_mib": (rss - base_rss) / 1024,
                             "reference_seconds": time.perf_counter() - started,
                             **accuracy(runs[0]["pairs"], reference)}
            if shingle == 13:
                levels[name] = level_table(runs[0]["pairs"], reference, planted, texts, shingle, threshold,
                                           kwargs.get("num_perm", 128))
        decon = decontamination(root, texts, args.data, args.copies, args.seed)
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
           "repeats": args.repeats, "dedup": results, "levels": levels, "decontamination": decon, "verify": verify,
           "load_average": os.getloadavg(), "git": git_state(),
           "versions": package_versions("datasketch", "numpy", "pyarrow", "faiss-cpu")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"{len(texts)} chunks ({len(planted)} planted copies), medians of {args.repeats}")
    print(f"{'configuration':45} {'chunks/s':>10} {'extra MiB':>10} {'removed':>8} {'ref':>6} {'prec':>6} "
          f"{'recall':>7}")
    for name, r in results.items():
        fmt = lambda v, f: (f.format(v) if isinstance(v, (int, float)) else "-")
        print(f"{name:45} {r['chunks_per_s']:10.0f} {fmt(r.get('extra_rss_mib'), '{:10.1f}'):>10} "
              f"{fmt(r.get('removed'), '{:d}'):>8} {fmt(r.get('reference_removed'), '{:d}'):>6} "
              f"{fmt(r.get('precision'), '{:.4f}'):>6} {fmt(r.get('recall'), '{:.4f}'):>7}")
    for name, rows in levels.items():
        print(f"levels, {name}:")
        for row in rows:
            print(f"  J in [{row['jaccard_from']:.3f}, {row['jaccard_to']:.3f}) mean {row['mean_jaccard']:.3f}: "
                  f"{row['copies']} copies, reference removes {row['reference_removes']}, dedup removes "
                  f"{row['dedup_removes']} ({row['dedup_removes_of_reference']} of the reference's); P(candidate) "
                  f"{row['lsh_probability']:.4f} (datasketch default {row['datasketch_default_probability']:.4f})")
    print(f"decontamination: share of planted questions whose source chunk is flagged, by words copied")
    for name, r in decon.items():
        shares = "  ".join(f"{n}: {v:.2f}" for n, v in r["caught_by_copy_length"].items())
        print(f"  {name:48} {shares}  ({r['flagged_chunks']} chunks flagged, {r['seconds']:.1f} s; "
              f"{r['chunks_flagged_by_chroma_questions']} by the {r['chroma_questions']} Chroma questions)")
    print(f"verify: {verify['verify_s_per_gb']:.2f} s/GB (sha256sum {verify['sha256sum_s_per_gb']:.2f} s/GB) "
          f"over {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
