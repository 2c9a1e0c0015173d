"""Readers: folders and files of .txt/.md/.jsonl/.parquet/.html become Documents; bad inputs are
skipped with one warning each and never stop a read; text that is not UTF-8 is read in its detected
encoding with one warning (tests/test_bad_input.py covers encodings in depth)."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from indexers.readers import Decoded, ReaderOptions, ReadReport, html_visible_text, iter_documents

LOGGER = "terarag.readers"


def read(inputs, options=None):
    report = ReadReport()
    docs = list(iter_documents(inputs, options, report))
    return docs, report


def reasons(report: ReadReport) -> dict[str, str]:
    out = {}
    for skipped in report.skipped:
        assert skipped.path not in out, f"{skipped.path} skipped twice"
        out[skipped.path] = skipped.reason
    return out


def write_jsonl(path: Path, lines: list) -> None:
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines) + "\n",
                    encoding="utf-8")


PAGE = b"""<!DOCTYPE html>
<html><head><title>  The   Page </title>
<style>body { color: red; }</style>
<script>var secret = "SCRIPT-TEXT";</script>
</head>
<body>
<!-- COMMENT-TEXT -->
<h1>Heading</h1>
<p>Hello <b>bold</b> &amp; world.</p>
<noscript>NOSCRIPT-TEXT</noscript>
<table><tr><th>Name</th><th>Age</th></tr><tr><td>Ada</td><td>36</td></tr></table>
<script type="text/javascript">document.write("MORE-SCRIPT")</script>
<p>After<br>break</p>
</body></html>
"""


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A folder with every supported format and every kind of unusable input."""
    root = tmp_path / "corpus"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("Alpha text.\n", encoding="utf-8")
    (root / "b.md").write_text("# Bee\n\nMarkdown body.", encoding="utf-8")
    (root / "sub" / "c.txt").write_text("Nested text.", encoding="utf-8")
    (root / "sub" / "deeper" / "d.md").write_text("Deeper markdown.", encoding="utf-8")
    write_jsonl(root / "records.jsonl", [
        {"id": "r1", "text": "First record.", "title": "One", "lang": "en"},
        '{"id": "broken", "text": ',                     # malformed JSON (line 2)
        {"id": "r3", "title": "no text"},                 # no text field (line 3)
        {"text": "Record without id."},                   # id from the line number (line 4)
        {"id": 5, "text": "Integer id."},                 # line 5
    ])
    pq.write_table(pa.table({"id": ["p1", None], "text": ["Parquet one.", "Parquet two."],
                             "lang": ["en", "de"]}), root / "table.parquet")
    (root / "page.html").write_bytes(PAGE)
    (root / "binary.txt").write_bytes(b"GIF89a\x00\x01\x02\x00\xff" * 10)
    (root / "latin1.txt").write_bytes("caf\u00e9 cr\u00e8me".encode("latin-1"))
    (root / "empty.txt").write_bytes(b"")
    (root / "blank.md").write_bytes(b"  \n\t\r\n   ")
    (root / "bom.txt").write_bytes("\ufeffByte order mark.".encode("utf-8"))
    os.symlink(root / "missing-target.txt", root / "dangling.txt")
    (root / ".hidden.txt").write_text("hidden", encoding="utf-8")
    (root / ".git").mkdir()
    (root / ".git" / "config.txt").write_text("hidden dir", encoding="utf-8")
    (root / "notes.rst").write_text("not an included format", encoding="utf-8")
    return root


EXPECTED_IDS = [
    "a.txt", "b.md", "bom.txt", "latin1.txt", "page.html",
    "records.jsonl#r1", "records.jsonl#L4", "records.jsonl#5",
    "sub/c.txt", "sub/deeper/d.md",
    "table.parquet#p1", "table.parquet#R2",
]


def test_folder_reads_every_format_in_sorted_order(corpus):
    docs, report = read([corpus])
    assert [d.id for d in docs] == EXPECTED_IDS
    by_id = {d.id: d for d in docs}
    assert by_id["a.txt"].text == "Alpha text.\n"
    assert by_id["a.txt"].source == "a.txt"
    assert by_id["a.txt"].metadata == {"format": "text"}
    assert by_id["b.md"].metadata == {"format": "markdown"}
    assert by_id["b.md"].text == "# Bee\n\nMarkdown body."
    assert by_id["sub/deeper/d.md"].text == "Deeper markdown."
    assert by_id["latin1.txt"].text == "caf\u00e9 cr\u00e8me"  # latin-1 bytes, read as cp1252
    assert report.decoded == [Decoded("latin1.txt", "cp1252")]
    assert report.documents == len(docs)
    # every regular, included, non-hidden file is counted once (dangling link included)
    assert report.files == 13


def test_unusable_inputs_are_skipped_with_reasons(corpus):
    _, report = read([corpus])
    why = reasons(report)
    assert set(why) == {
        "binary.txt", "empty.txt", "blank.md", "dangling.txt",
        "records.jsonl:2", "records.jsonl:3",
    }
    assert "binary" in why["binary.txt"] and "NUL" in why["binary.txt"]
    assert why["empty.txt"] == "empty document"
    assert why["blank.md"] == "empty document"
    assert why["dangling.txt"].startswith("unreadable")
    assert "malformed JSON" in why["records.jsonl:2"]
    assert "'text'" in why["records.jsonl:3"] and "missing" in why["records.jsonl:3"]


def test_each_skip_is_logged_exactly_once(corpus, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    _, report = read([corpus])
    records = [r for r in caplog.records if r.name == LOGGER]
    assert all(r.levelno == logging.WARNING for r in records)
    messages = [r.getMessage() for r in records]
    assert len([m for m in messages if m.startswith("skipped ")]) == len(report.skipped) == 6
    assert [m for m in messages if not m.startswith("skipped ")] == ["read latin1.txt as cp1252 (not UTF-8)"]
    for skipped in report.skipped:
        hits = [m for m in messages if m.startswith(f"skipped {skipped.path}: ")]
        assert len(hits) == 1, (skipped, messages)
        assert skipped.reason in hits[0]


def test_hidden_and_not_included_files_are_ignored_silently(corpus, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    docs, report = read([corpus])
    ids = {d.id for d in docs}
    assert not any("hidden" in i or ".git" in i or "notes" in i for i in ids)
    assert not any("hidden" in s.path or ".git" in s.path or "notes" in s.path for s in report.skipped)
    assert not any("notes.rst" in r.getMessage() for r in caplog.records)


def test_utf8_bom_is_stripped(corpus):
    docs, _ = read([corpus / "bom.txt"])
    assert [d.text for d in docs] == ["Byte order mark."]


def test_order_and_ids_do_not_depend_on_creation_order(tmp_path):
    names = ["z.txt", "a.txt", "m/b.txt", "B.txt", "m/a.md", "a-b.txt", "a/c.txt"]
    for folder, order in (("one", names), ("two", list(reversed(names)))):
        for name in order:
            path = tmp_path / folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"text of {name}", encoding="utf-8")
    first = [d.id for d in iter_documents([tmp_path / "one"])]
    second = [d.id for d in iter_documents([tmp_path / "two"])]
    again = [d.id for d in iter_documents([tmp_path / "one"])]
    assert first == second == again
    assert first == sorted(names)
    assert first == ["B.txt", "a-b.txt", "a.txt", "a/c.txt", "m/a.md", "m/b.txt", "z.txt"]


def test_ids_of_files_and_of_several_folders(tmp_path):
    for folder in ("left", "right"):
        (tmp_path / folder / "x").mkdir(parents=True)
        (tmp_path / folder / "x" / "doc.txt").write_text(f"{folder} doc", encoding="utf-8")
    single = tmp_path / "single.md"
    single.write_text("single file", encoding="utf-8")
    docs, report = read([tmp_path / "right", single, tmp_path / "left"])
    # inputs keep their given order; folders are prefixed with their name; files use their name
    assert [d.id for d in docs] == ["right/x/doc.txt", "single.md", "left/x/doc.txt"]
    assert [d.text for d in docs] == ["right doc", "single file", "left doc"]
    assert report.skipped == []


def test_an_explicit_file_is_read_whatever_its_extension(tmp_path):
    path = tmp_path / "notes.rst"
    path.write_text("Plain words.", encoding="utf-8")
    docs, _ = read([path])
    assert [(d.id, d.text, d.metadata["format"]) for d in docs] == [("notes.rst", "Plain words.", "text")]


def test_nonexistent_input_is_skipped_and_others_are_read(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    good = tmp_path / "good.txt"
    good.write_text("good", encoding="utf-8")
    missing = tmp_path / "no" / "such.txt"
    docs, report = read([missing, good])
    assert [d.id for d in docs] == ["good.txt"]
    assert reasons(report) == {str(missing): "no such file or directory"}
    assert sum(str(missing) in r.getMessage() for r in caplog.records) == 1


def test_duplicate_ids_are_skipped(tmp_path):
    write_jsonl(tmp_path / "d.jsonl", [{"id": "x", "text": "first"}, {"id": "x", "text": "second"},
                                       {"id": "y", "text": "third"}])
    (tmp_path / "a.txt").write_text("a", encoding="utf-8")
    docs, report = read([tmp_path / "d.jsonl", tmp_path / "a.txt", tmp_path / "a.txt"])
    assert [(d.id, d.text) for d in docs] == [("d.jsonl#x", "first"), ("d.jsonl#y", "third"), ("a.txt", "a")]
    assert [(s.path, s.reason) for s in report.skipped] == [
        ("d.jsonl#x", "duplicate document id"), ("a.txt", "duplicate document id")]


def test_unreadable_entries_are_skipped_deterministically(tmp_path):
    for name in ("gone.txt", "gone.jsonl", "gone.html", "gone.parquet"):
        os.symlink(tmp_path / "nowhere" / name, tmp_path / name)
    (tmp_path / "ok.txt").write_text("still read", encoding="utf-8")
    docs, report = read([tmp_path])
    assert [d.id for d in docs] == ["ok.txt"]
    why = reasons(report)
    assert set(why) == {"gone.txt", "gone.jsonl", "gone.html", "gone.parquet"}
    for name in ("gone.txt", "gone.jsonl", "gone.html"):
        assert why[name].startswith("unreadable"), why
    assert "Parquet" in why["gone.parquet"]


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root can read files whatever their mode")
def test_file_without_read_permission_is_skipped(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text("secret", encoding="utf-8")
    path.chmod(0)
    try:
        docs, report = read([tmp_path])
    finally:
        path.chmod(0o644)
    assert docs == []
    assert reasons(report)["secret.txt"].startswith("unreadable")


# --- include / exclude -------------------------------------------------------------------------

@pytest.mark.parametrize("include, exclude, expected", [
    (("*.md",), (), ["b.md", "sub/deeper/d.md"]),
    (("*.txt", "*.md"), ("sub/*",), ["a.txt", "b.md", "bom.txt", "latin1.txt"]),
    (("*.txt", "*.md"), ("b.md", "bom.*", "a.txt", "latin1.txt"), ["sub/c.txt", "sub/deeper/d.md"]),
    (("sub/*.txt",), (), ["sub/c.txt"]),
    (("*.md",), ("d.md",), ["b.md"]),
    (("*.rst",), (), ["notes.rst"]),
])
def test_include_and_exclude_globs(corpus, include, exclude, expected):
    docs, report = read([corpus], ReaderOptions(include=include, exclude=exclude))
    assert [d.id for d in docs] == expected
    # excluded or not-included files are not reported as skipped
    assert all(s.path in {"empty.txt", "blank.md", "binary.txt", "latin1.txt", "dangling.txt"}
               for s in report.skipped)


# --- jsonl ------------------------------------------------------------------------------------

def test_jsonl_records_ids_and_metadata(corpus):
    docs, _ = read([corpus / "records.jsonl"])
    assert [(d.id, d.text) for d in docs] == [
        ("records.jsonl#r1", "First record."),
        ("records.jsonl#L4", "Record without id."),
        ("records.jsonl#5", "Integer id."),
    ]
    assert all(d.source == "records.jsonl" for d in docs)
    assert docs[0].metadata == {"title": "One", "lang": "en"}
    assert docs[1].metadata == {}


def test_jsonl_configurable_fields(tmp_path):
    write_jsonl(tmp_path / "custom.jsonl", [
        {"uid": "u1", "body": "Body one.", "id": "ignored", "text": "not the text"},
        {"body": "Body two."},
        {"uid": "u3", "text": "only the default text field"},
    ])
    options = ReaderOptions(id_field="uid", text_field="body", title_field="headline")
    docs, report = read([tmp_path / "custom.jsonl"], options)
    assert [(d.id, d.text) for d in docs] == [("custom.jsonl#u1", "Body one."), ("custom.jsonl#L2", "Body two.")]
    assert docs[0].metadata == {"id": "ignored", "text": "not the text"}
    why = reasons(report)
    assert list(why) == ["custom.jsonl:3"]
    assert "'body'" in why["custom.jsonl:3"]


def test_jsonl_bad_lines_are_skipped_and_the_rest_is_read(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger=LOGGER)
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join([
        "\ufeff".encode() + json.dumps({"id": "a", "text": "with bom"}).encode(),
        b"{not json}",
        b"",
        b"   ",
        json.dumps([1, 2, 3]).encode(),
        b'{"id": "latin", "text": "caf\xe9"}',
        json.dumps({"id": "num", "text": 42}).encode(),
        json.dumps({"id": "blank", "text": "  \n "}).encode(),
        json.dumps({"id": "z", "text": "last line"}).encode(),
    ]))
    docs, report = read([path])
    assert [(d.id, d.text) for d in docs] == [("mixed.jsonl#a", "with bom"), ("mixed.jsonl#z", "last line")]
    why = reasons(report)
    assert set(why) == {"mixed.jsonl:2", "mixed.jsonl:5", "mixed.jsonl:6", "mixed.jsonl:7",
                        "mixed.jsonl#blank"}
    assert why["mixed.jsonl:2"].startswith("malformed JSON")
    assert why["mixed.jsonl:5"] == "expected a JSON object"
    assert "UTF-8" in why["mixed.jsonl:6"]
    assert why["mixed.jsonl:7"] == "field 'text' is missing or not a string"
    assert why["mixed.jsonl#blank"] == "empty document"
    assert report.files == 1 and report.documents == 2
    assert len([r for r in caplog.records if r.name == LOGGER]) == 5


def test_jsonl_title_field_sets_the_title(tmp_path):
    write_jsonl(tmp_path / "t.jsonl", [{"id": "1", "text": "body", "headline": "The Headline"}])
    docs, _ = read([tmp_path / "t.jsonl"], ReaderOptions(title_field="headline"))
    assert docs[0].metadata.get("title") == "The Headline"


# --- parquet ----------------------------------------------------------------------------------

def test_parquet_rows_become_documents(tmp_path):
    pq.write_table(pa.table({
        "key": ["k1", "k2", None, "k4"],
        "content": ["Row one.", None, "Row three.", "   "],
        "year": [2001, 2002, 2003, 2004],
    }), tmp_path / "rows.parquet")
    options = ReaderOptions(id_field="key", text_field="content")
    docs, report = read([tmp_path], options)
    assert [(d.id, d.text, d.metadata) for d in docs] == [
        ("rows.parquet#k1", "Row one.", {"year": 2001}),
        ("rows.parquet#R3", "Row three.", {"year": 2003}),
    ]
    why = reasons(report)
    assert set(why) == {"rows.parquet row 2", "rows.parquet#k4"}
    assert "'content'" in why["rows.parquet row 2"]
    assert why["rows.parquet#k4"] == "empty document"


def test_parquet_without_text_column_or_corrupt_is_skipped(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "nocol.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"PAR1 this is not parquet")
    docs, report = read([tmp_path])
    assert docs == []
    why = reasons(report)
    assert "no column 'text'" in why["nocol.parquet"] and "body" in why["nocol.parquet"]
    assert "Parquet" in why["corrupt.parquet"]


def test_parquet_larger_than_one_batch(tmp_path):
    n = 2500
    pq.write_table(pa.table({"text": [f"row {i}" for i in range(n)]}), tmp_path / "big.parquet")
    docs, _ = read([tmp_path / "big.parquet"])
    assert len(docs) == n
    assert docs[0].id == "big.parquet#R1" and docs[-1].id == f"big.parquet#R{n}"
    assert docs[-1].text == f"row {n - 1}"


# --- html -------------------------------------------------------------------------------------

def test_html_visible_text_title_and_tables(corpus):
    docs, _ = read([corpus / "page.html"])
    (doc,) = docs
    assert doc.metadata == {"format": "html", "title": "The Page"}
    for hidden in ("SCRIPT-TEXT", "MORE-SCRIPT", "COMMENT-TEXT", "NOSCRIPT-TEXT", "color: red", "The Page"):
        assert hidden not in doc.text
    assert doc.text == "Heading\nHello bold & world.\nName Age\nAda 36\nAfter\nbreak"


def test_malformed_html_does_not_crash(tmp_path):
    (tmp_path / "bad.html").write_bytes(
        b"<html><body><p>Unclosed <b>bold <i>italic<div>block</span></p></td><table><tr><td>cell"
        b"<script>never closed")
    (tmp_path / "frag.htm").write_bytes(b"just text &amp; an <unknown>element")
    (tmp_path / "empty.html").write_bytes(b"")
    (tmp_path / "blank.html").write_bytes(b"  \n ")
    (tmp_path / "nothing.html").write_bytes(b"<html><head><title>T</title></head><body><script>x()</script></body></html>")
    docs, report = read([tmp_path])
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"bad.html", "frag.htm"}
    assert "Unclosed" in by_id["bad.html"].text and "cell" in by_id["bad.html"].text
    assert "never closed" not in by_id["bad.html"].text
    assert by_id["frag.htm"].text == "just text & an element"
    why = reasons(report)
    assert set(why) == {"empty.html", "blank.html", "nothing.html"}
    assert why["empty.html"].startswith("no HTML content")
    assert why["nothing.html"] == "empty document"


def test_html_with_nul_bytes_is_skipped(tmp_path):
    (tmp_path / "bin.html").write_bytes(b"<p>x</p>\x00\x00")
    docs, report = read([tmp_path])
    assert docs == []
    assert "binary" in reasons(report)["bin.html"]


def test_html_entities_whitespace_and_bom():
    title, text = html_visible_text("\ufeff<title>A&nbsp;&amp;\nB</title><p>one\n  two&nbsp;three</p><p>caf\u00e9</p>".encode())
    assert title == "A & B"
    assert text == "one two three\ncaf\u00e9"


def test_html_block_start_separates_words():
    _, text = html_visible_text(b"<div>Intro<p>Para</p></div><ul><li>Item<ul><li>Sub</li></ul></li></ul>")
    assert text.split() == ["Intro", "Para", "Item", "Sub"]


# --- suspected bugs in file listing ---------------------------------------------------------------

def test_upper_case_extensions_are_read(tmp_path):
    (tmp_path / "NOTES.TXT").write_text("upper case name", encoding="utf-8")
    (tmp_path / "Readme.MD").write_text("mixed case", encoding="utf-8")
    docs, report = read([tmp_path])
    assert [d.id for d in docs] == ["NOTES.TXT", "Readme.MD"] or report.skipped


def test_current_directory_among_several_inputs(tmp_path, monkeypatch):
    here = tmp_path / "here"
    other = tmp_path / "other"
    here.mkdir()
    other.mkdir()
    (here / "a.txt").write_text("a", encoding="utf-8")
    (other / "b.txt").write_text("b", encoding="utf-8")
    monkeypatch.chdir(here)
    ids = [d.id for d in iter_documents([".", str(other)])]
    assert ids == ["here/a.txt", "other/b.txt"]


def test_document_counts_match_report(corpus):
    docs, report = read([corpus])
    assert report.documents == len(docs) == len(EXPECTED_IDS)
    assert Counter(d.id for d in docs).most_common(1)[0][1] == 1
