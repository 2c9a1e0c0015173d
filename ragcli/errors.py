"""How the command line reports a failure: user errors in one line, bugs with their traceback.

A ``UserError`` (bad input, a missing or corrupt datastore, an unusable model or server), an
``OSError`` (a file not found, no permission, a full disk) and click's own usage errors print one
line (``Error: ...``) and exit with 1 (2 for usage errors). Anything else is a bug in terarag: its
traceback is printed with a line asking for a bug report, and the exit code is 1. Everything
printed passes through ``redact`` first, so secrets never reach the terminal or a log.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from importlib import metadata
from typing import Any

import click

from datastores.errors import UserError

#: Failures the user can fix, printed as one line.
USER_ERRORS = (UserError, OSError)
#: Environment variables whose values are secrets (API keys, tokens, passwords).
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
#: Shortest environment value treated as a secret (shorter ones would mask ordinary words).
MIN_SECRET_LENGTH = 6
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")
_BEARER = re.compile(r"(?P<scheme>Bearer\s+)\S+")


def redact(text: str) -> str:
    """``text`` with secret environment values, URL credentials and bearer tokens replaced by ``***``."""
    secrets = sorted((v for k, v in os.environ.items() if SECRET_NAME.search(k) and len(v) >= MIN_SECRET_LENGTH),
                     key=len, reverse=True)
    for value in secrets:
        text = text.replace(value, "***")
    text = _URL_CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _BEARER.sub(r"\g<scheme>***", text)


def bug_report_hint() -> str:
    """The line printed under the traceback of an unexpected error."""
    try:
        version = metadata.version("terarag")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return (f"This is a bug in terarag (version {version}, Python {sys.version.split()[0]}): please report it "
            "with the command you ran and the traceback above.")


def report(exc: Exception) -> click.exceptions.ClickException | click.exceptions.Exit:
    """The click exception that ends the command for ``exc``; prints a bug's traceback first."""
    if isinstance(exc, USER_ERRORS):
        return click.ClickException(redact(str(exc) or type(exc).__name__))
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    click.echo(redact(text.rstrip("\n")), err=True)
    click.echo(bug_report_hint(), err=True)
    return click.exceptions.Exit(1)


class ReportingGroup(click.Group):
    """A click group whose subcommands' failures are reported by ``report``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is reported, bugs with their traceback
            raise report(exc) from exc
