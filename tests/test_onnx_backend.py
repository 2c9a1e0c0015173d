"""The ONNX Runtime backends: equal to torch on real text, cached exports, bucketing, truncation, int8."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from indexers.embedding import onnx_backend  # noqa: E402
from indexers.config import BuildConfig, ConfigError  # noqa: E402
from indexers.embedding import (  # noqa: E402
    BACKENDS,
    EmbedderError,
    load_embedder,
    locate_model,
)
from indexers.embedding.onnx_backend import OnnxBackend  # noqa: E402
from indexers.embedding.torch_backend import TorchBackend  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "corpus"


@pytest.fixture(scope="session")
def real_chunks() -> list[str]:
    """50 chunks of 200 cl100k tokens from the example corpus (speeches in txt, md and html)."""
    from indexers import make_chunker
    from indexers.readers import iter_documents

    chunker = make_chunker("recursive", 200, 0)
    texts = []
    for document in iter_documents([EXAMPLES / "sotu", EXAMPLES / "markdown", EXAMPLES / "html"]):
        texts.extend(c.text for c in chunker.chunk(document))
        if len(texts) >= 250:
            break
    picked = texts[::5][:50]
    assert len(picked) == 50
    return picked


@pytest.fixture(scope="session")
def torch_embedder():
    return load_embedder(device="cpu", backend="torch").backend


@pytest.fixture(scope="session")
def onnx_embedder():
    return load_embedder(device="cpu", backend="onnx").backend


@pytest.fixture(scope="session")
def int8_embedder():
    return load_embedder(device="cpu", backend="onnx-int8").backend


QUERIES = ["who signed the treaty of peace", "tariffs on imported goods", "x", ""]


@pytest.fixture(scope="session")
def onnx_vectors(real_chunks, onnx_embedder) -> np.ndarray:
    """ONNX float32 vectors of the 50 real chunks and 4 queries, computed once."""
    return onnx_embedder.encode(real_chunks + QUERIES, batch_size=16)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_onnx_equals_torch_on_real_text(real_chunks, torch_embedder, onnx_embedder, onnx_vectors):
    assert isinstance(torch_embedder, TorchBackend) and isinstance(onnx_embedder, OnnxBackend)
    expected = torch_embedder.encode(real_chunks + QUERIES, batch_size=16)
    got = onnx_vectors
    assert got.dtype == np.float32 and got.shape == (54, 384)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    assert cosines(got, expected).min() >= 0.9999
    assert np.abs(got - expected).max() < 1e-3


def test_same_interface_and_spec(torch_embedder, onnx_embedder, int8_embedder):
    for embedder, backend in ((torch_embedder, "torch"), (onnx_embedder, "onnx"), (int8_embedder, "onnx-int8")):
        assert embedder.dim == 384 and embedder.name == "all-MiniLM-L6-v2" and embedder.max_seq_length == 256
        assert embedder.spec["backend"] == backend
        assert embedder.spec["weights_sha256"] == torch_embedder.weights_sha256
        assert embedder.encode([]).shape == (0, 384)
        one = embedder.encode(["a single query"])
        assert one.shape == (1, 384) and one.dtype == np.float32
    # a datastore built with int8 gets int8 query vectors; other records get the fastest equal backend
    assert load_embedder(int8_embedder.spec, device="cpu").spec["backend"] == "onnx-int8"
    assert load_embedder({**torch_embedder.spec, "backend": "sentence-transformers"},
                         device="cpu").spec["backend"] == "onnx"


def test_auto_picks_onnx_on_cpu_and_unknown_backends_are_refused(onnx_embedder):
    assert isinstance(load_embedder(device="cpu").backend, OnnxBackend)
    with pytest.raises(EmbedderError, match="backend"):
        load_embedder(device="cpu", backend="tensorrt")
    assert set(BACKENDS) == {"auto", "torch", "onnx", "onnx-int8"}
    assert BuildConfig(embed_backend="onnx-int8").embed_backend == "onnx-int8"
    with pytest.raises(ConfigError, match="embed_backend"):
        BuildConfig(embed_backend="gpu")
    assert "embed_backend" not in BuildConfig().result_params()


def test_bucketing_by_token_length_gives_the_same_vectors(real_chunks, onnx_embedder):
    texts = [t[: 60 * (i % 7 + 1)] for i, t in enumerate(real_chunks[:13])] + ["short", "a bit longer", ""]
    bucketed = onnx_embedder.encode(texts, batch_size=4)
    sorted_stats = onnx_embedder.last_stats
    onnx_embedder.sort_by_length = False
    try:
        unsorted = onnx_embedder.encode(texts, batch_size=4)
        unsorted_stats = onnx_embedder.last_stats
    finally:
        onnx_embedder.sort_by_length = True
    np.testing.assert_allclose(bucketed, unsorted, atol=2e-5)
    one_by_one = np.stack([onnx_embedder.encode([t])[0] for t in texts[10:14]])
    np.testing.assert_allclose(bucketed[10:14], one_by_one, atol=2e-5)
    assert sorted_stats.tokens == unsorted_stats.tokens
    assert sorted_stats.padded_tokens < unsorted_stats.padded_tokens
    assert sorted_stats.padding_overhead < unsorted_stats.padding_overhead / 2


def test_truncation_is_reported(torch_embedder, onnx_embedder, real_chunks):
    long_text = " ".join(real_chunks[:4])  # ~800 cl100k tokens, more than 256 model tokens
    for embedder in (torch_embedder, onnx_embedder):
        embedder.encode([long_text, "short text", long_text + " again"])
        assert embedder.last_truncated == 2
        assert embedder.last_stats.texts == 3
        embedder.encode(["short text"])
        assert embedder.last_truncated == 0
    # what is embedded is the first max_seq_length tokens: the tail does not change the vector
    a, b = onnx_embedder.encode([long_text, long_text + " and a different ending"])
    assert float(a @ b) > 0.99999


def test_int8_is_close_to_float32(real_chunks, onnx_embedder, int8_embedder, onnx_vectors):
    int8 = int8_embedder.encode(real_chunks + QUERIES[:2], batch_size=16)
    assert cosines(int8, onnx_vectors[:52]).min() >= 0.98
    assert cosines(int8, onnx_vectors[:52]).mean() >= 0.99
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, rtol=1e-4)
    assert int8_embedder.onnx_path.stat().st_size < 0.5 * onnx_embedder.onnx_path.stat().st_size


def test_cached_export_is_reused(onnx_embedder):
    before = dict(onnx_backend.EXPORTS)
    files = [onnx_embedder.cache_folder / name for name in (onnx_backend.FP32_FILE, onnx_backend.META_FILE)]
    mtimes = [f.stat().st_mtime_ns for f in files]
    again = OnnxBackend(device="cpu")
    assert again.cache_folder == onnx_embedder.cache_folder
    assert onnx_backend.EXPORTS == before
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert again.meta["weights_sha256"] == onnx_embedder.weights_sha256


def test_changed_weights_get_a_new_export(tmp_path, monkeypatch, onnx_embedder):
    from safetensors.numpy import load_file, save_file

    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "minilm-copy"
    shutil.copytree(locate_model("all-MiniLM-L6-v2").path_or_name, model)
    weights = load_file(model / "model.safetensors")
    key = next(k for k in weights if k.endswith("embeddings.LayerNorm.bias"))
    weights[key] = weights[key] + np.float32(0.5)
    os.remove(model / "model.safetensors")
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})

    exports = onnx_backend.EXPORTS["fp32"]
    changed = OnnxBackend(str(model), device="cpu")
    assert onnx_backend.EXPORTS["fp32"] == exports + 1
    assert changed.weights_sha256 != onnx_embedder.weights_sha256
    assert changed.cache_folder == tmp_path / "cache" / "onnx" / changed.weights_sha256
    assert changed.meta["weights_sha256"] == changed.weights_sha256
    assert not list(changed.cache_folder.glob("*.tmp"))  # written atomically, nothing left over
    texts = ["the treaty of Ghent", "potassium in bananas"]
    assert cosines(changed.encode(texts), onnx_embedder.encode(texts)).max() < 0.999
    OnnxBackend(str(model), device="cpu")
    assert onnx_backend.EXPORTS["fp32"] == exports + 1


def test_failed_export_falls_back_to_torch_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("simulated exporter crash")

    monkeypatch.setattr(onnx_backend, "_export", broken)
    first = load_embedder(device="cpu")
    assert isinstance(first.backend, TorchBackend) and first.spec["backend"] == "torch"
    second = load_embedder(device="cpu")  # the failure is remembered: no second attempt
    assert isinstance(second.backend, TorchBackend) and len(calls) == 1
    with pytest.raises(EmbedderError, match="simulated exporter crash"):
        load_embedder(device="cpu", backend="onnx")  # asking for onnx explicitly tries again
    assert len(calls) == 2


def test_onnx_needs_a_local_model_folder():
    with pytest.raises(EmbedderError, match="local model folder"):
        load_embedder("no-such-org/no-such-model", device="cpu", backend="onnx")  # an id, not a folder


def test_batch_size_and_session_settings_leave_vectors_unchanged(real_chunks, onnx_embedder, onnx_vectors):
    """What ``benchmarks/embedding.py --settings`` varies (batch size, tokens per ONNX Runtime
    call, thread count, spinning) changes speed only: the vectors stay those of the default path."""
    spinning = "session.intra_op.allow_spinning"
    session = onnx_backend.make_session(onnx_embedder.onnx_path, "cpu", 1, {spinning: "0"})
    assert session.get_session_options().get_session_config_entry(spinning) == "0"
    embedder = OnnxBackend(device="cpu")
    embedder.session = session
    for batch_size, max_tokens in ((7, 0), (128, 0), (64, 500), (64, 1)):  # 500, 1: batches run in pieces
        embedder.call_tokens = max_tokens
        vectors = embedder.encode(real_chunks, batch_size=batch_size)
        assert embedder.last_stats.batches == -(-len(real_chunks) // batch_size)
        assert cosines(vectors, onnx_vectors[:len(real_chunks)]).min() >= 0.99999


def test_threads_follow_omp_num_threads(monkeypatch):
    """Ray sets OMP_NUM_THREADS to a task's CPUs; ONNX Runtime would otherwise use every core in
    every worker process."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert OnnxBackend(device="cpu").session.get_session_options().intra_op_num_threads == 1
    assert OnnxBackend(device="cpu", threads=2).session.get_session_options().intra_op_num_threads == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert onnx_backend.env_threads() is None
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert OnnxBackend(device="cpu").session.get_session_options().intra_op_num_threads == 0  # ORT's default
