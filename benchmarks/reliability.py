"""Reliability suites in one table: SQL attacks, kill points, corruption, concurrency, bad input.

Runs the real test cases of each suite (pytest, in this process) and prints one row per case family:
what is expected, what was observed (how many of its cases held, or the first failure), pass/fail,
then the counts. The cases are the ones `make test` runs; this script groups and reports them.

    python benchmarks/reliability.py              # table on stdout
    python benchmarks/reliability.py --markdown   # the same as a Markdown table (docs/benchmarks.md)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, git_state  # noqa: E402

SUITES = {
    "SQL attacks": ["tests/test_sql_sealed.py"],
    "kill points": ["tests/test_kill_points.py", "tests/test_resume.py"],
    "corruption": ["tests/test_integrity.py"],
    "concurrency": ["tests/test_writer_lock.py", "tests/test_live_readers.py"],
    "bad input": ["tests/test_bad_input.py"],
    "HTTP service": ["tests/test_serve_http.py"],
}


@dataclass
class Family:
    """The cases of one test function (all its parameters)."""

    suite: str
    name: str
    expected: str
    outcomes: list[str] = field(default_factory=list)
    first_failure: str = ""

    @property
    def passed(self) -> int:
        return self.outcomes.count("passed")

    @property
    def ok(self) -> bool:
        return bool(self.outcomes) and self.passed == len(self.outcomes)

    def observed(self) -> str:
        if self.ok:
            return f"{self.passed}/{len(self.outcomes)} cases held"
        return f"{self.passed}/{len(self.outcomes)} held; {self.first_failure}"[:160]


class Collector:
    """A pytest plugin that files each case's outcome under its suite and test function."""

    def __init__(self, suite_of: dict[str, str]):
        self.suite_of = suite_of
        self.families: dict[str, Family] = {}
        self.docs: dict[str, str] = {}

    def pytest_collection_modifyitems(self, items) -> None:
        for item in items:
            doc = (getattr(item, "function", None).__doc__ or "").strip()
            self.docs[self._key(item.nodeid)] = " ".join(doc.split("\n\n")[0].split()) if doc else ""

    def pytest_runtest_logreport(self, report) -> None:
        if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
            key = self._key(report.nodeid)
            family = self.families.get(key)
            if family is None:
                path, name = key.split("::", 1)
                expected = self.docs.get(key) or name.removeprefix("test_").replace("_", " ")
                family = self.families[key] = Family(self.suite_of.get(path, "?"), name, expected)
            family.outcomes.append(report.outcome)
            if report.outcome != "passed" and not family.first_failure:
                family.first_failure = _first_line(report)

    @staticmethod
    def _key(nodeid: str) -> str:
        return nodeid.split("[", 1)[0]


def _first_line(report) -> str:
    text = str(report.longrepr) if report.longrepr else report.outcome
    if report.skipped and isinstance(report.longrepr, tuple):
        text = f"skipped: {report.longrepr[2]}"
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("E ")]
    return (lines[0][2:].strip() if lines else text.strip().splitlines()[-1]).strip()


def run(suites: dict[str, list[str]]) -> list[Family]:
    """Run every suite's test files once; the case families in suite order."""
    files = [f for paths in suites.values() for f in paths if (REPO / f).is_file()]
    collector = Collector({f: suite for suite, paths in suites.items() for f in paths})
    pytest.main([*files, "-q", "-p", "no:cacheprovider", "--no-header", "-rN", "--tb=line"], plugins=[collector])
    order = list(suites)
    return sorted(collector.families.values(), key=lambda f: order.index(f.suite) if f.suite in order else 99)


def print_table(families: list[Family], seconds: float, markdown: bool) -> None:
    cases = sum(len(f.outcomes) for f in families)
    held = sum(f.passed for f in families)
    summary = (f"{held} of {cases} cases held, {cases - held} failed, in {len(families)} families; "
               f"{seconds:.0f} s; commit {git_state()['commit']}")
    if markdown:
        print("| suite | case | expected | observed | result |\n|---|---|---|---|---|")
        for f in families:
            print(f"| {f.suite} | `{f.name}` | {f.expected} | {f.observed()} | {'pass' if f.ok else 'FAIL'} |")
        print(f"\n{summary}")
        return
    table = Table(title="reliability suites", title_justify="left")
    for column in ("suite", "case", "expected", "observed", "result"):
        table.add_column(column, overflow="fold")
    for f in families:
        table.add_row(f.suite, f.name, f.expected, f.observed(), "pass" if f.ok else "[red]FAIL[/red]")
    console = Console(width=200)
    console.print(table)
    console.print(summary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--suite", action="append", choices=list(SUITES), help="run only these suites")
    args = parser.parse_args()
    suites = {name: SUITES[name] for name in (args.suite or SUITES)}
    start = time.perf_counter()
    families = run(suites)
    print_table(families, time.perf_counter() - start, args.markdown)
    return 0 if families and all(f.ok for f in families) else 1


if __name__ == "__main__":
    raise SystemExit(main())
