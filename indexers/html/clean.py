"""Robust HTML cleaning in the spirit of HtmlRAG, keeping what the published cleaner loses.

``clean_html(data)`` parses any bytes or text with lxml (unclosed tags, stray control bytes, wrong
declared encodings and megabyte pages are all survivable) and returns a ``CleanPage``: a compact,
valid HTML string plus the cleaned element tree with each element's character span in that string.

Cleaning: scripts, styles, comments, processing instructions and invisible embeds are dropped;
attributes are removed (except ``colspan``/``rowspan`` on table cells); whitespace is collapsed
outside ``<pre>``; elements with no text are removed; single-child chains are merged. Unlike the
HtmlRAG toolkit, empty table cells stay (so columns keep their positions), ``<br>`` and ``<hr>``
stay (so line breaks do not glue words together) and ``<pre>`` keeps its newlines. Loose text
next to block children is wrapped in ``<p>`` so that every piece of text belongs to a block.

``clean_html(data, main_content=True)`` keeps only the page's main content (what ``rag index``
reads; the pruner keeps the full page): a readability-style rule over the parsed tree keeps the
element the page marks as main (``<main>``, ``role="main"``, a single ``<article>``) and drops page
furniture (``nav``/``aside``/``header``/``footer`` elements, navigation/banner/search roles, and
classes or ids such as ``sidebar``, ``related``, ``menu``, ``breadcrumb``, ``toc``); when that
would leave less than a tenth of the page's words, the full page is kept.

Alt text of images is kept as text. Malformed nesting that puts blocks inside a paragraph or an
inline element (``<p>text <b>bold <table>``) is undone: such a container becomes a ``<div>``, so
no ``<p>`` ends up holding a ``<div>`` or ``<table>``.

All tree walks are iterative: a page nested ten thousand levels deep does not hit Python's
recursion limit. libxml2 itself stops at 2,048 levels and drops the rest of the page; such a
page is read again with ``indexers.html.deep.parse_deep``, which has no depth limit.
"""

from __future__ import annotations

import codecs
import html as html_lib
import re
from dataclasses import dataclass, field
from typing import Union

import lxml.etree

#: Dropped with their content (the tail text after them stays).
DROP_TAGS = frozenset({"script", "style", "noscript", "template", "iframe", "object", "embed", "svg",
                       "canvas", "link", "meta", "base", "applet", "frame", "frameset", "param", "source",
                       "track"})
#: Elements that start a new line of visible text (same set the plain-text reader always used).
BLOCK_TAGS = frozenset({"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "section",
                        "article", "pre", "blockquote", "ul", "ol", "dd", "dt", "header", "footer", "td", "th",
                        "caption", "nav", "aside", "main", "figure", "figcaption", "dl", "hr", "form",
                        "html", "body", "thead", "tbody", "tfoot", "address", "details", "summary",
                        "fieldset", "center"})
#: Table and list structure: never merged away, so rows, cells and items keep their positions.
STRUCTURAL_TAGS = frozenset({"table", "thead", "tbody", "tfoot", "tr", "td", "th", "caption", "ul", "ol", "li",
                             "dl", "dt", "dd", "pre", "h1", "h2", "h3", "h4", "h5", "h6", "title", "head",
                             "body", "html"})
#: Containers in which loose text is never wrapped (it would nest blocks where HTML forbids them).
NO_WRAP = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6", "pre", "table", "thead", "tbody", "tfoot",
                     "tr", "ul", "ol", "dl", "html", "title", "head"})
CELL_TAGS = frozenset({"td", "th"})
VOID_TAGS = frozenset({"br", "hr"})
PRESERVE_WS = frozenset({"pre", "textarea", "listing", "plaintext", "xmp"})

_INVALID_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*>", re.I)
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_WS = re.compile(r"\s+")
_TAG_NAME = re.compile(r"^[a-z][a-z0-9-]*$")

Element = lxml.etree._Element
Span = tuple[int, int, int, int]  # start of open tag, end of open tag, start of close tag, end of close tag


@dataclass
class CleanPage:
    """A cleaned page: its HTML, title, the cleaned tree and every element's span in ``html``."""

    html: str
    title: str
    root: Element
    spans: dict[Element, Span] = field(repr=False)
    _steps: dict[Element, str] = field(default_factory=dict, repr=False)
    _paths: dict[Element, str] = field(default_factory=dict, repr=False)

    def path(self, element: Element) -> str:
        """XPath-like location of ``element``, e.g. ``/html/body/div[2]/table`` (lxml's ``getpath``
        form), built from its parent's cached path: one step per element however deep the page."""
        chain = []
        while element is not None and element not in self._paths:
            chain.append(element)
            element = element.getparent()
        prefix = "" if element is None else self._paths[element]
        for item in reversed(chain):
            if item not in self._steps:
                self._cache_steps(item)
            prefix = self._paths[item] = f"{prefix}/{self._steps[item]}"
        return prefix

    def _cache_steps(self, element: Element) -> None:
        """The location step of ``element`` and of all its siblings (``tag`` or ``tag[n]``)."""
        parent = element.getparent()
        siblings = [element] if parent is None else list(parent)
        totals: dict[str, int] = {}
        for sibling in siblings:
            totals[sibling.tag] = totals.get(sibling.tag, 0) + 1
        seen: dict[str, int] = {}
        for sibling in siblings:
            seen[sibling.tag] = seen.get(sibling.tag, 0) + 1
            self._steps[sibling] = sibling.tag if totals[sibling.tag] == 1 else f"{sibling.tag}[{seen[sibling.tag]}]"

    def __post_init__(self) -> None:
        found = self.root.find("body")
        self.body: Element = found if found is not None else self.root


def decode_html(data: Union[bytes, str]) -> str:
    """Text of an HTML page: BOM first, then UTF-8, then the declared charset, then cp1252.

    A page whose ``<meta charset>`` lies (UTF-8 bytes declared as latin-1, or the reverse) still
    decodes to the right characters whenever the bytes are valid UTF-8; bytes valid in no
    candidate encoding become U+FFFD instead of failing. Control characters are removed.
    """
    if isinstance(data, str):
        text = data
    else:
        text = None
        for bom, codec in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                           (codecs.BOM_UTF16_BE, "utf-16")):
            if data.startswith(bom):
                text = data.decode(codec, errors="replace")
                break
        if text is None:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                text = _decode_declared(data)
    text = text.lstrip("\ufeff")
    return _XML_DECL.sub("", _INVALID_CHARS.sub("", text), count=1)


def _decode_declared(data: bytes) -> str:
    match = _CHARSET.search(data[:8192])
    if match:
        name = match.group(1).decode("ascii", "replace")
        try:
            return data.decode(codecs.lookup(name).name)
        except (LookupError, UnicodeDecodeError):
            pass
    return data.decode("cp1252", errors="replace")


def parse_html(data: Union[bytes, str]) -> Element:
    """An lxml ``<html>`` tree of any input; an empty or tag-less input gives an empty page."""
    text = decode_html(data)
    parser = lxml.etree.HTMLParser(remove_comments=True, remove_pis=True, huge_tree=True, no_network=True,
                                  recover=True, default_doctype=False)
    try:
        root = lxml.etree.fromstring(text, parser=parser) if text.strip() else None
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        root = None
    if any("excessive depth" in e.message.lower() for e in parser.error_log):
        from indexers.html.deep import parse_deep

        root = parse_deep(text)
    if root is None or not isinstance(root.tag, str):
        root = lxml.etree.Element("html")
    for element in root.iter():  # character references such as &#1; parse to characters lxml refuses
        if element.text and _INVALID_CHARS.search(element.text):
            element.text = _INVALID_CHARS.sub("\ufffd", element.text)
        if element.tail and _INVALID_CHARS.search(element.tail):
            element.tail = _INVALID_CHARS.sub("\ufffd", element.tail)
    if root.tag != "html":  # a fragment parsed to a single element: give it the usual frame
        html = lxml.etree.Element("html")
        lxml.etree.SubElement(html, "body").append(root)
        root = html
    return root


def drop_tree(element: Element) -> None:
    """Remove ``element`` and its content; the text after it (its tail) stays in place."""
    parent = element.getparent()
    if parent is None:
        return
    if element.tail:
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def text_content(element: Element) -> str:
    """All text inside ``element`` (not its tail)."""
    return "".join(element.itertext())


def _blank(text: str | None) -> bool:
    return not text or text.isspace()


def _is_block(element: Element) -> bool:
    return element.tag in BLOCK_TAGS


def _drop_junk(root: Element) -> str:
    """Remove invisible content and attributes; keep one ``<head><title>``; return the title."""
    lxml.etree.strip_elements(root, lxml.etree.Comment, lxml.etree.ProcessingInstruction, lxml.etree.Entity,
                              with_tail=False)
    titles = root.findall(".//title")
    title = " ".join(text_content(titles[0]).split()) if titles else ""
    for element in list(root.iter()):
        tag = element.tag
        if tag in DROP_TAGS or tag in ("title", "head"):
            drop_tree(element)
            continue
        if not _TAG_NAME.match(tag):  # "o:p", "p<<" and other names a broken page can produce
            element.tag = "span"
        if tag == "img":  # an image becomes its alt text (one without alt text holds nothing and goes)
            alt = " ".join(element.get("alt", "").split())
            element.tail = f" {alt} {element.tail or ''}" if alt else element.tail
            drop_tree(element)
            continue
        span = {k: v for k, v in element.attrib.items()
                if tag in CELL_TAGS and k in ("colspan", "rowspan") and v.strip().isdigit() and int(v) > 1}
        element.attrib.clear()
        for k, v in span.items():
            element.set(k, str(int(v)))
    if title:
        head = lxml.etree.Element("head")
        lxml.etree.SubElement(head, "title").text = title
        root.insert(0, head)
    return title


#: Elements that may hold only inline content: a block inside one is malformed nesting.
PHRASING_ONLY = frozenset({"p", "h1", "h2", "h3", "h4", "h5", "h6"})


def _unnest_blocks(root: Element) -> None:
    """Turn paragraphs, headings and inline elements that hold block children into ``<div>``
    (bottom-up, so ``<p><b><table>`` is undone at every level)."""
    for element in reversed(list(root.iter())):
        if element.tag in ("html", "body", "head") or (_is_block(element) and element.tag not in PHRASING_ONLY):
            continue
        if any(_is_block(c) and c.tag not in VOID_TAGS for c in element):
            element.tag = "div"


BOILERPLATE_TAGS = frozenset({"nav", "aside", "header", "footer"})
BOILERPLATE_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search"})
BOILERPLATE_WORDS = frozenset({"sidebar", "sphinxsidebar", "related", "footer", "navbar", "nav", "menu", "breadcrumb",
                               "breadcrumbs", "toc", "cookie", "cookies", "share", "social", "advert", "ads", "skip",
                               "banner", "masthead", "topbar", "subnav"})
_NAME_TOKEN = re.compile(r"[a-z0-9]+")


def _is_furniture(element: Element) -> bool:
    """Navigation, banners, sidebars and footers, by tag, ARIA role, class or id."""
    names = _NAME_TOKEN.findall(f"{element.get('class', '')} {element.get('id', '')}".lower())
    if "footnote" in names or "footnotes" in names:  # Sphinx puts footnotes in <aside>: they are content
        return False
    return element.tag in BOILERPLATE_TAGS or element.get("role", "").strip().lower() in BOILERPLATE_ROLES or \
        bool(BOILERPLATE_WORDS.intersection(names))


def select_main_content(root: Element) -> None:
    """Reduce the body of ``root`` to its main content in place (see the module docstring)."""
    body = root.find("body")
    if body is None:
        return
    words = len(text_content(body).split())
    articles = list(body.iter("article"))
    marked = [e for e in body.iter() if isinstance(e.tag, str) and (e.tag == "main" or e.get("role") == "main")]
    main = marked[0] if marked else (articles[0] if len(articles) == 1 else None)
    if main is not None and len(text_content(main).split()) * 10 >= words:
        main.tail = None
        for child in list(body):
            body.remove(child)
        body.text = None
        body.append(main)
    furniture = [e for e in body.iter() if isinstance(e.tag, str) and e is not main and _is_furniture(e)]
    dropped = sum(len(text_content(e).split()) for e in furniture if not any(a in furniture for a in e.iterancestors()))
    if (words - dropped) * 10 >= words:
        for element in furniture:
            if element.getparent() is not None:
                drop_tree(element)


def _normalize_whitespace(root: Element) -> None:
    """Collapse whitespace runs; whitespace-only gaps at block boundaries disappear."""
    preserved: set[Element] = set()
    for element in root.iter():
        parent = element.getparent()
        if element.tag in PRESERVE_WS or (parent is not None and parent in preserved):
            preserved.add(element)
    for element in root.iter():
        parent = element.getparent()
        if element not in preserved:
            text = element.text
            if text:
                if text.isspace():
                    first = element[0] if len(element) else None
                    element.text = None if _is_block(element) or (first is not None and _is_block(first)) else " "
                else:
                    element.text = _WS.sub(" ", text)
        if parent is not None and parent not in preserved and element.tail:
            tail = element.tail
            if tail.isspace():
                after = element.getnext()
                boundary = _is_block(element) or (after is not None and _is_block(after)) or \
                    (after is None and _is_block(parent))
                element.tail = None if boundary else " "
            else:
                element.tail = _WS.sub(" ", tail)


def _trim_block_edges(root: Element) -> None:
    """Strip whitespace where text meets the start or end of a block element."""
    for element in root.iter():
        if element.tag in PRESERVE_WS:
            continue
        if _is_block(element):
            if element.text:
                element.text = element.text.lstrip() or None
            if not len(element) and element.text:
                element.text = element.text.rstrip() or None
            elif len(element) and element[-1].tail and element[-1].tag not in PRESERVE_WS:
                element[-1].tail = element[-1].tail.rstrip() or None
        for child in element:
            if not _is_block(child):
                continue
            if child.tail:
                child.tail = child.tail.lstrip() or None
            previous = child.getprevious()
            if previous is not None and previous.tail:
                previous.tail = previous.tail.rstrip() or None
            elif previous is None and element.text and element.tag not in PRESERVE_WS:
                element.text = element.text.rstrip() or None


def _wrap_loose_text(root: Element) -> None:
    """Wrap runs of loose text and inline elements that sit beside block children into ``<p>``."""
    for element in list(root.iter()):
        if element.tag in NO_WRAP or not _is_block(element) or not any(_is_block(c) for c in element):
            continue
        if _blank(element.text) and all(_is_block(c) or not _has_text(c) for c in element) and \
                all(_blank(c.tail) for c in element):
            continue
        items: list[Union[str, Element]] = [element.text] if element.text else []
        for child in list(element):
            tail, child.tail = child.tail, None
            element.remove(child)
            items.append(child)
            if tail:
                items.append(tail)
        element.text = None
        run: list[Union[str, Element]] = []
        for item in items + [None]:
            if item is None or (not isinstance(item, str) and _is_block(item)):
                _flush_run(element, run)
                run = []
                if item is not None:
                    element.append(item)
            else:
                run.append(item)


def _has_text(element: Element) -> bool:
    return any(not _blank(t) for t in element.itertext())


def _flush_run(parent: Element, run: list[Union[str, Element]]) -> None:
    """Append ``run`` to ``parent``: inside a new ``<p>`` when it holds text, else as it is."""
    meaningful = any(not _blank(i) if isinstance(i, str) else _has_text(i) for i in run)
    if not meaningful:
        for item in run:
            if not isinstance(item, str):
                parent.append(item)
        return
    p = lxml.etree.SubElement(parent, "p")
    for item in run:
        if not isinstance(item, str):
            p.append(item)
        elif len(p):
            p[-1].tail = (p[-1].tail or "") + item
        else:
            p.text = (p.text or "") + item
    if p.text:
        p.text = p.text.lstrip() or None
    if len(p):
        p[-1].tail = (p[-1].tail or "").rstrip() or None
    elif p.text:
        p.text = p.text.rstrip() or None


def _remove_empty(root: Element) -> None:
    """Remove elements without text (bottom-up decision, top-down removal).

    Kept: the page frame, cells of rows that hold text, line breaks inside text. An inline element
    whose only content was whitespace leaves one space behind, so words do not merge.
    """
    has_text: dict[Element, bool] = {}
    for element in reversed(list(root.iter())):
        has_text[element] = not _blank(element.text) or any(has_text[c] or not _blank(c.tail) for c in element)
    removed: set[Element] = set()
    for element in list(root.iter()):
        parent = element.getparent()
        if parent is None or has_text[element] or element.tag in ("html", "body"):
            continue
        if parent in removed:
            removed.add(element)
            continue
        if element.tag in CELL_TAGS and parent.tag == "tr" and has_text[parent]:
            continue
        if element.tag in VOID_TAGS and has_text[parent]:
            continue
        spaced = not _is_block(element) and any(t and t.isspace() for t in element.itertext())
        if spaced and not (element.tail or "")[:1].isspace():
            element.tail = " " + (element.tail or "")
        removed.add(element)
        drop_tree(element)


def _merge_chains(root: Element) -> None:
    """Merge an element that holds exactly one child and no text of its own with that child."""
    for element in reversed(list(root.iter())):
        parent = element.getparent()
        if parent is None or element.tag in ("html", "body", "head", "title") or len(element) != 1:
            continue
        child = element[0]
        if element.text or child.tail:  # even a space between them matters ("class<b> </b>x")
            continue
        keep_parent = element.tag in STRUCTURAL_TAGS
        keep_child = child.tag in STRUCTURAL_TAGS or child.tag in VOID_TAGS
        if keep_parent and keep_child:
            continue
        if keep_child or (not keep_parent and _is_block(child)):
            child.tail = element.tail
            element.tail = None
            parent.replace(element, child)
        else:
            element.text = child.text
            element.remove(child)
            for grandchild in list(child):
                element.append(grandchild)


def _open_tag(element: Element) -> str:
    attrs = "".join(f' {k}="{v}"' for k, v in element.attrib.items())
    return f"<{element.tag}{attrs}>"


def serialize(root: Element) -> tuple[str, dict[Element, Span]]:
    """HTML text of ``root`` and each element's (open start, open end, close start, close end)."""
    out: list[str] = []
    size = 0
    spans: dict[Element, Span] = {}
    opened: dict[Element, tuple[int, int]] = {}
    stack: list[tuple[Element, bool]] = [(root, False)]
    escape = html_lib.escape
    while stack:
        element, leaving = stack.pop()
        if leaving:
            close_start = size
            if element.tag not in VOID_TAGS:
                piece = f"</{element.tag}>"
                out.append(piece)
                size += len(piece)
            spans[element] = (*opened.pop(element), close_start, size)
            if element.tail and element is not root:
                piece = escape(element.tail, quote=False)
                out.append(piece)
                size += len(piece)
            continue
        start = size
        piece = _open_tag(element)
        if element.text and element.tag not in VOID_TAGS:
            piece += escape(element.text, quote=False)
        out.append(piece)
        size += len(piece)
        opened[element] = (start, start + len(_open_tag(element)))
        stack.append((element, True))
        stack.extend((child, False) for child in reversed(element))
    return "".join(out), spans


def clean_tree(root: Element) -> str:
    """Clean ``root`` in place (see the module docstring); return the page title."""
    title = _drop_junk(root)
    _unnest_blocks(root)
    _normalize_whitespace(root)
    _wrap_loose_text(root)
    _remove_empty(root)
    _normalize_whitespace(root)  # removals can leave spaces at block boundaries
    _merge_chains(root)
    _normalize_whitespace(root)
    _trim_block_edges(root)
    if root.find("body") is None:
        lxml.etree.SubElement(root, "body")
    return title


def clean_html(data: Union[bytes, str], main_content: bool = False) -> CleanPage:
    """Parse and clean any HTML input (only its main content with ``main_content``); never raises
    on malformed pages."""
    root = parse_html(data)
    if main_content:
        select_main_content(root)
    title = clean_tree(root)
    html, spans = serialize(root)
    return CleanPage(html, title, root, spans)

