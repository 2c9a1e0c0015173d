"""A tree builder for pages nested deeper than libxml2's HTML parser allows.

libxml2 stops at 2,048 levels of nesting even with ``huge_tree`` ("Excessive depth in document"),
and everything after that point is lost. This fallback reads the page with the standard library's
tokenizer (``html.parser``, which keeps no stack of its own) and builds the lxml tree itself: start
tags open elements (void elements do not), an end tag closes up to the nearest open element of its
name and is ignored when none is open, text goes where it appears. lxml's tree has no depth limit,
and every walk of the cleaner is iterative, so the page's text survives at any depth.
"""

from __future__ import annotations

import html.parser

import lxml.etree

VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
                  "track", "wbr"})


class _TreeBuilder(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = lxml.etree.Element("html")
        self.body = lxml.etree.SubElement(self.root, "body")
        self.stack = [self.body]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("html", "body"):
            return
        if tag == "head":
            head = lxml.etree.Element("head")
            self.root.insert(0, head)
            self.stack.append(head)
            return
        try:
            element = lxml.etree.SubElement(self.stack[-1], tag)
        except ValueError:  # a name lxml refuses ("o:p", "p<<"): the cleaner renames odd tags anyway
            element = lxml.etree.SubElement(self.stack[-1], "span")
        for key, value in attrs:
            try:
                element.set(key, value or "")
            except ValueError:
                pass
        if tag not in VOID:
            self.stack.append(element)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        depth = len(self.stack)
        self.handle_starttag(tag, attrs)
        del self.stack[depth:]

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        parent = self.stack[-1]
        if len(parent):
            parent[-1].tail = (parent[-1].tail or "") + data
        else:
            parent.text = (parent.text or "") + data


def parse_deep(text: str) -> lxml.etree._Element:
    """An ``<html>`` tree of ``text`` built without a depth limit (see the module docstring)."""
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root
