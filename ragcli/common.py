"""Shared helpers of the CLI commands: console output."""

from __future__ import annotations

import logging

from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

stdout = Console(soft_wrap=False)
stderr = Console(stderr=True)


def console_handler() -> logging.Handler:
    handler = RichHandler(console=stderr, show_time=False, show_path=False, markup=False)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


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
