"""``rag eval answers``: whole ask pipelines over a QA set, scored at the answer (FlashRAG's workflow).

Every pipeline (a ``rag.pipeline.PipelineConfig``) retrieves, runs its context stages and generates
for every question; the row reports exact match and token F1 (SQuAD normalisation, citation marks
``[n]`` removed first), accuracy (a gold answer occurs in the answer, FlashRAG's ``acc``: fair to
chatty models that answer in sentences), answer-in-context (a gold answer occurs in the final context), retrieval
recall (a gold document among the retrieved passages, where the set names one), context tokens
handed to the generator, generated tokens and seconds per question per stage. Two reference rows
use the first pipeline: ``closed-book`` (its generator without passages) and ``oracle`` (its stages
and generator on the gold passages, where the set has them).

Questions are prepared in batches; generators with ``generate_batch`` (``hf:``) answer a batch in
one padded call, so peak memory is the model plus one batch. Each finished question is appended to
a JSONL cache keyed by the pipeline's settings, the datastore's content checksum and the question,
so a killed run resumes where it stopped (a torn last line is ignored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from datastores.errors import UserError
from datastores.layout import atomic_write_bytes
from evaluators.answers import answer_in_context, exact_match, f1_score, strip_citations
from evaluators.datasets import QAItem, QASet

CLOSED_BOOK, ORACLE = "closed-book", "oracle"


@dataclass(frozen=True)
class NamedPipeline:
    """A pipeline config and the name its row gets."""

    name: str
    config: Any  # rag.pipeline.PipelineConfig


@dataclass
class AnswerRecord:
    """One question answered by one pipeline."""

    pipeline: str
    id: str
    question: str
    answers: list[str]
    prediction: str
    exact_match: float
    f1: float
    accuracy: float
    answer_in_context: float
    retrieval_hit: float | None
    context_tokens: int
    generated_tokens: int
    seconds: dict[str, float]
    passages: list[str] = field(default_factory=list)   # doc ids of the final context, in order

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class AnswerRow:
    """Means over one pipeline's questions; rates ×100."""

    pipeline: str
    questions: int
    exact_match: float
    f1: float
    accuracy: float
    answer_in_context: float
    retrieval_recall: float | None
    context_tokens: float
    generated_tokens: float
    seconds: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")


def summarize(name: str, records: Sequence[AnswerRecord]) -> AnswerRow:
    """One table row from a pipeline's records."""
    hits = [r.retrieval_hit for r in records if r.retrieval_hit is not None]
    stages = list(dict.fromkeys(s for r in records for s in r.seconds))
    return AnswerRow(name, len(records), 100 * _mean([r.exact_match for r in records]),
                     100 * _mean([r.f1 for r in records]), 100 * _mean([r.accuracy for r in records]),
                     100 * _mean([r.answer_in_context for r in records]),
                     100 * _mean(hits) if hits else None, _mean([r.context_tokens for r in records]),
                     _mean([r.generated_tokens for r in records]),
                     {s: _mean([r.seconds.get(s, 0.0) for r in records]) for s in stages})


@dataclass
class AnswerEvaluation:
    """Rows (one per pipeline, then closed-book and oracle), per-question records and settings."""

    rows: list[AnswerRow]
    records: list[AnswerRecord]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "settings": self.settings}

    def write_records(self, path: str | Path) -> Path:
        """Every per-question record as JSON lines, written atomically."""
        lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in self.records)
        atomic_write_bytes(Path(path), lines.encode("utf-8"))
        return Path(path)


# -- the on-disk generation cache ------------------------------------------------------------------


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class GenerationCache:
    """Finished records of one (pipeline, source, datastore) run, one JSON line per question.

    Lines are appended and synced as questions finish; reading skips a torn last line, so a
    killed run loses at most the question in flight. ``folder=None`` keeps nothing.
    """

    def __init__(self, folder: str | Path | None, key: dict[str, Any]):
        self.path = Path(folder) / f"{_digest(key)[:24]}.jsonl" if folder is not None else None
        self.records: dict[str, dict[str, Any]] = {}
        self._torn = False  # the file ends inside a line: the next append starts a new one
        if self.path is not None and self.path.is_file():
            text = self.path.read_text(encoding="utf-8")
            self._torn = bool(text) and not text.endswith("\n")
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and "key" in entry and "record" in entry:
                    self.records[entry["key"]] = entry["record"]

    @staticmethod
    def item_key(item: QAItem) -> str:
        return _digest([item.id, item.question, list(item.answers), list(item.gold_passages), list(item.gold_docs)])

    def get(self, item: QAItem) -> AnswerRecord | None:
        found = self.records.get(self.item_key(item))
        return AnswerRecord(**found) if found is not None else None

    def add(self, pairs: Sequence[tuple[QAItem, AnswerRecord]]) -> None:
        if self.path is None or not pairs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            if self._torn:
                handle.write("\n")
                self._torn = False
            for item, record in pairs:
                handle.write(json.dumps({"key": self.item_key(item), "record": record.to_dict()},
                                        ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# -- running one pipeline --------------------------------------------------------------------------


def same_document(doc_id: str, gold: str) -> bool:
    """True when a retrieved ``doc_id`` names the gold document (its id, file stem or JSONL record id)."""
    return doc_id == gold or Path(doc_id).stem == gold or doc_id.endswith("#" + gold)


def gold_passages(item: QAItem) -> list[Any]:
    """The item's gold passages as numbered ``Passage`` objects."""
    from rag.records import Passage

    docs = item.gold_docs or ("gold",)
    return [Passage(i, text, -i, docs[min(i - 1, len(docs) - 1)], 0, len(text))
            for i, text in enumerate(item.gold_passages, start=1)]


@dataclass
class _Prepared:
    item: QAItem
    retrieved: list[Any]
    context: list[Any]
    tokens: int
    seconds: dict[str, float]


def _prepare(pipe: Any, item: QAItem, source: str) -> _Prepared:
    """Retrieve (or take the gold passages, or none) and run the context stages for one question."""
    from rag.stages import count_tokens

    seconds: dict[str, float] = {}
    if source == CLOSED_BOOK:
        return _Prepared(item, [], [], 0, seconds)
    if source == ORACLE:
        passages = gold_passages(item)
    else:
        started = time.perf_counter()
        passages = pipe.retrieve(item.question)
        seconds["retrieve"] = time.perf_counter() - started
    context, reports = pipe.context(item.question, passages)
    for report in reports:
        seconds[report.name] = report.seconds
    return _Prepared(item, passages, context, count_tokens(context, pipe.tokenizer), seconds)


def _generate(generator: Any, batch: Sequence[_Prepared]) -> tuple[list[Any], float]:
    """Generations for a batch (one padded call when the generator can) and seconds per question."""
    started = time.perf_counter()
    items = [(p.item.question, p.context) for p in batch]
    if hasattr(generator, "generate_batch"):
        generations = generator.generate_batch(items)
    else:
        generations = [generator.generate(question, context) for question, context in items]
    return generations, (time.perf_counter() - started) / max(1, len(batch))


def _record(name: str, prepared: _Prepared, generation: Any, seconds: float, tokenizer: Any,
            source: str) -> AnswerRecord:
    item = prepared.item
    prediction = strip_citations(generation.text)
    golds = list(item.answers)
    hit = None
    if source not in (CLOSED_BOOK, ORACLE) and item.gold_docs:
        hit = float(any(same_document(p.doc_id, g) for p in prepared.retrieved for g in item.gold_docs))
    generated = generation.completion_tokens
    if generated is None:
        generated = tokenizer.count(generation.text)
    return AnswerRecord(name, item.id, item.question, golds, generation.text, exact_match(prediction, golds),
                        f1_score(prediction, golds), answer_in_context([prediction], golds),
                        answer_in_context([p.text for p in prepared.context], golds),
                        hit, prepared.tokens, int(generated), {**prepared.seconds, "generate": seconds},
                        [p.doc_id for p in prepared.context])


def _batches(items: Sequence[QAItem], size: int) -> Iterator[list[QAItem]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def run_pipeline(name: str, pipe: Any, items: Sequence[QAItem], source: str, cache: GenerationCache,
                 batch_size: int = 4, on_done: Callable[[int], None] | None = None) -> list[AnswerRecord]:
    """Records of every item for one pipeline (``source``: retrieve, closed-book or oracle), from the
    cache where present; newly finished questions are added to the cache batch by batch."""
    records: dict[str, AnswerRecord] = {}
    todo = []
    for item in items:
        cached = cache.get(item)
        if cached is not None:
            records[item.id] = dataclasses.replace(cached, pipeline=name)
        else:
            todo.append(item)
    if on_done is not None and records:
        on_done(len(records))
    for batch in _batches(todo, batch_size):
        prepared = [_prepare(pipe, item, source) for item in batch]
        generations, seconds = _generate(pipe.generator, prepared)
        done = [(p.item, _record(name, p, g, seconds, pipe.tokenizer, source)) for p, g in zip(prepared, generations)]
        cache.add(done)
        records.update((item.id, record) for item, record in done)
        if on_done is not None:
            on_done(len(done))
    return [records[item.id] for item in items]


# -- the whole evaluation --------------------------------------------------------------------------


def index_documents(documents: dict[str, str], folder: Path, chunker: str = "recursive", chunk_size: int = 256,
                    overlap: int = 0, device: str = "auto", progress: bool = False) -> Any:
    """A datastore of the set's own documents (the default MiniLM embedder), opened for asking."""
    from datastores.records import Document
    from indexers.build import build_datastore
    from indexers.build_input import BuildInput
    from indexers.config import BuildConfig
    from rag.datastore import Datastore

    source = BuildInput(documents=[Document(doc_id, text, doc_id, {}) for doc_id, text in documents.items()],
                        name="answer-evaluation")
    build_datastore(source, folder, BuildConfig(chunker=chunker, chunk_size=chunk_size, overlap=overlap, device=device),
                    progress=progress)
    return Datastore.open(folder, device=device)


def _runs(pipelines: Sequence[NamedPipeline], qa: QASet, closed_book: bool, oracle: bool) -> list[tuple[str, Any, str]]:
    """(row name, config, source) for every row: each pipeline, then the reference rows."""
    runs = [(p.name, p.config, "retrieve") for p in pipelines]
    first = pipelines[0].config
    if closed_book:
        runs.append((CLOSED_BOOK, first, CLOSED_BOOK))
    if oracle and any(item.gold_passages for item in qa.items):
        runs.append((ORACLE, first, ORACLE))
    return runs


def _shared_generator(config: Any, datastore: Any, generators: dict[str, Any], given: Any = None) -> Any:
    """A pipeline whose generator is ``given``, or shared with every other pipeline of the same
    generator settings (each model is loaded once per run)."""
    from rag.pipeline import Pipeline, make_generator

    pipe = Pipeline.from_config(dataclasses.replace(config, generator={"spec": "extractive"}), datastore=datastore)
    key = _digest(dict(config.generator))
    if given is not None:
        generators[key] = given
    if key not in generators:
        options = dict(config.generator)
        generators[key] = make_generator(options.pop("spec", "extractive"), options, pipe.embedder, config.device)
    pipe.generator = generators[key]
    return pipe


def evaluate_answers(qa: QASet, pipelines: Sequence[NamedPipeline], datastore: Any = None, *,
                     closed_book: bool = True, oracle: bool = True, batch_size: int = 4,
                     cache_dir: str | Path | None = None, progress: bool = False,
                     generator: Any = None) -> AnswerEvaluation:
    """Run every pipeline (and the closed-book and oracle rows) over ``qa`` against ``datastore``;
    ``generator``, when given, answers for every pipeline instead of the one its config names (a
    model loaded once by the caller; the configs' generator settings still key the cache)."""
    from tqdm.auto import tqdm

    if not pipelines:
        raise UserError("no pipeline to evaluate: give --config and/or pipeline flags")
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    runs = _runs(pipelines, qa, closed_book, oracle)
    store_key = getattr(getattr(datastore, "manifest", None), "content_checksum", None) or str(datastore)
    generators: dict[str, Any] = {}
    rows, records = [], []
    bar = tqdm(total=len(runs) * len(qa.items), desc="answering", unit="q", disable=not progress or None)
    for name, config, source in runs:
        pipe = _shared_generator(config, datastore, generators, generator)
        key = {"config": dataclasses.asdict(config), "source": source, "datastore": store_key}
        found = run_pipeline(name, pipe, qa.items, source, GenerationCache(cache_dir, key), batch_size, bar.update)
        rows.append(summarize(name, found))
        records.extend(found)
    bar.close()
    settings = {"dataset": str(qa.path) if qa.path else None, "questions": len(qa.items), "skipped": qa.skipped,
                "datastore": str(getattr(datastore, "root", datastore)), "batch_size": batch_size,
                "pipelines": {p.name: dataclasses.asdict(p.config) for p in pipelines}}
    return AnswerEvaluation(rows, records, settings)


__all__ = ["AnswerEvaluation", "AnswerRecord", "AnswerRow", "GenerationCache", "NamedPipeline", "evaluate_answers",
           "gold_passages", "index_documents", "run_pipeline", "same_document", "summarize"]
