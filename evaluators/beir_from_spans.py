"""BEIR-format retrieval sets from span-labelled data (Chroma's eval set): chunks are documents.

Every corpus is chunked; each chunk becomes a BEIR document ``<corpus>:<n>`` (title empty, text
the chunk). A question's relevant documents (grade 1) are the chunks whose character span
overlaps any of its reference excerpts by at least one character. Questions with no overlapping
chunk (possible only for empty references) are left out.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from datastores.records import Document
from evaluators.datasets import EvalDataset


@dataclass(frozen=True)
class BeirSetInfo:
    """What one written BEIR folder holds."""

    path: Path
    documents: int
    queries: int
    judgements: int


def _overlaps(start: int, end: int, references: Iterable[tuple[int, int]]) -> bool:
    return any(start < ref_end and ref_start < end for ref_start, ref_end in references)


def write_beir_from_spans(dataset: EvalDataset, chunker: Any, out: str | Path,
                          corpus_ids: Iterable[str] | None = None) -> BeirSetInfo:
    """Write ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` for the given corpora (all
    by default) into ``out`` (replaced if it exists; written to a temporary folder and renamed)."""
    out = Path(out)
    wanted = list(corpus_ids) if corpus_ids is not None else dataset.corpus_ids
    part = dataset.subset(wanted)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "qrels").mkdir(parents=True)
    spans: dict[str, list[tuple[str, int, int]]] = {}
    documents = 0
    with open(tmp / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for corpus_id in part.corpus_ids:
            chunks = chunker.chunk(Document(corpus_id, part.corpora[corpus_id], corpus_id))
            spans[corpus_id] = []
            for n, chunk in enumerate(chunks):
                doc_id = f"{corpus_id}:{n:05d}"
                corpus.write(json.dumps({"_id": doc_id, "title": "", "text": chunk.text}, ensure_ascii=False) + "\n")
                spans[corpus_id].append((doc_id, chunk.start, chunk.end))
                documents += 1
    queries = judgements = 0
    with open(tmp / "queries.jsonl", "w", encoding="utf-8") as qfile, \
            open(tmp / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for i, question in enumerate(part.questions):
            relevant = [d for d, s, e in spans[question.corpus_id] if _overlaps(s, e, question.references)]
            if not relevant:
                continue
            qid = f"q{question.index if question.index >= 0 else i}"
            qfile.write(json.dumps({"_id": qid, "text": question.text}, ensure_ascii=False) + "\n")
            qrels.writelines(f"{qid}\t{d}\t1\n" for d in relevant)
            queries += 1
            judgements += len(relevant)
    shutil.rmtree(out, ignore_errors=True)
    tmp.replace(out)
    return BeirSetInfo(out, documents, queries, judgements)


def write_chroma_beir_sets(dataset: EvalDataset, chunker: Any, out_root: str | Path,
                           pooled: bool = True) -> dict[str, BeirSetInfo]:
    """One BEIR folder per corpus (``out_root/<corpus>``) and, with ``pooled``, one over all of
    them (``out_root/pooled``: every question searches the chunks of every corpus)."""
    out_root = Path(out_root)
    sets = {c: write_beir_from_spans(dataset, chunker, out_root / c, [c]) for c in dataset.corpus_ids}
    if pooled:
        sets["pooled"] = write_beir_from_spans(dataset, chunker, out_root / "pooled")
    return sets


__all__ = ["BeirSetInfo", "write_beir_from_spans", "write_chroma_beir_sets"]
