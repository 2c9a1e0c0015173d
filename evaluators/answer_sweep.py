"""Answer sweeps (``rag sweep`` with ``kind: answers``): a grid of pipeline settings scored by
``rag eval answers`` and, with a ``perplexity`` section, by ``rag eval perplexity``.

Each chunker setting of the grid indexes the QA set's own documents once (on the fly); every
pipeline of that index is scored by ``evaluators.answer_eval.evaluate_answers`` (closed-book and
oracle rows come with the first index). With ``perplexity``, each grid point also gets the LM's
perplexity of held-out text with its index, retriever mode and k (MassiveDS, overlapping chunks
removed; compression, pruning and reorder do not apply to it), computed once per distinct
(index, mode, k); the closed-book row carries the no-retrieval perplexity.

Rows go where the chunking sweep's go: the table ``answers`` of ``<output>/results.duckdb``, one
row per pipeline keyed by a hash of what determines its numbers, inserted as each index finishes;
then ``results.csv``, ``results.json``, ``records.jsonl`` (per question), ``report.md`` and
``f1_vs_tokens.png`` (F1 against context tokens, the Pareto front marked). Generations are cached
on disk, so an interrupted sweep resumes.

Config (YAML; relative paths are relative to the config file; unknown keys are errors)::

    kind: answers
    name: squad-smollm2
    dataset: ../../../shared/data/squad2_dev_sample/squad2_dev_sample.json
    limit: 16                       # seeded sample of questions (seed: 0)
    base: ../pipelines/smollm2.yaml # the pipeline the grid varies
    grid: {budget: [128, 256], compressor: [null, {method: sentence}], reorder: [false, true]}
    perplexity:                     # optional
      texts: heldout.jsonl          # JSONL with text, or plain files (a list is fine)
      lm: smollm2                   # default: the base generator's hf: model
      window: 128                   # and any other evaluators.perplexity.PerplexitySettings field
      query_tokens: 64              #   but k and mode, which come from each grid point
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from evaluators.sweep_results import (ANSWER_COLUMN_NAMES, ANSWER_COLUMNS, ANSWER_TABLE, REPORT_MD, RESULTS_CSV,
                                      RESULTS_DB, ResultsStore, as_list, config_key, git_revision, package_versions,
                                      provenance_lines, resolve_path, write_csv)
from indexers.config import ConfigError

ANSWER_GRID_KEYS = ("k", "budget", "retriever", "pruner", "compressor", "reorder", "generator", "chunker",
                    "chunk_size")
INDEX_KEYS = ("chunker", "chunk_size")
INDEX_DEFAULTS = {"chunker": "recursive", "chunk_size": 256}
REFERENCE_ROWS = ("closed-book", "oracle")
PERPLEXITY_FROM_GRID = ("k", "mode", "fractions")


@dataclass(frozen=True)
class PerplexitySpec:
    """The ``perplexity`` section: held-out texts, the LM and the settings every grid point shares."""

    texts: tuple[Path, ...]
    lm: str
    settings: Any                   # evaluators.perplexity.PerplexitySettings (k, mode per grid point)


@dataclass(frozen=True)
class AnswerSweepConfig:
    """``kind: answers``: a base pipeline, a grid over its settings (and the on-the-fly index's
    chunker and chunk size), a QA set, optional perplexity and where results go (module docstring)."""

    name: str
    dataset: Path
    base: Any                       # rag.pipeline.PipelineConfig
    grid: dict[str, list[Any]]
    limit: int | None = None
    seed: int | None = 0
    output: Path | None = None
    batch_size: int = 4
    perplexity: PerplexitySpec | None = None


def _lm_of(base: Any, given: Any) -> str:
    """The perplexity LM: ``given``, else the base pipeline's ``hf:`` generator model."""
    spec = str(base.generator.get("spec", ""))
    if given is None and spec.startswith("hf:"):
        return spec[3:]
    if not isinstance(given, str) or not given:
        raise ConfigError("perplexity needs lm: (a rag.lm spec such as smollm2) when the base generator is "
                          f"not an hf: model (it is {spec!r})")
    return given


def perplexity_spec(data: Any, base: Any, base_dir: Path) -> PerplexitySpec | None:
    """Validate the ``perplexity`` section (None when absent)."""
    from evaluators.perplexity import PerplexitySettings

    if data is None:
        return None
    if not isinstance(data, Mapping) or not data.get("texts"):
        raise ConfigError("perplexity must be a mapping with texts: (held-out JSONL or text files)")
    fields = {f.name for f in dataclasses.fields(PerplexitySettings)} - set(PERPLEXITY_FROM_GRID)
    unknown = sorted(set(data) - fields - {"texts", "lm"})
    if unknown:
        raise ConfigError(f"unknown perplexity keys: {', '.join(unknown)} (known: texts, lm, "
                          f"{', '.join(sorted(fields))}; k and mode come from the grid)")
    try:
        settings = PerplexitySettings(**{k: v for k, v in data.items() if k in fields})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"perplexity: {exc}") from None
    texts = tuple(resolve_path(str(p), base_dir) for p in as_list(data["texts"]))
    return PerplexitySpec(texts, _lm_of(base, data.get("lm")), settings)


def answer_sweep_config(data: Mapping[str, Any], base_dir: Path, stem: str) -> AnswerSweepConfig:
    """Validate a ``kind: answers`` sweep mapping; relative paths are relative to ``base_dir``."""
    from rag.pipeline import PipelineConfig

    known = {"kind", "name", "dataset", "base", "grid", "limit", "seed", "output", "batch_size", "perplexity"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown answer sweep keys: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    grid = data.get("grid") or {}
    bad = sorted(set(grid) - set(ANSWER_GRID_KEYS))
    if bad or not isinstance(grid, Mapping):
        raise ConfigError(f"grid keys must be among {', '.join(ANSWER_GRID_KEYS)} (got {', '.join(bad)})")
    if "dataset" not in data:
        raise ConfigError("an answer sweep needs a dataset")
    base = PipelineConfig.load(resolve_path(data["base"], base_dir)) if data.get("base") else PipelineConfig()
    return AnswerSweepConfig(str(data.get("name") or stem), resolve_path(data["dataset"], base_dir), base,
                             {key: as_list(values) for key, values in grid.items()}, data.get("limit"),
                             data.get("seed", 0), resolve_path(data["output"], base_dir) if data.get("output") else None,
                             int(data.get("batch_size", 4)), perplexity_spec(data.get("perplexity"), base, base_dir))


def _label(combo: Mapping[str, Any]) -> str:
    def short(value: Any) -> str:
        return str(value.get("method") or value.get("mode") or value.get("spec")) if isinstance(value, Mapping) \
            else str(value).lower()
    return " ".join(f"{key}={short(value)}" for key, value in combo.items()) or "base"


def answer_grid(config: AnswerSweepConfig) -> list[tuple[dict[str, Any], Any]]:
    """(index settings, named pipeline) for every point of the grid."""
    from evaluators.answer_eval import NamedPipeline

    keys = list(config.grid)
    out = []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        combo = dict(zip(keys, values))
        index = {**INDEX_DEFAULTS, **{k: combo[k] for k in INDEX_KEYS if k in combo}}
        changes = {k: v for k, v in combo.items() if k not in INDEX_KEYS}
        out.append((index, NamedPipeline(_label(combo), dataclasses.replace(config.base, **changes))))
    return out


def pareto_front(costs: Sequence[float], values: Sequence[float]) -> list[bool]:
    """Which points no other point beats (cost <= and value >=, one of them strictly)."""
    c, v = np.asarray(costs, dtype=float), np.asarray(values, dtype=float)
    beaten = ((c[None, :] <= c[:, None]) & (v[None, :] >= v[:, None])
              & ((c[None, :] < c[:, None]) | (v[None, :] > v[:, None])))
    return (~beaten.any(axis=1)).tolist()


def plot_answer_front(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """F1 against context tokens, one point per pipeline, the Pareto front joined and labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs, ys = [r["context_tokens"] for r in rows], [r["f1"] for r in rows]
    front = pareto_front(xs, ys)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(xs, ys, c=["tab:red" if f else "tab:grey" for f in front], zorder=3)
    order = sorted((x, y) for x, y, f in zip(xs, ys, front) if f)
    ax.plot([x for x, _ in order], [y for _, y in order], color="tab:red", label="Pareto front")
    for r, f in zip(rows, front):
        if f:
            ax.annotate(r["pipeline"], (r["context_tokens"], r["f1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel("context tokens into the generator (mean)")
    ax.set_ylabel("F1 ×100")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# -- running ---------------------------------------------------------------------------------------


def qa_fingerprint(qa: Any) -> str:
    """A short hash of the questions, their answers and the set's documents."""
    digest = hashlib.sha256()
    for item in qa.items:
        digest.update(json.dumps([item.id, item.question, list(item.answers), list(item.gold_docs)]).encode())
    for doc_id in sorted(qa.documents):
        digest.update(doc_id.encode() + b"\0" + hashlib.sha256(qa.documents[doc_id].encode()).digest())
    return digest.hexdigest()[:16]


class _Perplexities:
    """Perplexity per grid point, computed once per (index, retriever mode, k) with one loaded LM."""

    def __init__(self, spec: PerplexitySpec, device: str):
        from evaluators.perplexity import read_texts
        from rag.lm import load_causal_lm

        self.spec, self.texts = spec, read_texts(spec.texts)
        self.lm = load_causal_lm(spec.lm, device=device)
        self.memo: dict[str, Any] = {}
        self.identity = {"lm": spec.lm, "settings": dataclasses.asdict(spec.settings),
                         "texts": hashlib.sha256("\0".join(self.texts).encode()).hexdigest()[:16]}

    def of(self, datastore: Any, index: Mapping[str, Any], config: Any) -> Any:
        """The ``PerplexityResult`` of ``config``'s mode and k on ``datastore`` (built with ``index``)."""
        from evaluators.perplexity import evaluate_perplexity

        mode = str(config.retriever.get("mode", "dense"))
        key = json.dumps([index, mode, config.k], sort_keys=True)
        if key not in self.memo:
            settings = dataclasses.replace(self.spec.settings, k=config.k, mode=mode,
                                           top_k=max(self.spec.settings.top_k, config.k))
            self.memo[key] = evaluate_perplexity(datastore, self.texts, self.lm, settings)
        return self.memo[key]


def _perplexity_columns(result: Any, name: str) -> dict[str, Any]:
    if result is None or name == "oracle":
        return dict.fromkeys(("perplexity", "perplexity_no_retrieval", "perplexity_removed", "perplexity_windows"))
    closed = name == "closed-book"
    return {"perplexity": result.no_retrieval if closed else result.retrieval,
            "perplexity_no_retrieval": result.no_retrieval, "perplexity_removed": 0 if closed else result.removed,
            "perplexity_windows": result.info.get("windows")}


@dataclass
class _Run:
    """What every row of one sweep run shares."""

    config: AnswerSweepConfig
    dataset_id: str
    perplexities: _Perplexities | None
    versions: str = dataclasses.field(default_factory=lambda: json.dumps(package_versions(), sort_keys=True))
    revision: str = dataclasses.field(default_factory=git_revision)

    def row(self, answer_row: Any, pipeline: Any, index: Mapping[str, Any], ppl: Any) -> dict[str, Any]:
        """One result row: the answer metrics, the index settings, perplexity and provenance."""
        settings = dataclasses.asdict(pipeline)
        identity = {"dataset": self.dataset_id, "limit": self.config.limit, "seed": self.config.seed,
                    "pipeline": answer_row.pipeline, "settings": settings, "index": dict(index),
                    "perplexity": self.perplexities.identity if self.perplexities else None}
        return {**answer_row.to_dict(), **index, "config_key": config_key(identity), "sweep": self.config.name,
                "dataset": str(self.config.dataset), "dataset_id": self.dataset_id, "settings": settings,
                **_perplexity_columns(ppl, answer_row.pipeline), "versions": self.versions,
                "git_revision": self.revision}


def _index_groups(config: AnswerSweepConfig) -> list[tuple[dict[str, Any], list[Any]]]:
    groups: dict[str, list[Any]] = {}
    for index, pipeline in answer_grid(config):
        groups.setdefault(json.dumps(index, sort_keys=True), []).append(pipeline)
    return [(json.loads(key), pipelines) for key, pipelines in groups.items()]


def _score_index(run: _Run, qa: Any, index: dict[str, Any], pipelines: list[Any], first: bool,
                 progress: bool, generator: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and per-question records of the pipelines sharing one on-the-fly index."""
    from evaluators.answer_eval import evaluate_answers, index_documents
    from rag.lm import cache_root

    device = run.config.base.device
    with tempfile.TemporaryDirectory(prefix="terarag-answer-sweep-") as tmp:
        store = index_documents(qa.documents, Path(tmp) / "ds", index["chunker"], int(index["chunk_size"]),
                                device=device, progress=progress)
        result = evaluate_answers(qa, pipelines, store, closed_book=first, oracle=first,
                                  batch_size=run.config.batch_size, cache_dir=cache_root() / "answers",
                                  progress=progress, generator=generator)
        configs = {p.name: p.config for p in pipelines}
        rows = []
        for answer_row in result.rows:
            config = configs.get(answer_row.pipeline, pipelines[0].config)
            ppl = run.perplexities.of(store, index, config) if run.perplexities else None
            rows.append(run.row(answer_row, config, index, ppl))
    return rows, [r.to_dict() for r in result.records]


def _shared_lm_generator(config: AnswerSweepConfig, perplexities: _Perplexities | None) -> Any:
    """The perplexity LM as every pipeline's generator when they all name that ``hf:`` model (one load)."""
    from rag.generate.hf import HFGenerator

    options = dict(config.base.generator)
    if perplexities is None or "generator" in config.grid or options.pop("spec", "") != f"hf:{perplexities.spec.lm}":
        return None
    options.pop("device", None)
    return HFGenerator(perplexities.lm, **options)


def run_answer_sweep(config: AnswerSweepConfig, output: str | Path | None = None, progress: bool = False,
                     generator: Any = None) -> dict[str, Path]:
    """Score every grid point (module docstring); returns the written files by kind."""
    from evaluators.datasets import load_qa_set

    folder = Path(output or config.output or Path("results/sweeps") / config.name)
    folder.mkdir(parents=True, exist_ok=True)
    qa = load_qa_set(config.dataset).limited(config.limit, config.seed)
    perplexities = _Perplexities(config.perplexity, config.base.device) if config.perplexity else None
    generator = generator or _shared_lm_generator(config, perplexities)
    run = _Run(config, qa_fingerprint(qa), perplexities)
    store = ResultsStore(folder / RESULTS_DB, ANSWER_COLUMNS, ANSWER_TABLE)
    rows, records = [], []
    for number, (index, pipelines) in enumerate(_index_groups(config)):
        found, found_records = _score_index(run, qa, index, pipelines, number == 0, progress, generator)
        for row in found:
            _insert(store, row)
        rows += found
        records += found_records
    mark_pareto(rows)
    for row in rows:
        _insert(store, row)
    return write_answer_reports(rows, records, folder, config.name)


def _insert(store: ResultsStore, row: Mapping[str, Any]) -> None:
    store.insert({**{k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in row.items()},
                  "created_at": _dt.datetime.now()})


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set ``pareto`` on every grid row (F1 against context tokens); reference rows get None."""
    scored = [r for r in rows if r["pipeline"] not in REFERENCE_ROWS]
    for row, on_front in zip(scored, pareto_front([r["context_tokens"] for r in scored], [r["f1"] for r in scored])):
        row["pareto"] = on_front


# -- reports ---------------------------------------------------------------------------------------


def _cell(value: Any, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def answer_markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per pipeline: answer metrics (×100), tokens, seconds per question, perplexity."""
    header = ["pipeline", "chunker", "size", "EM", "F1", "acc", "in context", "recall", "context tokens",
              "generated tokens", "s/question", "perplexity", "Pareto"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        seconds = sum((r.get("seconds") or {}).values())
        cells = [r["pipeline"], r.get("chunker"), r.get("chunk_size"), r["exact_match"], r["f1"], r["accuracy"],
                 r["answer_in_context"], r.get("retrieval_recall"), r["context_tokens"], r["generated_tokens"],
                 float(seconds), r.get("perplexity"), {True: "yes", False: ""}.get(r.get("pareto"), "–")]
        lines.append("| " + " | ".join(_cell(c, 2 if i == 11 else 1) for i, c in enumerate(cells)) + " |")
    return "\n".join(lines) + "\n"


def write_answer_reports(rows: list[dict[str, Any]], records: list[dict[str, Any]], folder: Path,
                         name: str) -> dict[str, Path]:
    """``results.csv``, ``results.json``, ``records.jsonl``, ``report.md`` and the Pareto plot."""
    from datastores.layout import atomic_write_bytes

    files = {"csv": write_csv(rows, folder / RESULTS_CSV, ANSWER_COLUMN_NAMES), "json": folder / "results.json",
             "records": folder / "records.jsonl", "results": folder / RESULTS_DB}
    atomic_write_bytes(files["json"], json.dumps(rows, indent=2, default=str).encode("utf-8"))
    atomic_write_bytes(files["records"], "".join(json.dumps(r) + "\n" for r in records).encode("utf-8"))
    scored = [r for r in rows if r["pipeline"] not in REFERENCE_ROWS]
    if scored:
        files["plot"] = plot_answer_front(scored, folder / "f1_vs_tokens.png")
    lines = [f"# Answer sweep {name}", "", f"{len(scored)} pipeline(s) over {rows[0]['questions'] if rows else 0} "
             "question(s). EM, F1, acc (a gold answer in the answer), answer in context and retrieval recall ×100; "
             "tokens and seconds per question are means; perplexity of the held-out windows with the row's "
             "index, mode and k (closed-book: without retrieval).", "", answer_markdown_table(rows), ""]
    if "plot" in files:
        lines += ["![F1 against context tokens](f1_vs_tokens.png)", ""]
    atomic_write_bytes(folder / REPORT_MD, ("\n".join(lines + provenance_lines(rows)) + "\n").encode("utf-8"))
    files["report"] = folder / REPORT_MD
    return files


__all__ = ["AnswerSweepConfig", "PerplexitySpec", "answer_grid",
           "answer_markdown_table", "answer_sweep_config", "mark_pareto", "pareto_front", "perplexity_spec",
           "plot_answer_front", "qa_fingerprint", "run_answer_sweep", "write_answer_reports"]
