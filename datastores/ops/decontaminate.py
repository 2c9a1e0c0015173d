"""Decontamination against an evaluation set, as MassiveDS does it.

Two tests between a chunk and each evaluation text (a question with its answers, or a reference
excerpt), on normalised words (``ops.minhash.normalise_words``):

- ``ngram``: Jaccard similarity of the two sets of word ``n``-grams >= ``threshold``
  (a text shorter than ``n`` words is one n-gram);
- ``longest``: the longest run of consecutive words they share has >= ``min_words`` words.

Candidates come from an inverted index of the evaluation n-grams, so only chunks that share an
n-gram with some evaluation text are compared exactly.
"""

from __future__ import annotations

import difflib
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.minhash import normalise_words, shingles_of_words, word_shingles
from datastores.ops.scan import iter_chunk_batches

METHODS = ("ngram", "longest")
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


def load_eval_texts(path: str | Path, fields: Sequence[str] = ("question", "answers"),
                    corpus: str | Path | None = None) -> list[EvalText]:
    """Evaluation texts from a Chroma-format folder (or its ``questions_df.csv``) or from our
    questions JSONL (references resolved against ``corpus`` when given).

    Per question, the ``question`` and ``answers`` fields form one text; each reference is a text
    of its own."""
    from evaluators.datasets import load_corpus_texts, load_dataset, load_questions_jsonl

    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise ValueError(f"unknown field(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(FIELDS)}")
    path = Path(path)
    out: list[EvalText] = []
    if path.is_dir() or path.suffix == ".csv":
        dataset = load_dataset(path if path.is_dir() else path.parent)
        for q in dataset.questions:
            label = f"q{q.index}"
            if "question" in fields:
                out.append(EvalText(label, q.text))
            if "references" in fields:
                out.extend(EvalText(f"{label}.ref{j}", text) for j, text in enumerate(q.contents))
        return out
    texts = load_corpus_texts(corpus) if corpus is not None else None
    questions, _ = load_questions_jsonl(path, texts)
    for i, q in enumerate(questions):
        label = q.id or f"q{i}"
        parts = ([q.text] if "question" in fields else []) + (list(q.answers) if "answers" in fields else [])
        if parts:
            out.append(EvalText(label, "\n".join(parts)))
        if "references" in fields:
            if texts is None:
                raise ValueError("references of a JSONL question set need --corpus to resolve their spans")
            out.extend(EvalText(f"{label}.ref{j}", texts[r.doc_id][r.start:r.end])
                       for j, r in enumerate(q.references))
    return out


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


def find_contaminated(root: str | Path, texts: Sequence[EvalText], method: str = "ngram", n: int = 13,
                      threshold: float = 0.8, min_words: int = 32, batch_size: int = 4096,
                      progress: Callable[[int], Any] | None = None) -> DecontaminationResult:
    """Live chunks of the datastore at ``root`` that match some evaluation text."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "ngram" and (n < 1 or not 0.0 < threshold <= 1.0):
        raise ValueError(f"--n must be >= 1 and --threshold in (0, 1] (got {n}, {threshold})")
    if method == "longest" and min_words < 1:
        raise ValueError(f"--min-words must be >= 1 (got {min_words})")
    if not texts:
        raise ValueError("the evaluation set has no texts to compare against")
    manifest = read_manifest(DatastoreLayout(Path(root)))
    index = _NgramIndex(texts, n if method == "ngram" else min_words)
    eval_words = [normalise_words(t.text) for t in texts] if method == "longest" else []
    result = DecontaminationResult(eval_texts=len(texts))
    for batch in iter_chunk_batches(root, manifest, ("text",), batch_size):
        for chunk_id, text in zip(batch.chunk_ids.tolist(), batch.columns["text"]):
            words = normalise_words(text)
            grams = shingles_of_words(words, index.n)
            counts = index.overlaps(grams)
            if not counts:
                continue
            if method == "ngram":
                best, score = max(((i, shared / (len(grams) + index.sizes[i] - shared))
                                   for i, shared in counts.items()), key=lambda x: (x[1], -x[0]))
                if score >= threshold:
                    result.matches.append(Contamination(chunk_id, texts[best].label, round(score, 4),
                                                        f"{n}-gram Jaccard {score:.3f}"))
            else:
                if len(words) < min_words:
                    continue
                # Sharing one min_words-gram already means a run of >= min_words words; report the
                # text sharing the most of them (the longest overlap), lowest index on ties.
                best = max(counts, key=lambda i: (counts[i], -i))
                run = longest_common_run(words, eval_words[best])
                if run >= min_words:
                    result.matches.append(Contamination(chunk_id, texts[best].label, float(run),
                                                        f"{run} consecutive words shared"))
        result.scanned += len(batch.chunk_ids)
        if progress is not None:
            progress(len(batch.chunk_ids))
    return result
