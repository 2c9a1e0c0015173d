"""The default embedder: bundled weights verified, normalized float32 output, order preserved."""

from __future__ import annotations

import numpy as np
import pytest

from indexers.embedding import (
    MINILM_SHA256,
    EmbedderError,
    ModelLocation,
    load_embedder,
    locate_model,
    verify_weights,
)


def test_bundled_model_is_located_and_verified():
    location = locate_model("all-MiniLM-L6-v2")
    assert location.expected_sha256 == MINILM_SHA256
    assert verify_weights(location) == MINILM_SHA256
    assert locate_model("sentence-transformers/all-MiniLM-L6-v2").path_or_name == location.path_or_name


def test_weights_with_another_hash_are_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the real weights")
    with pytest.raises(EmbedderError, match="sha256"):
        verify_weights(ModelLocation("all-MiniLM-L6-v2", str(tmp_path), MINILM_SHA256))


def test_missing_bundled_weights_are_refused(tmp_path):
    with pytest.raises(EmbedderError, match="missing"):
        verify_weights(ModelLocation("all-MiniLM-L6-v2", str(tmp_path), MINILM_SHA256))


def test_encode_is_normalized_and_keeps_input_order(embedder):
    texts = ["short", "a considerably longer sentence about the treaty of Ghent and its signatories",
             "", "medium length text here"]
    batch = embedder.encode_passages(texts, batch_size=2)
    assert batch.dtype == np.float32 and batch.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, rtol=1e-5)
    one_by_one = np.stack([embedder.encode_passages([t])[0] for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    assert embedder.encode_passages([]).shape == (0, 384)


def test_semantics_are_real(embedder):
    q, good, bad = embedder.encode_passages(["who signed the peace treaty", "The treaty of peace was signed at Ghent",
                                    "Bananas are rich in potassium"])
    assert q @ good > q @ bad + 0.2


def test_unknown_model_is_a_clear_error():
    with pytest.raises(EmbedderError, match="/nonexistent/model/path: path not found"):
        load_embedder("/nonexistent/model/path", device="cpu")
    with pytest.raises(EmbedderError, match="local files"):  # a Hugging Face id not in the cache
        load_embedder("no-such-org/no-such-model", device="cpu", backend="torch")


def test_manifest_spec_round_trips(embedder):
    again = load_embedder(embedder.spec, device="cpu")
    assert again.name == embedder.name and again.dim == embedder.dim
    with pytest.raises(EmbedderError, match="weights sha256"):
        load_embedder({**embedder.spec, "weights_sha256": "0" * 64}, device="cpu")


def test_search_verbose_reports_encode_and_search_time_apart(small_datastore):
    """``rag search --verbose``: model loading, query encoding and the dense search are separate rows."""
    from click.testing import CliRunner

    from ragcli import main

    result = CliRunner().invoke(main, ["search", str(small_datastore), "the treaty of peace", "-k", "2",
                                       "--verbose", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.output.splitlines() if line.count("│") == 3}
    for stage in ("open + load models", "encode", "dense", "retrieve (total)"):
        assert rows[stage].endswith(" s") and float(rows[stage][:-2]) >= 0.0, rows
