"""What a build reads (``BuildInput``): files and folders, a stream of documents, or ready chunks.

``rag index`` gives paths, which ``indexers.readers`` turns into documents. Evaluators give the
documents of a data set (BEIR corpora, QA sets), or the chunks they already made and checked
(the chunking evaluation keeps its exact spans); the build then embeds and writes them exactly as
it does for ``rag index``, so a data set's datastore is the one ``rag index`` would build.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from datastores.records import Chunk, Document
from datastores.sql import MetadataKinds
from indexers.chunkers import Chunker
from indexers.cpu_pool import ChunkedBatch, tasks
from indexers.readers import Piece, ReaderOptions, ReadReport, iter_pieces


@dataclass(frozen=True, eq=False)
class BuildInput:
    """Exactly one of ``paths``, ``documents`` or ``chunks``.

    ``documents`` are chunked by the build's chunker. ``chunks`` (each document's chunks together,
    in order, with exact spans) are embedded and written as given; ``chunker`` is the chunker
    that made them (its spec goes into the manifest). Documents and chunks are read twice when
    the dense index trains on a sample first, so they must then be a collection (a list), not a
    one-shot iterator. ``name`` is what the manifest's build parameters record as the input
    (default: the paths, or ``documents`` / ``chunks``).
    """

    paths: tuple[str | Path, ...] = ()
    documents: Iterable[Document] | None = None
    chunks: Iterable[Chunk] | None = None
    chunker: Chunker | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        given = [n for n, v in (("paths", self.paths), ("documents", self.documents), ("chunks", self.chunks))
                 if v is not None and (n != "paths" or len(v))]
        if len(given) != 1:
            raise ValueError(f"a build reads exactly one of paths, documents or chunks (got {', '.join(given) or 'none'})")
        if (self.chunker is not None) != (self.chunks is not None):
            raise ValueError("give the chunker that made the chunks together with them (and only then)")
        object.__setattr__(self, "paths", tuple(self.paths))

    @classmethod
    def of(cls, source: "BuildInput | Sequence[str | Path]") -> "BuildInput":
        """``source`` itself, or a list of input paths as a ``BuildInput``."""
        if isinstance(source, BuildInput):
            return source
        if isinstance(source, (str, Path)):
            raise TypeError("build inputs are a list of paths (got a single path)")
        return cls(paths=tuple(source))

    @property
    def recorded(self) -> list[str]:
        """The input as the build parameters record it."""
        if self.name is not None:
            return [self.name]
        return [str(p) for p in self.paths] if self.paths else ["documents" if self.documents is not None else "chunks"]

    def input_bytes(self) -> int:
        """Bytes of the files under ``paths`` (0 for documents or chunks, and for missing paths)."""
        total = 0
        for path in map(Path, self.paths):
            files = path.rglob("*") if path.is_dir() else [path]
            total += sum(f.stat().st_size for f in files if f.is_file())
        return total

    def check_rereadable(self) -> None:
        """Refuse a one-shot iterator where the build reads its input twice."""
        for name, value in (("documents", self.documents), ("chunks", self.chunks)):
            if value is not None and iter(value) is value:
                raise ValueError(f"this dense index trains on a sample first, which reads the input twice: "
                                 f"give the {name} as a list, not a one-shot iterator")

    def tasks(self, options: ReaderOptions, report: ReadReport,
              columns: Sequence[str] | None = None) -> Iterator[list[Piece | Document]]:
        """The work of reading ``paths`` or ``documents``, cut into tasks (``indexers.cpu_pool.tasks``:
        the same cut whatever the worker count); unusable files are recorded in ``report``;
        ``columns`` projects Parquet files."""
        if self.documents is not None:
            return tasks(iter(self.documents))
        return tasks(iter_pieces(self.paths, options, report, columns))

    def given_batches(self) -> Iterator[ChunkedBatch]:
        """The given chunks, one ``ChunkedBatch`` per run of one ``doc_id`` (characters: the end of
        its last span; tokens are not counted)."""
        run: list[Chunk] = []
        for chunk in self.chunks or ():
            if run and chunk.doc_id != run[0].doc_id:
                yield _given(run)
                run = []
            run.append(chunk)
        if run:
            yield _given(run)


def _given(run: list[Chunk]) -> ChunkedBatch:
    kinds = MetadataKinds()
    for chunk in run:
        kinds.add(chunk.doc_id, chunk.metadata)
    return ChunkedBatch([run[0].doc_id], [max(c.end for c in run)], [0], [len(run)], run, kinds=kinds)
