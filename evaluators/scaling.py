"""Datastore scaling study, as in MassiveDS ("Scaling Retrieval-Based Language Models with a
Trillion-Token Datastore", Shao et al. 2024): how quality changes with the datastore's size.

Instead of building one datastore per size, the top-``top_k`` chunks of every question are
retrieved once from the full datastore; a datastore holding a random fraction ``p`` of the chunks
would return exactly the retrieved chunks that survive the subsample (as long as ``top_k`` is deep
enough). Per fraction ``p``:

1. near-duplicate removal among the retrieved chunks (``datastores.ops.minhash.near_duplicate_of``:
   13-word shingles, Jaccard >= 0.8; over the union of every question's retrieved chunks, the
   first in datastore order kept; computed once, it does not depend on ``p``);
2. decontamination against the evaluation questions (and answers, where the set has them) with
   ``datastores.ops.decontaminate.find_contaminated`` (13-gram Jaccard >= 0.8 by default; it scans
   the datastore once, fine at evaluation scale);
3. a seeded subsample: chunk ``i`` is kept when ``u(seed, i) < p``, ``u`` a hash of (seed, chunk
   id) mapped to [0, 1). The decision is the same for every question, and the subsample at a
   smaller ``p`` is contained in the one at a larger ``p`` (nested);
4. optional reranking of the first ``rerank_depth`` survivors (``rag.retrieve.rerank`` specs);
5. metrics on the first ``k`` survivors: Chroma span metrics (Recall, Precision, IoU ×100) for
   Chroma-style references, nDCG/recall (pytrec_eval) for BEIR qrels, answer-in-context for
   JSONL questions with answers.

At ``p = 1`` without dedup and decontamination the ranking is the datastore's own top-``k``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.layout import atomic_write_bytes
from datastores.records import Hit

DEFAULT_FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
#: (line style, marker, marker size) of the metric lines of ``ScalingResult.plot``, in order
LINE_STYLES = (("-", "o", 6), ("--", "s", 8), (":", "^", 9), ("-.", "D", 7), ((0, (5, 1, 1, 1)), "v", 9))
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def parse_fractions(text: str) -> tuple[float, ...]:
    """``"0.01,0.1,1"`` -> (0.01, 0.1, 1.0), sorted; each must be in (0, 1]."""
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise UserError(f"--fractions must be comma-separated numbers (got {text!r})") from None
    if not values or any(not 0.0 < v <= 1.0 for v in values):
        raise UserError(f"every fraction must be in (0, 1] (got {text!r})")
    return tuple(values)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def keep_draws(chunk_ids: Sequence[int] | np.ndarray, seed: int) -> np.ndarray:
    """A uniform draw in [0, 1) per chunk id, a pure function of (seed, chunk id)."""
    ids = np.asarray(chunk_ids, dtype=np.int64).astype(np.uint64)
    mixed = _splitmix64(ids ^ _splitmix64(np.array([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0])
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def subsample_mask(chunk_ids: Sequence[int] | np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which chunks a ``fraction`` subsample keeps (nested in ``fraction``, same for every query)."""
    if not 0.0 < fraction <= 1.0:
        raise UserError(f"fraction must be in (0, 1] (got {fraction})")
    if fraction == 1.0:
        return np.ones(len(chunk_ids), dtype=bool)
    return keep_draws(chunk_ids, seed) < fraction


# -- judges: turn per-question rankings into metrics ----------------------------------------


class Judge(Protocol):
    name: str
    questions: list[str]

    def score(self, ranked: list[list[Hit]], k: int) -> dict[str, float]: ...


def _corpus_resolver(known: set[str]) -> Callable[[str], str | None]:
    """Map a datastore doc id (``chatlogs.md``, ``corpus.jsonl#d3``) to the dataset's document id."""
    def resolve(doc_id: str) -> str | None:
        for candidate in (doc_id, doc_id.rsplit("#", 1)[-1], Path(doc_id.split("#", 1)[0]).stem):
            if candidate in known:
                return candidate
        return None
    return resolve


@dataclass
class SpanJudge:
    """Chroma span metrics (char unit): references are (corpus id, [(start, end)])."""

    questions: list[str]
    references: list[tuple[str, tuple[tuple[int, int], ...]]]
    scorer: Any
    resolve: Callable[[str], str | None]
    corpora: dict[str, str] | None = None
    name: str = "spans"

    def check(self, hits: Sequence[Hit]) -> None:
        """The datastore's chunk texts must be the dataset's corpus slices (else offsets lie)."""
        if self.corpora is None:
            return
        for hit in hits:
            cid = self.resolve(hit.doc_id)
            if cid is not None and self.corpora[cid][hit.start:hit.end] != hit.text:
                raise UserError(f"chunk {hit.chunk_id} of {hit.doc_id} is not {cid}[{hit.start}:{hit.end}] of the "
                                 "dataset; build the datastore from the dataset's own corpora files")

    def score(self, ranked: list[list[Hit]], k: int) -> dict[str, float]:
        from evaluators.spans import RetrievedSpan, summarize

        rows = []
        for i, ((corpus_id, refs), hits) in enumerate(zip(self.references, ranked)):
            retrieved = [RetrievedSpan(self.resolve(h.doc_id) or h.doc_id, h.start, h.end) for h in hits[:k]]
            rows.append(self.scorer.score(i, corpus_id, refs, retrieved, k))
        summary = summarize(rows)
        return {m: summary.metric(m).mean for m in ("recall", "precision", "iou")}


@dataclass
class QrelsJudge:
    """BEIR qrels: documents ranked by their best chunk, pytrec_eval nDCG@k and recall@k."""

    questions: list[str]
    query_ids: list[str]
    qrels: dict[str, dict[str, int]]
    resolve: Callable[[str], str | None]
    name: str = "qrels"

    def score(self, ranked: list[list[Hit]], k: int) -> dict[str, float]:
        from evaluators.retrieval import mean_metrics, retrieval_metrics

        run = {}
        for qid, hits in zip(self.query_ids, ranked):
            docs: dict[str, None] = {}
            for h in hits:
                docs.setdefault(self.resolve(h.doc_id) or h.doc_id, None)
                if len(docs) >= k:
                    break
            run[qid] = list(docs)
        means = mean_metrics(retrieval_metrics(run, self.qrels, k, k))
        return {name: value for name, value in means.items() if name.startswith(("ndcg", "recall"))}


@dataclass
class AnswerJudge:
    """Answer-in-context: some gold answer occurs in the first k chunks."""

    questions: list[str]
    answers: list[tuple[str, ...]]
    name: str = "answers"

    def score(self, ranked: list[list[Hit]], k: int) -> dict[str, float]:
        from evaluators.answers import answer_in_context

        values = [answer_in_context([h.text for h in hits[:k]], golds)
                  for hits, golds in zip(ranked, self.answers) if golds]
        return {"answer_in_context": 100.0 * float(np.mean(values)) if values else math.nan}


def _datastore_spans(datastore: Any, resolve: Callable[[str], str | None]) -> dict[str, np.ndarray]:
    rows = datastore.sql().execute('SELECT doc_id, start, "end" FROM chunks ORDER BY chunk_id').fetchall()
    spans: dict[str, list[tuple[int, int]]] = {}
    for doc_id, start, end in rows:
        cid = resolve(doc_id)
        if cid is not None:
            spans.setdefault(cid, []).append((start, end))
    return {cid: np.asarray(s, dtype=np.int64) for cid, s in spans.items()}


def load_judge(dataset: str | Path, datastore: Any) -> Judge:
    """A judge for a Chroma folder, a BEIR folder or a JSONL question file (answers or references)."""
    from evaluators.spans import SpanScorer

    path = Path(dataset)
    if path.is_dir() and (path / "questions_df.csv").is_file():
        from evaluators.datasets import load_dataset

        data = load_dataset(path)
        resolve = _corpus_resolver(set(data.corpora))
        scorer = SpanScorer(_datastore_spans(datastore, resolve))
        return SpanJudge([q.text for q in data.questions], [(q.corpus_id, q.references) for q in data.questions],
                         scorer, resolve, data.corpora)
    if path.is_dir() and (path / "qrels").is_dir():
        from evaluators.datasets import load_beir

        beir = load_beir(path)
        qids = beir.evaluated_queries
        return QrelsJudge([beir.queries[q] for q in qids], qids, beir.qrels, _corpus_resolver(set(beir.corpus)))
    if path.is_file() and path.suffix == ".jsonl":
        from evaluators.datasets import load_questions_jsonl

        questions, _ = load_questions_jsonl(path)
        if any(q.answers for q in questions):
            return AnswerJudge([q.text for q in questions], [tuple(q.answers) for q in questions])
        known = {r.doc_id for q in questions for r in q.references}
        resolve = _corpus_resolver(known)
        refs = []
        for q in questions:
            docs = {r.doc_id for r in q.references}
            if len(docs) != 1:
                raise UserError(f"question {q.id or q.index} has references in {len(docs)} documents; the span "
                                 "metrics need one document per question")
            refs.append((docs.pop(), tuple((r.start, r.end) for r in q.references)))
        return SpanJudge([q.text for q in questions], refs, SpanScorer(_datastore_spans(datastore, resolve)), resolve)
    raise FileNotFoundError(f"{path} is not a Chroma folder (questions_df.csv), a BEIR folder (qrels/) or a "
                            "questions .jsonl file")


# -- the study -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ScalingSettings:
    """What the study does; see the module docstring."""

    top_k: int = 1000
    k: int = 5
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    seed: int = 0
    mode: str = "dense"
    dedup: bool = True
    dedup_threshold: float = 0.8
    shingle: int = 13
    decontaminate: bool = True
    decontam_n: int = 13
    decontam_threshold: float = 0.8
    rerank: str | None = None
    rerank_depth: int = 100

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.k < 1:
            raise UserError(f"top_k and k must be at least 1 (got {self.top_k}, {self.k})")
        if self.k > self.top_k:
            raise UserError(f"k ({self.k}) cannot exceed top_k ({self.top_k})")
        if not self.fractions or any(not 0.0 < p <= 1.0 for p in self.fractions):
            raise UserError(f"fractions must be in (0, 1] (got {self.fractions})")


@dataclass
class ScalingResult:
    settings: ScalingSettings
    rows: list[dict[str, Any]]
    removed: dict[str, int] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        return [name for name in self.rows[0] if name not in ("fraction", "candidates", "short")] if self.rows else []

    def to_dict(self) -> dict[str, Any]:
        return {"settings": asdict(self.settings), "rows": self.rows, "removed": self.removed, "info": self.info}

    def write_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False).encode("utf-8"))
        return path

    def figure(self, title: str = "") -> Any:
        """A matplotlib figure with one line per metric against the datastore fraction (log x);
        each metric has its own line style and marker (hollow on every other line, drawn over the
        earlier ones), so a metric equal to another (precision and IoU often are) is not hidden."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["fraction"] for r in self.rows]
        for i, name in enumerate(self.metrics):
            linestyle, marker, size = LINE_STYLES[i % len(LINE_STYLES)]
            ax.plot(xs, [r[name] for r in self.rows], linestyle=linestyle, marker=marker, markersize=size,
                    markerfacecolor="none" if i % 2 else None, linewidth=2.2 if i == 0 else 1.4, label=name,
                    zorder=2 + i)
        ax.set_xscale("log")
        ax.set_xlabel("datastore fraction p (log)")
        ax.set_ylabel("metric ×100")
        ax.set_title(title or f"scaling: top-{self.settings.top_k} → k={self.settings.k}, seed {self.settings.seed}")
        ax.grid(True, alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return fig

    def plot(self, path: str | Path, title: str = "") -> Path:
        """``figure`` written as a PNG."""
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig = self.figure(title)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


class ScalingStudy:
    """Retrieves once, then ranks and scores any fraction (see the module docstring)."""

    def __init__(self, datastore: Any, questions: Sequence[str], top_k: int = 1000, mode: str = "dense",
                 batch_size: int = 64, progress: Callable[[int], Any] | None = None):
        self.datastore = datastore
        self.questions = list(questions)
        self.top_k = top_k
        self.hits: list[list[Hit]] = []
        for lo in range(0, len(self.questions), batch_size):
            self.hits.extend(datastore.search_many(self.questions[lo:lo + batch_size], k=top_k, mode=mode))
            if progress is not None:
                progress(min(batch_size, len(self.questions) - lo))

    def retrieved_ids(self) -> np.ndarray:
        """Every chunk id some question retrieved, ascending."""
        ids = [h.chunk_id for hits in self.hits for h in hits]
        return np.unique(np.asarray(ids, dtype=np.int64))

    def near_duplicates(self, threshold: float = 0.8, shingle: int = 13) -> np.ndarray:
        """Retrieved chunk ids that near-duplicate an earlier retrieved chunk (datastore order)."""
        from datastores.ops.minhash import near_duplicate_of

        texts = {h.chunk_id: h.text for hits in self.hits for h in hits}
        ids = self.retrieved_ids()
        dup_of = near_duplicate_of((texts[i] for i in ids.tolist()), threshold=threshold, shingle=shingle)
        return ids[dup_of >= 0]

    def contaminated(self, eval_texts: Sequence[Any], n: int = 13, threshold: float = 0.8) -> np.ndarray:
        """Retrieved chunk ids that match an evaluation text (``datastores.ops.decontaminate``)."""
        from datastores.ops.decontaminate import find_contaminated

        found = np.asarray(sorted(set(find_contaminated(self.datastore.root, eval_texts, "ngram", n, threshold)
                                      .removed_ids)), dtype=np.int64)
        return np.intersect1d(found, self.retrieved_ids())

    def ranked(self, fraction: float, seed: int = 0, removed: np.ndarray | None = None) -> list[list[Hit]]:
        """Each question's retrieved hits that survive removal and the ``fraction`` subsample."""
        out = []
        for hits in self.hits:
            ids = np.asarray([h.chunk_id for h in hits], dtype=np.int64)
            keep = subsample_mask(ids, fraction, seed)
            if removed is not None and len(removed):
                keep &= ~np.isin(ids, removed)
            out.append([h for h, kept in zip(hits, keep) if kept])
        return out


def _rerank(reranker: Any, questions: Sequence[str], ranked: list[list[Hit]], depth: int) -> list[list[Hit]]:
    from datastores.retrieval import rerank_order

    out = []
    for question, hits in zip(questions, ranked):
        head, tail = hits[:depth], hits[depth:]
        if head:
            order = rerank_order(reranker.score(question, [h.text for h in head]))
            head = [head[i] for i in order]
        out.append(head + tail)
    return out


def eval_texts_of(judge: Judge) -> list[Any]:
    """The texts to decontaminate against: each question with its answers (when the set has them)."""
    from datastores.ops.decontaminate import EvalText

    answers = getattr(judge, "answers", None) or [()] * len(judge.questions)
    return [EvalText(f"q{i}", "\n".join([q, *a])) for i, (q, a) in enumerate(zip(judge.questions, answers))]


def run_scaling(datastore: Any, judge: Judge, settings: ScalingSettings, reranker: Any = None,
                progress: Callable[[int], Any] | None = None) -> ScalingResult:
    """Retrieve once, then score every fraction of ``settings`` (rows in ascending fraction)."""
    study = ScalingStudy(datastore, judge.questions, settings.top_k, settings.mode, progress=progress)
    check = getattr(judge, "check", None)
    if check is not None:
        check([h for hits in study.hits for h in hits])
    parts = []
    removed_counts = {"near_duplicates": 0, "contaminated": 0}
    if settings.dedup:
        dups = study.near_duplicates(settings.dedup_threshold, settings.shingle)
        removed_counts["near_duplicates"] = len(dups)
        parts.append(dups)
    if settings.decontaminate:
        dirty = study.contaminated(eval_texts_of(judge), settings.decontam_n, settings.decontam_threshold)
        removed_counts["contaminated"] = len(dirty)
        parts.append(dirty)
    removed = np.unique(np.concatenate(parts)) if parts else None
    rows = []
    for fraction in sorted(settings.fractions):
        ranked = study.ranked(fraction, settings.seed, removed)
        if reranker is not None:
            ranked = _rerank(reranker, judge.questions, ranked, settings.rerank_depth)
        row: dict[str, Any] = {"fraction": fraction}
        row.update({name: round(value, 4) for name, value in judge.score(ranked, settings.k).items()})
        row["candidates"] = round(float(np.mean([len(r) for r in ranked])), 2) if ranked else 0.0
        row["short"] = int(sum(len(r) < settings.k for r in ranked))
        rows.append(row)
    info = {"questions": len(judge.questions), "judge": judge.name, "retrieved_unique": len(study.retrieved_ids()),
            "datastore_chunks": len(datastore)}
    return ScalingResult(settings, rows, removed_counts, info)
