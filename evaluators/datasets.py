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
from typing import Iterable, Mapping, Sequence

from datastores.errors import UserError

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
            raise UserError(f"unknown corpus id(s) {', '.join(unknown)}; the dataset has {', '.join(self.corpus_ids)}")
        keep = set(wanted)
        return EvalDataset([q for q in self.questions if q.corpus_id in keep],
                           {c: t for c, t in self.corpora.items() if c in keep}, self.path,
                           [b for b in self.bad_rows])


def read_text_exact(path: Path) -> str:
    """UTF-8 text exactly as stored: no newline translation, a BOM is kept as a character."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 text ({exc})") from exc


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
            raise UserError(f"two corpora in {folder} have the id {path.stem!r}")
        corpora[path.stem] = read_text_exact(path)
    if not corpora:
        raise UserError(f"{folder} holds no corpus files")
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
            raise UserError(f"unknown corpus id(s) {', '.join(unknown)}; {root / CORPORA_DIR} has "
                             f"{', '.join(sorted(texts))}")
        texts = {c: texts[c] for c in sorted(wanted)}

    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    questions: list[Question] = []
    bad: list[BadRow] = []
    with open(questions_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{questions_path} lacks column(s) {', '.join(missing)}")
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
        raise UserError(f"{questions_path}: {len(bad)} bad row(s) (rows counted from 0 after the header): "
                         f"{', '.join(str(b.index) for b in bad)}\n  {shown}{more}")
    if not questions:
        raise UserError(f"{questions_path} has no usable questions"
                         + (f" for corpora {', '.join(wanted)}" if wanted else ""))
    return EvalDataset(questions, texts, root, bad)


# -- BEIR -----------------------------------------------------------------------------------------


@dataclass
class BeirDataset:
    """A BEIR-format retrieval set: ``corpus.jsonl`` (``_id``, ``title``, ``text``),
    ``queries.jsonl`` (``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``,
    ``score``; a header line). Grades above 0 are relevant."""

    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    path: Path | None = None
    split: str = "test"

    def document_text(self, doc_id: str) -> str:
        """Title and text joined by a blank line (the text alone when there is no title)."""
        doc = self.corpus[doc_id]
        title = (doc.get("title") or "").strip()
        return f"{title}\n\n{doc['text']}" if title else doc["text"]

    @property
    def evaluated_queries(self) -> list[str]:
        """Query ids with at least one relevant document, in qrels order."""
        return judged_queries(self.qrels)


def judged_queries(qrels: Mapping[str, Mapping[str, int]]) -> list[str]:
    """Query ids of ``qrels`` with at least one relevant document (grade > 0), in qrels order."""
    return [q for q, docs in qrels.items() if any(g > 0 for g in docs.values())]


def _read_jsonl_records(path: Path, required: Sequence[str]) -> list[dict]:
    records, problems = [], []
    with open(path, "rb") as handle:
        for lineno, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                problems.append(f"line {lineno}: not a JSON object ({exc})")
                continue
            if not isinstance(record, dict):
                problems.append(f"line {lineno}: not a JSON object")
                continue
            missing = [k for k in required if k not in record]
            if missing:
                problems.append(f"line {lineno}: missing {', '.join(missing)}")
                continue
            records.append(record)
    if problems:
        raise UserError(f"{path}: {len(problems)} bad line(s): " + "; ".join(problems[:10])
                         + (" …" if len(problems) > 10 else ""))
    return records


def load_beir(path: str | Path, split: str | None = None) -> BeirDataset:
    """Load a BEIR folder. ``split`` names ``qrels/<split>.tsv``; by default ``test``, or the only
    qrels file when there is just one. Qrels that name an unknown query or document are errors."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"BEIR folder {root} does not exist")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise FileNotFoundError(f"{root} has no {name} (a BEIR folder holds corpus.jsonl, queries.jsonl, qrels/)")
    qrels_dir = root / "qrels"
    available = sorted(p.stem for p in qrels_dir.glob("*.tsv")) if qrels_dir.is_dir() else []
    if not available:
        raise FileNotFoundError(f"{root} has no qrels/*.tsv")
    if split is None:
        split = "test" if "test" in available or len(available) != 1 else available[0]
    if split not in available:
        raise UserError(f"{qrels_dir} has no {split}.tsv; it has {', '.join(available)}")
    corpus: dict[str, dict[str, str]] = {}
    for record in _read_jsonl_records(root / "corpus.jsonl", ("_id", "text")):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise UserError(f"{root / 'corpus.jsonl'}: document id {doc_id!r} occurs twice")
        if not isinstance(record["text"], str):
            raise UserError(f"{root / 'corpus.jsonl'}: document {doc_id!r} has a non-string text")
        corpus[doc_id] = {"title": str(record.get("title") or ""), "text": record["text"]}
    queries = {str(r["_id"]): str(r["text"]) for r in _read_jsonl_records(root / "queries.jsonl", ("_id", "text"))}
    qrels: dict[str, dict[str, int]] = {}
    problems = []
    with open(qrels_dir / f"{split}.tsv", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if lineno == 1 and parts[:2] == ["query-id", "corpus-id"]:
                continue
            if len(parts) != 3:
                problems.append(f"line {lineno}: expected 3 tab-separated fields")
                continue
            qid, did, grade = parts
            try:
                value = int(float(grade))
            except ValueError:
                problems.append(f"line {lineno}: score {grade!r} is not a number")
                continue
            if qid not in queries:
                problems.append(f"line {lineno}: unknown query id {qid!r}")
                continue
            if did not in corpus:
                problems.append(f"line {lineno}: unknown corpus id {did!r}")
                continue
            qrels.setdefault(qid, {})[did] = value
    if problems:
        raise UserError(f"{qrels_dir / (split + '.tsv')}: {len(problems)} bad line(s): " + "; ".join(problems[:10])
                         + (" …" if len(problems) > 10 else ""))
    if not qrels:
        raise UserError(f"{qrels_dir / (split + '.tsv')} has no judgements")
    return BeirDataset(corpus, queries, qrels, root, split)


# -- our JSONL question format -------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """A half-open character span ``[start, end)`` of one document."""

    doc_id: str
    start: int
    end: int


@dataclass(frozen=True)
class SpanQuestion:
    """A question of the JSONL format: references in any documents, optional gold answers."""

    text: str
    references: tuple[Reference, ...]
    answers: tuple[str, ...] = ()
    id: str = ""
    index: int = -1


def load_corpus_texts(path: str | Path) -> dict[str, str]:
    """Documents by id: a folder of text files (id = file stem, like Chroma's ``corpora/``) or a
    JSONL file of ``{"_id" or "id", "text"}`` records (a BEIR ``corpus.jsonl``: text only, the
    title is not part of the offsets)."""
    path = Path(path)
    if path.is_dir():
        return load_corpora(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus {path} does not exist")
    texts: dict[str, str] = {}
    for record in _read_jsonl_records(path, ("text",)):
        doc_id = record.get("_id", record.get("id"))
        if doc_id is None:
            raise UserError(f"{path}: a record has neither _id nor id")
        texts[str(doc_id)] = record["text"]
    return texts


def load_questions_jsonl(path: str | Path, corpus: Mapping[str, str] | None = None,
                         strict: bool = True) -> tuple[list[SpanQuestion], list[BadRow]]:
    """Read questions ``{"question", "references": [{"doc_id", "start", "end"}], "answers"?, "id"?}``.

    With ``corpus`` (id → text) every reference is checked: the document exists and
    ``0 <= start <= end <= len(text)``; an optional ``"content"`` must equal ``text[start:end]``.
    With ``strict`` any bad line raises a ``ValueError`` listing them all; otherwise bad lines are
    returned as ``BadRow`` (numbered from 0 over non-empty lines) and left out.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"questions file {path} does not exist")
    questions: list[SpanQuestion] = []
    bad: list[BadRow] = []
    index = -1
    with open(path, "rb") as handle:
        for raw in handle:
            if not raw.strip():
                continue
            index += 1
            problems: list[str] = []
            try:
                record = json.loads(raw.decode("utf-8-sig" if index == 0 else "utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                bad.append(BadRow(index, f"not valid JSON ({exc})"))
                continue
            if not isinstance(record, dict):
                bad.append(BadRow(index, "not a JSON object"))
                continue
            text = record.get("question")
            if not isinstance(text, str) or not text.strip():
                problems.append("question is missing or empty")
            refs_raw = record.get("references")
            references: list[Reference] = []
            if not isinstance(refs_raw, list):
                problems.append("references is missing or not a list")
                refs_raw = []
            for j, ref in enumerate(refs_raw):
                if not isinstance(ref, dict) or not {"doc_id", "start", "end"} <= set(ref):
                    problems.append(f"reference {j} lacks doc_id/start/end")
                    continue
                doc_id, start, end = str(ref["doc_id"]), ref["start"], ref["end"]
                if any(isinstance(v, bool) or not isinstance(v, int) for v in (start, end)):
                    problems.append(f"reference {j} has non-integer offsets {start!r}, {end!r}")
                    continue
                if not 0 <= start <= end:
                    problems.append(f"reference {j} has bad offsets [{start}, {end})")
                    continue
                if corpus is not None:
                    doc = corpus.get(doc_id)
                    if doc is None:
                        problems.append(f"reference {j} names unknown document {doc_id!r}")
                        continue
                    if end > len(doc):
                        problems.append(f"reference {j} ends at {end}, past the end of {doc_id!r} ({len(doc)})")
                        continue
                    content = ref.get("content")
                    if content is not None and doc[start:end] != content:
                        problems.append(f"reference {j}: {doc_id}[{start}:{end}] != content "
                                        f"({doc[start:min(end, start + 40)]!r} vs {str(content)[:40]!r})")
                        continue
                references.append(Reference(doc_id, start, end))
            answers = record.get("answers", [])
            if isinstance(answers, str):
                answers = [answers]
            if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
                problems.append("answers must be a string or a list of strings")
                answers = []
            if problems:
                bad.append(BadRow(index, "; ".join(problems)))
                continue
            questions.append(SpanQuestion(text, tuple(references), tuple(answers),
                                          str(record.get("id", index)), index))
    if bad and strict:
        shown = "\n  ".join(str(b) for b in bad[:20])
        raise UserError(f"{path}: {len(bad)} bad line(s) (counted from 0): {', '.join(str(b.index) for b in bad)}"
                         f"\n  {shown}")
    return questions, bad


def jsonl_eval_dataset(questions_path: str | Path, corpus_path: str | Path, strict: bool = True) -> EvalDataset:
    """Our JSONL questions over a corpus, as an :class:`EvalDataset` for the span metrics.

    Each question's references must lie in ONE document (the span metrics score a question
    against one corpus). A question with ``"references": []`` is kept without references: the span
    metrics skip it and count it (``SpanSummary.skipped``).
    """
    corpus = load_corpus_texts(corpus_path)
    questions, bad = load_questions_jsonl(questions_path, corpus, strict)
    out: list[Question] = []
    for q in questions:
        docs = {r.doc_id for r in q.references}
        if not docs:  # no reference: scored as skipped and counted (evaluators.spans), not an error
            out.append(Question(q.text, next(iter(corpus), ""), (), q.index, ()))
            continue
        if len(docs) != 1:
            reason = "no references" if not docs else f"references in {len(docs)} documents"
            if strict:
                raise UserError(f"{questions_path}: question {q.index} has {reason}; the span metrics need "
                                 "all references of a question in one document")
            bad.append(BadRow(q.index, reason))
            continue
        doc_id = docs.pop()
        out.append(Question(q.text, doc_id, tuple((r.start, r.end) for r in q.references), q.index,
                            tuple(corpus[doc_id][r.start:r.end] for r in q.references)))
    if not out:
        raise UserError(f"{questions_path} has no usable questions")
    # Every document is kept: the chunks of the others act as distractors.
    return EvalDataset(out, dict(corpus), Path(questions_path), bad)


# -- SQuAD as a retrieval set ----------------------------------------------------------------------


def load_squad_retrieval(path: str | Path, answerable_only: bool = True) -> BeirDataset:
    """A SQuAD (1.1 / 2.0 JSON) file as a BEIR-style retrieval set: every paragraph is a document
    (id ``<article>:<paragraph index>``, title the article title with spaces), every question a
    query whose one relevant document (grade 1) is its own paragraph. SQuAD 2.0's unanswerable
    questions (``is_impossible``) are left out unless ``answerable_only`` is false."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a SQuAD JSON file ({exc})") from exc
    corpus: dict[str, dict[str, str]] = {}
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    for article in data:
        title = str(article.get("title", "")).replace("_", " ")
        for n, paragraph in enumerate(article.get("paragraphs", [])):
            doc_id = f"{article.get('title', '')}:{n:03d}"
            corpus[doc_id] = {"title": title, "text": paragraph["context"]}
            for qa in paragraph.get("qas", []):
                if answerable_only and qa.get("is_impossible", False):
                    continue
                queries[str(qa["id"])] = qa["question"]
                qrels[str(qa["id"])] = {doc_id: 1}
    if not qrels:
        raise UserError(f"{path} holds no {'answerable ' if answerable_only else ''}questions")
    return BeirDataset(corpus, queries, qrels, path, "squad")


# -- question-answer sets (rag eval answers) -------------------------------------------------------


@dataclass(frozen=True)
class QAItem:
    """A question with its gold answers; ``gold_passages`` (texts) and ``gold_docs`` (document ids)
    name where the answer is, when the set knows (the oracle row and retrieval recall use them)."""

    id: str
    question: str
    answers: tuple[str, ...]
    gold_passages: tuple[str, ...] = ()
    gold_docs: tuple[str, ...] = ()


@dataclass
class QASet:
    """Questions and, when the set brings its own passages, the documents to index (id -> text)."""

    items: list[QAItem]
    documents: dict[str, str]
    path: Path | None = None
    skipped: int = 0            # questions left out (no gold answer)

    def limited(self, limit: int | None, seed: int | None = None) -> "QASet":
        """``limit`` questions (all when None): the first ones, or with ``seed`` a seeded random
        sample kept in the set's order."""
        if limit is None or limit >= len(self.items):
            return self
        if limit < 1:
            raise UserError(f"limit must be at least 1, got {limit}")
        if seed is None:
            return QASet(self.items[:limit], self.documents, self.path, self.skipped)
        import numpy as np

        chosen = np.sort(np.random.default_rng(seed).choice(len(self.items), size=limit, replace=False))
        return QASet([self.items[i] for i in chosen], self.documents, self.path, self.skipped)


def load_squad_qa(path: str | Path) -> QASet:
    """A SQuAD 1.1 / 2.0 JSON file: every paragraph a document (id ``<title>:<nnn>``, the paragraph's
    index in its article), every answerable question an item whose gold passage is its paragraph;
    unanswerable SQuAD 2.0 questions are counted as skipped."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8-sig"))["data"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a SQuAD JSON file ({exc})") from exc
    items, documents, skipped = [], {}, 0
    for article in data:
        for n, paragraph in enumerate(article.get("paragraphs", [])):
            doc_id = f"{article.get('title', '')}:{n:03d}"
            documents[doc_id] = paragraph["context"]
            for qa in paragraph.get("qas", []):
                answers = tuple(dict.fromkeys(a["text"] for a in qa.get("answers", []) if a.get("text")))
                if qa.get("is_impossible", False) or not answers:
                    skipped += 1
                    continue
                items.append(QAItem(str(qa["id"]), qa["question"], answers, (paragraph["context"],), (doc_id,)))
    if not items:
        raise UserError(f"{path} holds no answerable questions")
    return QASet(items, documents, path, skipped)


def load_chroma_qa(path: str | Path) -> QASet:
    """A Chroma evaluation folder as a QA set: it has no short answers, so each question's reference
    excerpts serve as its gold answers and gold passages, and its corpus as the gold document."""
    data = load_dataset(path)
    items = [QAItem(str(q.index), q.text, q.contents, q.contents, (q.corpus_id,)) for q in data.questions]
    return QASet(items, dict(data.corpora), Path(path))


def load_jsonl_qa(path: str | Path, documents: str | Path | None = None) -> QASet:
    """Our JSONL questions (``question``, ``answers``, optional ``references``); with ``documents``
    (a folder of texts or a JSONL corpus) the referenced spans become gold passages and the
    documents are indexed. Questions without answers are counted as skipped."""
    corpus = load_corpus_texts(documents) if documents is not None else None
    questions, _ = load_questions_jsonl(path, corpus)
    items, skipped = [], 0
    for q in questions:
        if not q.answers:
            skipped += 1
            continue
        passages = tuple(corpus[r.doc_id][r.start:r.end] for r in q.references) if corpus else ()
        items.append(QAItem(q.id, q.text, q.answers, passages, tuple(dict.fromkeys(r.doc_id for r in q.references))))
    if not items:
        raise UserError(f"{path} has no questions with answers")
    return QASet(items, dict(corpus or {}), Path(path), skipped)


def load_qa_set(path: str | Path, documents: str | Path | None = None) -> QASet:
    """A QA set by its form: a SQuAD ``.json`` file, a Chroma folder, or our ``.jsonl`` questions."""
    path = Path(path)
    if path.is_dir():
        return load_chroma_qa(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA set {path} does not exist")
    if path.suffix.lower() == ".json":
        return load_squad_qa(path)
    return load_jsonl_qa(path, documents)


__all__ = ["BadRow", "BeirDataset", "EvalDataset", "QAItem", "QASet", "Question", "Reference", "SpanQuestion",
           "jsonl_eval_dataset", "load_beir", "load_chroma_qa", "load_corpora", "load_corpus_texts", "load_dataset",
           "load_jsonl_qa", "load_qa_set", "load_questions_jsonl", "load_squad_qa", "load_squad_retrieval",
           "read_text_exact"]
