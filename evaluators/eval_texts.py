"""Evaluation texts for decontamination: the questions, answers and references of a question set,
read by the evaluators' dataset readers and handed to ``datastores.ops.decontaminate`` as plain
``EvalText``s (datastores never read question sets themselves)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from datastores.errors import UserError
from datastores.ops.decontaminate import FIELDS, EvalText, read_qa_jsonl
from evaluators.datasets import load_corpus_texts, load_dataset, load_questions_jsonl


def load_eval_texts(path: str | Path, fields: Sequence[str] = ("question", "answers"),
                    corpus: str | Path | None = None) -> list[EvalText]:
    """Evaluation texts from a Chroma-format folder (or its ``questions_df.csv``) or from our
    questions JSONL (references resolved against ``corpus`` when given).

    Per question, the ``question`` and ``answers`` fields form one text; each reference is a text
    of its own."""
    unknown = [f for f in fields if f not in FIELDS]
    if unknown or not fields:
        raise UserError(f"unknown field(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(FIELDS)}")
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
    if "references" not in fields:
        return [EvalText(r.label, "\n".join(([r.question] if "question" in fields else [])
                                            + (list(r.answers) if "answers" in fields else [])))
                for r in read_qa_jsonl(path)]
    texts = load_corpus_texts(corpus) if corpus is not None else None
    questions, _ = load_questions_jsonl(path, texts)
    for i, q in enumerate(questions):
        label = q.id or f"q{i}"
        parts = ([q.text] if "question" in fields else []) + (list(q.answers) if "answers" in fields else [])
        if parts:
            out.append(EvalText(label, "\n".join(parts)))
        if "references" in fields:
            if texts is None:
                raise UserError("references of a JSONL question set need --corpus to resolve their spans")
            out.extend(EvalText(f"{label}.ref{j}", texts[r.doc_id][r.start:r.end])
                       for j, r in enumerate(q.references))
    return out
