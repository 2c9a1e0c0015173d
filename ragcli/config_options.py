"""Command-line options derived from ``indexers.config.BuildConfig``: one option per setting, declared
once on the dataclass field (help, choices, min, metavar, flag name), so a new setting needs no
edit here."""

from __future__ import annotations

import typing
from typing import Any, Callable

import click

from indexers.config import ConfigOption, config_options

#: prefix of the click parameter names of config options (kept apart from the command's own)
PARAM_PREFIX = "config__"


def _param_name(option: ConfigOption) -> str:
    return PARAM_PREFIX + "__".join(option.path)


def _click_type(option: ConfigOption) -> Any:
    """The click type of an option: its choices, an int range from ``min``, or the field's type."""
    choices = option.metadata.get("choices")
    if choices:
        return click.Choice(list(choices))
    annotation = option.annotation
    arguments = [a for a in typing.get_args(annotation) if a is not type(None)]
    if arguments and typing.get_origin(annotation) is not tuple:
        (annotation,) = arguments
    if annotation is int and "min" in option.metadata:
        return click.IntRange(min=option.metadata["min"])
    return {int: int, float: float}.get(annotation, str)


def click_option(option: ConfigOption) -> Callable[[Callable], Callable]:
    """The click option of one config setting; not given on the command line it is None (or an empty
    tuple for repeatable ones), so the config file's value or the default applies."""
    flag = "--" + option.name
    text = option.metadata.get("help", "")
    if option.annotation is bool:
        return click.option(f"{flag}/--no-{option.name}", _param_name(option), default=None, help=text)
    repeatable = typing.get_origin(option.annotation) is tuple
    return click.option(flag, _param_name(option), type=_click_type(option), multiple=repeatable,
                        metavar=option.metadata.get("metavar"), help=text)


def build_config_options(command: Callable) -> Callable:
    """Decorator: add an option for every ``BuildConfig`` setting to a click command."""
    for option in reversed(config_options()):
        command = click_option(option)(command)
    return command


def config_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the config options out of a command's keyword arguments and return the given ones as a
    nested mapping for ``BuildConfig.replace`` (``{"chunk_size": 100, "bm25": {"k1": 2.0}}``)."""
    overrides: dict[str, Any] = {}
    for option in config_options():
        value = params.pop(_param_name(option))
        if value is None or value == ():
            continue
        target = overrides
        for part in option.path[:-1]:
            target = target.setdefault(part, {})
        target[option.path[-1]] = value
    return overrides
