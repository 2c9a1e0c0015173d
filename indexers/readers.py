"""Readers: files and folders of .txt, .md, .jsonl, .parquet and .html become Documents.

Text, Markdown and HTML files are read as UTF-8 (with or without a byte order mark); any other
text encoding (a UTF-16/32 byte order mark, else charset-normalizer's detection, which honours a
declared ``<meta charset>``) is decoded and read with one warning naming it, recorded in the
``ReadReport`` (``strict`` refuses such a file instead). Files that cannot be used (binary, no
plausible text encoding, empty, unreadable) are skipped with one warning each and counted in the
``ReadReport``; they never stop a build. JSON Lines and Parquet text must be UTF-8.

The input is cut into pieces (``iter_pieces``) that a worker process reads on its own
(``read_piece``): the build's process only lists files, reads JSON Lines as bytes and decodes
Parquet batches with Arrow; parsing records and files into ``Document``s happens in the piece's
reader. ``iter_documents`` does both in one process.
"""

from __future__ import annotations

import codecs
import fnmatch
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from datastores.errors import TeraragError, UserError
from datastores.records import Document
from indexers.vectors import VectorDocument, VectorError, arrow_vector_rows, parse_vectors

logger = logging.getLogger("terarag.readers")

FORMATS = {
    ".txt": "text", ".text": "text", ".md": "markdown", ".markdown": "markdown",
    ".jsonl": "jsonl", ".parquet": "parquet", ".html": "html", ".htm": "html",
}
DEFAULT_INCLUDE = tuple(f"*{ext}" for ext in FORMATS)
BINARY_SNIFF_BYTES = 8192
#: Byte order marks of encodings whose text holds NUL bytes (UTF-32 first: its LE mark starts
#: with UTF-16's).
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
              (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
#: Chosen among candidates that detection cannot tell apart (short texts): the web's default
#: legacy encoding, a superset of latin-1's printable characters.
PREFERRED_ENCODINGS = ("cp1252",)
#: A piece (``iter_pieces``) ends after this many records (lines, rows) or about this many bytes.
PIECE_RECORDS = 256
PIECE_BYTES = 1 << 20


@dataclass(frozen=True)
class ReaderOptions:
    """Which files to read and which fields of structured records hold id, title and text."""

    include: tuple[str, ...] = DEFAULT_INCLUDE
    exclude: tuple[str, ...] = ()
    id_field: str = "id"
    text_field: str = "text"
    title_field: str = "title"
    #: refuse text that is not UTF-8 (InputRefused) instead of reading it in the detected encoding
    strict: bool = False
    #: JSON Lines / Parquet field of precomputed vectors (``indexers.vectors``); None: none are read
    vectors_field: str | None = None


@dataclass(frozen=True)
class Skipped:
    """An input that was not read, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Decoded:
    """An input that was not UTF-8 and was read in another encoding."""

    path: str
    encoding: str


@dataclass
class ReadReport:
    """What the reader saw: files read, documents produced, inputs skipped or read as non-UTF-8.

    ``log`` False keeps the warnings for the report a worker's part is merged into (``merge``)."""

    files: int = 0
    documents: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    decoded: list[Decoded] = field(default_factory=list)
    log: bool = True

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Skipped(path, reason))
        if self.log:
            logger.warning("skipped %s: %s", path, reason)

    def note_encoding(self, path: str, encoding: str) -> None:
        self.decoded.append(Decoded(path, encoding))
        if self.log:
            logger.warning("read %s as %s (not UTF-8)", path, encoding)

    def merge(self, part: "ReadReport") -> None:
        """Add what a piece's reader (``read_piece``) saw, warning about it here."""
        for skipped in part.skipped:
            self.skip(skipped.path, skipped.reason)
        for decoded in part.decoded:
            self.note_encoding(decoded.path, decoded.encoding)


class SkipInput(TeraragError):
    """Raised inside a reader when a whole file or a record cannot be used."""


class InputRefused(UserError):
    """Strict mode met an input it would otherwise read with a warning (text that is not UTF-8)."""


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    """Glob match on the relative path or the file name, ignoring the case of either."""
    name = rel.rsplit("/", 1)[-1]
    candidates = (rel, name, rel.lower(), name.lower())
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def list_files(inputs: Sequence[str | Path], options: ReaderOptions, report: ReadReport) -> Iterator[tuple[Path, str]]:
    """(path, document id prefix) for every file to read, in a deterministic order."""
    inputs = [Path(p) for p in inputs]
    single_dir = len(inputs) == 1 and inputs[0].is_dir()
    for root in inputs:
        if not root.exists():
            report.skip(str(root), "no such file or directory")
            continue
        if root.is_file():
            yield root, root.name
            continue
        prefix = "" if single_dir else root.resolve().name + "/"
        found = []
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: report.skip(e.filename, f"unreadable: {e.strerror}")):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for filename in filenames:
                if filename.startswith("."):
                    continue
                path = Path(dirpath) / filename
                rel = path.relative_to(root).as_posix()
                if _matches(rel, options.include) and not _matches(rel, options.exclude):
                    found.append((rel, path))
        for rel, path in sorted(found):
            yield path, prefix + rel


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SkipInput(f"unreadable: {exc.strerror or exc}") from exc


def detect_encoding(data: bytes) -> str | None:
    """charset-normalizer's best text encoding for ``data`` (a declared charset, such as an HTML
    ``<meta charset>``, is tried first); None for binary data."""
    from charset_normalizer import from_bytes

    matches = list(from_bytes(data))
    if not matches:
        return None
    best = matches[0]
    tied = {m.encoding for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return next((e for e in PREFERRED_ENCODINGS if e in tied), best.encoding)


def decode_text(data: bytes) -> tuple[str, str]:
    """(text, encoding) of a text file: UTF-8 (a BOM is dropped) or the detected encoding.

    Raises SkipInput for binary data: NUL bytes without a UTF-16/32 byte order mark, or no
    plausible text encoding."""
    for bom, codec in _WIDE_BOMS:
        if data.startswith(bom):
            try:
                return data.decode(codec), codec
            except UnicodeDecodeError as exc:
                raise SkipInput(f"not valid {codec} despite its byte order mark (bad byte at offset {exc.start})") from exc
    if b"\x00" in data[:BINARY_SNIFF_BYTES]:
        raise SkipInput("binary file (contains NUL bytes)")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        refusal = f"binary or unknown encoding (not UTF-8 at byte {exc.start}, no text encoding fits)"
    encoding = detect_encoding(data)
    if encoding is None:
        raise SkipInput(refusal)
    try:
        return data.decode(encoding), encoding
    except UnicodeDecodeError as exc:  # detection samples large inputs; the whole must decode
        raise SkipInput(refusal) from exc


def _text_of(data: bytes, doc_id: str, options: ReaderOptions, report: ReadReport) -> str:
    """The decoded text of a file; a non-UTF-8 one is noted in ``report`` or, if strict, refused."""
    text, encoding = decode_text(data)
    if encoding != "utf-8":
        if options.strict:
            raise InputRefused(f"refusing {doc_id}: it is not UTF-8 (detected {encoding}) and strict mode is on")
        report.note_encoding(doc_id, encoding)
    return text


def _read_text(piece: "Piece", options: ReaderOptions, report: ReadReport) -> Iterator[Document]:
    path, doc_id = Path(piece.path), piece.source
    text = _text_of(_read_bytes(path), doc_id, options, report)
    yield Document(doc_id, text, doc_id, {"format": FORMATS.get(path.suffix.lower(), "text")})


def html_visible_text(html: bytes) -> tuple[str, str]:
    """(title, visible text) of an HTML page: scripts, styles and comments dropped, blocks on lines."""
    title, text, _ = _html_page(html)
    return title, text


def _html_page(html: bytes | str) -> tuple[str, str, Any]:
    """(title, visible text, indexers.html.BlockMap) of a page; an empty input is skipped."""
    from indexers.html import read_html_page

    if not html.strip():
        raise SkipInput("no HTML content (Document is empty)")
    return read_html_page(html)


def _read_html(piece: "Piece", options: ReaderOptions, report: ReadReport) -> Iterator[Document]:
    from indexers.html import HtmlDocument

    doc_id = piece.source
    title, text, blocks = _html_page(_text_of(_read_bytes(Path(piece.path)), doc_id, options, report))
    # Spans refer to the visible text; chunks also get their block paths and spans in the cleaned
    # page (indexers.html.chunk_metadata). The raw page stays reachable through ``source``.
    yield HtmlDocument(doc_id, text, doc_id, {"format": "html", "title": title}, blocks=blocks)


def _record_document(record: Any, doc_id: str, source: str, where: str, options: ReaderOptions,
                     vectors: Any = None) -> Document:
    """The document of a JSON Lines or Parquet record; with ``options.vectors_field``, a
    ``VectorDocument`` carrying the field's vectors (``vectors``: already parsed from Arrow)."""
    if not isinstance(record, dict):
        raise SkipInput(f"{where}: expected a JSON object")
    text = record.get(options.text_field)
    if not isinstance(text, str):
        raise SkipInput(f"{where}: field {options.text_field!r} is missing or not a string")
    record_id = record.get(options.id_field)
    if record_id is not None:
        doc_id = f"{source}#{record_id}"
    metadata = {k: v for k, v in record.items()
                if k not in (options.text_field, options.id_field, options.title_field, options.vectors_field)}
    title = record.get(options.title_field)
    if isinstance(title, str):
        metadata["title"] = title
    if options.vectors_field is None:
        return Document(doc_id, text, source, metadata)
    raw = record.get(options.vectors_field) if vectors is None else vectors
    return VectorDocument(doc_id, text, source, metadata, vectors=parse_vectors(raw, where, options.vectors_field),
                          where=where)


def _jsonl_pieces(path: Path, source: str, ordinal: int, options: ReaderOptions,
                 columns: Sequence[str] | None) -> Iterator["Piece"]:
    """Runs of at most ``PIECE_RECORDS`` lines (about ``PIECE_BYTES``, or one longer line), as bytes."""
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise SkipInput(f"unreadable: {exc.strerror or exc}") from exc
    line, rest = 1, b""
    with handle:
        while True:
            block = handle.read(PIECE_BYTES)
            data, start = rest + block, 0
            if not block:
                if data:
                    yield Piece(str(path), source, "jsonl", ordinal, line, data)
                return
            while (cut := _line_cut(data, start, PIECE_RECORDS)) > 0:
                yield Piece(str(path), source, "jsonl", ordinal, line, data[start:cut])
                line += data.count(b"\n", start, cut)
                start = cut
            rest = data[start:]


def _line_cut(data: bytes, start: int, lines: int) -> int:
    """The end of the ``lines``-th line of ``data`` from ``start``, else of its last whole line; 0
    when no line ends there."""
    end = start
    for _ in range(lines):
        found = data.find(b"\n", end)
        if found < 0:
            break
        end = found + 1
    return end if end > start else 0


def _read_jsonl(piece: "Piece", options: ReaderOptions, report: ReadReport) -> Iterator[Document]:
    for lineno, raw in enumerate(piece.data.split(b"\n"), start=piece.first):
        if not raw.strip():
            continue
        where = f"{piece.source}:{lineno}"
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            yield _record_document(json.loads(line), f"{piece.source}#L{lineno}", piece.source, where, options)
        except UnicodeDecodeError as exc:
            report.skip(where, f"not valid UTF-8 (bad byte at offset {exc.start}); JSON Lines must be UTF-8")
        except json.JSONDecodeError as exc:
            report.skip(where, f"malformed JSON ({exc.msg})")
        except SkipInput as exc:
            report.skip(where, str(exc).split(": ", 1)[-1])


def _parquet_pieces(path: Path, source: str, ordinal: int, options: ReaderOptions,
                    columns: Sequence[str] | None) -> Iterator["Piece"]:
    """Batches of ``PIECE_RECORDS`` rows, decoded by Arrow (``columns``: only these)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise SkipInput(f"not a readable Parquet file ({exc})") from exc
    names = parquet.schema_arrow.names
    if options.text_field not in names:
        raise SkipInput(f"no column {options.text_field!r} (columns: {', '.join(names)})")
    if options.vectors_field is not None and options.vectors_field not in names:
        raise VectorError(f"{source}: no column {options.vectors_field!r} of precomputed vectors "
                          f"(columns: {', '.join(names)})")
    row = 1
    for batch in parquet.iter_batches(batch_size=PIECE_RECORDS, columns=columns):
        yield Piece(str(path), source, "parquet", ordinal, row, batch)
        row += batch.num_rows


def _read_parquet(piece: "Piece", options: ReaderOptions, report: ReadReport) -> Iterator[Document]:
    batch, field = piece.data, options.vectors_field
    vectors: list[Any] = [None] * batch.num_rows
    if field is not None:  # straight from Arrow to numpy, not through Python lists
        vectors = arrow_vector_rows(batch.column(field))
        batch = batch.drop_columns([field])
    for row, (record, vector) in enumerate(zip(batch.to_pylist(), vectors), start=piece.first):
        where = f"{piece.source} row {row}"
        try:
            yield _record_document(record, f"{piece.source}#R{row}", piece.source, where, options, vector)
        except SkipInput as exc:
            report.skip(where, str(exc).split(": ", 1)[-1])


@dataclass(frozen=True)
class Piece:
    """A part of one input file that a worker reads on its own (``read_piece``): a whole text,
    Markdown or HTML file (``data`` None), a run of JSON Lines (their bytes, the first is line
    ``first``) or a batch of Parquet rows (an Arrow record batch, the first is row ``first``).
    ``source`` is the file's document id (prefix); ``file`` its position in the input."""

    path: str
    source: str
    kind: str
    file: int
    first: int = 1
    data: Any = None

    @property
    def weight(self) -> tuple[int, int]:
        """(records, bytes) of the piece, about (a whole file counts as one record)."""
        if self.kind == "jsonl":
            return self.data.count(b"\n") + 1, len(self.data)
        if self.kind == "parquet":
            return self.data.num_rows, self.data.nbytes
        return 1, _file_size(self.path)


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _file_piece(path: Path, source: str, ordinal: int, options: ReaderOptions,
                columns: Sequence[str] | None) -> Iterator[Piece]:
    yield Piece(str(path), source, FORMATS.get(path.suffix.lower(), "text"), ordinal)


_PIECES = {"jsonl": _jsonl_pieces, "parquet": _parquet_pieces}
_READERS = {"text": _read_text, "markdown": _read_text, "html": _read_html,
            "jsonl": _read_jsonl, "parquet": _read_parquet}


def iter_pieces(inputs: Sequence[str | Path], options: ReaderOptions, report: ReadReport,
                columns: Sequence[str] | None = None) -> Iterator[Piece]:
    """The pieces of ``inputs`` in input order (files walked as ``list_files`` does); ``columns``
    projects Parquet batches. Reads only what the pieces hold: the bytes of JSON Lines, the
    decoded Arrow batches of Parquet files, nothing of other files."""
    for ordinal, (path, doc_id) in enumerate(list_files(inputs, options, report)):
        report.files += 1
        try:
            yield from _PIECES.get(FORMATS.get(path.suffix.lower(), "text"), _file_piece)(
                path, doc_id, ordinal, options, columns)
        except SkipInput as exc:
            report.skip(doc_id, str(exc))


def read_piece(piece: Piece, options: ReaderOptions) -> tuple[list[Document], ReadReport]:
    """The non-empty documents of ``piece`` and what was skipped or decoded on the way (a report
    that does not log: ``ReadReport.merge`` it where the build reports)."""
    report = ReadReport(log=False)
    documents = []
    try:
        for document in _READERS[piece.kind](piece, options, report):
            if document.text.strip():
                documents.append(document)
            else:
                report.skip(document.id, "empty document")
    except SkipInput as exc:
        report.skip(piece.source, str(exc))
    return documents, report


class SeenIds:
    """The document ids read so far, as 128-bit hashes (Python's string hash of the id and of the
    id with a NUL appended: 16 bytes an id rather than a Python string, so 10^7 ids take 160 MB),
    in runs sorted by the first hash whose sizes at least double from one run to the next. Two ids
    whose first hashes agree are told apart by the second, unless a duplicate hides behind such a
    pair (then it is kept: nothing is lost). The hashes are this process's, never stored."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []  # (first hashes sorted, second hashes)

    def first_seen(self, ids: Sequence[str]) -> np.ndarray:
        """Which of ``ids`` (bool [n]) were not seen before, nor earlier in ``ids``; all are remembered."""
        hi = np.fromiter(map(hash, ids), dtype=np.int64, count=len(ids))
        lo = np.fromiter((hash(i + "\0") for i in ids), dtype=np.int64, count=len(ids))
        order = np.lexsort((np.arange(len(ids)), lo, hi))
        hi, lo = hi[order], lo[order]  # sorted: searches below walk the runs once
        fresh = np.ones(len(ids), dtype=bool)
        fresh[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
        for run_hi, run_lo in self.runs:
            at = np.minimum(np.searchsorted(run_hi, hi), len(run_hi) - 1)
            fresh &= (run_hi[at] != hi) | (run_lo[at] != lo)
        self._remember(hi[fresh], lo[fresh])
        first = np.zeros(len(ids), dtype=bool)
        first[order] = fresh
        return first

    def _remember(self, hi: np.ndarray, lo: np.ndarray) -> None:
        if len(hi):
            self.runs.append((hi, lo))
        while self.runs and (len(self.runs) == 1 or len(self.runs[-2][0]) < 2 * len(self.runs[-1][0])):
            last_hi, last_lo = self.runs.pop()
            if self.runs:
                before_hi, before_lo = self.runs.pop()
                last_hi, last_lo = np.concatenate([before_hi, last_hi]), np.concatenate([before_lo, last_lo])
            order = np.argsort(last_hi, kind="stable")
            self.runs.append((last_hi[order], last_lo[order]))
            if len(self.runs) == 1:
                break


def unique_documents(documents: Sequence[Document], seen: SeenIds, report: ReadReport) -> list[Document]:
    """``documents`` whose id is not in ``seen`` (which collects them); the others are skipped."""
    fresh = seen.first_seen([d.id for d in documents])
    for document in (d for d, new in zip(documents, fresh) if not new):
        report.skip(document.id, "duplicate document id")
    report.documents += int(fresh.sum())
    return [d for d, new in zip(documents, fresh) if new]


def iter_documents(inputs: Sequence[str | Path], options: ReaderOptions | None = None,
                   report: ReadReport | None = None) -> Iterator[Document]:
    """Stream the documents of ``inputs`` (files or folders, walked recursively, sorted)."""
    options = options or ReaderOptions()
    report = report if report is not None else ReadReport()
    seen = SeenIds()
    for piece in iter_pieces(inputs, options, report):
        documents, read = read_piece(piece, options)
        report.merge(read)
        yield from unique_documents(documents, seen, report)
