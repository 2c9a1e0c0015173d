"""One exception root, and how the command line reports failures (issue 14, point 7): user errors
in one line, bugs with their traceback and a bug-report hint, secrets redacted in both."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest
from click.testing import CliRunner

import ragcli.info
from datastores.errors import DatastoreError, TeraragError, UserError
from ragcli import main
from ragcli.errors import bug_report_hint, redact

PACKAGES = ["datastores", "indexers", "rag", "evaluators", "ragcli"]
KEY = "sk-terarag-errors-test-SECRET-7f3a"


def _project_modules():
    for package in PACKAGES:
        root = importlib.import_module(package)
        yield root
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if not info.name.endswith("__main__"):  # running it would run the command line
                yield importlib.import_module(info.name)


def test_every_project_exception_derives_from_the_root():
    defined = {obj for module in _project_modules() for obj in vars(module).values()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == module.__name__}
    assert len(defined) >= 20  # the walk found the project's exceptions
    assert sorted(c.__qualname__ for c in defined if not issubclass(c, TeraragError)) == []
    user_facing = {"DatastoreError", "ConfigError", "EmbedderError", "OpenAIError", "EngineError", "SqlError"}
    assert user_facing <= {c.__name__ for c in defined if issubclass(c, UserError)}
    assert issubclass(UserError, ValueError) and not issubclass(TeraragError, ValueError)


def _info_failing(monkeypatch, exc: BaseException, tmp_path):
    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(ragcli.info.Datastore, "open", fail)
    return CliRunner().invoke(main, ["info", str(tmp_path)])


@pytest.mark.parametrize("exc, message", [
    (UserError("the chunk size must be positive (got -3)"), "Error: the chunk size must be positive (got -3)"),
    (DatastoreError("no datastore at /x: the directory does not exist"), "Error: no datastore at /x"),
    (PermissionError(13, "Permission denied", "/x/manifest.json"), "Error: [Errno 13] Permission denied: '/x/manifest.json'"),
])
def test_a_user_error_prints_one_line(monkeypatch, tmp_path, exc, message):
    result = _info_failing(monkeypatch, exc, tmp_path)
    assert result.exit_code == 1
    assert result.output.strip().startswith(message)
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("exc", [ZeroDivisionError("division by zero"), ValueError("an internal invariant broke"),
                                 KeyError("row")])
def test_an_internal_bug_prints_its_traceback_and_a_bug_report_hint(monkeypatch, tmp_path, exc):
    result = _info_failing(monkeypatch, exc, tmp_path)
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert f"{type(exc).__name__}: " in result.stderr and "in fail" in result.stderr  # where it was raised
    assert result.stderr.strip().splitlines()[-1] == bug_report_hint()
    assert "Error: " not in result.output.splitlines()[0]  # not dressed up as a user error


def test_a_bug_in_a_subgroup_command_is_reported_too(monkeypatch, tmp_path):
    import ragcli.datastore

    def fail(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(ragcli.datastore, "verify_datastore", fail)
    result = CliRunner().invoke(ragcli.datastore.datastore_group, ["verify", str(tmp_path)])
    assert result.exit_code == 1
    assert "ZeroDivisionError: division by zero" in result.stderr and bug_report_hint() in result.stderr


def test_secrets_never_reach_a_traceback_or_an_error_line(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    leak = f"request to https://alice:hunter2pw@example.test/v1 with Bearer {KEY[:10]}x failed ({KEY})"
    bug = _info_failing(monkeypatch, RuntimeError(leak), tmp_path)
    assert "Traceback" in bug.stderr and "example.test" in bug.stderr
    user = _info_failing(monkeypatch, UserError(leak), tmp_path)
    for result in (bug, user):
        assert result.exit_code == 1
        assert KEY not in result.output and "hunter2pw" not in result.output and KEY[:10] not in result.output
        assert "https://***@example.test/v1" in result.output


def test_redact_keeps_ordinary_text():
    text = "no datastore at /data/keys/ds: the directory does not exist"
    assert redact(text) == text


def test_usage_errors_and_interrupts_keep_click_behaviour(monkeypatch, tmp_path):
    usage = CliRunner().invoke(main, ["search"])
    assert usage.exit_code == 2 and "Missing argument" in usage.output and "Traceback" not in usage.output
    interrupted = _info_failing(monkeypatch, KeyboardInterrupt(), tmp_path)
    assert interrupted.exit_code == 1 and "Aborted!" in interrupted.output
    assert "Traceback" not in interrupted.output
