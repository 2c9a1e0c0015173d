"""Chunking evaluation sets in Chroma's format: ``questions_df.csv`` plus a ``corpora/`` folder.

- ``questions_df.csv`` has the columns ``question``, ``references``, ``corpus_id``;
  ``references`` is a JSON list of ``{"content", "start_index", "end_index"}`` objects whose
  offsets are half-open ``[start, end)`` in Python code points of the corpus text.
- ``corpora/<corpus_id>.<ext>``: one UTF-8 text per corpus; the corpus id is the file stem.

Offsets are used as stored (never re-located by searching for the content: many excerpts occur
more than once). Loading checks ``corpus[start:end] == content`` for every reference and reports
all bad rows at once.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

QUESTIONS_FILE = "questions_df.csv"
CORPORA_DIR = "corpora"
REQUIRED_COLUMNS = ("question", "references", "corpus_id")


@dataclass(frozen=True)
class Question:
    """One question: its text, its corpus and the character spans of its reference excerpts."""

    text: str
    corpus_id: str
    references: tuple[tuple[int, int], ...]
    index: int = -1                       # 0-based data row of questions_df.csv
    contents: tuple[str, ...] = ()        # the stored excerpt texts, in reference order


@dataclass(frozen=True)
class BadRow:
    """A row of ``questions_df.csv`` that cannot be used, and why."""

    index: int
    reason: str

    def __str__(self) -> str:
        return f"row {self.index}: {self.reason}"


@dataclass
class EvalDataset:
    """Questions and the corpora they refer to (id → text)."""

    questions: list[Question]
    corpora: dict[str, str]
    path: Path | None = None
    bad_rows: list[BadRow] = field(default_factory=list)

    @property
    def corpus_ids(self) -> list[str]:
        return sorted(self.corpora)

    def questions_of(self, corpus_id: str) -> list[Question]:
        return [q for q in self.questions if q.corpus_id == corpus_id]

    def subset(self, corpus_ids: Iterable[str]) -> "EvalDataset":
        """Only the given corpora and their questions."""
        wanted = list(dict.fromkeys(corpus_ids))
        unknown = [c for c in wanted if c not in self.corpora]
        if unknown:
            raise ValueError(f"unknown corpus id(s) {', '.join(unknown)}; the dataset has {', '.join(self.corpus_ids)}")
        keep = set(wanted)
        return EvalDataset([q for q in self.questions if q.corpus_id in keep],
                           {c: t for c, t in self.corpora.items() if c in keep}, self.path,
                           [b for b in self.bad_rows])


def read_text_exact(path: Path) -> str:
    """UTF-8 text exactly as stored: no newline translation, a BOM is kept as a character."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc})") from exc


def load_corpora(folder: str | Path) -> dict[str, str]:
    """Every file of ``folder`` (not recursive, hidden files skipped) keyed by file stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a directory of corpora")
    corpora: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        if path.stem in corpora:
            raise ValueError(f"two corpora in {folder} have the id {path.stem!r}")
        corpora[path.stem] = read_text_exact(path)
    if not corpora:
        raise ValueError(f"{folder} holds no corpus files")
    return corpora


def _parse_references(raw: str, corpus: str | None) -> tuple[list[tuple[int, int]], list[str], list[str]]:
    """(spans, contents, problems) of one ``references`` cell."""
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        return [], [], [f"references is not valid JSON ({exc.msg} at char {exc.pos})"]
    if not isinstance(items, list):
        return [], [], ["references is not a JSON list"]
    spans, contents, problems = [], [], []
    for j, item in enumerate(items):
        if not isinstance(item, dict) or not {"content", "start_index", "end_index"} <= set(item):
            problems.append(f"reference {j} lacks content/start_index/end_index")
            continue
        start, end, content = item["start_index"], item["end_index"], item["content"]
        if isinstance(start, bool) or isinstance(end, bool) or not isinstance(start, int) or not isinstance(end, int):
            problems.append(f"reference {j} has non-integer offsets {start!r}, {end!r}")
            continue
        if not isinstance(content, str):
            problems.append(f"reference {j} content is not a string")
            continue
        if not 0 <= start <= end:
            problems.append(f"reference {j} has bad offsets [{start}, {end})")
            continue
        if corpus is not None:
            if end > len(corpus):
                problems.append(f"reference {j} ends at {end}, past the corpus end ({len(corpus)})")
                continue
            if corpus[start:end] != content:
                problems.append(f"reference {j}: corpus[{start}:{end}] != content "
                                f"({corpus[start:min(end, start + 40)]!r} vs {content[:40]!r})")
                continue
        spans.append((start, end))
        contents.append(content)
    return spans, contents, problems


def load_dataset(path: str | Path, corpora: Iterable[str] | None = None, strict: bool = True) -> EvalDataset:
    """Load a Chroma-format evaluation set from the folder ``path``.

    ``corpora`` restricts it to some corpus ids. With ``strict`` (default) any bad row raises a
    ``ValueError`` that lists every bad row; otherwise bad rows are dropped and kept in
    ``bad_rows``. Row numbers count data rows from 0 (the header is not a row).
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    questions_path = root / QUESTIONS_FILE
    if not questions_path.is_file():
        raise FileNotFoundError(f"{root} has no {QUESTIONS_FILE}")
    texts = load_corpora(root / CORPORA_DIR)
    wanted = None
    if corpora is not None:
        wanted = list(dict.fromkeys(corpora))
        unknown = [c for c in wanted if c not in texts]
        if unknown:
            raise ValueError(f"unknown corpus id(s) {', '.join(unknown)}; {root / CORPORA_DIR} has "
                             f"{', '.join(sorted(texts))}")
        texts = {c: texts[c] for c in sorted(wanted)}

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    questions: list[Question] = []
    bad: list[BadRow] = []
    with open(questions_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{questions_path} lacks column(s) {', '.join(missing)}")
        for index, row in enumerate(reader):
            corpus_id = (row.get("corpus_id") or "").strip()
            if wanted is not None and corpus_id not in texts:
                continue
            problems = []
            text = row.get("question")
            if not text or not text.strip():
                problems.append("empty question")
            corpus = texts.get(corpus_id)
            if corpus is None:
                problems.append(f"unknown corpus_id {corpus_id!r}")
            spans, contents, ref_problems = _parse_references(row.get("references") or "", corpus)
            problems.extend(ref_problems)
            if problems:
                bad.append(BadRow(index, "; ".join(problems)))
                continue
            questions.append(Question(text, corpus_id, tuple(spans), index, tuple(contents)))
    if bad and strict:
        shown = "\n  ".join(str(b) for b in bad[:20])
        more = f"\n  … and {len(bad) - 20} more" if len(bad) > 20 else ""
        raise ValueError(f"{questions_path}: {len(bad)} bad row(s) (rows counted from 0 after the header): "
                         f"{', '.join(str(b.index) for b in bad)}\n  {shown}{more}")
    if not questions:
        raise ValueError(f"{questions_path} has no usable questions"
                         + (f" for corpora {', '.join(wanted)}" if wanted else ""))
    return EvalDataset(questions, texts, root, bad)


__all__ = ["BadRow", "EvalDataset", "Question", "load_corpora", "load_dataset", "read_text_exact"]
