"""What every embedding backend shares: token-length batching, encode statistics, the probe texts
and fast-tokenizer check, device choice. Backends (``TorchBackend``, ``OnnxBackend``,
``PrecomputedBackend``) only embed texts as given; prefixes are the ``Embedder``'s business."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from indexers.embedding.models import ModelLocation, TokenizerMismatch

#: Texts per batch when none is given: CPU runtimes gain nothing from larger batches (padding and
#: cache misses grow), a GPU is kept busy only by large ones (docs/benchmarks.md, GPU section).
CPU_BATCH_SIZE = 64
GPU_BATCH_SIZE = 1024
#: Texts are padded to a multiple of this many tokens and run only with texts of the same padded
#: width, so that a text's vector never depends on its batch companions (``Backend.pad_multiple``).
PAD_MULTIPLE = 16
#: Padded tokens (rows x width) per model call on CPU (ONNX Runtime, torch): a batch of 64 chunks
#: runs in pieces whose activations (the attention scores above all: rows x heads x width^2) stay in cache. On a
#: 2-core EPYC, 1,024 was 15% faster than 6,144 at ~170 tokens per text and 13% at ~65, and 6,144
#: 12% faster than whole batches; same vectors (``benchmarks/embedding.py --settings``). 0 runs
#: every width group of a batch whole (GPUs).
CPU_CALL_TOKENS = 1024
#: Rows of an ONNX Runtime call at least (a lone text runs with a copy of itself): its matrix
#: kernels take another path for a one-row call (matrix-vector), whose sums differ in the last bits;
#: from two rows up a row's vector does not depend on the call's other rows. Torch's CPU kernels do
#: depend on the row count, so the torch backend fills every call up to ``call_tokens // width``
#: rows, which made a lone query 40x slower (177 ms against 4 ms) when ONNX did the same.
MIN_CALL_ROWS = 2

#: Tokenizer outputs a sentence-transformers text model may take.
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

#: Texts on which a fast tokenizer, an export or a backend is checked against sentence-transformers.
PROBE_TEXTS = [
    "The treaty of peace was signed at Ghent.",
    "who signed the peace treaty",
    "",
    "Bananas are rich in potassium; ÉLAN, naïve café — 42% of 1,000 items!",
    "Fellow-Citizens of the Senate and House of Representatives: among the vicissitudes incident to "
    "life no event could have filled me with greater anxieties than that of which the notification "
    "was transmitted by your order.",
    "x",
    # longer than any max_seq_length in use: exercises truncation
    " ".join(["The Congress shall have power to lay and collect taxes, duties, imposts and excises."] * 60),
]


def model_features(model: Any, texts: list[str]) -> dict[str, Any]:
    """What sentence-transformers' own tokenization gives the model for ``texts``."""
    if hasattr(model, "preprocess"):
        return model.preprocess(texts)
    return model.tokenize(texts)  # sentence-transformers < 6


def check_fast_tokenizer(model: Any, tokenizer: Any, features: dict[str, Any] | None = None) -> list[str]:
    """The model's input names, after checking that ``tokenizer`` (``tokenizers.Tokenizer``,
    truncating at the model's max length) gives exactly the ids sentence-transformers gives on
    ``PROBE_TEXTS`` (truncation included; ``features``: ``model_features`` of them, if already
    made); raises ``TokenizerMismatch`` otherwise."""
    import torch

    features = features if features is not None else model_features(model, list(PROBE_TEXTS))
    tensors = {k: v for k, v in features.items() if torch.is_tensor(v)}
    unknown = sorted(set(tensors) - set(MODEL_INPUTS))
    if unknown or "input_ids" not in tensors or "attention_mask" not in tensors:
        raise TokenizerMismatch(f"unsupported model inputs {sorted(tensors)}")
    if getattr(model, "default_prompt_name", None):
        raise TokenizerMismatch("the model applies a default prompt")
    mask = tensors["attention_mask"].bool()
    for row, enc in enumerate(tokenizer.encode_batch(PROBE_TEXTS)):
        expected = tensors["input_ids"][row][mask[row]].tolist()
        if expected != enc.ids:
            raise TokenizerMismatch(f"the fast tokenizer disagrees with sentence-transformers on probe {row}")
        if "token_type_ids" in tensors and any(tensors["token_type_ids"][row].tolist()):
            raise TokenizerMismatch("non-zero token_type_ids for single texts are not supported")
        if any(enc.type_ids):
            raise TokenizerMismatch("non-zero token type ids for single texts are not supported")
    return [k for k in MODEL_INPUTS if k in tensors]


def _no_gpu_device_files() -> bool:
    """True on Linux when no GPU device file exists (NVIDIA, WSL, ROCm): CUDA cannot be available."""
    if not sys.platform.startswith("linux"):
        return False
    dev = Path("/dev")
    return not (any(dev.glob("nvidia[0-9]*")) or (dev / "dxg").exists() or (dev / "kfd").exists())


def default_batch_size(device: str) -> int:
    """Texts per batch for ``device`` when none is given."""
    return GPU_BATCH_SIZE if device.startswith("cuda") else CPU_BATCH_SIZE


def pick_device(device: str = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``.

    On Linux without GPU device files this answers without importing torch, so that the ONNX
    backend can start without it.
    """
    if device != "auto":
        return device
    if _no_gpu_device_files():
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


@dataclass
class EncodeStats:
    """What one or more ``encode`` calls did.

    ``tokens`` counts the model tokens actually embedded (special tokens included, after
    truncation); ``padded_tokens`` the tokens processed including padding; ``truncated`` the
    inputs longer than ``max_seq_length`` tokens, of which only the first ``max_seq_length`` were
    embedded.
    """

    texts: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    batches: int = 0
    seconds: float = 0.0

    def add(self, other: "EncodeStats") -> None:
        for name in ("texts", "tokens", "padded_tokens", "truncated", "batches", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def padding_overhead(self) -> float:
        """Padding as a fraction of the real tokens (0.0 is no waste)."""
        return (self.padded_tokens - self.tokens) / self.tokens if self.tokens else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "padding_overhead": round(self.padding_overhead, 4)}


class Backend:
    """One way of running a model on texts as given: name, spec, statistics of the last and of all
    ``encode`` calls, batches of texts sorted by token length."""

    backend: str = "torch"
    location: ModelLocation
    weights_sha256: str | None
    dim: int
    batch_size: int
    #: False keeps the input order in batches, each padded to its longest text (tests compare it
    #: with the bucketed order).
    sort_by_length: bool = True
    #: Texts are padded to their own token count rounded up to this, and run only with texts of the
    #: same padded width, at most ``call_tokens // width`` rows per call (at least two): a text's
    #: vector is then bit-identical whatever batch it is in (0: pad to the batch's longest text, as
    #: ``SentenceTransformer.encode`` does).
    pad_multiple: int = PAD_MULTIPLE
    #: Padded tokens (rows x width) of every model call; 0 runs each width group of a batch whole
    #: (GPUs: faster, but a vector then depends on the group's size in the last bits).
    call_tokens: int = 0

    def _init_stats(self) -> None:
        self.last_stats = EncodeStats()
        self.total_stats = EncodeStats()

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def max_seq_length(self) -> int:
        raise NotImplementedError

    @property
    def last_truncated(self) -> int:
        """How many inputs of the last ``encode`` call were cut at ``max_seq_length`` tokens."""
        return self.last_stats.truncated

    @property
    def spec(self) -> dict[str, Any]:
        """What the manifest records so that queries are encoded like the passages."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "normalized": True,
                "max_seq_length": self.max_seq_length, "backend": self.backend}

    def _finish_stats(self, stats: EncodeStats, started: float) -> None:
        stats.seconds = time.perf_counter() - started
        self.last_stats = stats
        self.total_stats.add(stats)

    def _order(self, lengths: np.ndarray) -> np.ndarray:
        """Longest first (stable), so that each batch pads to nearly its own length."""
        if not self.sort_by_length:
            return np.arange(len(lengths))
        return np.argsort(-lengths, kind="stable")

    def widths(self, lengths: np.ndarray) -> np.ndarray:
        """The padded width of each text: its own length rounded up to ``pad_multiple`` (so that its
        vector does not depend on the texts it is batched with), or, unsorted, the batch's longest."""
        if not self.sort_by_length or self.pad_multiple < 1:
            return np.full(len(lengths), int(lengths.max()) if len(lengths) else 0)
        return padded_widths(lengths, self.pad_multiple)

    def _prepare(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """Per-text batching lengths, truncated flags (None when token counts are unknown) and
        whatever state ``_embed_batch`` needs (e.g. token ids)."""
        raise NotImplementedError

    def _embed_batch(self, texts: list[str], idx: np.ndarray, state: Any) -> Any:
        """Unit-length float32 vectors of ``texts[i] for i in idx``: a numpy array, or a device
        tensor that ``_gather`` copies back once the whole ``encode`` call has been queued."""
        raise NotImplementedError

    def _gather(self, out: np.ndarray, pending: list[tuple[np.ndarray, Any]]) -> None:
        """Copy device results ``(row indices, vectors)`` into ``out``."""
        raise NotImplementedError

    def encode(self, texts: Sequence[str], batch_size: int | None = None,
               progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Unit-length float32 embeddings [len(texts), dim]; batches are formed longest-first."""
        started = time.perf_counter()
        texts = list(texts)
        stats = EncodeStats(texts=len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if texts:
            batch_size = batch_size or self.batch_size
            lengths, truncated, state = self._prepare(texts)
            if truncated is not None:
                stats.truncated = int(truncated.sum())
            order = self._order(lengths)
            pending: list[tuple[np.ndarray, Any]] = []
            for lo in range(0, len(texts), batch_size):
                idx = order[lo:lo + batch_size]
                vectors = self._embed_batch(texts, idx, state)
                if isinstance(vectors, np.ndarray):
                    out[idx] = vectors
                else:
                    pending.append((idx, vectors))
                if truncated is not None:
                    stats.tokens += int(lengths[idx].sum())
                    stats.padded_tokens += int(self.widths(lengths[idx]).sum())
                stats.batches += 1
                if progress is not None:
                    progress(len(idx))
            if pending:
                self._gather(out, pending)
        self._finish_stats(stats, started)
        return out

    __call__ = encode

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, backend={self.backend!r}, dim={self.dim})"


def padded_widths(lengths: np.ndarray, multiple: int) -> np.ndarray:
    """Each length rounded up to a multiple of ``multiple`` (at least ``multiple``)."""
    return np.maximum(-(-np.asarray(lengths, dtype=np.int64) // multiple), 1) * multiple


def rows_per_call(width: int, call_tokens: int) -> int | None:
    """How many rows every model call of padded ``width`` has: ``call_tokens // width`` (at least
    one), or None (0 ``call_tokens``: a whole group per call, whatever its size)."""
    return max(1, call_tokens // max(width, 1)) if call_tokens else None


def width_groups(idx: np.ndarray, widths: np.ndarray, call_tokens: int = 0) -> list[tuple[np.ndarray, int]]:
    """``idx`` (rows of one batch, with their padded ``widths``) cut into runs of one width each,
    and into pieces of ``rows_per_call`` rows."""
    groups = []
    for width in sorted(set(widths.tolist()), reverse=True):
        rows = idx[widths == width]
        step = rows_per_call(width, call_tokens) or len(rows)
        groups.extend((rows[lo:lo + step], int(width)) for lo in range(0, len(rows), step))
    return groups


def fill_rows(ids: list[np.ndarray], rows: int | None) -> list[np.ndarray]:
    """``ids`` with copies of its first row appended up to ``rows`` rows (their vectors are dropped),
    so that the matrix kernels a row goes through do not depend on how many texts share the call."""
    return ids + [ids[0]] * (rows - len(ids)) if rows and len(ids) < rows else ids


def _length_tokenizer(hf_tokenizer: Any, max_length: int) -> Any | None:
    """A private copy of a Hugging Face fast tokenizer's backend, truncating at ``max_length``."""
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(backend.to_str())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    return tokenizer


def tokenize(tokenizer: Any, texts: Sequence[str], slice_size: int = 4096
             ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Token ids (int32 per text), token counts after truncation and truncated flags
    (``tokenizers.Tokenizer``), tokenized in slices."""
    ids: list[np.ndarray] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    truncated = np.zeros(len(texts), dtype=bool)
    for lo in range(0, len(texts), slice_size):
        for i, enc in enumerate(tokenizer.encode_batch(list(texts[lo:lo + slice_size])), lo):
            ids.append(np.asarray(enc.ids, dtype=np.int32))
            lengths[i] = len(enc.ids)
            truncated[i] = bool(enc.overflowing)
    return ids, lengths, truncated


def token_lengths(tokenizer: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token counts after truncation and a truncated flag per text."""
    _, lengths, truncated = tokenize(tokenizer, texts)
    return lengths, truncated

