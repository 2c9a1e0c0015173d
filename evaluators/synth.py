"""Synthetic question sets with exact reference spans (Chroma's generation method; Jadon et al.).

A chat model sees a passage sampled from the corpus (seeded) and proposes one question with the
excerpts that answer it, copied verbatim, as JSON ``{"question", "excerpts": [...], "answer"?}``.
Every excerpt is located in its document with a whitespace-tolerant match (runs of whitespace
compare equal, typographic quotes and dashes fold to ASCII) whose offsets map back to the original
text, so ``doc[start:end]`` is the real text. A proposal with any excerpt that cannot be found is
rejected; malformed JSON is asked again a bounded number of times, then rejected; overlapping
excerpts of one question are merged into one reference span; questions too
close to an accepted one (cosine similarity of their embeddings at or above a threshold) are
dropped. The output is our JSONL question format (:func:`evaluators.datasets.load_questions_jsonl`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from datastores.errors import UserError
from datastores.layout import atomic_write_bytes
from datastores.records import Document
from evaluators.spans import merge_spans

#: ``complete(messages) -> assistant text``; the CLI wraps ``OpenAIGenerator.chat``.
Complete = Callable[[list[dict[str, str]]], str]

SYSTEM_PROMPT = (
    "You write evaluation questions for a search engine. You are given a passage of a document. "
    "Write ONE question that a reader could ask and that the passage answers, and copy from the passage "
    "the excerpts that contain the answer. Rules: every excerpt is copied exactly, character for character, "
    "from the passage (a contiguous span of one or more full sentences or clauses; do not paraphrase, "
    "shorten with ellipses, or change punctuation); use at most {max_excerpts} excerpts; the question is "
    "specific enough to be answered only from this document and never mentions 'the passage' or 'the text'. "
    'Reply with one JSON object and nothing else: {{"question": "...", "excerpts": ["...", "..."], '
    '"answer": "a short answer"}}'
)

_REJECT_JSON = "malformed JSON"
_REJECT_FIELDS = "missing question or excerpts"
_REJECT_LOCATE = "excerpt not found in the document"
_REJECT_MANY = "too many excerpts"

# Characters that ``str.isspace`` accepts (all below U+3001); runs of them compare equal.
_SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)
# One-to-one folds (offsets are unchanged): typographic quotes and dashes compare equal to ASCII.
_FOLDS = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
          "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
          "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-"}
_FOLD_ORDER = sorted(_FOLDS)
_FOLD_SRC = np.array([ord(c) for c in _FOLD_ORDER], dtype=np.uint32)          # sorted, for searchsorted
_FOLD_DST = np.array([ord(_FOLDS[c]) for c in _FOLD_ORDER], dtype=np.uint32)


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


def _from_codes(codes: np.ndarray) -> str:
    return codes.astype("<u4").tobytes().decode("utf-32-le", errors="surrogatepass")


def _fold(codes: np.ndarray) -> np.ndarray:
    hit = np.isin(codes, _FOLD_SRC)
    if not hit.any():
        return codes
    out = codes.copy()
    out[hit] = _FOLD_DST[np.searchsorted(_FOLD_SRC, codes[hit])]
    return out


def normalize(text: str) -> str:
    """``text`` as the locator compares it: whitespace runs → one space, stripped, quotes/dashes folded."""
    return _from_codes(_fold(_codes(" ".join(text.split()))))


class ExcerptLocator:
    """Find excerpts in one document, whitespace-tolerantly, with offsets into the original text."""

    def __init__(self, text: str):
        codes = _codes(text)
        space = np.isin(codes, _SPACE_CODES)
        keep = ~(space & np.concatenate(([False], space[:-1])))   # a space after a space is dropped
        self.text = text
        self._map = np.flatnonzero(keep)                            # normalized index → original index
        self._norm = _from_codes(_fold(np.where(space, np.uint32(32), codes)[keep]))

    def occurrences(self, excerpt: str, limit: int = 10_000) -> list[tuple[int, int]]:
        """Every ``[start, end)`` in the original text whose normalized form equals the excerpt's."""
        needle = normalize(excerpt)
        if not needle:
            return []
        spans, at = [], self._norm.find(needle)
        while at >= 0 and len(spans) < limit:
            spans.append((int(self._map[at]), int(self._map[at + len(needle) - 1]) + 1))
            at = self._norm.find(needle, at + 1)
        return spans

    def locate(self, excerpt: str, window: tuple[int, int] | None = None) -> tuple[int, int] | None:
        """The occurrence inside ``window`` (the passage the model saw) if there is one, else the
        one nearest to it, else None."""
        spans = self.occurrences(excerpt)
        if not spans:
            return None
        if window is None:
            return spans[0]
        lo, hi = window
        inside = [s for s in spans if lo <= s[0] and s[1] <= hi]
        if inside:
            return inside[0]
        return min(spans, key=lambda s: (max(lo - s[1], s[0] - hi, 0), s[0]))


class ProposalError(UserError):
    """The model's reply is not a usable proposal; ``reason`` is the rejection label."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class Proposal:
    question: str
    excerpts: tuple[str, ...]
    answer: str | None = None


_FENCE = re.compile(r"```[A-Za-z0-9_-]*\s*\n?(.*?)```", re.DOTALL)


def parse_proposal(reply: str) -> Proposal:
    """The JSON object of a reply, tolerating code fences and text around the object."""
    text = reply.strip()
    candidates = [m.group(1).strip() for m in _FENCE.finditer(text)] + [text]
    if "{" in text and "}" in text:
        candidates.append(text[text.index("{"): text.rindex("}") + 1])
    data = None
    for candidate in candidates:
        try:
            data = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(data, dict):
            break
    if not isinstance(data, dict):
        raise ProposalError(_REJECT_JSON, text[:80])
    question = data.get("question")
    raw = data.get("excerpts", data.get("references"))
    if isinstance(raw, str):
        raw = [raw]
    excerpts = []
    for item in raw if isinstance(raw, list) else []:
        if isinstance(item, dict):
            item = item.get("content", item.get("text"))
        if isinstance(item, str) and item.strip():
            excerpts.append(item)
    if not isinstance(question, str) or not question.strip() or not excerpts:
        raise ProposalError(_REJECT_FIELDS)
    answer = data.get("answer")
    return Proposal(" ".join(question.split()), tuple(excerpts),
                    answer.strip() if isinstance(answer, str) and answer.strip() else None)


@dataclass(frozen=True)
class SynthReference:
    doc_id: str
    start: int
    end: int
    content: str


@dataclass(frozen=True)
class SynthQuestion:
    """An accepted question; ``references[i].content == document text[start:end]``."""

    id: str
    question: str
    references: tuple[SynthReference, ...]
    answers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"id": self.id, "question": self.question,
                                  "references": [{"doc_id": r.doc_id, "start": r.start, "end": r.end,
                                                  "content": r.content} for r in self.references]}
        if self.answers:
            record["answers"] = list(self.answers)
        return record


@dataclass(frozen=True)
class SynthConfig:
    """Settings of a synthesis run (see ``rag synth --help``)."""

    n: int = 100
    seed: int = 0
    passage_chars: int = 3000
    max_passages: int | None = None        # passages tried at most; default 3 * n + 10
    json_retries: int = 2                  # extra asks of one passage after malformed JSON
    dedup_threshold: float = 0.9           # cosine similarity at or above which a question is a duplicate
    max_excerpts: int = 5
    previous_questions: int = 10           # earlier questions of the same document shown to the model

    def __post_init__(self) -> None:
        if self.n <= 0:
            raise UserError(f"the number of questions must be positive, got {self.n}")
        if self.passage_chars < 100:
            raise UserError(f"passage size must be at least 100 characters, got {self.passage_chars}")
        if self.json_retries < 0:
            raise UserError(f"json retries must be >= 0, got {self.json_retries}")
        if not 0.0 < self.dedup_threshold <= 1.0:
            raise UserError(f"dedup threshold must be in (0, 1], got {self.dedup_threshold}")
        if self.max_passages is not None and self.max_passages <= 0:
            raise UserError(f"max passages must be positive, got {self.max_passages}")
        if self.max_excerpts <= 0:
            raise UserError(f"max excerpts must be positive, got {self.max_excerpts}")

    @property
    def passage_budget(self) -> int:
        return self.max_passages if self.max_passages is not None else 3 * self.n + 10


@dataclass
class SynthReport:
    """What happened: questions requested and kept, model calls, rejections by reason, duplicates."""

    requested: int
    documents: int = 0
    generated: int = 0
    passages: int = 0
    calls: int = 0
    rejected: Counter = field(default_factory=Counter)
    duplicates: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "generated": self.generated, "documents": self.documents,
                "passages": self.passages, "model_calls": self.calls, "rejected": sum(self.rejected.values()),
                "rejected_by_reason": dict(sorted(self.rejected.items())), "duplicates_dropped": self.duplicates}


@dataclass
class SynthResult:
    questions: list[SynthQuestion]
    report: SynthReport


_SENTENCE_END = re.compile(r"[.!?][\"')\]]?\s+")


def sample_window(text: str, rng: np.random.Generator, size: int) -> tuple[int, int]:
    """A random ``[start, end)`` of about ``size`` characters that starts at a line or word start
    and ends at a word end."""
    n = len(text)
    if n <= size:
        return 0, n
    start = int(rng.integers(0, n - size + 1))
    back = max(0, start - size // 10)
    line = text.rfind("\n", back, start)
    sentence = [m.end() for m in _SENTENCE_END.finditer(text, back, start)]
    if line >= 0:
        start = line + 1
    elif sentence:
        start = sentence[-1]
    elif start > 0 and not text[start - 1].isspace():
        space = re.search(r"\s", text[start:start + 200])
        start = start + space.end() if space else start
    end = min(n, start + size)
    if end < n:
        cut = max(text.rfind(" ", end - 200, end), text.rfind("\n", end - 200, end))
        end = cut if cut > start else end
    return start, end


def synth_messages(passage: str, previous: Sequence[str] = (), max_excerpts: int = 5) -> list[dict[str, str]]:
    """The chat messages asking for one question with verbatim excerpts of ``passage``."""
    user = f"Passage:\n<<<\n{passage}\n>>>"
    if previous:
        listed = "\n".join(f"- {q}" for q in previous)
        user += f"\n\nThese questions were already asked about this document; ask something different:\n{listed}"
    user += "\n\nReply with the JSON object only."
    return [{"role": "system", "content": SYSTEM_PROMPT.format(max_excerpts=max_excerpts)},
            {"role": "user", "content": user}]


def _is_duplicate(question: str, seen: set[str], vector: np.ndarray | None, vectors: list[np.ndarray],
                  threshold: float) -> bool:
    if normalize(question).lower() in seen:
        return True
    if vector is None or not vectors:
        return False
    return float(np.max(np.stack(vectors) @ vector)) >= threshold


def synthesize(documents: Iterable[Document], complete: Complete, config: SynthConfig | None = None,
               embedder: Any | None = None, progress: bool = False) -> SynthResult:
    """Generate up to ``config.n`` questions over ``documents`` with the chat model ``complete``.

    Errors raised by ``complete`` (HTTP failures after the client's retries) propagate. Without
    an ``embedder`` only exact (normalized) duplicate questions are dropped.
    """
    from tqdm.auto import tqdm

    config = config or SynthConfig()
    docs = [d for d in documents if d.text.strip()]
    if not docs:
        raise UserError("no documents with text to generate questions from")
    report = SynthReport(config.n, documents=len(docs))
    rng = np.random.default_rng(config.seed)
    weights = np.array([len(d.text) for d in docs], dtype=np.float64)
    weights /= weights.sum()
    locators: dict[int, ExcerptLocator] = {}
    asked: dict[int, list[str]] = {}
    questions: list[SynthQuestion] = []
    seen: set[str] = set()
    vectors: list[np.ndarray] = []
    bar = tqdm(total=config.n, desc="synth", unit="q", disable=not progress or None)
    try:
        while len(questions) < config.n and report.passages < config.passage_budget:
            index = int(rng.choice(len(docs), p=weights))
            doc = docs[index]
            window = sample_window(doc.text, rng, config.passage_chars)
            report.passages += 1
            messages = synth_messages(doc.text[window[0]:window[1]],
                                      asked.get(index, [])[-config.previous_questions:], config.max_excerpts)
            proposal, reason = None, _REJECT_JSON
            for _ in range(1 + config.json_retries):
                report.calls += 1
                try:
                    proposal = parse_proposal(complete(messages))
                    break
                except ProposalError as exc:
                    reason = exc.reason
            if proposal is None:
                report.rejected[reason] += 1
            elif len(proposal.excerpts) > config.max_excerpts:
                report.rejected[_REJECT_MANY] += 1
            else:
                locator = locators.get(index) or locators.setdefault(index, ExcerptLocator(doc.text))
                spans = [locator.locate(e, window) for e in proposal.excerpts]
                if any(s is None for s in spans):
                    report.rejected[_REJECT_LOCATE] += 1
                else:
                    vector = None if embedder is None else np.asarray(embedder.encode_queries([proposal.question]))[0]
                    if _is_duplicate(proposal.question, seen, vector, vectors, config.dedup_threshold):
                        report.duplicates += 1
                    else:
                        # Overlapping excerpts become one span: the span metrics sum reference lengths.
                        refs = tuple(SynthReference(doc.id, int(s), int(e), doc.text[int(s):int(e)])
                                     for s, e in merge_spans(spans))
                        answers = (proposal.answer,) if proposal.answer else ()
                        questions.append(SynthQuestion(f"synth-{len(questions):05d}", proposal.question, refs,
                                                       answers))
                        seen.add(normalize(proposal.question).lower())
                        if vector is not None:
                            vectors.append(vector.astype(np.float32))
                        asked.setdefault(index, []).append(proposal.question)
                        bar.update(1)
            bar.set_postfix(rejected=sum(report.rejected.values()), duplicates=report.duplicates, refresh=False)
    finally:
        bar.close()
    report.generated = len(questions)
    return SynthResult(questions, report)


def write_questions(path: str | Path, questions: Sequence[SynthQuestion]) -> None:
    """Atomically write the questions as JSONL (one object per line)."""
    lines = (json.dumps(q.to_dict(), ensure_ascii=False) + "\n" for q in questions)
    atomic_write_bytes(Path(path), "".join(lines).encode("utf-8"))


def documents_file_for(questions_path: str | Path) -> Path:
    """Where ``rag synth`` puts the documents of ``questions_path``: ``NAME.documents.jsonl`` beside it."""
    path = Path(questions_path)
    name = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.name
    return path.with_name(f"{name}.documents.jsonl")


def write_documents(path: str | Path, documents: Sequence[Document]) -> None:
    """Atomically write ``{"id", "text"}`` JSONL: the texts the offsets point into, readable by
    :func:`evaluators.datasets.load_corpus_texts` (``rag eval chunking --documents``)."""
    lines = (json.dumps({"id": d.id, "text": d.text}, ensure_ascii=False) + "\n" for d in documents)
    atomic_write_bytes(Path(path), "".join(lines).encode("utf-8"))


__all__ = ["Complete", "ExcerptLocator", "documents_file_for", "Proposal", "ProposalError", "SynthConfig", "SynthQuestion",
           "SynthReference", "SynthReport", "SynthResult", "normalize", "parse_proposal", "sample_window",
           "synth_messages", "synthesize", "write_documents", "write_questions"]
