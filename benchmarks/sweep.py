#!/usr/bin/env python
"""Where a chunking sweep spends its time, and what building each index once saves.

    python benchmarks/sweep.py                                          # the reproduction grid
    python benchmarks/sweep.py --config configs/sweeps/chroma-minilm.yaml --output /tmp/sweep

Runs (or resumes: finished rows are not recomputed) ``rag sweep``'s :func:`evaluators.sweep.run_sweep`
on the config, then reads the rows back and reports, per index (chunker/size/overlap/embedder),
the seconds spent chunking (for the embedding chunkers this includes embedding their pieces),
embedding the chunks, writing the datastore, retrieving (one search per mode with the grid's
largest k) and scoring. ``without reuse`` is what the same rows would cost if every
configuration rebuilt its index (chunk + embed + write + retrieval + score per row).

Prints a table and writes ``benchmarks/out/sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evaluators.sweep import load_sweep_config, run_sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "sweeps" / "chroma-minilm.yaml"))
    parser.add_argument("--output", default=None, help="sweep output folder (default: the config's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "out" / "sweep.json"))
    args = parser.parse_args()

    config = load_sweep_config(args.config)
    result = run_sweep(config, args.output, device=args.device, progress=True)
    builds: dict[tuple, dict] = {}
    for row in result.rows:
        key = (row["embedder"], row["chunker"], row["chunk_size"], row["overlap"])
        entry = builds.setdefault(key, {"rows": 0, "chunk_s": row["chunk_s"], "embed_s": row["embed_s"],
                                        "write_s": row["write_s"], "retrieval_s": {}, "score_s": 0.0,
                                        "chunks": row["chunks"]})
        entry["rows"] += 1
        entry["retrieval_s"][row["mode"]] = row["retrieval_s"]
        entry["score_s"] += row["score_s"]
    with_reuse = sum(b["chunk_s"] + b["embed_s"] + b["write_s"] + sum(b["retrieval_s"].values()) + b["score_s"]
                     for b in builds.values())
    without_reuse = sum(r["chunk_s"] + r["embed_s"] + r["write_s"] + r["retrieval_s"] + r["score_s"]
                        for r in result.rows)
    header = f"{'index':<42} {'rows':>4} {'chunks':>6} {'chunk s':>8} {'embed s':>8} {'write s':>8} " \
             f"{'search s':>8} {'score s':>8}"
    print(header)
    print("-" * len(header))
    for (embedder, chunker, size, overlap), b in builds.items():
        label = f"{chunker} {size}/{overlap} · {embedder}"
        print(f"{label:<42} {b['rows']:>4} {b['chunks']:>6} {b['chunk_s']:>8.1f} {b['embed_s']:>8.1f} "
              f"{b['write_s']:>8.1f} {sum(b['retrieval_s'].values()):>8.1f} {b['score_s']:>8.1f}")
    print(f"\n{len(result.rows)} rows from {len(builds)} indexes: {with_reuse:.0f} s with one index per "
          f"chunker/size/overlap/embedder, {without_reuse:.0f} s if every row rebuilt its index "
          f"(this run computed {result.rows_written} rows, {result.rows_skipped} were already finished)")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "config": os.path.relpath(args.config, REPO), "rows": len(result.rows), "indexes": len(builds),
        "seconds_with_reuse": round(with_reuse, 2), "seconds_without_reuse": round(without_reuse, 2),
        "per_index": [{"embedder": k[0], "chunker": k[1], "chunk_size": k[2], "overlap": k[3], **v}
                      for k, v in builds.items()],
    }, indent=2, default=str), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
