"""Cost of reading search hits' rows: microseconds per returned row of ``SearchView.fetch``.

A datastore of ``--chunks`` synthetic chunks (~1 KB of text each, like 200-token chunks; random
vectors; one shard) is written once to ``benchmarks/out/row-fetch/``; then ``--lists`` ranked lists
of ``--k`` random chunk ids (seeded) are fetched, as one ``fetch`` call per ``--batch`` lists
(``search_many``'s shape) and one call per list (``search``'s), median of ``--repeats`` rounds.
``--tree PATH`` imports the library from another checkout, so an old and a new tree can be timed
in alternating processes on the same datastore (the row-store format is the same).

Run: ``python benchmarks/row_fetch.py [--tree /path/to/other/checkout]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
WORDS = ("retrieval datastore shard chunk vector index query score token text metadata source offset "
         "document passage embedding model search hybrid fusion ranking").split()


def synthetic_chunks(n: int, seed: int = 0) -> list:
    """``n`` deterministic chunks of ~160 words (about 1 KB of JSON per row)."""
    from datastores.records import Chunk

    rng = np.random.default_rng(seed)
    words = np.array(WORDS)[rng.integers(0, len(WORDS), (n, 160))]
    texts = [" ".join(row) for row in words.tolist()]
    return [Chunk(f"doc-{i // 4}", 0, len(t), t, f"corpus/{i // 4}.txt") for i, t in enumerate(texts)]


def open_datastore(root: Path, n: int):
    from datastores import Bm25Params, Datastore, DatastoreWriter

    if not (root / "manifest.json").is_file():
        chunks = synthetic_chunks(n)
        vectors = np.random.default_rng(1).standard_normal((n, 16)).astype(np.float32)
        writer = DatastoreWriter.create(root, {"benchmark": "row-fetch"}, {"name": "random"},
                                        {"name": "synthetic"}, Bm25Params())
        writer.add_shard(chunks, vectors, 0)
        writer.finish({}, vectors.shape[1])
    return Datastore.open(root)


def time_fetch(view, lists: list, batch: int) -> float:
    """Microseconds per row of fetching ``lists`` in calls of ``batch`` lists."""
    started = time.perf_counter()
    for i in range(0, len(lists), batch):
        view.fetch(lists[i: i + batch])
    return 1e6 * (time.perf_counter() - started) / sum(len(r) for r in lists)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--lists", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tree", type=Path, default=HERE, help="checkout whose library is imported")
    args = parser.parse_args()
    sys.path.insert(0, str(args.tree.resolve()))
    root = HERE / "benchmarks" / "out" / "row-fetch" / f"n{args.chunks}"
    ds = open_datastore(root, args.chunks)
    rng = np.random.default_rng(2)
    lists = [[(int(c), 1.0 / (j + 1)) for j, c in enumerate(rng.choice(args.chunks, args.k, replace=False))]
             for _ in range(args.lists)]
    view = ds.view()
    time_fetch(view, lists[:100], args.batch)  # warm-up: files mapped, pages cached
    runs = {"batch": [], "one": []}
    for _ in range(args.repeats):
        runs["batch"].append(time_fetch(view, lists, args.batch))
        runs["one"].append(time_fetch(view, lists, 1))
    report = {"tree": str(args.tree), "us_per_row": {s: statistics.median(r) for s, r in runs.items()},
              "runs": runs, "load_1min": os.getloadavg()[0],
              "row_bytes": int(np.diff(ds.shards[0].rows().offsets).mean())}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
