"""ONNX Runtime backend: a sentence-transformers model exported once, cached, run without torch.

The export (``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter, which needs
neither onnxscript nor optimum) covers the whole sentence-transformers pipeline: transformer,
pooling and L2 normalization, so the ONNX graph maps token ids and the attention mask straight
to unit-length sentence vectors. BERT-family graphs are then fused (``Attention``,
``SkipLayerNormalization``, ``EmbedLayerNormalization``) with ONNX Runtime's transformer
optimizer. Every export is validated against the torch model on probe texts (token ids must be
identical, vectors within cosine 0.9999) before it is cached; an export that fails is recorded
so that ``backend="auto"`` falls back to torch at once next time.

Cache layout (``TERARAG_CACHE`` replaces ``~/.cache/terarag``)::

    ~/.cache/terarag/onnx/<weights sha256>/
        model.onnx        float32 graph (fused when possible)
        model.int8.onnx   dynamic int8 quantization, made on first use of ``onnx-int8``
        meta.json         written last: format, dims, inputs, sizes, validation results

Files are written to a temporary name and renamed into place, under a lock file, so concurrent
processes and killed exports never leave a half-written model behind. Keys are the weights'
sha256: a changed ``model.safetensors`` gets a new folder.

At run time only ``onnxruntime``, ``tokenizers`` and numpy are imported (no torch); texts are
tokenized by the model's own fast tokenizer (``tokenizer.json``), truncated at
``max_seq_length``, sorted by token length and batched with minimal padding.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from indexers.embedding.backend import (CPU_CALL_TOKENS, MIN_CALL_ROWS, PROBE_TEXTS, Backend, check_fast_tokenizer,
                                        default_batch_size, fill_rows, model_features, pick_device,
                                        tokenize, width_groups)
from indexers.embedding.models import (DEFAULT_EMBEDDER, EmbedderError, ModelLocation, TokenizerMismatch,
                                       locate_model, one_line, verify_weights)
from indexers.torch_feed import pad_into

logger = logging.getLogger("terarag.embedders.onnx")

FORMAT_VERSION = 1
OPSET = 17
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
META_FILE = "meta.json"
LOCK_FILE = ".lock"
#: An export is kept only if its vectors match torch's this closely on every probe text.
MIN_COSINE_FP32 = 0.9999
#: ``onnx-int8`` is kept only if its vectors match the float32 graph this closely on every probe
#: (a sanity bound: on real text it measures >= 0.99, see docs/benchmarks.md; dynamic quantization
#: scales activations per batch, so very short texts batched with long ones lose the most).
MIN_COSINE_INT8 = 0.95
#: Model types whose graphs ONNX Runtime's "bert" transformer optimizer can fuse.
_FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "electra"}
#: Feed-forward output projections (GELU activations as input, with outliers): left in float32 by
#: the int8 quantization because quantizing them costs most of the quality (see docs/benchmarks.md).
_INT8_EXCLUDE = re.compile(r"/layer\.\d+/output/dense/MatMul$")

#: Exports done by this process (tests check that a cached export is reused).
EXPORTS = {"fp32": 0, "int8": 0}


class OnnxExportError(EmbedderError):
    """The model cannot be exported to ONNX (or the export does not match the torch model)."""


def cache_root() -> Path:
    """``$TERARAG_CACHE``, else ``~/.cache/terarag``."""
    configured = os.environ.get("TERARAG_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "terarag"


def cache_dir(weights_sha256: str) -> Path:
    return cache_root() / "onnx" / weights_sha256


# --------------------------------------------------------------------------------------------
# cache files


def _read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        return None
    return meta


def _fp32_ready(folder: Path, meta: dict[str, Any] | None) -> bool:
    if not meta or meta.get("failed"):
        return False
    path = folder / FP32_FILE
    return path.is_file() and path.stat().st_size == meta.get("onnx_bytes")


def _int8_ready(folder: Path, meta: dict[str, Any] | None) -> bool:
    info = (meta or {}).get("int8") or {}
    if info.get("failed"):
        return False
    path = folder / INT8_FILE
    return bool(info) and path.is_file() and path.stat().st_size == info.get("bytes")


def _temporary(folder: Path, name: str) -> Path:
    return folder / f".{name}.{os.getpid()}.{time.monotonic_ns()}.tmp"


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = _temporary(path.parent, path.name)
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _move_into_place(tmp: Path, target: Path) -> None:
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, target)


@contextlib.contextmanager
def _quiet_logs() -> Iterator[None]:
    """Silence the chatty ONNX Runtime optimizer and quantizer (they log to ad-hoc and root loggers).

    A NullHandler on the root logger keeps their ``logging.warning(...)`` calls from installing a
    default stderr handler (``logging.basicConfig``) for the rest of the process.
    """
    root = logging.getLogger()
    guard = logging.NullHandler() if not root.handlers else None
    if guard is not None:
        root.addHandler(guard)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
        if guard is not None:
            root.removeHandler(guard)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on the cache folder (POSIX ``flock``; a no-op elsewhere)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxExportError(f"cannot create the ONNX cache folder {folder} ({exc}); set TERARAG_CACHE "
                              "to a writable folder") from exc
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(folder / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# tokenizer and inference


def load_fast_tokenizer(model_folder: str | Path, max_length: int) -> Any:
    """The model's own fast tokenizer (``tokenizers.Tokenizer``), truncating at ``max_length``."""
    from tokenizers import Tokenizer

    path = Path(model_folder) / "tokenizer.json"
    if path.is_file():
        tokenizer = Tokenizer.from_file(str(path))
    else:  # only a slow tokenizer's files: let transformers convert it
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(str(model_folder), local_files_only=True, use_fast=True)
        if getattr(hf, "backend_tokenizer", None) is None:
            raise OnnxExportError(f"{model_folder} has no fast tokenizer")
        tokenizer = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(max_length))
    return tokenizer


def pad_batch(ids: Sequence[np.ndarray], pad_id: int, width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int64 ``input_ids`` and ``attention_mask`` for one batch, ``width`` wide (default:
    its longest row)."""
    width = max(len(row) for row in ids) if width is None else width
    input_ids = np.empty((len(ids), width), dtype=np.int64)
    mask = np.empty((len(ids), width), dtype=np.int64)
    pad_into(ids, pad_id, input_ids, mask)
    return input_ids, mask


def env_threads() -> int | None:
    """``$OMP_NUM_THREADS`` as a positive int, else None (unset or not a number)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def make_session(path: Path, device: str = "cpu", threads: int | None = None,
                 config: dict[str, str] | None = None) -> Any:
    """An ONNX Runtime session with all graph optimizations; CUDA when asked for and available.

    ``config`` adds session config entries (e.g. ``{"session.intra_op.allow_spinning": "0"}``).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, str(value))
    providers = ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            logger.warning("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running ONNX on CPU")
    return ort.InferenceSession(str(path), options, providers=providers)


def _open_cached(path: Path, device: str, threads: int | None) -> Any:
    """A session of a cached export; a damaged cache file is an OnnxExportError naming it."""
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf, NoSuchFile

    try:
        return make_session(path, device, threads)
    except (Fail, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:
        raise OnnxExportError(f"cannot load the cached ONNX model {path}: it is corrupt ({one_line(exc)}); "
                              f"delete {path.parent} to export it again") from exc


def _run(session: Any, input_names: Sequence[str], input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    feed = {"input_ids": input_ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        feed["token_type_ids"] = np.zeros_like(input_ids)
    feed = {k: v for k, v in feed.items() if k in input_names}
    return np.asarray(session.run(None, feed)[0], dtype=np.float32)


def _encode_with(session: Any, input_names: Sequence[str], tokenizer: Any, texts: Sequence[str],
                 pad_id: int, batch_size: int = 32) -> np.ndarray:
    """Plain encode used to validate exports: sorted batches, no statistics."""
    ids, lengths, _ = tokenize(tokenizer, texts)
    order = np.argsort(-lengths, kind="stable")
    out = None
    for lo in range(0, len(texts), batch_size):
        idx = order[lo:lo + batch_size]
        vectors = _run(session, input_names, *pad_batch([ids[i] for i in idx], pad_id))
        if out is None:
            out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
        out[idx] = vectors
    assert out is not None
    return out


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return float(np.min(np.sum(a * b, axis=1)))


# --------------------------------------------------------------------------------------------
# export


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for package in ("torch", "transformers", "sentence-transformers", "onnxruntime", "onnx", "tokenizers"):
        try:
            out[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    return out


def _load_for_export(path: str) -> Any:
    """The sentence-transformers model with eager attention (it traces into fusable patterns)."""
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(path, device="cpu", local_files_only=True,
                                    model_kwargs={"attn_implementation": "eager"})
    except (TypeError, ValueError, OSError):
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
    return model.float()  # a float32 graph, also from float16 / bfloat16 checkpoints


def _fuse(source: Path, target: Path, config: Any) -> bool:
    """ONNX Runtime's transformer fusions for BERT-family encoders; False when not applicable."""
    model_type = getattr(config, "model_type", "")
    heads, hidden = getattr(config, "num_attention_heads", 0), getattr(config, "hidden_size", 0)
    if model_type not in _FUSABLE or not heads or not hidden:
        return False
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:  # the optimizer needs the onnx package
        return False
    try:
        with _quiet_logs():
            optimized = optimize_model(str(source), model_type="bert", num_heads=int(heads),
                                       hidden_size=int(hidden), opt_level=0)
            fused = optimized.get_fused_operator_statistics()
            if not fused.get("Attention") and not fused.get("SkipLayerNormalization"):
                return False
            optimized.save_model_to_file(str(target))
        return True
    except Exception as exc:  # noqa: BLE001 - fusion is an optimization; keep the plain graph
        logger.debug("ONNX fusion failed (%s); keeping the plain graph", exc)
        return False


def _export(location: ModelLocation, sha: str, folder: Path) -> dict[str, Any]:
    """Export, fuse, validate and cache the float32 graph; returns meta.json's content."""
    import torch

    started = time.perf_counter()
    path = location.path_or_name
    logger.info("exporting %s to ONNX once (cached in %s)", location.name, folder)
    model = _load_for_export(path).eval()
    max_length = int(model.max_seq_length)
    tokenizer = load_fast_tokenizer(path, max_length)
    features = model_features(model, list(PROBE_TEXTS))
    try:
        input_names = check_fast_tokenizer(model, tokenizer, features)
    except TokenizerMismatch as exc:
        raise OnnxExportError(str(exc)) from exc

    class SentenceModule(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            out = self.inner(dict(zip(input_names, inputs)))["sentence_embedding"]
            return torch.nn.functional.normalize(out, p=2.0, dim=-1)

    reference = model.encode(list(PROBE_TEXTS), batch_size=len(PROBE_TEXTS), convert_to_numpy=True,
                             normalize_embeddings=True, show_progress_bar=False).astype(np.float32)
    raw, fused_path = _temporary(folder, FP32_FILE), _temporary(folder, "fused." + FP32_FILE)
    try:
        axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(SentenceModule(model), tuple(features[k] for k in input_names), str(raw),
                              dynamo=False, input_names=input_names, output_names=["sentence_embedding"],
                              dynamic_axes={**axes, "sentence_embedding": {0: "batch"}}, opset_version=OPSET,
                              do_constant_folding=True)
        pad_id = int(getattr(model.tokenizer, "pad_token_id", None) or 0)
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        candidates = ([fused_path] if _fuse(raw, fused_path, config) else []) + [raw]
        chosen, cosine, problems = None, 0.0, []
        for candidate in candidates:
            session = make_session(candidate)
            names = [i.name for i in session.get_inputs()]
            batched = _encode_with(session, names, tokenizer, PROBE_TEXTS, pad_id)
            single = np.concatenate([_encode_with(session, names, tokenizer, [t], pad_id) for t in PROBE_TEXTS])
            cosine = min(_min_cosine(batched, reference), _min_cosine(single, reference))
            if cosine >= MIN_COSINE_FP32:
                chosen = candidate
                break
            problems.append(f"{candidate.name}: min cosine {cosine:.6f}")
        if chosen is None:
            raise OnnxExportError("the ONNX graph does not match the torch model (" + "; ".join(problems) + ")")
        _move_into_place(chosen, folder / FP32_FILE)
    finally:
        raw.unlink(missing_ok=True)
        fused_path.unlink(missing_ok=True)
    EXPORTS["fp32"] += 1
    meta = {
        "format": FORMAT_VERSION, "weights_sha256": sha, "model": location.name, "source": str(path),
        "dim": int(reference.shape[1]), "max_seq_length": max_length, "inputs": names,
        "pad_token_id": pad_id, "fused": chosen == fused_path, "opset": OPSET,
        "onnx_bytes": (folder / FP32_FILE).stat().st_size, "validation_min_cosine": round(cosine, 7),
        "export_seconds": round(time.perf_counter() - started, 2), "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _write_json_atomic(folder / META_FILE, meta)
    logger.info("ONNX export of %s done in %.1fs (fused: %s)", location.name, meta["export_seconds"], meta["fused"])
    return meta


def _quantize(location: ModelLocation, folder: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Dynamic int8 quantization of the cached float32 graph, validated against it."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as exc:
        raise OnnxExportError(f"onnx-int8 needs the onnx package ({exc})") from exc
    started = time.perf_counter()
    source = folder / FP32_FILE
    graph = onnx.load(str(source), load_external_data=False)
    exclude = [node.name for node in graph.graph.node if node.op_type == "MatMul" and _INT8_EXCLUDE.search(node.name)]
    del graph
    tmp = _temporary(folder, INT8_FILE)
    try:
        with _quiet_logs():
            quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                             nodes_to_exclude=exclude, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        tokenizer = load_fast_tokenizer(location.path_or_name, meta["max_seq_length"])
        names = meta["inputs"]
        reference = _encode_with(make_session(source), names, tokenizer, PROBE_TEXTS, meta["pad_token_id"])
        quantized = _encode_with(make_session(tmp), names, tokenizer, PROBE_TEXTS, meta["pad_token_id"])
        cosine = _min_cosine(quantized, reference)
        if cosine < MIN_COSINE_INT8:
            raise OnnxExportError(f"int8 quantization is too lossy (min cosine {cosine:.4f} < {MIN_COSINE_INT8})")
        _move_into_place(tmp, folder / INT8_FILE)
    finally:
        tmp.unlink(missing_ok=True)
    EXPORTS["int8"] += 1
    meta = {**meta, "int8": {"bytes": (folder / INT8_FILE).stat().st_size, "per_channel": True,
                             "weight_type": "int8", "float32_nodes": exclude,
                             "validation_min_cosine": round(cosine, 5),
                             "seconds": round(time.perf_counter() - started, 2)}}
    _write_json_atomic(folder / META_FILE, meta)
    return meta


def ensure_exported(location: ModelLocation, sha: str, quantized: bool = False,
                    retry_failed: bool = True) -> tuple[Path, dict[str, Any]]:
    """The cache folder and meta of ``location``'s ONNX export (exported/quantized if missing).

    A failed export is recorded in meta.json; with ``retry_failed=False`` (``backend="auto"``)
    that record is answered with OnnxExportError at once instead of trying again.
    """
    folder = cache_dir(sha)
    meta = _read_meta(folder)
    if meta and meta.get("failed") and not retry_failed:
        raise OnnxExportError(f"an earlier export failed: {meta['failed']} (delete {folder} to retry)")
    if not _fp32_ready(folder, meta) or (quantized and not _int8_ready(folder, meta)):
        with _locked(folder):
            meta = _read_meta(folder)  # another process may have finished meanwhile
            if not _fp32_ready(folder, meta):
                try:
                    meta = _export(location, sha, folder)
                except Exception as exc:
                    reason = str(exc) if isinstance(exc, OnnxExportError) else f"{type(exc).__name__}: {exc}"
                    _write_json_atomic(folder / META_FILE, {"format": FORMAT_VERSION, "weights_sha256": sha,
                                                            "failed": reason, "versions": _versions()})
                    if isinstance(exc, OnnxExportError):
                        raise
                    raise OnnxExportError(f"cannot export {location.name} to ONNX ({reason})") from exc
            if quantized and not _int8_ready(folder, meta):
                meta = _quantize(location, folder, meta)
    assert meta is not None
    return folder, meta


# --------------------------------------------------------------------------------------------
# the embedder


class OnnxBackend(Backend):
    """A sentence-transformers model run by ONNX Runtime: same interface as the torch embedder.

    ``quantized`` selects the int8 graph (backend ``onnx-int8``). ``threads`` sets ONNX Runtime's
    intra-op threads; by default ``$OMP_NUM_THREADS`` when set (Ray sets it to a task's CPUs, so
    that ``--engine ray`` workers do not each start one thread per core), else ONNX Runtime's
    default of one per physical core.
    """

    def __init__(self, model: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int | None = None,
                 quantized: bool = False, threads: int | None = None, retry_failed: bool = True):
        self.location = locate_model(model)
        folder = self.location.local_folder
        self.weights_sha256 = verify_weights(self.location)
        if folder is None or self.weights_sha256 is None:
            raise OnnxExportError(f"the ONNX backend needs a local model folder with model.safetensors "
                                  f"({model!r} is not one); use backend torch")
        self.device = pick_device(device)
        self.batch_size = batch_size or default_batch_size(self.device)
        self.quantized = quantized
        self.backend = "onnx-int8" if quantized else "onnx"
        self.cache_folder, self.meta = ensure_exported(self.location, self.weights_sha256, quantized, retry_failed)
        self.onnx_path = self.cache_folder / (INT8_FILE if quantized else FP32_FILE)
        self.session = _open_cached(self.onnx_path, self.device, threads or env_threads())
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.dim = int(self.meta["dim"])
        self._max_seq_length = int(self.meta["max_seq_length"])
        self.pad_id = int(self.meta.get("pad_token_id", 0))
        self.call_tokens = CPU_CALL_TOKENS if self.device == "cpu" else 0
        self.tokenizer = load_fast_tokenizer(folder, self._max_seq_length)
        self._init_stats()

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    def _prepare(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        ids, lengths, truncated = tokenize(self.tokenizer, texts)
        return lengths, truncated, ids

    def _embed_batch(self, texts: list[str], idx: np.ndarray, ids: list[np.ndarray]) -> np.ndarray:
        """One batch, run in calls of one padded width each, of at most ``call_tokens`` padded tokens
        (rows x width, at least two rows: a lone text runs with a copy of itself)."""
        lengths = np.fromiter((len(ids[i]) for i in idx), dtype=np.int64, count=len(idx))
        position = {int(row): j for j, row in enumerate(idx)}
        out = np.empty((len(idx), self.dim), dtype=np.float32)
        for rows, width in width_groups(idx, self.widths(lengths), self.call_tokens):
            batch = fill_rows([ids[i] for i in rows], MIN_CALL_ROWS if self.call_tokens else None)
            vectors = _run(self.session, self.input_names, *pad_batch(batch, self.pad_id, width))
            out[[position[int(r)] for r in rows]] = vectors[:len(rows)]
        return out
