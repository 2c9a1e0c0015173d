"""HTML cleaning and pruning: terarag (indexers.html + rag.html) vs the HtmlRAG toolkit (PyPI ``htmlrag``).

For every question of ``examples/html_pages/questions.jsonl`` (real Python documentation pages,
answers that occur verbatim in the page) and every token budget (cl100k), each method cleans the
page, ranks its blocks by embedding similarity to the question with the same embedder
(all-MiniLM-L6-v2, ours: HtmlRAG's own embedder is replaced so both run offline) and prunes to
the budget. Measured: the fraction of answers whose text survives in the output's visible text,
the output tokens (and how often the budget is exceeded), the ratio of output to raw-page tokens,
and the time per query (cleaning + ranking + pruning; median over questions).

``htmlrag`` pins packages this project's environment does not take, so it runs in its own
interpreter (``--htmlrag-python``, default ``$HTMLRAG_PYTHON`` or the current one when it can
import htmlrag) as a worker process that receives the same pages and questions; that interpreter
must also import this repository (put this project's site-packages on its path with a ``.pth``).

    .venv/bin/python benchmarks/context_html.py [--budgets 512 1024 2048] [--max-words 64 256]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PAGES = REPO / "examples" / "html_pages"
OUT = REPO / "benchmarks" / "out"


def normalise(text: str) -> str:
    return " ".join(text.split())


def load_questions(path: Path) -> list[dict]:
    from indexers.html import read_html_page

    questions = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for q in questions:
        text = normalise(read_html_page((PAGES / q["page"]).read_bytes())[1])
        missing = [a for a in q["answers"] if normalise(a) not in text]
        if missing:
            raise ValueError(f"{q['id']}: answers not in the visible text of {q['page']}: {missing}")
    return questions


def visible(html: str) -> str:
    """Visible text of an output page, read the same way for every method."""
    from indexers.html import read_html_page

    return normalise(read_html_page(html, main_content=False)[1]) if html else ""


class CachedEmbedder:
    """The shared embedder with a text -> vector cache, so a page's blocks are embedded once for all
    its questions (both methods alike); ``seconds`` is the time spent in the model."""

    def __init__(self, inner):
        self.inner = inner
        self.cache: dict[str, object] = {}
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # process CPU time in the model (all its threads), less inflated by load

    def encode(self, texts):
        import numpy as np

        todo = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if todo:
            started, cpu = time.perf_counter(), time.process_time()
            for text, vector in zip(todo, self.inner.encode(todo)):
                self.cache[text] = vector
            self.seconds += time.perf_counter() - started
            self.cpu_seconds += time.process_time() - cpu
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), dtype=np.float32)

    def encode_queries(self, texts, batch_size=None):
        """The pruner's query side (all-MiniLM-L6-v2 has no query or passage prefix)."""
        return self.encode(texts)

    def encode_passages(self, texts, batch_size=None, progress=False):
        return self.encode(texts)


# --- the htmlrag worker (runs in the htmlrag interpreter) ------------------------------------------

class _Cl100k:
    """The slice of a Hugging Face tokenizer that htmlrag's pruner calls, over tiktoken cl100k."""

    def __init__(self):
        from indexers.tokenizers import load_tokenizer

        self.enc = load_tokenizer("cl100k_base")._encoding  # the offline copy of cl100k

    def encode(self, text, add_special_tokens=False):
        return self.enc.encode_ordinary(text)

    def tokenize(self, text):
        return self.enc.encode_ordinary(text)

    def convert_tokens_to_string(self, tokens):
        return self.enc.decode(tokens)


def htmlrag_worker(task_path: Path, out_path: Path) -> None:
    """Run htmlrag's cleaner, block tree and pruner with our embedder ranking the blocks."""
    import numpy as np
    from htmlrag.html_utils import build_block_tree, clean_html
    from htmlrag.pruner import Pruner

    from indexers.embedding import load_embedder

    task = json.loads(task_path.read_text(encoding="utf-8"))
    embedder = CachedEmbedder(load_embedder(device="cpu").backend)
    tokenizer = _Cl100k()
    pruner = Pruner()
    results = []
    pages: dict[str, tuple[str, float]] = {}
    page_embedding: dict[tuple[str, int], tuple[float, float]] = {}  # block embedding: wall, CPU seconds
    for q in task["questions"]:
        raw = (PAGES / q["page"]).read_text(encoding="utf-8")
        started = time.perf_counter()
        cleaned = clean_html(raw)
        clean_seconds = time.perf_counter() - started
        pages.setdefault(q["page"], (cleaned, clean_seconds))
        for max_words in task["max_words"]:
            started, embed_before, cpu_before = time.perf_counter(), embedder.seconds, embedder.cpu_seconds
            block_tree, html = build_block_tree(cleaned, max_node_words=max_words)
            texts = [b[0].get_text() for b in block_tree]
            vectors = embedder.encode(texts)
            embed_seconds = embedder.seconds - embed_before
            blocks = page_embedding.setdefault((q["page"], max_words),
                                               (embed_seconds, embedder.cpu_seconds - cpu_before))
            query = embedder.encode([q["question"]])[0]
            rankings = list(np.argsort(-(vectors @ query), kind="stable"))
            embed_seconds = embedder.seconds - embed_before
            rank_seconds = time.perf_counter() - started - embed_seconds
            for budget in task["budgets"]:
                started = time.perf_counter()
                try:
                    pruned = pruner.prune_HTML(html, block_tree, rankings, tokenizer, budget)
                    error = None
                except Exception as exc:  # noqa: BLE001 - a peer's failure is a result to report
                    pruned, error = "", f"{type(exc).__name__}: {exc}"
                prune_seconds = time.perf_counter() - started
                results.append({"id": q["id"], "max_words": max_words, "budget": budget, "html": pruned,
                                "error": error, "seconds": clean_seconds + rank_seconds + prune_seconds,
                                "embed_seconds": embed_seconds - blocks[0] if embed_seconds >= blocks[0] else 0.0,
                                "block_seconds": blocks[0], "block_cpu_seconds": blocks[1]})
    cleaned_pages = {name: {"html": html, "seconds": seconds} for name, (html, seconds) in pages.items()}
    out_path.write_text(json.dumps({"results": results, "cleaned": cleaned_pages}), encoding="utf-8")


# --- our side -----------------------------------------------------------------------------------------

def run_ours(questions, budgets, max_words_list, embedder, tokenizer) -> tuple[list[dict], dict]:
    """terarag's pruner (rag.html.HtmlPruner, refinement down to sentences) on every question and
    budget. ``block_seconds`` is the model time to embed a page's blocks (once per page and block
    size, cached for its other questions, as for htmlrag); ``embed_seconds`` is what each query
    adds (the pieces of the blocks it splits)."""
    from indexers.html import block_text, build_blocks, clean_html
    from rag.html import HtmlPruner

    results, cleaned_pages, pages = [], {}, {}
    for q in questions:
        raw = (PAGES / q["page"]).read_bytes()
        started = time.perf_counter()
        page = clean_html(raw)
        clean_seconds = time.perf_counter() - started
        cleaned_pages.setdefault(q["page"], {"html": page.html, "seconds": clean_seconds})
        for max_words in max_words_list:
            pruner = HtmlPruner(tokenizer=tokenizer, embedder=embedder, max_words=max_words)
            if (q["page"], max_words) not in pages:  # what the scorer embeds of the blocks
                before, cpu = embedder.seconds, embedder.cpu_seconds
                embedder.encode(pruner.scorer.model_texts([block_text(b) for b in build_blocks(page, max_words)]))
                pages[q["page"], max_words] = (embedder.seconds - before, embedder.cpu_seconds - cpu)
            for budget in budgets:
                started, embed_before = time.perf_counter(), embedder.seconds
                (result,) = pruner.prune_many([page], q["question"], budget)
                embed_seconds = embedder.seconds - embed_before
                results.append({"id": q["id"], "max_words": max_words, "budget": budget, "html": result.html,
                                "error": None, "embed_seconds": embed_seconds,
                                "block_seconds": pages[q["page"], max_words][0],
                                "block_cpu_seconds": pages[q["page"], max_words][1],
                                "seconds": clean_seconds + time.perf_counter() - started - embed_seconds})
    return results, cleaned_pages


def run_truncate(questions, budgets, tokenizer) -> list[dict]:
    """Reference: our cleaned page cut to the budget from its end (no ranking)."""
    from indexers.html import clean_html

    results = []
    for q in questions:
        html = clean_html((PAGES / q["page"]).read_bytes()).html
        starts, _ = tokenizer.token_spans(html)
        for budget in budgets:
            cut = html if len(starts) <= budget else html[:starts[budget]]
            results.append({"id": q["id"], "max_words": 0, "budget": budget, "html": cut, "error": None,
                            "seconds": 0.0, "embed_seconds": 0.0})
    return results


def summarise(name: str, results: list[dict], questions: dict, raw_tokens: dict, tokenizer) -> list[dict]:
    rows = []
    keys = sorted({(r["max_words"], r["budget"]) for r in results})
    for max_words, budget in keys:
        group = [r for r in results if r["max_words"] == max_words and r["budget"] == budget]
        kept, tokens, ratio, over, errors, fill, empty = [], [], [], 0, 0, [], 0
        for r in group:
            q = questions[r["id"]]
            text = visible(r["html"])
            kept.append(sum(normalise(a) in text for a in q["answers"]) / len(q["answers"]))
            n = tokenizer.count(r["html"])
            tokens.append(n)
            fill.append(n / budget)
            empty += not text
            ratio.append(n / raw_tokens[q["page"]])
            over += n > budget
            errors += r["error"] is not None
        pages = {questions[r["id"]]["page"]: r.get("block_seconds", 0.0) for r in group}
        cpu = {questions[r["id"]]["page"]: r.get("block_cpu_seconds", 0.0) for r in group}
        rows.append({"method": name, "max_words": max_words, "budget": budget, "questions": len(group),
                     "answer_retention": statistics.fmean(kept), "answers_kept": round(sum(kept)),
                     "mean_tokens": statistics.fmean(tokens), "median_fill": statistics.median(fill),
                     "empty": empty, "over_budget": over, "errors": errors, "ratio_to_raw": statistics.fmean(ratio),
                     "median_ms": 1000 * statistics.median(r["seconds"] for r in group),
                     "embed_s_per_page": (sum(r["embed_seconds"] for r in group) + sum(pages.values())) / len(pages),
                     "block_s_per_page": statistics.fmean(pages.values()),
                     "block_cpu_s_per_page": statistics.median(cpu.values()),
                     "refine_s_per_query": statistics.median(r["embed_seconds"] for r in group)})
    return rows


def cleaning_rows(cleaned: dict[str, dict], questions: list[dict], raw_tokens: dict, tokenizer) -> dict:
    texts = {name: visible(c["html"]) for name, c in cleaned.items()}
    kept = [sum(normalise(a) in texts[q["page"]] for a in q["answers"]) / len(q["answers"]) for q in questions]
    return {"pages": len(cleaned),
            "tokens": sum(tokenizer.count(c["html"]) for c in cleaned.values()),
            "raw_tokens": sum(raw_tokens[n] for n in cleaned),
            "answer_retention": statistics.fmean(kept),
            "median_ms": 1000 * statistics.median(c["seconds"] for c in cleaned.values())}


def run_retrieval(questions: list[dict], ks=(1, 3, 5)) -> dict:
    """Index the shipped pages with ``rag index`` defaults and check, per question and mode, whether
    a chunk holding the answer string is in the top k; also whether the top hit for "json decode
    errors" is page furniture (the table of contents of library_json.html)."""
    import tempfile

    from indexers.build import build_datastore
    from indexers.config import BuildConfig
    from rag.datastore import Datastore
    from rag.retrieve import build_retriever

    with tempfile.TemporaryDirectory() as tmp:
        build_datastore(sorted(PAGES.glob("*.html")), Path(tmp) / "ds", BuildConfig(), progress=False)
        store = Datastore.open(Path(tmp) / "ds", device="cpu")
        out: dict = {"chunks": store.manifest.num_chunks, "modes": {}}
        for mode in ("dense", "bm25", "hybrid"):
            retriever = build_retriever(store, mode, device="cpu")
            hits = retriever.retrieve_many([q["question"] for q in questions], max(ks))
            found = {k: 0 for k in ks}
            for q, top in zip(questions, hits):
                for k in ks:
                    found[k] += any(normalise(a) in normalise(h.text) for h in top[:k] for a in q["answers"])
            out["modes"][mode] = {f"top{k}": found[k] / len(questions) for k in ks}
        top = build_retriever(store, "dense", device="cpu").retrieve("json decode errors", 1)[0]
        out["json_decode_errors_top_hit"] = normalise(top.text)[:160]
    return out


def htmlrag_python(arg: str | None) -> str | None:
    if arg:
        return arg
    if os.environ.get("HTMLRAG_PYTHON"):
        return os.environ["HTMLRAG_PYTHON"]
    try:
        import htmlrag  # noqa: F401
        return sys.executable
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--max-words", type=int, nargs="+", default=[256])
    parser.add_argument("--questions", type=Path, default=PAGES / "questions.jsonl")
    parser.add_argument("--htmlrag-python", default=None, help="interpreter that can import htmlrag")
    parser.add_argument("--retrieval", action="store_true",
                        help="only index the pages and report answer-in-top-k retrieval (no pruning)")
    parser.add_argument("--worker", nargs=2, metavar=("TASK", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        htmlrag_worker(Path(args.worker[0]), Path(args.worker[1]))
        return

    from benchmarks._common import git_state, package_versions
    from indexers.embedding import load_embedder
    from indexers.tokenizers import load_tokenizer

    load_at_start = os.getloadavg()
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer("cl100k_base")
    questions = load_questions(args.questions)
    if args.retrieval:
        report = {**run_retrieval(questions), "git": git_state()}
        print(json.dumps(report, indent=2))
        (OUT / "context_html_retrieval.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        return
    by_id = {q["id"]: q for q in questions}
    raw_tokens = {q["page"]: tokenizer.count((PAGES / q["page"]).read_text(encoding="utf-8")) for q in questions}
    embedder = CachedEmbedder(load_embedder(device="cpu").backend)
    embedder.inner.encode(["warm up"])

    rows, cleaning = [], {}
    peer = htmlrag_python(args.htmlrag_python)
    if peer:
        task = OUT / "context_html_task.json"
        peer_out = OUT / "context_html_htmlrag.json"
        task.write_text(json.dumps({"questions": questions, "budgets": args.budgets, "max_words": args.max_words}))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        started = time.perf_counter()
        subprocess.run([peer, str(Path(__file__).resolve()), "--worker", str(task), str(peer_out)], check=True,
                       env=env, cwd=REPO)
        print(f"htmlrag worker: {time.perf_counter() - started:.0f} s", file=sys.stderr)
        peer_data = json.loads(peer_out.read_text(encoding="utf-8"))
        rows += summarise("htmlrag 0.1.1", peer_data["results"], by_id, raw_tokens, tokenizer)
        cleaning["htmlrag 0.1.1"] = cleaning_rows(peer_data["cleaned"], questions, raw_tokens, tokenizer)
    else:
        print("htmlrag is not importable here and no --htmlrag-python was given: peer skipped", file=sys.stderr)

    started = time.perf_counter()
    ours, ours_cleaned = run_ours(questions, args.budgets, args.max_words, embedder, tokenizer)
    print(f"terarag: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows += summarise("terarag", ours, by_id, raw_tokens, tokenizer)
    cleaning["terarag"] = cleaning_rows(ours_cleaned, questions, raw_tokens, tokenizer)
    rows += summarise("truncate cleaned page (reference)", run_truncate(questions, args.budgets, tokenizer),
                      by_id, raw_tokens, tokenizer)

    print("\ncleaning (all pages):")
    print("| cleaner | pages | raw tokens | cleaned tokens | ratio | answers kept | median ms/page |")
    print("|---|---|---|---|---|---|---|")
    for name, c in cleaning.items():
        print(f"| {name} | {c['pages']} | {c['raw_tokens']:,} | {c['tokens']:,} | {c['tokens'] / c['raw_tokens']:.3f} "
              f"| {c['answer_retention']:.3f} | {c['median_ms']:.0f} |")
    print("\npruning:")
    print("| method | words/block | budget | answers kept | median fill | empty | over budget | errors "
          "| tokens / raw | median ms/query (no embedding) | block embedding s/page | block embedding CPU-s/page (median) "
          "| refinement embedding s/query |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["budget"], r["method"], r["max_words"])):
        print(f"| {r['method']} | {r['max_words'] or '-'} | {r['budget']} | {r['answers_kept']}/{r['questions']} "
              f"| {r['median_fill']:.2f} | {r['empty']} | {r['over_budget']}/{r['questions']} | {r['errors']} "
              f"| {r['ratio_to_raw']:.3f} | {r['median_ms']:.0f} | {r['block_s_per_page']:.2f} | {r['block_cpu_s_per_page']:.2f} "
              f"| {r['refine_s_per_query']:.2f} |")
    print(f"load average at the end: {os.getloadavg()} (at the start: {load_at_start})")
    report = {"rows": rows, "load_average_at_start": load_at_start, "cleaning": cleaning, "questions": len(questions), "budgets": args.budgets,
              "max_words": args.max_words, "git": git_state(),
              "packages": package_versions("lxml", "tiktoken", "sentence-transformers", "onnxruntime"),
              "load_average": os.getloadavg()}
    (OUT / "context_html.json").write_text(json.dumps(report, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
