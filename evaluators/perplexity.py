"""``rag eval perplexity``: a causal LM's perplexity of held-out text with and without retrieval
(MassiveDS, "Scaling Retrieval-Based Language Models with a Trillion-Token Datastore", Shao et al. 2024).

Held-out documents are cut into windows of ``window`` LM tokens. The first ``query_tokens`` of a
window are the retrieval query and the LM's prefix; the rest is the continuation, whose perplexity is
measured (1) with the prefix alone and (2) with the top-``k`` retrieved chunks in front (``order``
``best-last`` puts the best chunk next to the prefix; ``budget`` caps the chunks' LM tokens).

Retrieved chunks that overlap the evaluated window are removed first, with MassiveDS's rules on
normalised words (``datastores.ops``): 13-gram Jaccard >= 0.8, or a shared run of >= 32 words.
Otherwise a datastore holding the evaluation text shows a fake gain. Retrieval happens once
(``evaluators.scaling.ScalingStudy``); each datastore fraction ``p`` keeps the seeded, nested
subsample of the retrieved chunks, so perplexity against ``p`` needs no new datastores.
Perplexity is ``exp`` of the mean negative log-likelihood per continuation token over all windows.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.layout import atomic_write_bytes

ORDERS = ("best-last", "best-first")


@dataclass(frozen=True)
class PerplexitySettings:
    """What the evaluation does; see the module docstring."""

    window: int = 256
    query_tokens: int = 128
    k: int = 3
    order: str = "best-last"
    budget: int = 768
    top_k: int = 100
    mode: str = "dense"
    fractions: tuple[float, ...] = ()
    seed: int = 0
    max_windows: int | None = 64
    ngram: int = 13
    jaccard: float = 0.8
    min_words: int = 32
    remove_overlaps: bool = True
    batch_size: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.query_tokens < self.window:
            raise UserError(f"query tokens must be in (0, window) (got {self.query_tokens}, window {self.window})")
        if self.k < 1 or self.top_k < self.k or self.budget < 1:
            raise UserError(f"need 1 <= k <= top_k and budget >= 1 (got k={self.k}, top_k={self.top_k}, "
                             f"budget={self.budget})")
        if self.order not in ORDERS:
            raise UserError(f"order must be one of {', '.join(ORDERS)} (got {self.order!r})")
        if any(not 0.0 < p <= 1.0 for p in self.fractions):
            raise UserError(f"fractions must be in (0, 1] (got {self.fractions})")


@dataclass(frozen=True)
class Window:
    """One evaluation window: its prefix (the query) and the continuation to score, as LM token ids."""

    doc: int
    prefix: tuple[int, ...]
    continuation: tuple[int, ...]
    text: str


@dataclass
class PerplexityResult:
    """Perplexities without and with retrieval, per fraction, and what overlap removal dropped."""

    settings: PerplexitySettings
    no_retrieval: float
    retrieval: float
    removed: int
    fractions: dict[float, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"no_retrieval": self.no_retrieval, "retrieval": self.retrieval, "removed": self.removed,
                "fractions": {str(p): v for p, v in self.fractions.items()}, "settings": asdict(self.settings),
                **self.info}

    def write_json(self, path: str | Path) -> Path:
        atomic_write_bytes(Path(path), json.dumps(self.to_dict(), indent=2).encode("utf-8"))
        return Path(path)

    def plot(self, path: str | Path, title: str = "") -> Path:
        """Perplexity against datastore fraction (log x), the no-retrieval level dashed: the MassiveDS figure."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        if not self.fractions:
            raise UserError("a plot needs --fractions")
        xs = sorted(self.fractions)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(xs, [self.fractions[p] for p in xs], marker="o", label=f"retrieval, k={self.settings.k}")
        ax.axhline(self.no_retrieval, linestyle="--", color="grey", label="no retrieval")
        ax.set_xscale("log")
        ax.set_xlabel("datastore fraction p (log)")
        ax.set_ylabel("perplexity of the continuation")
        ax.set_title(title or f"{self.info.get('lm', 'LM')}: {self.info.get('windows', 0)} windows")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return Path(path)


# -- texts and windows -----------------------------------------------------------------------------


def read_texts(paths: Sequence[str | Path]) -> list[str]:
    """Held-out documents: JSONL files (one ``text`` per record) or plain text files, in order."""
    texts: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"texts file {path} does not exist")
        if path.suffix.lower() != ".jsonl":
            texts.append(path.read_text(encoding="utf-8"))
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"{path} line {number} is not valid JSON ({exc})") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise UserError(f"{path} line {number} has no string field 'text'")
            texts.append(record["text"])
    if not any(t.strip() for t in texts):
        raise UserError("the held-out texts are empty")
    return texts


def make_windows(texts: Sequence[str], tokenizer: Any, settings: PerplexitySettings) -> list[Window]:
    """Non-overlapping windows of ``settings.window`` LM tokens from each text (a shorter tail is dropped)."""
    windows: list[Window] = []
    for doc, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - settings.window + 1, settings.window):
            piece = ids[start:start + settings.window]
            windows.append(Window(doc, tuple(piece[:settings.query_tokens]), tuple(piece[settings.query_tokens:]),
                                  tokenizer.decode(piece)))
            if settings.max_windows is not None and len(windows) >= settings.max_windows:
                return windows
    if not windows:
        raise UserError(f"no text is {settings.window} LM tokens long: lower --window")
    return windows


# -- overlap removal (MassiveDS's rules) -------------------------------------------------------------


def overlaps(chunk: str, window_words: list[str], window_grams: set[bytes], settings: PerplexitySettings) -> bool:
    """True when ``chunk`` has 13-gram Jaccard >= 0.8 with the window, or shares a run of >= 32 words."""
    from datastores.ops.decontaminate import longest_common_run
    from datastores.ops.minhash import normalise_words, shingles_of_words

    words = normalise_words(chunk)
    grams = shingles_of_words(words, settings.ngram)
    shared = len(grams & window_grams)
    if shared and shared / len(grams | window_grams) >= settings.jaccard:
        return True
    return len(words) >= settings.min_words and longest_common_run(words, window_words) >= settings.min_words


def overlapping_ids(windows: Sequence[Window], hits: Sequence[Sequence[Any]], settings: PerplexitySettings) -> list[set[int]]:
    """Per window, the retrieved chunk ids that overlap it."""
    from datastores.ops.minhash import normalise_words, shingles_of_words

    out = []
    for window, found in zip(windows, hits):
        words = normalise_words(window.text)
        grams = shingles_of_words(words, settings.ngram)
        out.append({h.chunk_id for h in found if overlaps(h.text, words, grams, settings)})
    return out


# -- scoring -------------------------------------------------------------------------------------------


def context_ids(chunks: Sequence[str], tokenizer: Any, settings: PerplexitySettings) -> list[int]:
    """The retrieved chunks as LM token ids within ``settings.budget``, best chunk last (``best-last``)
    or first; a chunk that does not fit whole is cut, the following ones dropped."""
    pieces: list[list[int]] = []
    room = settings.budget
    for text in chunks:  # best first: the budget goes to the best chunks
        ids = tokenizer(text.strip() + "\n\n", add_special_tokens=False)["input_ids"][:room]
        if not ids:
            break
        pieces.append(ids)
        room -= len(ids)
    if settings.order == "best-last":
        pieces.reverse()
    return [t for piece in pieces for t in piece]


def continuation_nll(lm: Any, sequences: Sequence[tuple[list[int], Window]], batch_size: int) -> np.ndarray:
    """Summed negative log-likelihood (nats) of each window's continuation after its context + prefix."""
    import torch

    totals = np.zeros(len(sequences), dtype=np.float64)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for lo in range(0, len(sequences), batch_size):
        batch = [ctx + list(w.prefix) + list(w.continuation) for ctx, w in sequences[lo:lo + batch_size]]
        width = max(len(ids) for ids in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(batch):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        with torch.no_grad():
            logits = lm.model(input_ids=ids.to(lm.device), attention_mask=mask.to(lm.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(logp.device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu().numpy()
        for row, (_, window) in enumerate(sequences[lo:lo + batch_size]):
            end = len(batch[row]) - 2                      # index of the log-prob of the last token
            totals[lo + row] = -token_logp[row, end - len(window.continuation) + 1:end + 1].sum()
    return totals


def perplexity(nll: np.ndarray, tokens: int) -> float:
    """exp(mean NLL per token)."""
    return float(math.exp(float(np.sum(nll)) / tokens))


class _Scorer:
    """Continuation NLL per (window, context chunk ids), computed once per distinct context."""

    def __init__(self, lm: Any, windows: Sequence[Window], settings: PerplexitySettings):
        self.lm, self.windows, self.settings = lm, windows, settings
        self.memo: dict[tuple[int, tuple[int, ...]], float] = {}

    def total(self, contexts: Sequence[Sequence[Any]]) -> float:
        """Summed NLL over all windows, each with its context hits (texts of ``h.text``)."""
        keys = [(i, tuple(h.chunk_id for h in hits)) for i, hits in enumerate(contexts)]
        todo = [(key, hits) for key, hits in zip(keys, contexts) if key not in self.memo]
        sequences = [(context_ids([h.text for h in hits], self.lm.tokenizer, self.settings), self.windows[key[0]])
                     for key, hits in todo]
        for (key, _), value in zip(todo, continuation_nll(self.lm, sequences, self.settings.batch_size)):
            self.memo[key] = float(value)
        return sum(self.memo[key] for key in keys)


def evaluate_perplexity(datastore: Any, texts: Sequence[str], lm: Any, settings: PerplexitySettings,
                        progress: Callable[[int], Any] | None = None) -> PerplexityResult:
    """Perplexity of the held-out ``texts`` with and without retrieval from ``datastore`` (see the
    module docstring); ``lm`` is a ``rag.lm`` spec or a loaded ``rag.lm.LanguageModel``."""
    from evaluators.scaling import ScalingStudy
    from rag.lm import as_causal_lm

    lm = as_causal_lm(lm, getattr(datastore, "device", "auto"))
    windows = make_windows(texts, lm.tokenizer, settings)
    tokens = sum(len(w.continuation) for w in windows)
    study = ScalingStudy(datastore, [lm.tokenizer.decode(list(w.prefix)) for w in windows],
                         min(settings.top_k, len(datastore)), settings.mode, progress=progress)
    dropped = overlapping_ids(windows, study.hits, settings) if settings.remove_overlaps else [set() for _ in windows]
    scorer = _Scorer(lm, windows, settings)
    no_retrieval = perplexity(np.asarray([scorer.total([[] for _ in windows])]), tokens)

    def at(fraction: float) -> float:
        ranked = study.ranked(fraction, settings.seed)
        kept = [[h for h in hits if h.chunk_id not in bad][:settings.k] for hits, bad in zip(ranked, dropped)]
        return perplexity(np.asarray([scorer.total(kept)]), tokens)

    fractions = {p: at(p) for p in sorted(settings.fractions)}
    retrieval = fractions[1.0] if 1.0 in fractions else at(1.0)
    info = {"windows": len(windows), "tokens": tokens, "documents": len(texts), "lm": lm.name,
            "removed_pairs": sum(len(d) for d in dropped), "datastore_chunks": len(datastore),
            "forward_passes": len(scorer.memo)}
    return PerplexityResult(settings, no_retrieval, retrieval, len(set().union(*dropped)), fractions, info)


__all__ = ["ORDERS", "PerplexityResult", "PerplexitySettings", "Window", "context_ids", "continuation_nll",
           "evaluate_perplexity", "make_windows", "overlapping_ids", "overlaps", "perplexity", "read_texts"]
