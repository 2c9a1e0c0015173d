"""``rag ask`` and ``rag compress`` through the real CLI entry point."""

from __future__ import annotations

import json

import pytest
from _tiny_models import tiny_causal_lm
from click.testing import CliRunner
from conftest import EXAMPLES

from indexers.tokenizers import load_tokenizer
from ragcli import main

QUESTION = "What did the president say about public credit?"


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


def test_ask_json_offline_default(runner, small_datastore):
    result = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["generator"] == "extractive" and answer["citations"]
    numbers = {p["number"]: p for p in answer["context"]}
    for citation in answer["citations"]:
        assert numbers[citation["number"]]["chunk_id"] == citation["chunk_id"]
        assert f"[{citation['number']}]" in answer["answer"]


def test_ask_with_all_stages_shows_context_and_stage_table(runner, small_datastore):
    result = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--budget", "120", "--compress", "sentence",
                                  "--reorder", "--show-context", "--verbose", "-k", "4", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "citations" in out and "context (" in out and "stages" in out
    assert "sentence" in out and "reorder" in out and "generate" in out
    as_json = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--budget", "120", "--compress",
                                   "sentence", "--reorder", "-k", "4", "--json", "--device", "cpu"])
    stages = json.loads(as_json.stdout)["stages"]
    assert [s["name"] for s in stages] == ["sentence", "reorder"]
    assert stages[-1]["tokens_after"] <= 120


def test_ask_streams_an_hf_generator(runner, small_datastore, tmp_path):
    model = tiny_causal_lm(tmp_path / "lm", emit="[2]")
    result = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--generator", f"hf:{model}",
                                  "--max-tokens", "3", "--budget", "200", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("[2] [2] [2]")


def test_ask_errors_are_one_line(runner, tmp_path, small_datastore):
    missing = runner.invoke(main, ["ask", str(tmp_path / "nowhere"), QUESTION])
    assert missing.exit_code != 0 and "Traceback" not in missing.output and "Error" in missing.output
    no_model = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--generator", "hf:no-such/model"])
    assert no_model.exit_code != 0 and "allow_download" in no_model.output
    bad_url = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--base-url", "http://x"])
    assert bad_url.exit_code != 0 and "--base-url" in bad_url.output


def test_compress_rate_and_budget(runner, tmp_path):
    source = tmp_path / "context.txt"
    source.write_text((EXAMPLES / "sotu" / "1790-washington.txt").read_text(encoding="utf-8")[:3000])
    cl100k = load_tokenizer("cl100k_base")
    before = cl100k.count(source.read_text())
    result = runner.invoke(main, ["compress", str(source), "--query", "public credit", "--rate", "0.5",
                                  "--method", "sentence", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tokens_before"] == before
    assert data["tokens_after"] == cl100k.count(data["text"]) <= before // 2
    out = tmp_path / "short.txt"
    result = runner.invoke(main, ["compress", str(source), "--budget", "50", "--method", "truncate", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert cl100k.count(out.read_text()) <= 50 and source.read_text().startswith(out.read_text())


def test_compress_token_method_with_a_local_lm(runner, tmp_path):
    model = tiny_causal_lm(tmp_path / "lm")
    source = tmp_path / "context.txt"
    source.write_text("the treaty of paris was signed in 1783 and the war ended with peace for the city")
    result = runner.invoke(main, ["compress", str(source), "--rate", "0.5", "--method", "token", "--model", str(model),
                                  "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert 0 < data["tokens_after"] <= data["tokens_before"] // 2


def test_compress_usage_errors(runner, tmp_path):
    source = tmp_path / "c.txt"
    source.write_text("some text here.")
    assert "--rate or --budget" in runner.invoke(main, ["compress", str(source)]).output
    assert "needs a causal LM" in runner.invoke(main, ["compress", str(source), "--rate", "0.5",
                                                       "--method", "token"]).output
    assert runner.invoke(main, ["compress", str(source), "--rate", "0.5", "--method", "sentence"]).exit_code != 0


def test_ask_streams_from_an_openai_compatible_server(runner, small_datastore, openai_server, monkeypatch):
    from openai_server import completion

    key = "sk-terarag-cli-test-SECRET"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    pieces = ["Public ", "credit ", "rose ", "[1]", "."]
    openai_server.push(completion("".join(pieces), chunks=pieces))
    result = runner.invoke(main, ["ask", str(small_datastore), QUESTION, "--generator", "openai:test-model",
                                  "--base-url", openai_server.base_url, "--budget", "200", "--verbose",
                                  "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Public credit rose [1].")
    assert key not in result.output
    (request,) = openai_server.requests
    assert request.payload["stream"] is True and request.payload["model"] == "test-model"
    assert "[1] " in request.payload["messages"][1]["content"]
