"""HTML cleaning, block trees and HTML documents: structure kept, malformed pages never crash."""

from __future__ import annotations

import json
import random
import time

import lxml.etree
import pytest

from indexers.chunkers import make_chunker
from indexers.html import (BlockMap, HtmlDocument, block_text, build_blocks, clean_html, decode_html, read_html_page,
                           visible_text)
from indexers.readers import iter_documents

from tests.conftest import REPO

PAGES = REPO / "examples" / "html_pages"


def reparse(html: str):
    """The cleaned page parsed again: it must be well-formed enough for lxml's strict XML parser too."""
    return lxml.etree.fromstring(html.replace("<br>", "<br/>").replace("<hr>", "<hr/>"))


# --- cleaning -----------------------------------------------------------------------------------

def test_scripts_styles_comments_attributes_go():
    page = clean_html(b"""<html><head><title>T</title><style>p{color:red}</style><meta charset="utf-8">
        <script>var SECRET = 1;</script></head><body class="x" onload="f()">
        <!-- COMMENT --><div id="a" style="b"><p data-x="1">Kept <a href="http://e">link</a>.</p></div>
        <noscript>NOSCRIPT</noscript><template>TEMPLATE</template><svg><text>SVG</text></svg></body></html>""")
    for gone in ("SECRET", "COMMENT", "color:red", "NOSCRIPT", "TEMPLATE", "SVG", "href", "class", "style",
                 "data-x", "meta", "onload"):
        assert gone not in page.html
    assert page.html == "<html><head><title>T</title></head><body><p>Kept <a>link</a>.</p></body></html>"
    assert page.title == "T"


def test_single_child_chains_merge_but_structure_stays():
    page = clean_html(b"<div><div><section><p>deep</p></section></div></div>"
                      b"<ul><li><div><span>item</span></div></li></ul>")
    assert page.html == "<html><body><p>deep</p><ul><li>item</li></ul></body></html>"


def test_empty_table_cells_keep_their_columns():
    page = clean_html(b"<table><tr><th>Name</th><th>Age</th><th>City</th></tr>"
                      b"<tr><td>Ada</td><td></td><td>London</td></tr>"
                      b"<tr><td></td><td></td><td></td></tr>"
                      b"<tr><td colspan='2' class='x'>wide</td><td>3</td></tr></table>")
    rows = reparse(page.html).findall(".//tr")
    assert len(rows) == 3  # the all-empty row is gone, no cell of the others
    assert [len(r) for r in rows] == [3, 3, 2]
    assert [c.text for c in rows[1]] == ["Ada", None, "London"]
    assert rows[2][0].get("colspan") == "2" and rows[2][0].text == "wide"


def test_line_breaks_and_preformatted_text_survive():
    page = clean_html(b"<p>first line<br>second line</p><pre>def f():\n    return 1\n</pre><p>a<hr>b</p>")
    assert "first line<br>second line" in page.html
    assert "<pre>def f():\n    return 1\n</pre>" in page.html
    text, _ = visible_text(page)
    assert text.splitlines()[:2] == ["first line", "second line"]


def test_spaces_between_inline_elements_are_kept():
    page = clean_html(b"<p><em>class</em><span> </span><b>abc</b> <i>x</i></p><div>a<div></div>b</div>")
    text, _ = visible_text(page)
    assert text.split("\n") == ["class abc x", "a", "b"]


def test_loose_text_beside_blocks_is_wrapped():
    page = clean_html(b"<body>intro text<div><p>one</p><p>two</p></div>tail words</body>")
    assert page.html == "<html><body><p>intro text</p><div><p>one</p><p>two</p></div><p>tail words</p></body></html>"


def test_cleaning_is_idempotent_on_real_pages():
    for path in sorted(PAGES.glob("*.html"))[:6]:
        page = clean_html(path.read_bytes())
        assert clean_html(page.html).html == page.html, path.name
        reparse(page.html)
        assert "<script" not in page.html and "class=" not in page.html


# --- malformed input ----------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"<html><body><p>Unclosed <b>bold <i>italic<div>block</span></p></td><table><tr><td>cell<script>never",
    b"",
    b"   \n\t ",
    b"\x00\x01\x02\xff\xfe junk \x00 <p>text</p> \x1b[31m",
    bytes(random.Random(7).getrandbits(8) for _ in range(5000)),
    b"<?xml version='1.0' encoding='iso-8859-1'?><html><body><p>x</p></body></html>",
    b"</p></div></body></html>",
    b"<html><head></head><body></body></html>",
    b"<<<>>><p<<>>",
    "<p>\ud800 lone surrogate</p>",
    b"<table><td>cell without row<tr>row</table><li>item without list",
    b"<p>a&#1;b&#0;c&#xFFFE; d&#x1F;e &#55296; &#x110000;</p><td colspan=99999999999999999999>c</td>",
    b"<![CDATA[x]]><!-- unclosed comment <p>y",
])
def test_malformed_pages_never_crash(data):
    page = clean_html(data)
    assert page.html.startswith("<html>") and page.html.endswith("</html>")
    reparse(page.html)
    title, text, blocks = read_html_page(data)
    assert isinstance(text, str) and len(blocks.paths) == len(blocks.text_spans)


def test_mutated_real_pages_never_crash():
    """Seeded fuzzing: slices of a real page with random tags, references and bytes spliced in."""
    base = (PAGES / "library_glob.html").read_bytes()
    rng = random.Random(11)
    pieces = [b"<", b">", b"</", b"&#1;", b"&", b"<td>", b"<tr>", b"</table>", b"<pre>", b"\x00", b"\xff", b"\xc3",
              b"<br>", b"<!--", b"<script>", b'"', b"<p", b"<svg>", b"<title>", b"<body>", b"&#x10FFFF;",
              b"<table><td colspan=x>", b'<meta charset="utf-16">']
    for _ in range(25):
        data = bytearray(base[rng.randrange(0, 3000):rng.randrange(3000, len(base))])
        for _ in range(rng.randrange(1, 40)):
            at = rng.randrange(0, len(data) + 1)
            if rng.random() < 0.5:
                data[at:at] = rng.choice(pieces)
            else:
                del data[at:at + rng.randrange(1, 50)]
        page = clean_html(bytes(data))
        reparse(page.html)
        blocks = build_blocks(page, 32)
        text, spans = visible_text(page, blocks)
        assert all(0 <= s <= e <= len(text) for s, e in spans)


def test_wrong_declared_encodings_decode_to_the_right_characters():
    utf8_says_latin1 = '<meta charset="iso-8859-1"><p>café crème</p>'.encode("utf-8")
    latin1_says_utf8 = '<meta charset="utf-8"><p>café crème</p>'.encode("latin-1")
    undeclared_cp1252 = "<p>“quoted” café</p>".encode("cp1252")
    assert read_html_page(utf8_says_latin1)[1] == "café crème"
    assert read_html_page(latin1_says_utf8)[1] == "café crème"
    assert read_html_page(undeclared_cp1252)[1] == "“quoted” café"
    assert read_html_page('<meta charset="shift_jis"><p>日本語</p>'.encode("shift_jis"))[1] == "日本語"
    assert decode_html("\ufeff<p>x</p>".encode("utf-16")) == "<p>x</p>"


def test_deeply_nested_and_multi_megabyte_pages():
    deep = b"<div><span>x</span>" * 2000 + b"<p>bottom</p>" + b"</div>" * 2000  # deeper than Python's recursion limit
    assert read_html_page(deep)[1].split() == ["x"] * 2000 + ["bottom"]
    too_deep = b"<div>" * 20000 + b"<p>bottom</p>" + b"</div>" * 20000  # libxml2 stops at depth 2048
    assert read_html_page(too_deep)[1] == "bottom"  # read again without a depth limit (indexers.html.deep)
    filler = "lorem ipsum dolor sit amet " * 6
    rows = "".join(f"<tr><td>row {i} {filler}</td><td>value {i * 7}</td><td></td></tr>" for i in range(12000))
    big = f"<html><body><h1>Big</h1><table>{rows}</table><p>end marker</p></body></html>".encode()
    assert len(big) > 2_000_000
    started = time.perf_counter()
    page = clean_html(big)
    blocks = build_blocks(page, 256)
    text, spans = visible_text(page, blocks)
    assert time.perf_counter() - started < 60  # generous: a guard against quadratic behaviour only
    assert f"row 11999 {filler}value 83993" in text and text.endswith("end marker")
    assert len(reparse(page.html).findall(".//tr")[-1]) == 3  # the empty last cell is still there
    assert max(b.words for b in blocks) <= 256


@pytest.mark.parametrize("depth", [2047, 2049, 3000, 6000])
def test_pages_deeper_than_libxml2_allows_keep_all_their_text(depth):
    page = (f"<html><head><title>Deep</title></head><body><p>before the tower</p>" + "<div><b>level</b> " * depth
            + "<p>the treaty &amp; the &#8220;bottom&#8221;</p>" + "</div>" * depth + "<p>after the tower</p></body></html>")
    title, text, blocks = read_html_page(page.encode())
    assert title == "Deep"
    words = text.split()
    assert words[:3] == ["before", "the", "tower"] and words[-3:] == ["after", "the", "tower"]
    assert words.count("level") == depth and "the treaty & the \u201cbottom\u201d" in text
    assert len(blocks.paths) >= 3


def test_image_alt_text_is_kept():
    page = clean_html(b'<p>The map <img src="m.png" alt="  Ghent in   1814 "> shows <img src="x.png"> it.</p>'
                      b'<figure><img src="f.png" alt="A treaty signing"><figcaption>Caption</figcaption></figure>')
    assert "Ghent in 1814" in page.html and "src" not in page.html and "<img" not in page.html
    assert clean_html(page.html).html == page.html
    assert read_html_page(page.html)[1] == "The map Ghent in 1814 shows it.\nA treaty signing\nCaption"


@pytest.mark.parametrize("data", [
    b"<p>unclosed <b>bold <table><tr><td>x<td></table><div>treaty of Ghent 1814",
    b"<p>intro <div>inside a paragraph</div> outro</p>",
    b"<h2>Heading <ul><li>listed</li></ul></h2><p><span><section>deep block</section></span></p>",
])
def test_malformed_nesting_leaves_no_block_inside_a_paragraph(data):
    page = clean_html(data)
    tree = reparse(page.html)
    blocks = {"div", "table", "ul", "section", "p", "h2", "li"}
    for p in tree.iter("p", "h2"):
        assert not [d for d in p.iterdescendants() if d.tag in blocks], page.html
    words = lambda text: " ".join(text.split())
    assert words(read_html_page(page.html)[1]).replace(" ", "") == \
        words(" ".join(lxml.etree.fromstring(data, lxml.etree.HTMLParser()).itertext())).replace(" ", "")


# --- blocks ---------------------------------------------------------------------------------------

def test_blocks_respect_max_words_and_point_into_the_page():
    page = clean_html((PAGES / "library_json.html").read_bytes())
    for max_words in (32, 256):
        blocks = build_blocks(page, max_words)
        assert blocks == sorted(blocks, key=lambda b: b.start)
        tree = page.root.getroottree()
        for block, following in zip(blocks, blocks[1:]):
            assert block.end <= following.start  # disjoint, in document order
        for block in blocks:
            assert tree.xpath(block.path) == [block.element]
            assert page.html[block.start:block.end].startswith(f"<{block.tag}")
            assert page.html[block.start:block.end].endswith(f"</{block.tag}>")
            splittable = any(c.tag in ("p", "div", "dl", "dd", "table", "ul", "li", "section", "pre") for c in block.element)
            assert block.words <= max_words or not splittable
        text, spans = visible_text(page, blocks)
        for block, (start, end) in zip(blocks, spans):
            assert " ".join(text[start:end].split()) == block_text(block)
    assert len(build_blocks(page, 32)) > len(build_blocks(page, 256)) > 1


def test_table_cells_are_blocks_whose_removal_empties_them():
    page = clean_html(b"<table><tr><td>" + b"alpha " * 10 + b"</td><td>" + b"beta " * 10 + b"</td></tr></table>")
    blocks = build_blocks(page, 5)
    assert [b.tag for b in blocks] == ["td", "td"]
    cut = blocks[0]
    assert page.html[cut.cut_start - 4:cut.cut_end + 5] == "<td>" + "alpha " * 9 + "alpha</td>"


def test_max_words_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        build_blocks(clean_html(b"<p>x</p>"), 0)


# --- documents and chunks ------------------------------------------------------------------------

def test_reader_yields_html_documents_with_block_maps(tmp_path):
    (tmp_path / "page.html").write_bytes((PAGES / "library_heapq.html").read_bytes())
    (doc,) = list(iter_documents([tmp_path]))
    assert isinstance(doc, HtmlDocument) and isinstance(doc.blocks, BlockMap)
    assert doc.metadata == {"format": "html", "title": "heapq — Heap queue algorithm — Python 3.11.2 documentation"}
    spans = doc.blocks.text_spans
    assert len(spans) > 3 and (spans[:, 1] <= len(doc.text)).all() and (spans[:, 0] <= spans[:, 1]).all()


def test_chunks_of_html_documents_carry_block_paths_and_html_spans(tmp_path):
    data = (PAGES / "library_bisect.html").read_bytes()
    (tmp_path / "bisect.html").write_bytes(data)
    (doc,) = list(iter_documents([tmp_path]))
    page = clean_html(data, main_content=True)  # what the reader indexes
    chunks = make_chunker("recursive", 100).chunk(doc)
    assert len(chunks) > 5
    tree = page.root.getroottree()
    for chunk in chunks:
        meta = chunk.metadata
        assert doc.text[chunk.start:chunk.end] == chunk.text
        assert meta["format"] == "html" and meta["block_paths"]
        assert all(p.startswith(meta["block_path"]) for p in meta["block_paths"])
        assert tree.xpath(meta["block_path"])
        fragment = lxml.etree.fromstring("<x>" + page.html[meta["html_start"]:meta["html_end"]]
                                         .replace("<br>", "<br/>").replace("<hr>", "<hr/>") + "</x>",
                                         lxml.etree.XMLParser(recover=True))
        fragment_words = " ".join("".join(fragment.itertext()).split())
        first_word = chunk.text.split()[0]
        assert first_word in fragment_words, (first_word, fragment_words[:200])
    plain = make_chunker("recursive", 100).chunk(type(doc).__mro__[1](doc.id, doc.text, doc.source, doc.metadata))
    assert "block_path" not in plain[0].metadata  # plain documents are untouched


def test_datastore_chunks_of_html_files_store_block_paths(small_datastore):
    from datastores import Datastore

    ds = Datastore.open(small_datastore)
    rows = ds.sql().execute("SELECT source, metadata FROM chunks").fetchall()
    html_rows = [json.loads(m) for s, m in rows if s.endswith(".html")]
    other = [json.loads(m) for s, m in rows if not s.endswith(".html")]
    assert html_rows and all(m["block_path"].startswith("/html/body") for m in html_rows)
    assert all(m["html_end"] > m["html_start"] for m in html_rows)
    assert other and not any("block_path" in m for m in other)


# --- main content (issue 16, point 4) -----------------------------------------------------------------

def test_main_content_leaves_out_page_furniture_and_keeps_exact_spans():
    data = (PAGES / "library_json.html").read_bytes()
    full = read_html_page(data, main_content=False)[1]
    title, text, blocks = read_html_page(data)
    assert "Table of Contents" in full and "Table of Contents" not in text  # the sidebar is furniture
    assert "Previous topic" not in text and "Navigation" not in text
    assert "exception json.JSONDecodeError(msg, doc, pos)" in text and "Footnotes" in text
    assert title == "json — JSON encoder and decoder — Python 3.11.2 documentation" or title.startswith("json")
    for (start, end), path in zip(blocks.text_spans, blocks.paths):  # exact spans into the visible text
        assert text[start:end].strip() and "/body" in path
    page = clean_html(data, main_content=True)
    assert all(page.html[s:e].startswith("<") for s, e in blocks.html_spans)


def test_main_content_rules_and_the_fallback_to_the_whole_page():
    page = (b"<body><header>Site banner</header><div class='crumbs breadcrumb'>Home / Docs</div>"
            b"<div id='left-sidebar'><ul><li>link one</li></ul></div><p>The real text of the page.</p>"
            b"<aside class='footnote'>A footnote that belongs to the text.</aside><footer>Copyright</footer></body>")
    text = read_html_page(page)[1]
    assert text == "The real text of the page.\nA footnote that belongs to the text."
    only_nav = b"<nav><p>" + b"menu entry " * 50 + b"</p></nav><p>tiny</p>"
    assert "menu entry" in read_html_page(only_nav)[1]  # furniture would be nearly everything: keep the page
    marked = b"<div>sidebar words here</div><div role='main'><p>" + b"main words " * 20 + b"</p></div>"
    assert read_html_page(marked)[1].split() == ["main", "words"] * 20


def test_cached_element_paths_equal_lxml_getpath_on_the_shipped_pages():
    """CleanPage.path builds paths from cached parent paths (linear on deep pages); it must say
    exactly what lxml's getpath says for every element."""
    pages = sorted((REPO / "examples" / "html_pages").glob("*.html"))
    assert pages
    for file in pages:
        page = clean_html(file.read_bytes())
        tree = page.root.getroottree()
        elements = [e for e in page.root.iter() if isinstance(e.tag, str)]
        assert [page.path(e) for e in reversed(elements)] == [tree.getpath(e) for e in reversed(elements)]
