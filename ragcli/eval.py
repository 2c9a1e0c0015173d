"""``rag eval``: evaluation commands. ``rag eval chunking`` scores a chunker with Chroma's span metrics;
``rag eval retrieval`` scores document retrieval on a BEIR folder (nDCG, MRR, recall, MAP);
``rag eval answers`` scores whole ask pipelines on a QA set (EM, F1, answer-in-context)."""

from __future__ import annotations

import json
import math

import click
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from evaluators.spans import METRICS, UNITS
from indexers.chunkers import CHUNKER_NAMES
from indexers.tokenizers import DEFAULT_TOKENIZER
from ragcli.common import stdout
from ragcli.errors import ReportingGroup

METRIC_LABELS = {"recall": "Recall", "precision": "Precision", "precision_omega": "Precision-Ω", "iou": "IoU"}


def _k_value(text: str) -> int | str:
    from evaluators.chunking import parse_k

    try:
        return parse_k(text)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _cell(stat) -> str:
    if math.isnan(stat.mean):
        return "–"
    return f"{stat.mean:.1f} ± {stat.std:.1f}"


def _print_wide(table: Table) -> None:
    """Print ``table`` without wrapping the numbers: widen past a narrow (or non-terminal,
    80-column) console if needed."""
    needed = Measurement.get(stdout, stdout.options.update_width(1000), table).maximum
    console = stdout if needed <= stdout.width else Console(width=needed, soft_wrap=False)
    console.print(table)


@click.group("eval", cls=ReportingGroup)
def eval_group() -> None:
    """Evaluate chunking and retrieval against labelled data."""


@eval_group.command("chunking")
@click.option("--dataset", "dataset", default=None, type=click.Path(),
              help="Folder with questions_df.csv and corpora/ (Chroma's format), or a questions .jsonl "
                   "(documents from --documents, else the NAME.documents.jsonl beside it that rag synth writes).")
@click.option("--questions", "questions", default=None, type=click.Path(dir_okay=False),
              help="Instead of --dataset: JSONL questions {question, references: [{doc_id, start, end}], answers?}.")
@click.option("--documents", "documents", default=None, type=click.Path(),
              help="With --questions: a folder of text files (id = file stem) or a JSONL corpus (_id/id, text).")
@click.option("--chunker", type=click.Choice(list(CHUNKER_NAMES)), default="recursive", show_default=True)
@click.option("--chunk-size", type=int, default=200, show_default=True, help="Chunk size in tokens.")
@click.option("--overlap", type=int, default=0, show_default=True, help="Overlap in tokens.")
@click.option("-k", "k", default="5", show_default=True, help="Chunks retrieved per question, or 'min'.")
@click.option("--unit", type=click.Choice(UNITS), default="char", show_default=True,
              help="Count characters (the published numbers) or tokens.")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True,
              help="Retrieval: exact cosine (FAISS flat inner product) or BM25.")
@click.option("--tokenizer", default=DEFAULT_TOKENIZER, show_default=True,
              help="Tokenizer that measures chunk sizes.")
@click.option("--unit-tokenizer", default=None, help="Tokenizer of the token unit (default: --tokenizer).")
@click.option("--embedder", "embedder_name", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--query-prefix", default="auto", show_default=True,
              help="Text put before each question ('auto': the model family's, as rag index records it).")
@click.option("--passage-prefix", default="auto", show_default=True,
              help="Text put before each chunk when embedding it ('auto': the model family's).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--duplicate-ties", type=click.Choice(["document-order", "engine"]), default="document-order",
              show_default=True, help="Which copy of an identical chunk text counts as retrieved.")
@click.option("--corpus", "corpora", multiple=True, help="Only this corpus id (repeatable).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
              help="Write per-question rows (.parquet, .csv or .jsonl).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def chunking_command(dataset: str | None, questions: str | None, documents: str | None, chunker: str, chunk_size: int, overlap: int, k: str, unit: str, mode: str,
                     tokenizer: str, unit_tokenizer: str | None, embedder_name: str, query_prefix: str,
                     passage_prefix: str, device: str, duplicate_ties: str, corpora: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Chunk every corpus, index all chunks in one datastore, retrieve top-k per question and
    report Recall, Precision, Precision-Ω and IoU (mean ± std, ×100), pooled and per corpus."""
    from evaluators.chunking import evaluate_chunking
    from evaluators.datasets import load_dataset
    from indexers.embedding import load_embedder

    k_value = _k_value(k)
    if dataset is not None and questions is None and dataset.endswith(".jsonl"):
        from evaluators.synth import documents_file_for

        questions, dataset = dataset, None
        documents = documents or str(documents_file_for(questions))
    if (dataset is None) == (questions is None):
        raise click.ClickException("give either --dataset (Chroma format) or --questions with --documents")
    if questions is not None:
        from evaluators.datasets import jsonl_eval_dataset

        if documents is None:
            raise click.ClickException("--questions needs --documents (the texts the offsets point into)")
        data = jsonl_eval_dataset(questions, documents)
        if corpora:
            data = data.subset(corpora)
    else:
        data = load_dataset(dataset, corpora or None)
    embedder = load_embedder(embedder_name, device=device)
    result = evaluate_chunking(data, chunker, chunk_size, overlap, k=k_value, unit=unit, mode=mode, embedder=embedder,
                               tokenizer=tokenizer, unit_tokenizer=unit_tokenizer, duplicate_ties=duplicate_ties,
                               query_prefix=query_prefix, passage_prefix=passage_prefix)
    if out:
        result.write_rows(out)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    s = result.settings
    title = (f"{s['chunker']} {s['chunk_size']}/{s['overlap']} · k={s['k']} · {s['mode']} ({s['engine']}) · "
             f"unit={s['unit']}" + (f" ({s['unit_tokenizer']})" if s["unit_tokenizer"] else ""))
    table = Table(title=title, title_justify="left",
                  caption=(f"{s['chunks']} chunks ({s['duplicate_chunks']} with duplicated text, ties: "
                           f"{s['duplicate_ties']}) · embedder {s['embedder']} · mean ± std ×100 (population std)"),
                  caption_justify="left")
    table.add_column("corpus", no_wrap=True)
    table.add_column("questions", justify="right", no_wrap=True)
    table.add_column("skipped", justify="right", no_wrap=True)
    for name in METRICS:
        table.add_column(METRIC_LABELS[name], justify="right", no_wrap=True)
    summary = result.summary
    table.add_row("all", str(summary.questions), str(summary.skipped),
                  *(_cell(summary.metric(m)) for m in METRICS), style="bold")
    for corpus_id, part in summary.per_corpus.items():
        table.add_row(corpus_id, str(part.questions), str(part.skipped), *(_cell(part.metric(m)) for m in METRICS))
    _print_wide(table)
    if out:
        stdout.print(f"rows written to {out}")


@eval_group.command("retrieval")
@click.option("--dataset", "dataset", required=True, type=click.Path(),
              help="BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.")
@click.option("--split", default=None, help="qrels split (default: test, or the only one).")
@click.option("--mode", "modes", default="dense", show_default=True,
              help="Comma-separated modes, one table row each: dense, bm25, hybrid, hybrid-rrf, hybrid-convex.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Cut-off of nDCG, MRR and recall.")
@click.option("--recall-k", type=int, default=100, show_default=True, help="A second recall cut-off.")
@click.option("--fusion", type=click.Choice(["rrf", "convex"]), default="rrf", show_default=True,
              help="Fusion of the plain 'hybrid' mode.")
@click.option("--alpha", type=click.FloatRange(0, 1), default=0.5, show_default=True, help="Dense weight (convex; RRF weighs its lists 2*alpha and 2*(1 - alpha)).")
@click.option("--rrf-k", type=click.IntRange(min=0), default=60, show_default=True)
@click.option("--normalization", type=click.Choice(["minmax", "zscore", "calibrated"]), default="minmax",
              show_default=True)
@click.option("--depth", type=click.IntRange(min=1), default=100, show_default=True,
              help="Hits asked of each retriever before fusion (raised to the chunks a query needs).")
@click.option("--rerank", default=None, metavar="KIND:MODEL",
              help="Also score every mode reranked (cross-encoder:PATH_OR_NAME or bi-encoder:PATH_OR_NAME).")
@click.option("--rerank-depth", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--mmr", type=click.FloatRange(0, 1), default=None, help="MMR lambda applied to every mode.")
@click.option("--query-prefix", default="auto", show_default=True, help="Query instruction ('auto': model family's).")
@click.option("--passage-prefix", default="auto", show_default=True, help="Passage prefix ('auto': model family's).")
@click.option("--chunker", type=click.Choice(list(CHUNKER_NAMES)), default="recursive", show_default=True)
@click.option("--chunk-size", type=int, default=512, show_default=True,
              help="Chunk size in tokens (documents longer than this are split; a document ranks by its best chunk).")
@click.option("--overlap", type=int, default=0, show_default=True)
@click.option("--tokenizer", default=DEFAULT_TOKENIZER, show_default=True)
@click.option("--embedder", "embedder_name", default="all-MiniLM-L6-v2", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--index-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the datastore here (default: a temporary folder).")
@click.option("--tune-fusion", is_flag=True,
              help="Also tune the hybrid fusion (convex alpha x normalisation, RRF k x list weights) on these queries by nDCG@k "
                   "and add a 'hybrid-tuned (cv)' row scored held out by cross-fitting; prints the settings "
                   "tuned on all queries as rag search flags (adds the dense and bm25 modes if missing).")
@click.option("--folds", type=click.IntRange(min=2), default=2, show_default=True,
              help="--tune-fusion: cross-fitting folds (query ids in natural order, dealt round-robin).")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write per-query metrics (JSON).")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: one object for one mode, a list of objects for several.")
def retrieval_command(dataset: str, split: str | None, modes: str, k: int, recall_k: int, fusion: str, alpha: float,
                      rrf_k: int, normalization: str, depth: int, rerank: str | None, rerank_depth: int,
                      mmr: float | None, query_prefix: str, passage_prefix: str, chunker: str, chunk_size: int,
                      overlap: int, tokenizer: str, embedder_name: str, device: str, index_dir: str | None,
                      tune_fusion: bool, folds: int, out: str | None, as_json: bool) -> None:
    """Index a BEIR corpus in one datastore, retrieve for every judged query with each mode and report
    nDCG@k, MRR@k, recall@k, recall@recall-k and MAP (mean ×100, pytrec_eval) in one table."""
    from evaluators.datasets import load_beir
    from evaluators.retrieval import evaluate_beir_modes, parse_modes
    from indexers.embedding import load_embedder

    if k < 1 or recall_k < 1:
        raise click.ClickException(f"-k and --recall-k must be at least 1 (got {k}, {recall_k})")
    names = parse_modes(modes)
    if tune_fusion:
        names += [m for m in ("dense", "bm25") if m not in names]
    data = load_beir(dataset, split)
    embedder = load_embedder(embedder_name, device=device)
    options = {"fusion": fusion, "alpha": alpha, "rrf_k": rrf_k, "normalization": normalization, "depth": depth,
               "rerank_depth": rerank_depth, "mmr": mmr, "device": device}
    results = evaluate_beir_modes(data, names, k, recall_k, embedder=embedder, chunker=chunker,
                                  chunk_size=chunk_size, overlap=overlap, tokenizer=tokenizer, index_dir=index_dir,
                                  progress=not as_json, retriever_options=options, rerank=rerank,
                                  query_prefix=query_prefix, passage_prefix=passage_prefix, device=device,
                                  keep_hits=tune_fusion)
    if tune_fusion:
        from evaluators.fusion_tuning import tuned_fusion_evaluation

        results.append(tuned_fusion_evaluation(results, data.qrels, folds, progress=not as_json))
    if out:
        from pathlib import Path

        payload = [r.to_dict(per_query=True) for r in results]
        Path(out).write_text(json.dumps(payload[0] if len(payload) == 1 else payload, ensure_ascii=False),
                             encoding="utf-8")
    if as_json:
        payload = [r.to_dict() for r in results]
        click.echo(json.dumps(payload[0] if len(payload) == 1 else payload, ensure_ascii=False))
        return
    s = results[0].settings
    table = Table(title=f"{s['dataset']} ({s['split']}) · {s['queries']} queries", title_justify="left",
                  caption=(f"{s['documents']} documents, {s['chunks']} chunks ({s['chunker']} {s['chunk_size']}/"
                           f"{s['overlap']}) · embedder {s['embedder']} · mean ×100 (pytrec_eval); MAP over the "
                           f"top {s['depth']}"), caption_justify="left")
    table.add_column("mode")
    table.add_column("engine")
    for name in results[0].metrics:
        table.add_column(name.replace("ndcg", "nDCG").replace("mrr", "MRR").replace("map", "MAP"), justify="right")
    table.add_column("queries/s", justify="right")
    for result in results:
        r = result.settings
        speed = "–" if r["queries_per_s"] is None else f"{r['queries_per_s']:.1f}"
        table.add_row(r["mode"], r["engine"], *(f"{v:.2f}" for v in result.metrics.values()), speed)
    _print_wide(table)
    if tune_fusion:
        _print_fusion_tuning(results[-1].settings)


def _print_fusion_tuning(settings: dict) -> None:
    """The fusion settings chosen per fold and on all queries, and how to use the latter."""
    tuning = settings["fusion_tuning"]
    metric = tuning["metric"].replace("ndcg", "nDCG")
    table = Table(title=f"fusion tuned by {metric} over {tuning['grid_size']} settings (×100)", title_justify="left",
                  caption="a fold is scored with the setting tuned on the other folds; 'all' is the setting to use",
                  caption_justify="left")
    for name in ("tuned on", "setting", f"dev {metric}", f"held-out {metric}"):
        table.add_column(name, justify="left" if name in ("tuned on", "setting") else "right")
    for fold in tuning["folds"]:
        table.add_row(f"{fold['queries']} queries (all but fold {fold['fold']})", fold["label"],
                      f"{fold['dev_score']:.2f}", f"{fold['test_score']:.2f} ({fold['test_queries']} queries)")
    overall = tuning["overall"]
    table.add_row(f"all {overall['queries']} queries", overall["label"], f"{overall['dev_score']:.2f}", "–",
                  style="bold")
    _print_wide(table)
    options = ", ".join(f"{k}: {v}" for k, v in settings["retriever"].items())
    stdout.print(f"use: rag search DATASTORE QUERY {settings['search_flags']}", markup=False, highlight=False,
                 soft_wrap=True)
    stdout.print(f"or in a pipeline config: retriever: {{{options}}}", markup=False, highlight=False, soft_wrap=True)


@eval_group.command("scaling")
@click.argument("datastore", type=click.Path(file_okay=False))
@click.option("--dataset", required=True, type=click.Path(exists=True),
              help="Chroma folder (span metrics), BEIR folder (qrels) or questions .jsonl (answers or references).")
@click.option("--top-k", type=int, default=1000, show_default=True, help="Chunks retrieved once per question.")
@click.option("-k", "k", type=int, default=5, show_default=True, help="Cut-off of the metrics.")
@click.option("--fractions", default="0.01,0.03,0.1,0.3,1", show_default=True, help="Datastore fractions p.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subsample.")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True)
@click.option("--dedup/--no-dedup", default=True, show_default=True,
              help="Remove near-duplicates (MinHash, 13-word shingles, Jaccard >= 0.8) among the retrieved.")
@click.option("--decontaminate/--no-decontaminate", default=True, show_default=True,
              help="Remove chunks with 13-gram Jaccard >= 0.8 against a question (+ its answers).")
@click.option("--rerank", default=None, help="Rerank survivors: cross-encoder:PATH or bi-encoder:PATH.")
@click.option("--rerank-depth", type=int, default=100, show_default=True)
@click.option("--plot", "plot", type=click.Path(dir_okay=False), default=None, help="Write a PNG of metric vs p.")
@click.option("--out", "out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def scaling_command(datastore: str, dataset: str, top_k: int, k: int, fractions: str, seed: int, mode: str,
                    dedup: bool, decontaminate: bool, rerank: str | None, rerank_depth: int, plot: str | None,
                    out: str | None, device: str, as_json: bool) -> None:
    """MassiveDS scaling study: retrieve the top-k once, then dedup, decontaminate, subsample each
    fraction p (seeded, nested), optionally rerank, and score; a table and a plot of metric vs p."""
    from rag import Datastore
    from evaluators.scaling import ScalingSettings, load_judge, parse_fractions, run_scaling

    settings = ScalingSettings(top_k=top_k, k=k, fractions=parse_fractions(fractions), seed=seed, mode=mode,
                               dedup=dedup, decontaminate=decontaminate, rerank=rerank, rerank_depth=rerank_depth)
    store = Datastore.open(datastore, device=device)
    judge = load_judge(dataset, store)
    reranker = None
    if rerank:
        from rag.retrieve.rerank import load_reranker

        reranker = load_reranker(rerank, device=device)
    result = run_scaling(store, judge, settings, reranker)
    if _write_outputs(result, out, plot, as_json):
        return
    info = result.info
    table = Table(title=f"scaling · {info['questions']} questions · top-{top_k} {mode} → k={k} · seed {seed}",
                  title_justify="left",
                  caption=(f"{info['datastore_chunks']:,} chunks, {info['retrieved_unique']:,} retrieved; removed "
                           f"{result.removed['near_duplicates']} near-duplicates, {result.removed['contaminated']} "
                           "contaminated · metrics ×100 · candidates: mean survivors per question"),
                  caption_justify="left")
    table.add_column("p", justify="right")
    for name in result.metrics:
        table.add_column(METRIC_LABELS.get(name, name), justify="right")
    table.add_column("candidates", justify="right")
    for row in result.rows:
        table.add_row(f"{row['fraction']:g}", *(f"{row[m]:.2f}" for m in result.metrics), f"{row['candidates']:.1f}")
    stdout.print(table)
    for path in (out, plot):
        if path:
            stdout.print(f"written {path}")


PIPELINE_FLAGS = ("k", "mode", "budget", "tokenizer", "prune", "compress", "compress_model", "reorder", "generator",
                  "max_tokens", "allow_download", "base_url", "timeout", "device")


def _pipelines(configs: tuple[str, ...], flags: dict) -> list:
    """One named pipeline per --config (flags laid over each), or one from the flags alone."""
    from evaluators.answer_eval import NamedPipeline
    from ragcli.ask import config_from_options

    flags = {key: flags.get(key) for key in PIPELINE_FLAGS}
    flags["allow_download"] = bool(flags["allow_download"])
    if not configs:
        config = config_from_options(None, **flags)
        return [NamedPipeline(_describe(config), config)]
    from pathlib import Path

    names = [Path(c).stem for c in configs]
    return [NamedPipeline(name if names.count(name) == 1 else f"{name}#{i}", config_from_options(path, **flags))
            for i, (name, path) in enumerate(zip(names, configs), start=1)]


def _describe(config) -> str:
    """A short row name for a pipeline built from flags."""
    parts = [str(config.retriever.get("mode", "dense")), f"k={config.k}"]
    if config.budget:
        parts.append(f"budget={config.budget}")
    for stage in (config.pruner, config.compressor):
        if stage:
            parts.append(str(stage["method"]))
    if config.reorder:
        parts.append("reorder")
    return " ".join(parts + [str(config.generator.get("spec", "extractive"))])


def _seconds_cell(seconds: dict) -> str:
    return " · ".join(f"{stage} {value:.2f}" for stage, value in seconds.items())


def _answer_table(result) -> Table:
    s = result.settings
    table = Table(title=f"answers · {s['dataset']} · {s['questions']} questions ({s['skipped']} without answers "
                        "skipped)", title_justify="left",
                  caption=("EM, F1 (SQuAD normalisation, citation marks removed), acc (a gold answer occurs in the "
                           "answer), answer in final context and "
                           "retrieval recall (gold document retrieved) ×100 · tokens: mean per question (context in "
                           "the pipeline's tokenizer) · seconds per question per stage"), caption_justify="left")
    for name in ("pipeline", "EM", "F1", "acc", "in context", "recall", "ctx tokens", "gen tokens", "s/q", "stages (s/q)"):
        table.add_column(name, justify="left" if name in ("pipeline", "stages (s/q)") else "right", no_wrap=True)
    for row in result.rows:
        recall = "–" if row.retrieval_recall is None else f"{row.retrieval_recall:.1f}"
        table.add_row(row.pipeline, f"{row.exact_match:.1f}", f"{row.f1:.1f}", f"{row.accuracy:.1f}",
                      f"{row.answer_in_context:.1f}", recall,
                      f"{row.context_tokens:.0f}", f"{row.generated_tokens:.1f}", f"{sum(row.seconds.values()):.2f}",
                      _seconds_cell(row.seconds))
    return table


@eval_group.command("answers")
@click.option("--dataset", required=True, type=click.Path(exists=True),
              help="QA set: SQuAD .json, a Chroma folder (reference excerpts as answers) or questions .jsonl "
                   "({question, answers, references?}).")
@click.option("--documents", type=click.Path(exists=True), default=None,
              help="With a .jsonl set: its documents (folder or JSONL corpus), indexed unless --datastore is given.")
@click.option("--datastore", type=click.Path(file_okay=False), default=None,
              help="Retrieve from this datastore (default: index the set's own passages on the fly).")
@click.option("--config", "configs", multiple=True, type=click.Path(dir_okay=False),
              help="Pipeline YAML, repeatable: one row each (the flags below override every config).")
@click.option("-k", "k", type=click.IntRange(min=1), help="Passages to retrieve [config: 5].")
@click.option("--mode", type=click.Choice(["dense", "bm25", "hybrid"]), help="Retrieval mode [config: dense].")
@click.option("--budget", type=click.IntRange(min=1), help="Context budget in tokens of --tokenizer.")
@click.option("--tokenizer", help="Tokenizer the budget is counted in [cl100k_base].")
@click.option("--prune", type=click.Choice(["html", "none"]), help="Prune HTML passages block by block.")
@click.option("--compress", help="Compression method (truncate, sentence, semantic, token, summary, none).")
@click.option("--compress-model", help="Model of the token / summary compressor (e.g. smollm2).")
@click.option("--reorder/--no-reorder", default=None, help="Best passage first, second best last, inward.")
@click.option("--generator", help="extractive | hf:SPEC (e.g. hf:smollm2) | openai:MODEL [config: extractive].")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Most tokens to generate (hf:, openai:).")
@click.option("--allow-download", is_flag=True, help="Let models download from the Hugging Face Hub.")
@click.option("--base-url", help="OpenAI-compatible server URL (openai: generators); key from OPENAI_API_KEY.")
@click.option("--timeout", type=float, help="Seconds per request to the server (openai:).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Evaluate this many questions.")
@click.option("--seed", type=int, default=None, help="With --limit: a seeded random sample instead of the first ones.")
@click.option("--closed-book/--no-closed-book", default=True, show_default=True,
              help="Add a row of the first pipeline's generator without passages.")
@click.option("--oracle/--no-oracle", default=True, show_default=True,
              help="Add a row of the first pipeline on the gold passages (where the set has them).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="Questions prepared and generated together (one padded call for hf: generators).")
@click.option("--chunker", type=click.Choice(list(CHUNKER_NAMES)), default="recursive", show_default=True,
              help="Chunker of the on-the-fly index.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="Chunk size of the on-the-fly index (cl100k tokens).")
@click.option("--index-dir", type=click.Path(file_okay=False), default=None,
              help="Keep the on-the-fly datastore here (it must not exist).")
@click.option("--cache", "cache_dir", type=click.Path(file_okay=False), default=None,
              help="Generation cache folder, so a killed run resumes [$TERARAG_CACHE/answers].")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the generation cache.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write per-question records (JSONL).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of rows instead of a table.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]))
def answers_command(dataset: str, documents: str | None, datastore: str | None, configs: tuple[str, ...],
                    limit: int | None, seed: int | None, closed_book: bool, oracle: bool, batch_size: int,
                    chunker: str, chunk_size: int, index_dir: str | None, cache_dir: str | None, no_cache: bool,
                    out: str | None, as_json: bool, **flags) -> None:
    """Run whole ask pipelines over a QA set: EM, F1, answer-in-context, retrieval recall, tokens and
    seconds per stage, one row per pipeline plus closed-book and oracle rows."""
    import tempfile
    from pathlib import Path

    from evaluators.answer_eval import evaluate_answers, index_documents
    from evaluators.datasets import load_qa_set
    from rag.datastore import Datastore
    from rag.lm import cache_root

    qa = load_qa_set(dataset, documents).limited(limit, seed)
    pipelines = _pipelines(configs, flags)
    device = pipelines[0].config.device
    cache = None if no_cache else Path(cache_dir) if cache_dir else cache_root() / "answers"
    with tempfile.TemporaryDirectory(prefix="terarag-answers-") as tmp:
        if datastore is not None:
            store = Datastore.open(datastore, device=device)
        elif qa.documents:
            store = index_documents(qa.documents, Path(index_dir or Path(tmp) / "datastore"), chunker, chunk_size,
                                    device=device, progress=not as_json)
        else:
            raise click.ClickException(f"{dataset} brings no passages: give --datastore (or --documents)")
        result = evaluate_answers(qa, pipelines, store, closed_book=closed_book, oracle=oracle,
                                  batch_size=batch_size, cache_dir=cache, progress=not as_json)
    if out:
        result.write_records(out)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in result.rows], ensure_ascii=False))
        return
    _print_wide(_answer_table(result))
    if out:
        stdout.print(f"per-question records written to {out}")


@eval_group.command("perplexity")
@click.option("--datastore", required=True, type=click.Path(file_okay=False), help="Retrieve from this datastore.")
@click.option("--texts", "texts", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Held-out text: JSONL (one 'text' per record) or plain text files; repeatable.")
@click.option("--lm", required=True, help="Causal LM: smollm2, a local folder or .gguf file, or a Hugging Face name.")
@click.option("--window", type=click.IntRange(min=2), default=256, show_default=True, help="LM tokens per window.")
@click.option("--query-tokens", type=click.IntRange(min=1), default=128, show_default=True,
              help="First tokens of a window: the retrieval query and the LM's prefix; the rest is scored.")
@click.option("-k", "k", type=click.IntRange(min=1), default=3, show_default=True, help="Chunks put in front.")
@click.option("--order", type=click.Choice(["best-last", "best-first"]), default="best-last", show_default=True,
              help="Where the best chunk goes: next to the prefix (best-last) or at the start.")
@click.option("--budget", type=click.IntRange(min=1), default=768, show_default=True,
              help="Most LM tokens of retrieved text in front.")
@click.option("--top-k", type=click.IntRange(min=1), default=100, show_default=True,
              help="Chunks retrieved once per window (overlap removal and subsamples choose from them).")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True)
@click.option("--fractions", default=None, help="Datastore fractions p, e.g. 0.01,0.1,1 (retrieve once, subsample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the subsample.")
@click.option("--max-windows", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--keep-overlaps", is_flag=True,
              help="Do not remove chunks overlapping the window (shows the fake gain of a contaminated datastore).")
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True, help="Sequences per forward.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, help="PNG of perplexity against fraction.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the result as JSON.")
@click.option("--allow-download", is_flag=True, help="Let --lm download from the Hugging Face Hub.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def perplexity_command(datastore: str, texts: tuple[str, ...], lm: str, window: int, query_tokens: int, k: int,
                       order: str, budget: int, top_k: int, mode: str, fractions: str | None, seed: int,
                       max_windows: int, keep_overlaps: bool, batch_size: int, plot: str | None, out: str | None, allow_download: bool,
                       device: str, as_json: bool) -> None:
    """MassiveDS language modelling: the LM's perplexity of held-out windows without retrieval and with
    the top-k retrieved chunks in front (overlapping chunks removed), optionally per datastore fraction."""
    from evaluators.perplexity import PerplexitySettings, evaluate_perplexity, read_texts
    from evaluators.scaling import parse_fractions
    from rag.datastore import Datastore
    from rag.lm import load_causal_lm

    settings = PerplexitySettings(window, query_tokens, k, order, budget, top_k, mode,
                                  parse_fractions(fractions) if fractions else (), seed, max_windows,
                                  remove_overlaps=not keep_overlaps, batch_size=batch_size)
    if plot and not settings.fractions:
        raise click.UsageError("--plot needs --fractions")
    store = Datastore.open(datastore, device=device)
    result = evaluate_perplexity(store, read_texts(texts), load_causal_lm(lm, device, allow_download), settings)
    if _write_outputs(result, out, plot, as_json):
        return
    info = result.info
    table = Table(title=f"perplexity · {info['lm']} · {info['windows']} windows, {info['tokens']:,} tokens scored",
                  title_justify="left",
                  caption=(f"{window}-token windows, first {query_tokens} as query · top-{k} {mode} chunks "
                           f"({order}, ≤ {budget} LM tokens) · removed {result.removed} overlapping chunks "
                           f"({info['removed_pairs']} window-chunk pairs) of {info['datastore_chunks']:,}"),
                  caption_justify="left")
    table.add_column("context")
    table.add_column("perplexity", justify="right")
    table.add_row("no retrieval", f"{result.no_retrieval:.3f}")
    for fraction, value in result.fractions.items():
        table.add_row(f"retrieval, p={fraction:g}", f"{value:.3f}")
    if 1.0 not in result.fractions:
        table.add_row("retrieval", f"{result.retrieval:.3f}")
    _print_wide(table)
    for path in (out, plot):
        if path:
            stdout.print(f"written {path}")


__all__ = ["answers_command", "chunking_command", "eval_group", "perplexity_command", "retrieval_command",
           "scaling_command"]


def _write_outputs(result, out: str | None, plot: str | None, as_json: bool) -> bool:
    """Write a study's JSON file and plot when asked; print its JSON with ``--json`` (then True:
    the caller prints no table)."""
    if out:
        result.write_json(out)
    if plot:
        result.plot(plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
    return as_json
