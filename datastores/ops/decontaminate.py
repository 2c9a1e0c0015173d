"""Decontamination against an evaluation set, after MassiveDS (Shao et al., 2024).

Every test runs on normalised words (``ops.minhash.normalise_words``: lower-cased ``\\w+`` runs,
so case, punctuation and spacing do not count) of a chunk and of each evaluation text (a question
with its answers, or a reference excerpt). A chunk is flagged when, against some evaluation text:

- ``ngram``: the Jaccard similarity of their two sets of word ``n``-grams (``n`` = 13) is
  ``>= threshold`` (0.8); a text shorter than ``n`` words is one n-gram, the whole text
  (MassiveDS's ``jaccard`` rule, which flags ``> 0.8`` on whitespace words);
- ``longest``: the longest run of consecutive words both contain has ``>= min_words`` words
  (MassiveDS's ``longest`` rule, contiguous overlap of at least a word count);
- ``either`` (the default): either rule fires, with ``min_words`` = 13 by default, so any verbatim
  copy of 13 or more consecutive words is caught, whatever the sizes of the chunk and the
  question (the Jaccard rule alone misses a 70-word quote inside a 200-word chunk).

Candidates come from inverted indexes of the evaluation n-grams, so only chunks that share an
n-gram with some evaluation text are compared exactly.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from datastores.errors import UserError
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.minhash import normalise_words, shingles_of_words, word_shingles
from datastores.ops.scan import iter_chunk_batches

METHODS = ("either", "ngram", "longest")
DEFAULT_METHOD = "either"
DEFAULT_MIN_WORDS = 13
FIELDS = ("question", "answers", "references")


@dataclass(frozen=True)
class EvalText:
    """One text of the evaluation set and where it came from (e.g. ``q12`` or ``q12.ref0``)."""

    label: str
    text: str


@dataclass(frozen=True)
class Contamination:
    """A chunk that matches an evaluation text: the method's score (Jaccard or run length)."""

    chunk_id: int
    label: str
    score: float
    evidence: str


@dataclass
class DecontaminationResult:
    scanned: int = 0
    eval_texts: int = 0
    matches: list[Contamination] = field(default_factory=list)

    @property
    def removed_ids(self) -> list[int]:
        return [m.chunk_id for m in self.matches]


@dataclass(frozen=True)
class QARecord:
    """One line of a questions JSONL: its label (``id`` or ``q<line>``), question and answers."""

    label: str
    question: str
    answers: tuple[str, ...]


def read_qa_jsonl(path: str | Path) -> list[QARecord]:
    """Questions and answers of a JSONL file (``{"question", "answers"?, "id"?, ...}`` per line;
    other keys such as ``references`` are ignored). Bad lines are one ``ValueError`` naming them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"questions file {path} does not exist")
    records, bad = [], []
    lines = [line for line in path.read_bytes().decode("utf-8-sig", errors="strict").splitlines() if line.strip()]
    for i, line in enumerate(lines):
        try:
            records.append(_qa_record(json.loads(line), i))
        except (ValueError, TypeError) as exc:
            bad.append(f"line {i + 1}: {exc}")
    if bad:
        raise UserError(f"{path}: {len(bad)} bad line(s): {'; '.join(bad[:3])}")
    return records


def _qa_record(record: Any, index: int) -> QARecord:
    if not isinstance(record, dict):
        raise UserError("not a JSON object")
    question, answers = record.get("question"), record.get("answers", [])
    if not isinstance(question, str) or not question.strip():
        raise UserError("question is missing or empty")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
        raise UserError("answers must be a list of strings")
    label = record.get("id")
    return QARecord(str(label) if label is not None else f"q{index}", question, tuple(answers))


class _NgramIndex:
    """Evaluation n-gram sets and an inverted index n-gram -> evaluation texts."""

    def __init__(self, texts: Sequence[EvalText], n: int):
        self.n = n
        self.sizes: list[int] = []
        self.postings: dict[bytes, list[int]] = defaultdict(list)
        for i, item in enumerate(texts):
            grams = word_shingles(item.text, n)
            self.sizes.append(len(grams))
            for gram in grams:
                self.postings[gram].append(i)

    def overlaps(self, grams: set[bytes]) -> Counter:
        """Evaluation text index -> number of shared n-grams."""
        counts: Counter = Counter()
        for gram in grams:
            hits = self.postings.get(gram)
            if hits:
                counts.update(hits)
        return counts


def longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest run of consecutive equal words in ``a`` and ``b``."""
    return difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b)).size


def _check_settings(method: str, n: int, threshold: float, min_words: int, texts: Sequence[EvalText]) -> None:
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "longest" and (n < 1 or not 0.0 < threshold <= 1.0):
        raise UserError(f"--n must be >= 1 and --threshold in (0, 1] (got {n}, {threshold})")
    if method != "ngram" and min_words < 1:
        raise UserError(f"--min-words must be >= 1 (got {min_words})")
    if not texts:
        raise UserError("the evaluation set has no texts to compare against")


def _jaccard_match(index: _NgramIndex, words: list[str], texts: Sequence[EvalText],
                   threshold: float) -> tuple[int, float] | None:
    """The evaluation text with the highest n-gram Jaccard (lowest index on ties), if it reaches ``threshold``."""
    grams = shingles_of_words(words, index.n)
    counts = index.overlaps(grams)
    if not counts:
        return None
    best, score = max(((i, shared / (len(grams) + index.sizes[i] - shared)) for i, shared in counts.items()),
                      key=lambda x: (x[1], -x[0]))
    return (best, score) if score >= threshold else None


def _longest_match(index: _NgramIndex, words: list[str], eval_words: list[list[str]]) -> tuple[int, int] | None:
    """The evaluation text sharing the most ``min_words``-grams and its longest shared run, if that
    run has ``min_words`` words (sharing one such n-gram already means a run that long)."""
    if len(words) < index.n:
        return None
    counts = index.overlaps(shingles_of_words(words, index.n))
    if not counts:
        return None
    best = max(counts, key=lambda i: (counts[i], -i))
    run = longest_common_run(words, eval_words[best])
    return (best, run) if run >= index.n else None


def find_contaminated(root: str | Path, texts: Sequence[EvalText], method: str = DEFAULT_METHOD, n: int = 13,
                      threshold: float = 0.8, min_words: int = DEFAULT_MIN_WORDS, batch_size: int = 4096,
                      progress: Callable[[int], Any] | None = None) -> DecontaminationResult:
    """Live chunks of the datastore at ``root`` that match some evaluation text by ``method``
    (see the module docstring for the exact rules); the longest-run rule is reported first."""
    _check_settings(method, n, threshold, min_words, texts)
    manifest = read_manifest(DatastoreLayout(Path(root)))
    jaccard = _NgramIndex(texts, n) if method != "longest" else None
    longest = _NgramIndex(texts, min_words) if method != "ngram" else None
    eval_words = [normalise_words(t.text) for t in texts] if longest is not None else []
    result = DecontaminationResult(eval_texts=len(texts))
    for batch in iter_chunk_batches(root, manifest, ("text",), batch_size):
        for chunk_id, text in zip(batch.chunk_ids.tolist(), batch.columns["text"]):
            words = normalise_words(text)
            run = _longest_match(longest, words, eval_words) if longest is not None else None
            if run is not None:
                result.matches.append(Contamination(chunk_id, texts[run[0]].label, float(run[1]),
                                                    f"{run[1]} consecutive words shared"))
                continue
            found = _jaccard_match(jaccard, words, texts, threshold) if jaccard is not None else None
            if found is not None:
                result.matches.append(Contamination(chunk_id, texts[found[0]].label, round(found[1], 4),
                                                    f"{n}-gram Jaccard {found[1]:.3f}"))
        result.scanned += len(batch.chunk_ids)
        if progress is not None:
            progress(len(batch.chunk_ids))
    return result
