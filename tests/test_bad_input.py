"""Bad input gets a clear one-line message and loses nothing (issue 13, point 7, reader and embedder
parts): text that is not UTF-8 is read in its detected encoding with a warning (strict refuses it),
binary files are still skipped, and a truncated or corrupt embedder is one ``EmbedderError`` line."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datastores import Datastore
from indexers.build import build_datastore
from indexers.config import BuildConfig
from indexers.embedding import EmbedderError, load_embedder, locate_model
from indexers.readers import Decoded, InputRefused, ReaderOptions, ReadReport, iter_documents

FRENCH = ("Le café de la gare était fermé ; nous avons mangé une crème brûlée à l'hôtel. "
          "« Très bien », dit-il — l'été dernier, à Noël, la fête coûtait 20 € par cœur.\n"
          "Où est la bibliothèque ? Derrière l'église, près du marché aux fleurs.\n") * 4
WIDE = "Grüße aus Köln.\nΕλληνικά και 日本語 in one file.\nZürich, Łódź, Ørsted, naïve façade.\n" * 3
HTML_TEXT = "Café “quoted” crème"
HTML_1252 = f"<html><head><meta charset='windows-1252'><title>T</title></head><body><p>{HTML_TEXT}</p></body></html>"
HTML_BARE = f"<html><body><p>{HTML_TEXT}. Une fête à l'hôtel, très réussie, près de l'église.</p></body></html>"


def _noisy_bytes(n: int = 4096) -> bytes:
    """Seeded random bytes without NUL: not UTF-8 and no plausible text encoding."""
    return np.random.default_rng(7).integers(1, 256, n, dtype=np.uint8).tobytes()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "fr.txt").write_bytes(FRENCH.encode("cp1252"))
    (root / "plain.md").write_text("Plain UTF-8 markdown about the café.", encoding="utf-8")
    (root / "wide.txt").write_bytes(WIDE.encode("utf-16"))  # with its byte order mark
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + _noisy_bytes(256))
    (root / "noise.txt").write_bytes(_noisy_bytes())
    return root


def _read(inputs, options=None):
    report = ReadReport()
    return {d.id: d for d in iter_documents(inputs, options, report)}, report


# --- text encodings ---------------------------------------------------------------------------

def test_non_utf8_text_is_read_with_a_warning_naming_the_encoding(corpus, caplog):
    caplog.set_level(logging.WARNING, logger="terarag.readers")
    docs, report = _read([corpus])
    assert sorted(docs) == ["fr.txt", "plain.md", "wide.txt"]
    assert docs["fr.txt"].text == FRENCH
    assert docs["wide.txt"].text == WIDE
    assert report.decoded == [Decoded("fr.txt", "cp1252"), Decoded("wide.txt", "utf-16")]
    messages = [r.getMessage() for r in caplog.records if r.name == "terarag.readers"]
    assert "read fr.txt as cp1252 (not UTF-8)" in messages
    assert "read wide.txt as utf-16 (not UTF-8)" in messages
    assert not any("plain.md" in m for m in messages)


def test_binary_files_are_still_skipped(corpus):
    _, report = _read([corpus])
    why = {s.path: s.reason for s in report.skipped}
    assert set(why) == {"image.txt", "noise.txt"}
    assert "binary" in why["image.txt"] and "NUL" in why["image.txt"]
    assert "no text encoding fits" in why["noise.txt"]
    assert report.documents == 3 and report.files == 5


@pytest.mark.parametrize("name, data, encoding", [
    ("declared.html", HTML_1252.encode("cp1252"), "cp1252"),
    ("detected.html", HTML_BARE.encode("cp1252"), "cp1252"),
    ("wide.html", HTML_1252.replace("windows-1252", "utf-16").encode("utf-16"), "utf-16"),
])
def test_html_that_is_not_utf8_is_read_in_its_encoding(tmp_path, name, data, encoding):
    (tmp_path / name).write_bytes(data)
    docs, report = _read([tmp_path])
    assert HTML_TEXT in docs[name].text
    assert report.decoded == [Decoded(name, encoding)] and report.skipped == []


def test_jsonl_stays_utf8_and_names_the_line(tmp_path):
    (tmp_path / "r.jsonl").write_bytes(b'{"text": "fine"}\n' + '{"text": "café"}\n'.encode("cp1252"))
    docs, report = _read([tmp_path])
    assert [d.text for d in docs.values()] == ["fine"]
    assert [s.path for s in report.skipped] == ["r.jsonl:2"]
    assert "UTF-8" in report.skipped[0].reason and report.decoded == []


def test_strict_refuses_non_utf8_text_naming_file_and_encoding(corpus):
    with pytest.raises(InputRefused, match=r"fr\.txt.*cp1252"):
        _read([corpus], ReaderOptions(strict=True))
    docs, report = _read([corpus / "plain.md"], ReaderOptions(strict=True))
    assert list(docs) == ["plain.md"] and report.decoded == []


def test_decoded_files_are_indexed_with_exact_spans(corpus, tmp_path, embedder):
    config = BuildConfig(chunk_size=24, overlap=4, shard_size=8, device="cpu")
    report = build_datastore([corpus], tmp_path / "ds", config, embedder=embedder, progress=False)
    assert [d.path for d in report.read.decoded] == ["fr.txt", "wide.txt"]
    store = Datastore.open(tmp_path / "ds")
    rows = store.get_chunks(range(store.manifest.num_chunks)).values()
    texts = {"fr.txt": FRENCH, "wide.txt": WIDE, "plain.md": "Plain UTF-8 markdown about the café."}
    by_doc: dict[str, list] = {}
    for row in rows:
        assert texts[row["doc_id"]][row["start"]:row["end"]] == row["text"]
        by_doc.setdefault(row["doc_id"], []).append(row)
    assert set(by_doc) == set(texts)
    for doc_id, chunks in by_doc.items():  # every visible character of the decoded text is in a chunk
        text = texts[doc_id]
        covered = np.array([ch.isspace() for ch in text])
        for c in chunks:
            covered[c["start"]:c["end"]] = True
        assert covered.all(), doc_id
    assert len(by_doc["fr.txt"]) > 2 and any("€" in c["text"] for c in by_doc["fr.txt"])


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragcli", *args], capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess) -> str:
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0
    assert "Traceback" not in output
    assert len(output.splitlines()) == 1, output
    return output


def test_cli_strict_refuses_a_cp1252_file_in_one_line(corpus, tmp_path):
    proc = _cli("index", str(corpus / "fr.txt"), str(corpus / "plain.md"), "-o", str(tmp_path / "ds"),
                "--strict", "-q", "--device", "cpu")
    line = _one_error_line(proc)
    assert "fr.txt" in line and "cp1252" in line and "strict" in line
    assert not (tmp_path / "ds" / "manifest.json").exists()


# --- embedder files ---------------------------------------------------------------------------

@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    """A copy of the bundled all-MiniLM-L6-v2 folder (weights and all), for damaging."""
    target = tmp_path / "model"
    shutil.copytree(locate_model("all-MiniLM-L6-v2").path_or_name, target)
    return target


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(size)


@pytest.mark.parametrize("backend", ["auto", "torch", "onnx"])
def test_truncated_safetensors_is_one_embedder_error(model_copy, backend):
    _truncate(model_copy / "model.safetensors", 1_000_000)
    with pytest.raises(EmbedderError) as caught:
        load_embedder(str(model_copy), device="cpu", backend=backend)
    message = str(caught.value)
    assert message.startswith(f"cannot load the embedder at {model_copy}: model.safetensors is truncated or corrupt (")
    assert "\n" not in message


@pytest.mark.parametrize("name, damage", [
    ("config.json", lambda p: _truncate(p, 40)),
    ("tokenizer.json", lambda p: _truncate(p, 1000)),
    ("1_Pooling/config.json", lambda p: p.write_text('{"word_embedding_dimension": 384,', encoding="utf-8")),
])
def test_corrupt_config_and_tokenizer_files_are_named(model_copy, name, damage):
    damage(model_copy / name)
    with pytest.raises(EmbedderError, match=f"{name} is truncated or corrupt"):
        load_embedder(str(model_copy), device="cpu")


def test_truncated_pytorch_checkpoint_is_named(model_copy):
    import torch
    from safetensors.torch import load_file

    weights = model_copy / "model.safetensors"
    torch.save(load_file(str(weights)), model_copy / "pytorch_model.bin")
    weights.unlink()
    _truncate(model_copy / "pytorch_model.bin", 2_000_000)
    with pytest.raises(EmbedderError, match="pytorch_model.bin is truncated or corrupt"):
        load_embedder(str(model_copy), device="cpu", backend="torch")


def test_weights_that_do_not_fit_the_config_are_one_line(model_copy):
    config = json.loads((model_copy / "config.json").read_text(encoding="utf-8"))
    (model_copy / "config.json").write_text(json.dumps({**config, "hidden_size": 768}), encoding="utf-8")
    with pytest.raises(EmbedderError, match=f"cannot load the embedder at {model_copy}: ") as caught:
        load_embedder(str(model_copy), device="cpu", backend="torch")
    assert "\n" not in str(caught.value)


def test_missing_model_path_is_path_not_found(tmp_path):
    with pytest.raises(EmbedderError, match="path not found"):
        load_embedder(str(tmp_path / "nowhere"), device="cpu")
    (tmp_path / "file").write_text("x", encoding="utf-8")
    with pytest.raises(EmbedderError, match="not a folder"):
        load_embedder(str(tmp_path / "file"), device="cpu")


def test_corrupt_cached_onnx_export_is_named_and_auto_falls_back(model_copy, tmp_path, monkeypatch):
    from indexers.embedding.models import sha256_of
    from indexers.embedding.onnx_backend import FORMAT_VERSION, FP32_FILE, META_FILE, OnnxBackend, OnnxExportError, cache_dir

    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    folder = cache_dir(sha256_of(model_copy / "model.safetensors"))
    folder.mkdir(parents=True)
    (folder / FP32_FILE).write_bytes(_noisy_bytes(1024))  # the size meta.json records, wrong bytes
    (folder / META_FILE).write_text(json.dumps({"format": FORMAT_VERSION, "onnx_bytes": 1024, "dim": 384,
                                                "max_seq_length": 256}), encoding="utf-8")
    with pytest.raises(OnnxExportError, match=f"cached ONNX model {folder / FP32_FILE}: it is corrupt"):
        OnnxBackend(str(model_copy), "cpu")
    fallback = load_embedder(str(model_copy), device="cpu", backend="auto")
    assert fallback.backend.backend == "torch" and fallback.encode_passages(["still works"]).shape == (1, 384)


@pytest.mark.parametrize("damage, expected", [
    ("truncate", "model.safetensors is truncated or corrupt"),
    ("remove", "path not found"),
])
def test_cli_bad_embedder_is_one_line_without_traceback(model_copy, tmp_path, damage, expected):
    if damage == "truncate":
        _truncate(model_copy / "model.safetensors", 1_000_000)
    else:
        shutil.rmtree(model_copy)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("Some text to index.", encoding="utf-8")
    out = tmp_path / "ds"
    proc = _cli("index", str(tmp_path / "in"), "-o", str(out), "--embedder", str(model_copy), "-q", "--device", "cpu")
    line = _one_error_line(proc)
    assert line.startswith(f"Error: cannot load the embedder at {model_copy}") and expected in line
    assert not (out / "manifest.json").exists() and not (out / "shards").exists()  # nothing was written
