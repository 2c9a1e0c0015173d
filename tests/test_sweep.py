"""Chunking sweeps: YAML validation, one index per chunker/size/overlap/embedder, DuckDB rows,
resume after an interruption, reports and plots."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from conftest import CHROMA
from evaluators.sweep import load_sweep_config, run_sweep, sweep_config
from indexers.embedding import Embedder
from evaluators.sweep_results import RESULTS_CSV, RESULTS_DB, REPORT_MD, ResultsStore
from indexers.config import ConfigError

GRID = {
    "name": "tiny",
    "dataset": str(CHROMA),
    "corpora": ["state_of_the_union"],
    "modes": ["dense", "bm25"],
    "k": [1, 5],
    "units": "char",
    "chunkers": [
        {"name": "token", "sizes": [100, 200], "overlaps": [0, 150]},   # 100/150 is left out
        {"name": "cluster", "sizes": [100, 200]},
    ],
}
BUILDS = 5                      # token 100/0, 200/0, 200/150; cluster 100, 200
ROWS = BUILDS * 2 * 2           # × modes × k


class CountingEmbedder:
    """The session embedder, counting the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.texts = 0
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, *args, **kwargs):
        texts = list(texts)
        self.calls += 1
        self.texts += len(texts)
        return self.inner.encode(texts, *args, **kwargs)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def config():
    return sweep_config(GRID)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, config, embedder):
    out = tmp_path_factory.mktemp("sweep") / "out"
    counting = CountingEmbedder(embedder.backend)
    result = run_sweep(config, out, embedders={"all-MiniLM-L6-v2": Embedder(backend=counting)}, progress=False)
    return out, result, counting


def test_outputs_and_row_count(first_run):
    out, result, counting = first_run
    assert result.configurations == ROWS and result.rows_written == ROWS and result.rows_skipped == 0
    assert result.builds == BUILDS
    for name in (RESULTS_DB, RESULTS_CSV, REPORT_MD):
        assert (out / name).is_file()
    store = ResultsStore(out / RESULTS_DB)
    try:
        rows = store.rows()
    finally:
        store.close()
    assert len(rows) == ROWS and len({r["config_key"] for r in rows}) == ROWS
    assert {(r["chunker"], r["chunk_size"], r["overlap"]) for r in rows} == {
        ("token", 100, 0), ("token", 200, 0), ("token", 200, 150), ("cluster", 100, 0), ("cluster", 200, 0)}
    for r in rows:
        assert r["questions"] == 76 and r["skipped"] == 0 and r["unit"] == "char"
        assert r["engine"] == {"dense": "faiss-flat-ip", "bm25": "bm25"}[r["mode"]]
        for metric in ("recall", "precision", "precision_omega", "iou"):
            assert 0.0 <= r[f"{metric}_mean"] <= 100.0 and 0.0 <= r[f"{metric}_std"] <= 100.0
        assert r["chunks"] > 0 and 0 < r["mean_chunk_tokens"] <= r["chunk_size"]
        for t in ("chunk_s", "embed_s", "write_s", "retrieval_s", "score_s"):
            assert r[t] >= 0.0
        assert r["git_revision"] and "numpy" in r["versions"] and "state_of_the_union" in r["per_corpus"]
    # Precision-Ω is retrieval-free: the same for every mode and k of one index.
    for key in {(r["chunker"], r["chunk_size"], r["overlap"]) for r in rows}:
        omegas = {r["precision_omega_mean"] for r in rows if (r["chunker"], r["chunk_size"], r["overlap"]) == key}
        assert len(omegas) == 1
    with open(out / RESULTS_CSV, newline="", encoding="utf-8") as handle:
        assert len(list(csv.DictReader(handle))) == ROWS
    report = (out / REPORT_MD).read_text(encoding="utf-8")
    assert "| chunker | size | overlap |" in report and report.count("| cluster |") == 8
    plots = sorted(p.name for p in out.glob("*.png"))
    assert len(plots) == 4 and all(p.startswith("plot_all-MiniLM-L6-v2_") for p in plots)
    assert all((out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_each_index_is_embedded_once(first_run):
    out, result, counting = first_run
    # Per index: one encode call for its chunks; cluster adds one call for the pieces of the first
    # size only (the pieces of 100 and 200 are the same and cached); the questions are encoded
    # once per dense search, i.e. once per index.
    assert counting.calls == BUILDS + 1 + BUILDS


def test_rerun_skips_every_row(first_run, config):
    out, result, counting = first_run
    calls, texts = counting.calls, counting.texts
    again = run_sweep(config, out, embedders={"all-MiniLM-L6-v2": Embedder(backend=counting)}, progress=False)
    assert again.rows_written == 0 and again.rows_skipped == ROWS and again.builds == 0
    assert again.builds_skipped == BUILDS
    assert (counting.calls, counting.texts) == (calls, texts)      # nothing chunked or embedded again
    assert len(again.rows) == ROWS


def test_interrupted_sweep_resumes(tmp_path, config, embedder, first_run):
    out = tmp_path / "interrupted"
    counting = CountingEmbedder(embedder.backend)
    seen = []

    def stop_after_first(row):
        seen.append(row["config_key"])
        raise Stop

    with pytest.raises(Stop):
        run_sweep(config, out, embedders={"all-MiniLM-L6-v2": Embedder(backend=counting)}, progress=False, on_row=stop_after_first)
    store = ResultsStore(out / RESULTS_DB)
    try:
        assert [r["config_key"] for r in store.rows()] == seen
    finally:
        store.close()
    resumed = run_sweep(config, out, embedders={"all-MiniLM-L6-v2": Embedder(backend=counting)}, progress=False)
    assert resumed.rows_written == ROWS - 1 and resumed.rows_skipped == 1
    assert resumed.builds == BUILDS        # the first index still had unfinished rows
    assert len(resumed.rows) == ROWS
    # The resumed results equal an uninterrupted run's.
    reference = {r["config_key"]: r for r in first_run[1].rows}
    for row in resumed.rows:
        ref = reference[row["config_key"]]
        for metric in ("recall_mean", "precision_mean", "precision_omega_mean", "iou_mean"):
            assert row[metric] == pytest.approx(ref[metric], abs=1e-9), (row["chunker"], row["chunk_size"], metric)


# -- config validation ------------------------------------------------------------------------------


def write(tmp_path, data) -> str:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("change, message", [
    ({"chunk_sizes": [100]}, "unknown key(s) chunk_sizes"),
    ({"chunkers": [{"name": "token", "size": [100]}]}, "unknown key(s) chunkers[0].size"),
    ({"chunkers": [{"name": "words", "sizes": [100]}]}, "chunkers[0].name is 'words'"),
    ({"chunkers": [{"name": "cluster", "sizes": [200], "overlaps": [0, 50]}]}, "chunkers[0].overlaps must be 0"),
    ({"chunkers": [{"name": "token", "sizes": [0]}]}, "chunkers[0].sizes must be integers of at least 1"),
    ({"chunkers": [{"name": "token", "sizes": [10], "overlaps": [10]}]}, "the grid is empty"),
    ({"modes": ["sparse"]}, "modes has 'sparse'"),
    ({"k": [5, "all"]}, "k: k must be a positive integer or 'min'"),
    ({"units": ["bytes"]}, "units has 'bytes'"),
])
def test_config_errors_name_the_key(tmp_path, change, message):
    with pytest.raises(ConfigError) as info:
        load_sweep_config(write(tmp_path, {**GRID, **change}))
    assert message in str(info.value)


def test_missing_keys_and_relative_paths(tmp_path):
    with pytest.raises(ConfigError, match="missing key dataset"):
        sweep_config({"chunkers": [{"name": "token", "sizes": [100]}]})
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "grid.yaml"
    path.write_text(yaml.safe_dump({"dataset": "../data", "output": "out",
                                    "chunkers": [{"name": "token", "sizes": 100}]}), encoding="utf-8")
    cfg = load_sweep_config(path)
    assert cfg.name == "grid" and cfg.dataset == tmp_path / "data" and cfg.output == tmp_path / "sub" / "out"
    assert cfg.k == (5,) and cfg.modes == ("dense",) and cfg.units == ("char",)
    assert len(cfg.configurations()) == 1


def test_shipped_reproduction_config_is_valid():
    from conftest import REPO

    cfg = load_sweep_config(REPO / "configs" / "sweeps" / "chroma-minilm.yaml")
    labels = [(b.chunker, b.chunk_size, b.overlap) for b in cfg.builds()]
    assert sorted(labels) == sorted([("recursive-start", 250, 125), ("token", 250, 125), ("recursive-start", 250, 0),
                                     ("recursive-start", 200, 0), ("token", 250, 0), ("token", 200, 0),
                                     ("cluster", 250, 0), ("cluster", 200, 0)])
    assert cfg.k == (5,) and cfg.modes == ("dense",) and cfg.units == ("char",)
    assert cfg.dataset.resolve() == CHROMA.resolve()


def test_cli_dry_run_and_report_only(tmp_path, first_run):
    from ragcli import main

    out, result, _ = first_run
    path = write(tmp_path, GRID)
    runner = CliRunner()
    dry = runner.invoke(main, ["sweep", path, "-o", str(out), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"{ROWS} of {ROWS} configuration(s) finished" in " ".join(dry.output.split())
    report = runner.invoke(main, ["sweep", path, "-o", str(tmp_path / "fresh"), "--report-only"])
    assert report.exit_code == 0 and "0 finished row(s)" in report.output
    bad = runner.invoke(main, ["sweep", write(tmp_path, {**GRID, "colour": "red"})])
    assert bad.exit_code == 1 and "unknown key(s) colour" in bad.output


def test_rows_are_not_nan(first_run):
    assert all(not math.isnan(r["recall_mean"]) for r in first_run[1].rows)
    assert np.isfinite([r["mean_chunk_chars"] for r in first_run[1].rows]).all()


# -- answer sweeps (kind: answers) ------------------------------------------------------------------


def test_pareto_front_marks_the_undominated_points():
    from evaluators.answer_sweep import pareto_front

    costs, values = [100, 200, 150, 300, 100], [10, 30, 5, 30, 12]
    assert pareto_front(costs, values) == [False, True, False, False, True]


def test_answer_sweep_config_is_validated(tmp_path):
    from evaluators.sweep import load_sweep_config

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"kind": "answers", "dataset": "x.json", "grid": {"temperature": [1]}}))
    with pytest.raises(ConfigError, match="grid keys must be among"):
        load_sweep_config(path)
    path.write_text(yaml.safe_dump({"kind": "answers", "dataset": "x.json", "colour": "red"}))
    with pytest.raises(ConfigError, match="unknown answer sweep keys: colour"):
        load_sweep_config(path)


def test_answer_sweep_runs_the_grid_and_marks_the_front(tmp_path, monkeypatch):
    from test_eval_answers import write_squad

    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    squad = write_squad(tmp_path / "mini.json")
    (tmp_path / "base.yaml").write_text("k: 3\ndevice: cpu\ngenerator: {spec: extractive, max_sentences: 1}\n")
    config = {"kind": "answers", "dataset": str(squad), "base": "base.yaml", "output": "out",
              "grid": {"budget": [40, 400], "reorder": [False, True], "chunk_size": [32, 256]}}
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(main_cli(), ["sweep", str(tmp_path / "sweep.yaml"), "--no-progress",
                                             "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    grid_rows = [r for r in rows if r["pipeline"] not in ("closed-book", "oracle")]
    assert len(grid_rows) == 8 and {r["chunk_size"] for r in grid_rows} == {32, 256}
    assert [r["pipeline"] for r in rows].count("oracle") == 1
    assert all(r["context_tokens"] <= 40 for r in grid_rows if "budget=40" in r["pipeline"].split())
    from evaluators.answer_sweep import pareto_front

    front = pareto_front([r["context_tokens"] for r in grid_rows], [r["f1"] for r in grid_rows])
    assert [r["pareto"] for r in grid_rows] == front and any(front)
    assert (tmp_path / "out" / "f1_vs_tokens.png").read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / "out" / RESULTS_CSV) as handle:
        assert len(list(csv.DictReader(handle))) == len(rows)
    assert len((tmp_path / "out" / "records.jsonl").read_text().splitlines()) == len(rows) * 4
    # the rows are in the sweep's DuckDB file, like a chunking sweep's, one per pipeline
    from evaluators.sweep_results import ANSWER_COLUMNS, ANSWER_TABLE

    stored = ResultsStore(tmp_path / "out" / RESULTS_DB, ANSWER_COLUMNS, ANSWER_TABLE).rows()
    assert len(stored) == len(rows) == len({r["config_key"] for r in stored})
    assert {r["config_key"]: (r["pipeline"], r["f1"], r["pareto"]) for r in stored} == \
        {r["config_key"]: (r["pipeline"], r["f1"], r.get("pareto")) for r in rows}
    assert "| pipeline | chunker |" in (tmp_path / "out" / REPORT_MD).read_text()


def main_cli():
    from ragcli import main

    return main


def test_answer_sweep_perplexity_section_is_validated(tmp_path):
    base = {"kind": "answers", "dataset": "x.json"}
    path = tmp_path / "s.yaml"
    for section, message in [({"texts": "h.jsonl", "lm": "smollm2", "k": 3}, "unknown perplexity keys: k"),
                             ({"texts": "h.jsonl"}, "perplexity needs lm:"),
                             ({"lm": "smollm2"}, "perplexity must be a mapping with texts"),
                             ({"texts": "h.jsonl", "lm": "smollm2", "window": 8, "query_tokens": 8},
                              "query tokens must be in")]:
        path.write_text(yaml.safe_dump({**base, "perplexity": section}))
        with pytest.raises(ConfigError, match=message):
            load_sweep_config(path)
    (tmp_path / "base.yaml").write_text("generator: {spec: 'hf:smollm2'}\n")
    path.write_text(yaml.safe_dump({**base, "base": "base.yaml", "perplexity": {"texts": "h.jsonl"}}))
    spec = load_sweep_config(path).perplexity
    assert spec.lm == "smollm2" and spec.texts == (tmp_path / "h.jsonl",)


def test_answer_sweep_scores_perplexity_once_per_mode_and_k(tmp_path, monkeypatch):
    """A tiny random LM: each grid point gets the perplexity of its k, computed once per distinct k;
    the closed-book row carries the no-retrieval perplexity; rows land in DuckDB and a rerun keeps one
    row per pipeline."""
    import evaluators.perplexity as perplexity_module
    from _tiny_models import tiny_causal_lm
    from test_eval_answers import PARAGRAPHS, write_squad

    from evaluators.answer_sweep import run_answer_sweep
    from evaluators.sweep_results import ANSWER_COLUMNS, ANSWER_TABLE

    from rag.lm import cache_root

    (tmp_path / "cache").mkdir()
    if (cache_root() / "onnx").is_dir():  # the generation cache is fresh, the embedder's ONNX export is reused
        (tmp_path / "cache" / "onnx").symlink_to(cache_root() / "onnx")
    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    texts = [context.lower() for context, _ in PARAGRAPHS.values()]
    (tmp_path / "held.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    lm = tiny_causal_lm(tmp_path / "lm", extra_text=" ".join(texts))
    (tmp_path / "base.yaml").write_text("device: cpu\ngenerator: {spec: extractive, max_sentences: 1}\n")
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "kind": "answers", "dataset": str(write_squad(tmp_path / "mini.json")), "base": "base.yaml", "output": "out",
        "grid": {"k": [1, 2], "reorder": [False, True]},
        "perplexity": {"texts": "held.jsonl", "lm": str(lm), "window": 16, "query_tokens": 8, "top_k": 4}}))
    calls = []
    real = perplexity_module.evaluate_perplexity
    monkeypatch.setattr(perplexity_module, "evaluate_perplexity",
                        lambda store, t, model, settings: calls.append(settings.k) or real(store, t, model, settings))
    config = load_sweep_config(tmp_path / "sweep.yaml")
    run_answer_sweep(config)
    rows = json.loads((tmp_path / "out" / "results.json").read_text())
    by_name = {r["pipeline"]: r for r in rows}
    assert sorted(calls) == [1, 2]
    assert by_name["k=1 reorder=false"]["perplexity"] == by_name["k=1 reorder=true"]["perplexity"]
    assert by_name["k=1 reorder=false"]["perplexity"] != by_name["k=2 reorder=false"]["perplexity"]
    no_retrieval = by_name["k=1 reorder=false"]["perplexity_no_retrieval"]
    assert math.isfinite(no_retrieval) and no_retrieval > 1
    assert by_name["closed-book"]["perplexity"] == no_retrieval and by_name["oracle"]["perplexity"] is None
    assert all(r["perplexity_windows"] == 3 for r in rows if r["pipeline"] != "oracle")
    run_answer_sweep(config)
    stored = ResultsStore(tmp_path / "out" / RESULTS_DB, ANSWER_COLUMNS, ANSWER_TABLE).rows()
    assert len(stored) == len(rows) == 6
    assert {r["pipeline"]: r["perplexity"] for r in stored} == {r["pipeline"]: r["perplexity"] for r in rows}
