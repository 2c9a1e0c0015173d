"""The ask pipeline: retriever -> pruner -> compressor -> reorder -> generator, each optional.

    pipe = Pipeline.from_config("configs/pipelines/default.yaml", datastore=Datastore.open("ds/"))
    answer = pipe.ask("When was the treaty signed?")

Budgets are in tokens of one named tokenizer (``tokenizer``, default cl100k) and count the passage
texts handed to the generator; when a budget is set it always holds, whatever stages are chosen.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from datastores.errors import UserError
from datastores.records import Hit
from indexers.embedding import CachingEmbedder, Embedder, caching_embedder
from indexers.tokenizers import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer
from rag.generate.base import Generator
from rag.generate.factory import load_generator
from rag.records import Passage
from rag.stages import ContextStage, StageReport, check_budget, count_tokens, run_stage


class PipelineConfigError(UserError):
    """A pipeline config that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``Pipeline.from_config`` reads; each mapping holds the stage's options.

    ``retriever`` options go to ``rag.retrieve.build_retriever`` (``mode``, ``fusion``, ``rerank``, ...);
    ``pruner`` needs ``method: html``; ``compressor`` needs ``method`` (see ``rag.compress.METHODS``);
    ``generator`` needs ``spec`` (``extractive``, ``hf:PATH``, ``openai:MODEL``).
    """

    k: int = 5
    budget: int | None = 1024
    tokenizer: str = DEFAULT_TOKENIZER
    device: str = "auto"
    retriever: Mapping[str, Any] = field(default_factory=lambda: {"mode": "dense"})
    pruner: Mapping[str, Any] | None = None
    compressor: Mapping[str, Any] | None = None
    reorder: bool = False
    generator: Mapping[str, Any] = field(default_factory=lambda: {"spec": "extractive"})

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or self.k < 1:
            raise PipelineConfigError(f"k must be a positive whole number, got {self.k!r}")
        try:
            check_budget(self.budget)
        except ValueError as exc:
            raise PipelineConfigError(str(exc)) from exc
        for key in ("retriever", "generator"):
            if not isinstance(getattr(self, key), Mapping):
                raise PipelineConfigError(f"{key} must be a mapping of options")
        for key in ("pruner", "compressor"):
            value = getattr(self, key)
            if value is not None and not (isinstance(value, Mapping) and value.get("method")):
                raise PipelineConfigError(f"{key} must be null or a mapping with a 'method'")
        if not isinstance(self.reorder, bool):
            raise PipelineConfigError(f"reorder must be true or false, got {self.reorder!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> "PipelineConfig":
        """A config from parsed YAML; unknown keys are an error."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineConfigError(f"unknown pipeline config keys: {', '.join(unknown)} "
                                      f"(known: {', '.join(sorted(known))})")
        return cls(**data)

    @classmethod
    def load(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pipeline config not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise PipelineConfigError(f"{path} is not valid YAML: {exc}") from exc
        if data is not None and not isinstance(data, Mapping):
            raise PipelineConfigError(f"{path} must hold a mapping of pipeline settings")
        return cls.from_mapping(data)


@dataclass(frozen=True)
class Citation:
    """A cited passage: where its chunk lives, and for extractive answers the quoted span."""

    number: int
    chunk_id: int
    doc_id: str
    start: int
    end: int
    source: str = ""
    quote: str | None = None
    quote_start: int | None = None
    quote_end: int | None = None


@dataclass
class Answer:
    """The answer, its citations, the context the generator saw, tokens per stage and timings."""

    question: str
    text: str
    citations: list[Citation]
    context: list[Passage]
    stages: list[StageReport]
    timings: dict[str, float]
    generator: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @property
    def context_tokens(self) -> int:
        """Tokens of the context handed to the generator (after the last stage)."""
        return self.stages[-1].tokens_after if self.stages else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "answer": self.text,
            "citations": [dataclasses.asdict(c) for c in self.citations],
            "context": [dataclasses.asdict(p) for p in self.context],
            "stages": [s.to_dict() for s in self.stages],
            "timings": self.timings,
            "generator": self.generator,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


def passages_from_hits(hits: Sequence[Hit]) -> list[Passage]:
    """Search hits as numbered passages, in rank order."""
    return [Passage(i, h.text, h.chunk_id, h.doc_id, h.start, h.end, h.source, float(h.score))
            for i, h in enumerate(hits, start=1)]


def load_pruner(options: Mapping[str, Any], tokenizer: Tokenizer, embedder: CachingEmbedder) -> ContextStage:
    """The pruner an options mapping names (``method: html`` is ``rag.html.HtmlPruner``)."""
    options = dict(options)
    method = options.pop("method")
    if method != "html":
        raise PipelineConfigError(f"unknown pruner {method!r}; the pruner is 'html'")
    try:
        from rag.html import HtmlPruner
    except ImportError as exc:
        raise PipelineConfigError(f"the html pruner is not available: {exc}") from exc
    try:
        return HtmlPruner(tokenizer=tokenizer, embedder=embedder, **options)
    except TypeError as exc:
        raise PipelineConfigError(f"bad html pruner options {options}: {exc}") from exc


def load_compression_stage(options: Mapping[str, Any], tokenizer: Tokenizer, embedder: CachingEmbedder,
                           device: str) -> ContextStage:
    from rag.compress import load_compressor

    options = dict(options)
    method = options.pop("method")
    options.setdefault("device", device)
    return load_compressor(method, tokenizer=tokenizer, embedder=embedder, **options)


def datastore_embedder(datastore: Any, device: str = "auto") -> Embedder | None:
    """The embedder ``datastore``'s manifest records (its own when it has one), loaded on first use;
    None without a datastore (the stages then load the default model)."""
    if datastore is None:
        return None
    record = datastore.manifest.embedder
    if record.get("name") is not None and isinstance(getattr(type(datastore), "embedder", None), property):
        return datastore.embedder  # rag.Datastore, the Ray searcher: share the model they load
    return Embedder.from_manifest(record, device)


def cite(quotes: Sequence[Any], context: Sequence[Passage], numbers: Sequence[int],
         originals: Mapping[int, str]) -> list[Citation]:
    """Citations of the cited passages: one per quote for extractive answers (its span located in
    the original chunk text and given in document offsets), else one per passage."""
    by_number: dict[int, list[Any]] = {}
    for quote in quotes:
        by_number.setdefault(quote.number, []).append(quote)
    citations = []
    for number in numbers:
        passage = context[number - 1]
        chunk = (number, passage.chunk_id, passage.doc_id, passage.start, passage.end, passage.source)
        if number not in by_number:
            citations.append(Citation(*chunk))
        for quote in by_number.get(number, []):
            found = originals.get(passage.chunk_id, passage.text).find(quote.text)
            span = (passage.start + found, passage.start + found + len(quote.text)) if found >= 0 else (None, None)
            citations.append(Citation(*chunk, quote.text, *span))
    return citations


def make_generator(spec: str, options: Mapping[str, Any], embedder: CachingEmbedder, device: str) -> Generator:
    """A generator from its spec; the extractive one shares the pipeline's embedder, hf: its device."""
    options = dict(options)
    kind = spec.strip().split(":")[0]
    if kind == "extractive":
        options.setdefault("embedder", embedder)
    elif kind == "hf":
        options.setdefault("device", device)
    try:
        return load_generator(spec, **options)
    except TypeError as exc:
        raise PipelineConfigError(f"bad options for generator {spec!r}: {exc}") from exc


class Pipeline:
    """Retrieval, context stages and a generator; build it in Python or with ``from_config``."""

    def __init__(self, datastore: Any = None, *, retriever: Any = None, k: int = 5,
                 pruner: ContextStage | None = None, compressor: ContextStage | None = None,
                 reorder: bool | ContextStage = False, generator: Generator | str = "extractive",
                 budget: int | None = None, tokenizer: str | Tokenizer = DEFAULT_TOKENIZER,
                 embedder: Any = None, device: str = "auto"):
        if k < 1:
            raise UserError(f"k must be at least 1, got {k}")
        self.datastore = datastore
        self.k = k
        self.budget = check_budget(budget)
        self.tokenizer = load_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
        self.embedder = caching_embedder(embedder if embedder is not None else datastore_embedder(datastore, device),
                                         device)
        if retriever is None and datastore is not None:
            from rag.retrieve import build_retriever

            retriever = build_retriever(datastore, "dense", device=device)
        self.retriever = retriever
        self.pruner = pruner
        self.compressor = compressor
        if reorder is True:
            from rag.reorder import Reorder

            reorder = Reorder()
        self.reorder = reorder or None
        self.generator = make_generator(generator, {}, self.embedder, device) \
            if isinstance(generator, str) else generator

    @classmethod
    def from_config(cls, config: str | Path | PipelineConfig | Mapping[str, Any], datastore: Any = None,
                    **overrides: Any) -> "Pipeline":
        """A pipeline from a YAML file, a mapping or a ``PipelineConfig``; ``overrides`` replace fields."""
        if isinstance(config, (str, Path)):
            config = PipelineConfig.load(config)
        elif not isinstance(config, PipelineConfig):
            config = PipelineConfig.from_mapping(config)
        if overrides:
            config = dataclasses.replace(config, **overrides)
        tokenizer = load_tokenizer(config.tokenizer)
        embedder = caching_embedder(datastore_embedder(datastore, config.device), config.device)
        retriever = None
        if datastore is not None:
            from rag.retrieve import build_retriever

            options = dict(config.retriever)
            options.setdefault("device", config.device)
            try:
                retriever = build_retriever(datastore, **options)
            except TypeError as exc:
                raise PipelineConfigError(f"bad retriever options {dict(config.retriever)}: {exc}") from exc
        pruner = load_pruner({"device": config.device, **config.pruner}, tokenizer, embedder) \
            if config.pruner else None
        compressor = (load_compression_stage(config.compressor, tokenizer, embedder, config.device)
                      if config.compressor else None)
        options = dict(config.generator)
        generator = make_generator(options.pop("spec", "extractive"), options, embedder, config.device)
        return cls(datastore, retriever=retriever, k=config.k, pruner=pruner, compressor=compressor,
                   reorder=config.reorder, generator=generator, budget=config.budget, tokenizer=tokenizer,
                   embedder=embedder, device=config.device)

    def retrieve(self, question: str, where: str | None = None) -> list[Passage]:
        """The top-k passages for ``question`` from the retriever."""
        if self.retriever is None:
            raise UserError("this pipeline has no datastore or retriever: pass passages to ask()")
        return passages_from_hits(self.retriever.retrieve(question, self.k, where=where))

    def stages(self) -> list[ContextStage]:
        return [s for s in (self.pruner, self.compressor, self.reorder) if s is not None]

    def context(self, question: str, passages: list[Passage]) -> tuple[list[Passage], list[StageReport]]:
        """Run the context stages; a final ``fit`` stage cuts whatever still exceeds the budget."""
        reports = []
        tokens = count_tokens(passages, self.tokenizer)  # each stage's output is the next one's input
        for stage in self.stages():
            passages, report = run_stage(stage, question, passages, self.budget, self.tokenizer, tokens)
            reports.append(report)
            tokens = report.tokens_after
        if self.budget is not None and tokens > self.budget:
            from rag.compress import TruncateCompressor

            fit = TruncateCompressor(self.tokenizer, split="greedy")
            fit.name = "fit"
            passages, report = run_stage(fit, question, passages, self.budget, self.tokenizer, tokens)
            reports.append(report)
        return passages, reports

    def ask(self, question: str, where: str | None = None, passages: Sequence[Passage] | None = None,
            on_token: Callable[[str], None] | None = None) -> Answer:
        """Answer ``question`` from retrieved passages (or the ``passages`` given)."""
        if not question or not question.strip():
            raise UserError("the question is empty")
        timings: dict[str, float] = {}
        started = time.perf_counter()
        if passages is None:
            passages = self.retrieve(question, where)
            timings["retrieve"] = time.perf_counter() - started
        passages = [dataclasses.replace(p, number=i) for i, p in enumerate(passages, start=1)]
        originals = {p.chunk_id: p.text for p in passages}
        context, reports = self.context(question, passages)
        for report in reports:
            timings[report.name] = report.seconds
        if not reports:  # no stage ran: the context is the retrieved passages
            retrieved = count_tokens(passages, self.tokenizer)
            reports = [StageReport("retrieve", retrieved, retrieved, len(passages), len(passages),
                                   timings.get("retrieve", 0.0))]
        began = time.perf_counter()
        generation = self.generator.generate(question, context, on_token=on_token)
        timings["generate"] = time.perf_counter() - began
        timings["total"] = time.perf_counter() - started
        quotes = generation.metadata.get("quotes", []) if hasattr(generation, "metadata") else []
        citations = cite(quotes, context, generation.citations, originals)
        return Answer(question, generation.text, citations, context, reports, timings,
                      getattr(self.generator, "name", type(self.generator).__name__),
                      generation.prompt_tokens, generation.completion_tokens)
