#!/usr/bin/env python
"""Context compression on Chroma's evaluation set: how much reference text survives each budget.

    python benchmarks/context.py                          # 12 questions, budgets 256 512 1024, k=10
    python benchmarks/context.py --questions 472 --repeats 3

Datastore: the five Chroma corpora chunked with ``recursive`` 200/0 cl100k tokens and embedded with
the default MiniLM (built once into ``benchmarks/out/context/ds`` and reused). For each question
(a seeded sample, the same for every method) the top-k chunks are retrieved densely; every
compressor then cuts that context to each budget (cl100k tokens, split across passages by rank).

Measured per (method, budget), means over questions:

- ``ref kept``: reference words that survive in the compressed context / all reference words of
  the question (retrieval misses count as lost); ``of retrieved``: the same over the reference
  words the retrieved context held before compression. A document word survives when the
  compressed passage text still holds it: the kept words (a subsequence of the chunk's words for
  every method measured here) are aligned back to the chunk greedily, left to right.
- ``ratio``: context tokens after / before (cl100k, exact).
- methods: ``truncate:greedy`` keeps the best passages whole in rank order and cuts the last one
  (the usual "top passages that fit"); ``truncate`` cuts every passage to its rank share;
  ``sentence`` and ``semantic`` as in ``rag.compress``, ``:SPLIT`` names how the budget is split
  across passages (``rank`` is the default of truncate and semantic); ``sentence:global`` (the
  sentence default) picks the best sentences across all passages, with no per-passage shares.
- ``ms/query``: per question the median of ``--repeats`` runs, then the median over questions.

The token-level (self-information) and summary compressors need a real causal LM / seq2seq model,
which cannot be had offline here, so they are not measured (their code paths are tested with tiny
random models in tests/test_compress.py). Writes ``benchmarks/out/context.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._common import git_state, package_versions  # noqa: E402
from evaluators.datasets import load_dataset  # noqa: E402
from indexers.tokenizers import load_tokenizer  # noqa: E402
from rag.compress import load_compressor  # noqa: E402
from rag.datastore import Datastore  # noqa: E402
from rag.pipeline import passages_from_hits  # noqa: E402
from rag.stages import count_tokens, run_stage  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "chroma_general_eval"
OUT = REPO / "benchmarks" / "out"
_WORD = re.compile(r"\S+")


def build_or_open(folder: Path) -> Datastore:
    if not (folder / "manifest.json").is_file():
        from indexers.build import build_datastore
        from indexers.config import BuildConfig

        print(f"building {folder} from {DATA / 'corpora'} ...", flush=True)
        build_datastore([DATA / "corpora"], folder,
                        BuildConfig(chunker="recursive", chunk_size=200, overlap=0, shard_size=1000, device="cpu"),
                        progress=False)
    return Datastore.open(folder, device="cpu")


def surviving_chars(passage_text: str, compressed: str, doc_offset: int) -> list[tuple[int, int]]:
    """Document spans of the words of ``compressed``, aligned greedily to the words of the chunk."""
    originals = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(passage_text)]
    spans, i = [], 0
    for word in compressed.split():
        while i < len(originals) and originals[i][2] != word:
            i += 1
        if i == len(originals):
            break
        spans.append((doc_offset + originals[i][0], doc_offset + originals[i][1]))
        i += 1
    return spans


def reference_words(corpus: str, references) -> list[tuple[int, int]]:
    """Document spans of the words inside the reference excerpts."""
    return [(s + m.start(), s + m.end()) for s, e in references for m in _WORD.finditer(corpus[s:e])]


def kept_fraction(ref_words: list[tuple[int, int]], kept_spans: list[tuple[int, int]]) -> float:
    if not ref_words:
        return float("nan")
    kept = {start for start, _ in kept_spans}
    # A reference word survives when a kept word starts inside it (word splits differ only at the edges).
    return sum(any(k in kept for k in range(s, e)) for s, e in ref_words) / len(ref_words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12, help="seeded sample of questions (472 = all)")
    parser.add_argument("--budgets", type=int, nargs="+", default=[256, 512, 1024])
    parser.add_argument("--methods", nargs="+",
                        default=["truncate:greedy", "truncate", "sentence:rank", "sentence:global", "semantic"],
                        help="METHOD[:SPLIT]; without a split, the method's default")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--semantic-questions", type=int, default=3,
                        help="semantic word removal is slow on CPU: measured on the first N sampled questions")
    parser.add_argument("--semantic-repeats", type=int, default=1, help="repetitions for semantic word removal")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset = load_dataset(DATA)
    ds = build_or_open(OUT / "context" / "ds")
    cl100k = load_tokenizer("cl100k_base")
    questions = random.Random(args.seed).sample(dataset.questions, min(args.questions, len(dataset.questions)))
    started = time.perf_counter()
    hits = ds.search_many([q.text for q in questions], k=args.k, mode="dense")
    retrieve_s = time.perf_counter() - started
    contexts = [passages_from_hits(h) for h in hits]
    for q, ctx in zip(questions, contexts):  # chunk spans must slice the corpus exactly
        for p in ctx:
            assert dataset.corpora[Path(p.doc_id).stem][p.start:p.end] == p.text, p.doc_id

    def ref_kept(q, passages) -> tuple[float, int]:
        ref = reference_words(dataset.corpora[q.corpus_id], q.references)
        spans = [s for p in passages if Path(p.doc_id).stem == q.corpus_id
                 for s in surviving_chars(originals[p.chunk_id], p.text, p.start)]
        return kept_fraction(ref, spans), len(ref)

    originals = {p.chunk_id: p.text for ctx in contexts for p in ctx}
    before = [ref_kept(q, ctx)[0] for q, ctx in zip(questions, contexts)]
    context_tokens = [count_tokens(ctx, cl100k) for ctx in contexts]
    rows = [{"method": f"retrieved (k={args.k})", "budget": None, "questions": len(questions),
             "ref_kept": float(np.nanmean(before)), "of_retrieved": 1.0,
             "tokens": float(np.mean(context_tokens)), "ratio": 1.0,
             "ms_per_query": 1000 * retrieve_s / len(questions)}]
    print(f"{len(questions)} questions, mean retrieved context {np.mean(context_tokens):.0f} tokens, "
          f"reference words retrieved {np.nanmean(before):.3f}", flush=True)

    from indexers.embedding import load_embedder

    embedder = load_embedder(device="cpu")
    for method in args.methods:
        name, _, split = method.partition(":")
        options = {"split": split} if split else {}
        compressor = load_compressor(name, embedder=embedder, tokenizer=cl100k, **options)
        n = args.semantic_questions if name == "semantic" else len(questions)
        repeats = args.semantic_repeats if name == "semantic" else args.repeats
        for budget in args.budgets:
            kept, of_retrieved, ratios, times, tokens = [], [], [], [], []
            for q, ctx, base in list(zip(questions, contexts, before))[:n]:
                runs = []
                for _ in range(repeats):
                    out, report = run_stage(compressor, q.text, ctx, budget, cl100k)
                    runs.append(report.seconds)
                assert report.tokens_after <= budget
                fraction, _ = ref_kept(q, out)
                kept.append(fraction)
                if base > 0:
                    of_retrieved.append(fraction / base)
                ratios.append(report.ratio)
                tokens.append(report.tokens_after)
                times.append(statistics.median(runs))
            row = {"method": method, "budget": budget, "questions": n, "repeats": repeats,
                   "ref_kept": float(np.nanmean(kept)),
                   "of_retrieved": float(np.mean(of_retrieved)), "tokens": float(np.mean(tokens)),
                   "ratio": float(np.mean(ratios)), "ms_per_query": 1000 * statistics.median(times)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    result = {"rows": rows, "k": args.k, "questions": len(questions), "seed": args.seed, "repeats": args.repeats,
              "datastore": "recursive 200/0 cl100k, all-MiniLM-L6-v2", **git_state(),
              "versions": package_versions("torch", "sentence-transformers", "onnxruntime", "tiktoken")}
    (OUT / "context.json").write_text(json.dumps(result, indent=2))
    print("\n| method | budget | questions | ref kept | of retrieved | tokens | ratio | ms/query |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {r['budget'] or '–'} | {r['questions']} | {r['ref_kept']:.3f} | "
              f"{r['of_retrieved']:.3f} | {r['tokens']:.0f} | {r['ratio']:.3f} | {r['ms_per_query']:.1f} |")


if __name__ == "__main__":
    main()
