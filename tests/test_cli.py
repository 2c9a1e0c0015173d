"""The `rag` command line: index, info and search, with readable errors."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ragcli import main


@pytest.fixture
def runner():
    return CliRunner()


def test_index_info_search_roundtrip(runner, tmp_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("The treaty of peace was signed at Ghent by the commissioners. " * 20)
    (corpus / "b.md").write_text("# Notes\n\nThe militia of the several states shall be organized. " * 20)
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02binary")
    out = tmp_path / "ds"
    result = runner.invoke(main, ["index", str(corpus), "-o", str(out), "--chunker", "token", "--chunk-size", "50",
                                  "--shard-size", "3", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert "1 input(s) skipped" in result.output
    assert "blob.txt: binary file" in result.output
    assert (out / "manifest.json").exists()

    info = runner.invoke(main, ["info", str(out)])
    assert info.exit_code == 0, info.output
    assert "all-MiniLM-L6-v2" in info.output and "shard-00000" in info.output

    info_json = json.loads(runner.invoke(main, ["info", str(out), "--json"]).stdout)
    assert info_json["statistics"]["documents"] == 2
    assert info_json["manifest"]["chunker"]["name"] == "token"

    hits = json.loads(runner.invoke(main, ["search", str(out), "who signed the treaty", "-k", "2", "--json"]).stdout)
    assert len(hits) == 2
    assert set(hits[0]) >= {"chunk_id", "doc_id", "start", "end", "score", "shard", "text"}
    assert hits[0]["doc_id"] == "a.txt"

    table = runner.invoke(main, ["search", str(out), "militia organized", "--mode", "bm25"])
    assert table.exit_code == 0
    assert "b.md" in table.output and "score" in table.output


def test_strict_mode_fails_on_skipped_inputs(runner, tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("Some real text about treaties.")
    (corpus / "binary.txt").write_bytes(b"GIF89a\x00\x01")  # skipped (non-UTF-8 text is read now)
    result = runner.invoke(main, ["index", str(corpus), "-o", str(tmp_path / "ds"), "--strict", "-q",
                                  "--device", "cpu"])
    assert result.exit_code == 1
    assert "skipped" in result.output and "strict" in result.output
    assert not (tmp_path / "ds" / "manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["search", "{missing}", "q"], "no datastore at"),
    (["info", "{missing}"], "no datastore at"),
    (["index", "{corpus}", "-o", "{out}", "--chunk-size", "50", "--overlap", "50"], "overlap (50) must be smaller"),
    (["index", "{corpus}", "-o", "{out}", "--config", "{bad_config}"], "unknown key(s) chunk_sise"),
    (["index", "{corpus}", "-o", "{out}", "--config", "{typed_config}"], "shard_size must be an integer"),
])
def test_clear_errors_without_tracebacks(runner, tmp_path, args, message):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("text")
    (tmp_path / "bad.yaml").write_text("chunk_sise: 100\n")
    (tmp_path / "typed.yaml").write_text("shard_size: many\n")
    paths = {"missing": tmp_path / "missing", "corpus": tmp_path / "corpus", "out": tmp_path / "out",
             "bad_config": tmp_path / "bad.yaml", "typed_config": tmp_path / "typed.yaml"}
    result = runner.invoke(main, [a.format(**paths) for a in args])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_config_file_with_flag_override(runner, tmp_path, small_corpus):
    config = tmp_path / "c.yaml"
    config.write_text("chunker: sentence\nchunk_size: 80\nshard_size: 1000\ninclude: ['*.md']\n")
    out = tmp_path / "ds"
    result = runner.invoke(main, ["index", str(small_corpus), "-o", str(out), "--config", str(config),
                                  "--chunk-size", "120", "-q", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["chunker"]["name"] == "sentence" and manifest["chunker"]["chunk_size"] == 120
    assert manifest["stats"]["documents"] == 1  # only the .md file
