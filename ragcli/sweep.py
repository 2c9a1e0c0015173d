"""``rag sweep CONFIG.yaml``: run (or resume) a chunking sweep, or with ``kind: answers`` a grid of
pipeline settings scored by ``rag eval answers``, and write its tables and plots."""

from __future__ import annotations

import click

from ragcli.common import stdout


@click.command("sweep")
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(file_okay=False), default=None,
              help="Output folder (default: the config's output, else results/sweeps/<name>).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default=None,
              help="Embedding device (default: the config's, else auto).")
@click.option("--dry-run", is_flag=True, help="List the configurations and which are finished; run nothing.")
@click.option("--report-only", is_flag=True, help="Rewrite results.csv, report.md and plots from finished rows.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def sweep_command(config: str, output: str | None, device: str | None, dry_run: bool, report_only: bool,
                  no_progress: bool) -> None:
    """Chunk, embed and index each (chunker, size, overlap, embedder) of the CONFIG grid once,
    score every mode, k and unit against it, and append one row per configuration to
    results.duckdb (finished rows are skipped, so an interrupted sweep resumes). Writes
    results.csv, report.md and PNG plots next to it."""
    from pathlib import Path

    from evaluators.sweep import dataset_fingerprint, load_sweep_config, row_identity, run_sweep, write_reports_for
    from evaluators.sweep_results import RESULTS_DB, ResultsStore, config_key
    from evaluators.datasets import load_dataset

    cfg = load_sweep_config(config)
    if not hasattr(cfg, "configurations"):  # kind: answers
        from evaluators.answer_sweep import run_answer_sweep

        if device:
            import dataclasses

            cfg = dataclasses.replace(cfg, base=dataclasses.replace(cfg.base, device=device))
        files = run_answer_sweep(cfg, output, progress=not no_progress)
        for name, path in files.items():
            stdout.print(f"{name}: {path}")
        return
    out_dir = Path(output) if output else (cfg.output or Path("results/sweeps") / cfg.name)
    if dry_run or report_only:
        dataset = load_dataset(cfg.dataset, cfg.corpora)
        dataset_id = dataset_fingerprint(dataset)
        keys = [(row, config_key(row_identity(cfg, dataset_id, row))) for row in cfg.configurations()]
        done: set[str] = set()
        rows = []
        if (out_dir / RESULTS_DB).is_file():
            store = ResultsStore(out_dir / RESULTS_DB)
            try:
                done = store.done_keys()
                rows = store.rows([key for _, key in keys])
            finally:
                store.close()
        if report_only:
            files = write_reports_for(rows, out_dir, cfg.name)
            stdout.print(f"{len(rows)} finished row(s); wrote {', '.join(str(p) for p in files.values())}")
            return
        for row, key in keys:
            state = "done" if key in done else "todo"
            click.echo(f"{state}  {row.build.label} · {row.mode} · k={row.k} · {row.unit}  [{key}]")
        stdout.print(f"{sum(k in done for _, k in keys)} of {len(keys)} configuration(s) finished in {out_dir}")
        return
    result = run_sweep(cfg, out_dir, device=device, progress=not no_progress)
    stdout.print(f"{result.configurations} configuration(s): {result.rows_written} run, {result.rows_skipped} "
                 f"already finished; {result.builds} index(es) built")
    for name in ("report", "csv"):
        if name in result.files:
            stdout.print(f"{name}: {result.files[name]}")
    stdout.print(f"results: {out_dir / RESULTS_DB}")


__all__ = ["sweep_command"]
