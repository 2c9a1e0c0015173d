"""``rag datastore``: inspect, audit and reshape a datastore (info, verify, sql, export, dedup,
decontaminate, filter, prune-importance, compact, subsample, merge)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import click
from rich.table import Table

from datastores import Datastore
from datastores.layout import DatastoreLayout
from datastores.lock import DatastoreLock, writer_lock
from datastores.manifest import read_manifest
from datastores.ops.tombstones import deleted_chunk_ids
from datastores.sql import run_sql
from datastores.verify import verify_datastore
from ragcli.common import snippet, stdout
from ragcli.errors import ReportingGroup
from ragcli.info import info_command


@click.group("datastore", cls=ReportingGroup)
def datastore_group() -> None:
    """Inspect, audit and reshape datastores without re-embedding them."""


datastore_group.add_command(info_command, "info")


@datastore_group.command("verify")
@click.argument("datastore", type=click.Path())
def verify_command(datastore: str) -> None:
    """Re-hash every file of DATASTORE and check row counts; exit 1 on any problem."""
    report = verify_datastore(datastore)
    for warning in report.warnings:  # do not fail: unreferenced leftovers, no row checksums
        click.echo(f"warning: {os.path.relpath(warning.path, datastore)}: {warning.problem}", err=True)
    if report.ok:
        stdout.print(f"ok: {report.files} files, {report.bytes / 1e6:.1f} MB verified in {report.seconds:.2f}s")
        return
    click.echo(f"{len(report.problems)} problem(s) in {datastore}:")
    for problem in report.problems:
        click.echo(f"  {os.path.relpath(problem.path, datastore)}: {problem.problem}")
    sys.exit(1)


@datastore_group.command("sql")
@click.argument("datastore", type=click.Path())
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print rows as a JSON list of objects.")
@click.option("--max-width", default=80, show_default=True, help="Truncate cells to this many characters.")
def sql_command(datastore: str, query: str, as_json: bool, max_width: int) -> None:
    """Run a read-only SQL QUERY over the views chunks, docs and shards of DATASTORE."""
    ds = Datastore.open(datastore)
    columns, rows = run_sql(ds.sql(), query)
    if as_json:
        click.echo(json.dumps([dict(zip(columns, r)) for r in rows], indent=2, default=str, ensure_ascii=False))
        return
    table = Table()
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[(" ".join(str(v).split())[:max_width]) for v in row])
    stdout.print(table)
    stdout.print(f"{len(rows)} row(s)")


@datastore_group.command("export")
@click.argument("datastore", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["parquet", "jsonl"]), default="parquet", show_default=True)
def export_command(datastore: str, output: str, fmt: str) -> None:
    """Write the live chunk rows of DATASTORE, in chunk-id order, to OUTPUT/chunks.parquet or .jsonl."""
    import duckdb

    ds = Datastore.open(datastore)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    target = out / f"chunks.{fmt}"
    tmp = out / f".chunks.{fmt}.tmp"
    paths = ", ".join("'" + str(s.chunks_path).replace("'", "''") + "'" for s in ds.shards)
    option = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT json"
    deleted = deleted_chunk_ids(ds.root, ds.manifest).tolist()  # tombstoned chunks are not exported
    with duckdb.connect() as con:
        con.execute(f"COPY (SELECT * FROM read_parquet([{paths}]) WHERE NOT (chunk_id = ANY(?)) ORDER BY chunk_id) "
                    f"TO '{str(tmp).replace(chr(39), chr(39) * 2)}' ({option})", [deleted])
    tmp.replace(target)
    stdout.print(f"wrote {ds.manifest.num_live:,} chunks to {target}")


# -- operations that tombstone chunks ------------------------------------------------------------

def _progress_bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="chunk", dynamic_ncols=True, file=sys.stderr, disable=None)


def _finish_operation(datastore: str, before, ids, operation, dry_run: bool, compact_after: bool,
                      report: dict, as_json: bool, table: Table, lock: DatastoreLock | None) -> None:
    """Commit the tombstones (unless --dry-run), optionally compact, then print the report."""
    from datastores.ops.compact import compact
    from datastores.ops.tombstones import commit_tombstones

    report = {"datastore": datastore, "operation": operation.operation, "parameters": operation.parameters,
              "dry_run": dry_run, "would_remove" if dry_run else "removed": len(ids), **report}
    if not dry_run:
        after = commit_tombstones(datastore, before, ids, operation, lock=lock)
        report["live"] = after.num_live
        if compact_after:
            report["compacted_chunks"] = compact(datastore, lock=lock).num_chunks
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str, ensure_ascii=False))
        return
    stdout.print(table)
    verb = "would tombstone" if dry_run else "tombstoned"
    tail = f"; {report['live']:,} live chunks" if "live" in report else ""
    tail += f"; compacted to {report['compacted_chunks']:,} chunks" if "compacted_chunks" in report else ""
    stdout.print(f"{verb} {len(ids):,} chunk(s) of {datastore}{tail}")


def _open_manifest(datastore: str):
    Datastore.open(datastore)  # checks the files before anything is computed
    return read_manifest(DatastoreLayout(Path(datastore)))


_wait = click.option("--wait", is_flag=True,
                     help="If another process is changing the datastore, wait for it instead of failing at once.")
_wait_timeout = click.option("--wait-timeout", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
                             help="With --wait: give up after this many seconds.")


def lock_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The --wait and --wait-timeout options of commands that write a datastore."""
    return _wait(_wait_timeout(func))


def _writes(operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run the command holding DATASTORE's writer lock for its whole run (passed as ``lock``;
    None for --dry-run, which writes nothing)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def command(datastore: str, wait: bool, wait_timeout: float | None, **kwargs: Any) -> Any:
            if kwargs.get("dry_run"):
                return func(datastore, lock=None, **kwargs)
            read_manifest(DatastoreLayout(Path(datastore)))  # only a datastore gets a lock file
            with writer_lock(datastore, operation, wait=wait, timeout=wait_timeout) as lock:
                return func(datastore, lock=lock, **kwargs)

        return lock_options(command)

    return decorate


@contextlib.contextmanager
def _output_lock(output: str, operation: str, overwrite: bool, wait: bool,
                 wait_timeout: float | None) -> Iterator[DatastoreLock]:
    """The writer lock of a new datastore OUTPUT; a folder the command may not write is refused first."""
    from datastores.writer import check_output

    check_output(output, "overwrite" if overwrite else "create", resumable=False)
    with writer_lock(output, operation, wait=wait, timeout=wait_timeout, create=True) as lock:
        yield lock


_dry_run = click.option("--dry-run", is_flag=True, help="Report what would be removed; change nothing.")
_compact = click.option("--compact", "compact_after", is_flag=True,
                        help="Afterwards rewrite the shards without tombstoned chunks (renumbers chunk ids).")
_as_json = click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
_overwrite = click.option("--overwrite", is_flag=True,
                          help="Replace OUTPUT if it holds a datastore or the partial output of a killed run.")


@datastore_group.command("dedup")
@click.argument("datastore", type=click.Path())
@click.option("--exact/--no-exact", default=True, show_default=True, help="Normalised-text hash duplicates.")
@click.option("--near/--no-near", default=True, show_default=True, help="MinHash LSH near-duplicates.")
@click.option("--threshold", default=0.8, show_default=True, help="Jaccard threshold of near-duplicates.")
@click.option("--shingle", default=13, show_default=True, help="Words per shingle.")
@click.option("--num-perm", default=128, show_default=True, help="MinHash permutations.")
@click.option("--recall", default=0.99, show_default=True, type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Chance that a pair exactly at the threshold is proposed by MinHash LSH (sets its bands and "
                   "rows); every proposed pair is then checked with the exact shingle Jaccard.")
@click.option("--examples", default=5, show_default=True, help="Example pairs to show.")
@_dry_run
@_compact
@_as_json
@_writes("dedup")
def dedup_command(datastore: str, exact: bool, near: bool, threshold: float, shingle: int, num_perm: int,
                  recall: float, examples: int, dry_run: bool, compact_after: bool, as_json: bool,
                  lock: DatastoreLock | None) -> None:
    """Tombstone exact and near-duplicate chunks of DATASTORE, keeping the first occurrence.

    A near-duplicate has an exact word-shingle Jaccard >= --threshold with an earlier kept chunk."""
    from datastores.ops.dedup import find_duplicates
    from datastores.ops.tombstones import Operation

    before = _open_manifest(datastore)
    params = {"exact": exact, "near": near, "threshold": threshold, "shingle": shingle, "num_perm": num_perm,
              "recall": recall}
    operation = Operation("dedup", params)
    with _progress_bar(before.num_live, "dedup") as bar:
        result = find_duplicates(datastore, exact, near, threshold, shingle, num_perm, max_examples=examples,
                                 progress=bar.update, recall=recall)
    operation.counts = result.counts()
    rows = Datastore.open(datastore).get_chunks([i for p in result.examples for i in (p.removed, p.kept)])
    table = Table(title=f"dedup: {result.exact:,} exact, {result.near:,} near of {result.scanned:,} scanned",
                  title_justify="left")
    for column in ("removed", "kept", "kind", "similarity", "removed text"):
        table.add_column(column)
    pairs = []
    for p in result.examples:
        table.add_row(str(p.removed), str(p.kept), p.kind, f"{p.similarity:.3f}", snippet(rows[p.removed]["text"], 60))
        pairs.append({**p.__dict__, "removed_text": rows[p.removed]["text"], "kept_text": rows[p.kept]["text"]})
    _finish_operation(datastore, before, result.removed_ids, operation, dry_run, compact_after,
                      {**result.counts(), "examples": pairs}, as_json, table, lock)


@datastore_group.command("decontaminate")
@click.argument("datastore", type=click.Path())
@click.option("--against", required=True, type=click.Path(exists=True),
              help="Evaluation set: questions JSONL, or a Chroma-format folder / questions_df.csv.")
@click.option("--method", type=click.Choice(["either", "ngram", "longest"]), default="either", show_default=True,
              help="Rules, on lower-cased words (punctuation ignored) of a chunk and an evaluation text: ngram "
                   "flags a chunk whose set of N-word n-grams has Jaccard >= THRESHOLD with the text's (a text "
                   "under N words is one n-gram); longest flags a chunk sharing a run of >= MIN_WORDS consecutive "
                   "words with the text; either (default) flags a chunk that either rule flags, so any verbatim "
                   "copy of 13 or more words is caught.")
@click.option("--n", "n", default=13, show_default=True, help="Words per n-gram (ngram rule).")
@click.option("--threshold", default=0.8, show_default=True, help="n-gram Jaccard threshold (ngram rule).")
@click.option("--min-words", default=13, show_default=True, help="Shortest shared run of words (longest rule).")
@click.option("--fields", default="question,answers", show_default=True,
              help="Evaluation fields to compare: question, answers, references.")
@click.option("--corpus", type=click.Path(exists=True), default=None,
              help="Documents of a JSONL set, to resolve its reference spans.")
@click.option("--examples", default=10, show_default=True, help="Matches to show.")
@_dry_run
@_compact
@_as_json
@_writes("decontaminate")
def decontaminate_command(datastore: str, against: str, method: str, n: int, threshold: float, min_words: int,
                          fields: str, corpus: str | None, examples: int, dry_run: bool, compact_after: bool,
                          as_json: bool, lock: DatastoreLock | None) -> None:
    """Tombstone chunks of DATASTORE that overlap an evaluation set, and say why.

    The evaluation set is a questions JSONL ("question" and "answers" suffice; "references" with
    --fields references and --corpus) or a Chroma-format folder / questions_df.csv."""
    from datastores.ops.decontaminate import find_contaminated
    from evaluators.eval_texts import load_eval_texts
    from datastores.ops.tombstones import Operation

    before = _open_manifest(datastore)
    texts = load_eval_texts(against, [f.strip() for f in fields.split(",") if f.strip()], corpus)
    params = {"against": against, "method": method, "fields": fields,
              **({"n": n, "threshold": threshold} if method != "longest" else {}),
              **({"min_words": min_words} if method != "ngram" else {})}
    with _progress_bar(before.num_live, "decontaminate") as bar:
        result = find_contaminated(datastore, texts, method, n, threshold, min_words, progress=bar.update)
    operation = Operation("decontaminate", params, {"scanned": result.scanned, "eval_texts": result.eval_texts})
    rows = Datastore.open(datastore).get_chunks([m.chunk_id for m in result.matches[:examples]])
    table = Table(title=f"decontaminate: {len(result.matches):,} of {result.scanned:,} chunks match "
                        f"{result.eval_texts:,} evaluation texts", title_justify="left")
    for column in ("chunk", "matches", "why", "text"):
        table.add_column(column)
    for m in result.matches[:examples]:
        table.add_row(str(m.chunk_id), m.label, m.evidence, snippet(rows[m.chunk_id]["text"], 60))
    matches = [m.__dict__ for m in result.matches]
    _finish_operation(datastore, before, result.removed_ids, operation, dry_run, compact_after,
                      {"scanned": result.scanned, "matches": matches}, as_json, table, lock)


@datastore_group.command("filter")
@click.argument("datastore", type=click.Path())
@click.option("--min-words", type=int, default=None, help="Drop chunks with fewer words.")
@click.option("--max-words", type=int, default=None, help="Drop chunks with more words.")
@click.option("--max-symbol-ratio", type=float, default=None, help="Drop chunks with more symbol characters.")
@click.option("--max-repetition", type=float, default=None, help="Drop chunks with more repeated word 3-grams.")
@click.option("--max-non-alpha", type=float, default=None, help="Drop chunks with more words without letters.")
@click.option("--where", default=None, help="Keep only chunks satisfying this SQL expression over chunk columns.")
@click.option("--samples", default=5, show_default=True, help="Removed chunks to show.")
@_dry_run
@_compact
@_as_json
@_writes("filter")
def filter_command(datastore: str, min_words: int | None, max_words: int | None, max_symbol_ratio: float | None,
                   max_repetition: float | None, max_non_alpha: float | None, where: str | None, samples: int,
                   dry_run: bool, compact_after: bool, as_json: bool, lock: DatastoreLock | None) -> None:
    """Tombstone chunks of DATASTORE that fail quality rules or a SQL expression."""
    from datastores.ops.quality import QualityRules, find_low_quality
    from datastores.ops.tombstones import Operation

    before = _open_manifest(datastore)
    rules = QualityRules(min_words, max_words, max_symbol_ratio, max_repetition, max_non_alpha, where)
    with _progress_bar(before.num_live, "filter") as bar:
        result = find_low_quality(datastore, rules, samples, progress=bar.update)
    operation = Operation("filter", rules.active(), {"scanned": result.scanned, **result.per_rule})
    table = Table(title=f"filter: {len(result.removed_ids):,} of {result.scanned:,} chunks fail "
                        + ", ".join(f"{k} ({v:,})" for k, v in result.per_rule.items()), title_justify="left")
    for column in ("chunk", "fails", "text"):
        table.add_column(column)
    for s in result.samples:
        table.add_row(str(s.chunk_id), ", ".join(s.rules), snippet(s.text, 70))
    _finish_operation(datastore, before, result.removed_ids, operation, dry_run, compact_after,
                      {"scanned": result.scanned, "per_rule": result.per_rule,
                       "samples": [s.__dict__ for s in result.samples]}, as_json, table, lock)


@datastore_group.command("prune-importance")
@click.argument("datastore", type=click.Path())
@click.option("--dataset", required=True, type=click.Path(exists=True),
              help="Validation questions JSONL with gold answers.")
@click.option("--heldout", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Held-out questions JSONL with gold answers (default: hold out --heldout-fraction of --dataset).")
@click.option("--heldout-fraction", default=0.3, show_default=True,
              help="Share of --dataset held out (seeded by --seed) when no --heldout file is given.")
@click.option("--force", is_flag=True, help="Commit even if held-out answer-in-top-k falls.")
@click.option("--drop-below", type=float, required=True, help="Tombstone retrieved chunks whose importance is lower.")
@click.option("-k", "--k", "k", default=5, show_default=True, help="Top-K of the retrieval utility.")
@click.option("--candidates", default=50, show_default=True, help="Retrieved candidates per question.")
@click.option("--mode", type=click.Choice(["dense", "bm25"]), default="dense", show_default=True)
@click.option("--method", type=click.Choice(["exact", "sampled"]), default="exact", show_default=True)
@click.option("--samples", default=1000, show_default=True, help="Subsets drawn by the sampled method.")
@click.option("--seed", default=0, show_default=True)
@click.option("--learn-steps", default=0, show_default=True,
              help="Learn the weights by projected gradient ascent; importance is then the weight in [0, 1].")
@click.option("--learning-rate", default=1.0, show_default=True)
@click.option("--device", default="auto", show_default=True, help="Device of the query embedder.")
@click.option("--show", default=10, show_default=True, help="Least important chunks to show.")
@_dry_run
@_compact
@_as_json
@_writes("prune-importance")
def prune_importance_command(datastore: str, dataset: str, heldout: str | None, heldout_fraction: float, force: bool,
                             drop_below: float, k: int, candidates: int, mode: str, method: str, samples: int,
                             seed: int, learn_steps: int, learning_rate: float, device: str, show: int,
                             dry_run: bool, compact_after: bool, as_json: bool, lock: DatastoreLock | None) -> None:
    """Tombstone retrieved chunks of DATASTORE whose data importance on DATASET is below a bound.

    Importance is computed on part of the questions; answer-in-top-k of the others (or of
    --heldout) is measured before and after, and a pruning that lowers it is not committed
    unless --force."""
    from datastores.ops.importance import datastore_importance, held_out_check, load_validation, split_questions
    from datastores.ops.tombstones import Operation
    from evaluators.answers import answer_in_context
    from rag import Datastore as EmbeddingDatastore

    before = _open_manifest(datastore)
    questions, answers = load_validation(dataset)
    if heldout:
        held_questions, held_answers = load_validation(heldout)
    else:
        train, held = split_questions(len(questions), heldout_fraction, seed)
        held_questions, held_answers = [questions[i] for i in held], [answers[i] for i in held]
        questions, answers = [questions[i] for i in train], [answers[i] for i in train]
    ds = EmbeddingDatastore.open(datastore, device=device)
    result = datastore_importance(ds, questions, answers, answer_in_context, k, candidates, mode, method,
                                  samples=samples, seed=seed,
                                  learn_steps=learn_steps, learning_rate=learning_rate)
    drop = result.chunk_ids[result.importance < drop_below]
    check = held_out_check(ds, held_questions, held_answers, drop.tolist(), k, mode, answer_in_context)
    refuse = check.lowers and not force
    params = {"dataset": dataset, "heldout": heldout or f"{heldout_fraction:g} of dataset (seed {seed})",
              "drop_below": drop_below, "k": k, "candidates": candidates, "mode": mode, "method": method,
              **({"samples": samples, "seed": seed} if method == "sampled" else {}),
              **({"learn_steps": learn_steps, "learning_rate": learning_rate} if learn_steps else {}),
              **({"force": True} if force else {})}
    operation = Operation("prune-importance", params, {"questions": len(questions), "scored": len(result.chunk_ids),
                                                       "utility": result.utility, "heldout": check.as_dict()})
    table = _importance_table(ds, result, k, len(questions), show)
    least = [{"chunk_id": int(result.chunk_ids[i]), "importance": float(result.importance[i])}
             for i in result.order()[:show]]
    _finish_operation(datastore, before, drop, operation, dry_run or refuse, compact_after,
                      {"scored": len(result.chunk_ids), "utility": result.utility, "heldout": check.as_dict(),
                       "committed": not (dry_run or refuse), "least_important": least}, as_json, table, lock)
    if not as_json:
        stdout.print(f"held-out answer-in-top-{k} on {check.questions:,} questions: {check.before:.3f} before, "
                     f"{check.after:.3f} after")
    if refuse and not dry_run:
        raise click.ClickException(f"not committed: held-out answer-in-top-{k} would fall from {check.before:.3f} "
                                   f"to {check.after:.3f} on {check.questions:,} questions; --force commits anyway")


def _importance_table(ds, result, k: int, questions: int, show: int) -> Table:
    """The least important retrieved chunks."""
    order = result.order()[:show]
    rows = ds.get_chunks(result.chunk_ids[order].tolist())
    table = Table(title=f"importance of {len(result.chunk_ids):,} retrieved chunks over {questions:,} "
                        f"questions (expected top-{k} utility {result.utility:.3f})", title_justify="left")
    for column in ("chunk", "importance", "retrieved by", "text"):
        table.add_column(column)
    for i in order:
        cid = int(result.chunk_ids[i])
        table.add_row(str(cid), f"{result.importance[i]:+.4f}", str(result.retrieved[i]), snippet(rows[cid]["text"], 60))
    return table


# -- operations that write a new datastore -------------------------------------------------------

def _written(manifest, output: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({"output": output, "chunks": manifest.num_chunks, "shards": len(manifest.shards),
                               "lineage": manifest.lineage}, indent=2, default=str))
    else:
        stdout.print(f"wrote {output}: {manifest.num_chunks:,} chunks in {len(manifest.shards)} shard(s)")


@datastore_group.command("compact")
@click.argument("datastore", type=click.Path())
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Write the compacted datastore here instead of replacing DATASTORE.")
@_overwrite
@lock_options
@_as_json
def compact_command(datastore: str, output: str | None, overwrite: bool, wait: bool, wait_timeout: float | None,
                    as_json: bool) -> None:
    """Rewrite DATASTORE without its tombstoned chunks (chunk ids are renumbered)."""
    from datastores.ops.compact import compact

    before = _open_manifest(datastore)
    target, operation = (output, "compact -o") if output else (datastore, "compact")
    locked = _output_lock(output, operation, overwrite, wait, wait_timeout) if output else \
        writer_lock(datastore, operation, wait=wait, timeout=wait_timeout)
    with locked as lock, _progress_bar(before.num_live, "compact") as bar:
        manifest = compact(datastore, output, progress=bar.update, overwrite=overwrite, lock=lock)
    _written(manifest, target, as_json)


@datastore_group.command("subsample")
@click.argument("datastore", type=click.Path())
@click.option("-p", "--fraction", type=float, required=True, help="Share of the live chunks to keep, in (0, 1].")
@click.option("--seed", default=0, show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@_overwrite
@lock_options
@_as_json
def subsample_command(datastore: str, fraction: float, seed: int, output: str, overwrite: bool, wait: bool,
                      wait_timeout: float | None, as_json: bool) -> None:
    """Write a seeded random FRACTION of DATASTORE's chunks to a new datastore OUTPUT."""
    from datastores.ops.subsample import subsample

    before = _open_manifest(datastore)
    with _output_lock(output, "subsample", overwrite, wait, wait_timeout) as lock, \
            _progress_bar(round(before.num_live * fraction), "subsample") as bar:
        manifest = subsample(datastore, output, fraction, seed, progress=bar.update, overwrite=overwrite, lock=lock)
    _written(manifest, output, as_json)


@datastore_group.command("merge")
@click.argument("datastores", nargs=-1, required=True, type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False))
@click.option("--prefix", is_flag=True,
              help="Namespace document ids as FOLDER/ID (FOLDER: each datastore's folder name). Without it, "
                   "datastores that share a document id are refused.")
@_overwrite
@lock_options
@_as_json
def merge_command(datastores: tuple[str, ...], output: str, prefix: bool, overwrite: bool, wait: bool,
                  wait_timeout: float | None, as_json: bool) -> None:
    """Merge DATASTORES (same embedder and chunker) into OUTPUT, recomputing BM25 statistics."""
    from datastores.ops.merge import check_mergeable, merge

    manifests = [_open_manifest(d) for d in datastores]
    if len(datastores) > 1:  # refused before OUTPUT is created
        check_mergeable([Path(d) for d in datastores], manifests, prefix)
    total = sum(m.num_live for m in manifests)
    with _output_lock(output, "merge", overwrite, wait, wait_timeout) as lock, _progress_bar(total, "merge") as bar:
        manifest = merge(datastores, output, progress=bar.update, overwrite=overwrite, lock=lock, prefix=prefix)
    _written(manifest, output, as_json)
    prefixes = manifest.lineage[-1]["parameters"].get("doc_id_prefixes")
    if prefixes and not as_json:
        stdout.print(f"document ids namespaced with {', '.join(repr(p) for p in prefixes)}")
