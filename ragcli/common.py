"""Shared helpers of the CLI commands: clean errors, console output."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable

import click
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from datastores.errors import DatastoreError
from indexers.config import ConfigError
from indexers.embedding import EmbedderError
from rag.generate.openai_client import OpenAIError

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True)

USER_ERRORS = (DatastoreError, ConfigError, EmbedderError, ValueError, FileNotFoundError, OpenAIError)


def console_handler() -> logging.Handler:
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn expected failures (bad input, missing or corrupt datastore) into one-line errors."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


def snippet(text: str, width: int = 100) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def key_value_table(title: str, rows: list[tuple[str, str]]) -> Table:
    """A two-column table of labelled values, for summaries."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table
