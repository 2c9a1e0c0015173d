"""HTML pruning: budgets hold exactly in the named tokenizer, the lowest-ranked blocks go first,
output stays valid HTML, step 2 scores block paths with a (tiny, random) causal LM, and the
``rag prune`` command and the pipeline adapter work."""

from __future__ import annotations

import json

import lxml.etree
import numpy as np
import pytest
from click.testing import CliRunner

from indexers.html import build_blocks, clean_html, read_html_page
from indexers.tokenizers import load_tokenizer
from ragcli import main
from rag.html import EmbeddingScorer, HtmlPruner, looks_like_html
from rag.records import Passage
from tests._tiny_models import tiny_causal_lm
from tests.conftest import REPO

PAGES = REPO / "examples" / "html_pages"

TOPICS = {
    "volcano": "Volcanoes erupt when magma rises through the crust; lava flows and ash clouds follow the eruption.",
    "bread": "Bakers knead dough with flour, water, yeast and salt, then let the bread rise before baking it.",
    "chess": "In chess the king castles with a rook, and a pawn that reaches the last rank is promoted.",
    "orbit": "Planets orbit the sun on elliptical paths; the orbital period grows with the distance to the star.",
    "violin": "A violin has four strings tuned in fifths and is played with a bow strung with horsehair.",
}


def topical_page() -> bytes:
    sections = "".join(f"<div class='s'><h2>{name.title()}</h2><p>{(text + ' ') * 2}</p></div>"
                       for name, text in TOPICS.items())
    return (f"<html><head><title>Topics</title><script>x()</script></head><body><nav>menu</nav>{sections}"
            "<footer>footer text</footer></body></html>").encode()


def is_valid(html: str) -> bool:
    lxml.etree.fromstring(html.replace("<br>", "<br/>").replace("<hr>", "<hr/>"))
    return clean_html(html).html == html


@pytest.fixture(scope="module")
def pruner(embedder):
    return HtmlPruner(tokenizer="cl100k_base", embedder=embedder, max_words=40)


@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory):
    words = "html body head title div p h2 nav footer section table tr td ul li dl dt dd span code pre a em"
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), extra_text=words + " " + " ".join(TOPICS.values()))


def test_budget_holds_exactly_and_output_is_valid_html(pruner):
    cl100k = load_tokenizer("cl100k_base")
    data = (PAGES / "library_fnmatch.html").read_bytes()
    full = cl100k.count(clean_html(data).html)
    for budget in (300, 40):
        result = pruner.prune(data, "Which function matches case-sensitively?", budget)
        assert result.tokens_after == cl100k.count(result.html) <= budget
        assert result.tokens_before == full and result.blocks > result.blocks_kept
        assert is_valid(result.html)
    assert pruner.prune(data, "anything", full).html == clean_html(data).html  # fits: nothing removed


def test_the_relevant_block_survives_and_what_goes_did_not_fit(pruner, embedder):
    data = topical_page()
    query = "How is a pawn promoted in chess?"
    result = pruner.prune(data, query, 90)
    text = read_html_page(result.html)[1]
    assert "pawn that reaches the last rank is promoted" in text
    assert "Volcanoes" not in text and "violin" not in text
    page = clean_html(data)
    blocks = build_blocks(page, 40)
    scores = EmbeddingScorer(embedder).score(query, page, blocks)
    removed = set(result.removed)
    assert removed and blocks[int(np.argmax(scores))].path not in removed  # the best block stays
    cl100k = load_tokenizer("cl100k_base")
    slack = 90 - result.tokens_after
    for block in blocks:  # every block that went was too big for what is left of the budget
        if block.path in removed:
            assert cl100k.count(page.html[block.cut_start:block.cut_end]) > slack


def test_budget_in_a_hugging_face_tokenizer(pruner, embedder, tiny_lm):
    words = HtmlPruner(tokenizer=str(tiny_lm), embedder=embedder, max_words=40)
    hf = load_tokenizer(str(tiny_lm))
    result = words.prune(topical_page(), "bread dough yeast", 100)
    assert hf.count(result.html) == result.tokens_after <= 100 < result.tokens_before
    assert "yeast" in result.html


def test_removed_cells_leave_empty_cells_in_place(embedder):
    rows = "".join(f"<tr><td>{'apple ' * 8}{i}</td><td>{'granite ' * 8}{i}</td><td>{'harbor ' * 8}{i}</td></tr>"
                   for i in range(6))
    data = f"<table><tr><th>A</th><th>B</th><th>C</th></tr>{rows}</table>".encode()
    result = HtmlPruner(embedder=embedder, max_words=5).prune(data, "granite stone", 120)
    table = lxml.etree.fromstring(result.html)
    kept_rows = table.findall(".//tr")
    assert kept_rows and all(len(r) == 3 for r in kept_rows)
    assert any(c.text is None for r in kept_rows for c in r)  # some cells were emptied, none deleted
    assert "granite" in result.html


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe garbage \x01", b"<p>unclosed <b>bold <table><td>x",
                                  b"<html><body></body></html>", "<meta charset='latin-1'><p>café</p>".encode()])
def test_malformed_pages_prune_without_crashing(pruner, data):
    result = pruner.prune(data, "query", 30)
    assert result.tokens_after <= 30 and is_valid(result.html)


def test_budget_below_an_empty_page_is_a_clear_error(pruner):
    with pytest.raises(ValueError, match="smaller than an empty page"):
        pruner.prune(topical_page(), "chess", 2)
    with pytest.raises(ValueError, match="budget must be a positive"):
        pruner.prune(topical_page(), "chess", 0)


def test_generative_step_scores_block_paths(tiny_lm, embedder):
    from rag.html.generative import PathScorer

    scorer = PathScorer(str(tiny_lm), device="cpu", batch_size=3)
    page = clean_html(topical_page())
    blocks = build_blocks(page, 10)
    scores = scorer.score("chess pawn", page, blocks)
    assert scores.shape == (len(blocks),) and np.isfinite(scores).all() and (scores <= 0).all()
    distinct = {tuple(scorer._ids(b.path)) for b in blocks}
    if len(distinct) == len(blocks):  # constrained decoding: one distribution over the blocks
        assert np.isclose(np.logaddexp.reduce(scores.astype(np.float64)), 0.0, atol=1e-3)
    assert not np.allclose(scores, scores[0])  # the model does tell paths apart
    two_step = HtmlPruner(embedder=embedder, max_words=40, lm=str(tiny_lm), fine_max_words=10, device="cpu")
    result = two_step.prune(topical_page(), "chess pawn", 60)
    assert result.tokens_after <= 60 and is_valid(result.html)


def test_apply_prunes_html_passages_and_keeps_plain_ones(pruner):
    cl100k = load_tokenizer("cl100k_base")
    plain = Passage(1, "The treaty was signed in Paris in 1783.", 7, "a.txt", 0, 40, "a.txt", 0.9)
    page = Passage(2, topical_page().decode(), 8, "b.html", 0, 900, "b.html", 0.8)
    other = Passage(3, (PAGES / "library_glob.html").read_text(encoding="utf-8"), 9, "c.html", 0, 5, "c.html", 0.7)
    assert not looks_like_html(plain.text) and looks_like_html(page.text)
    kept = pruner.apply("How is a pawn promoted in chess?", [plain, page, other], 200)
    assert kept[0] == plain
    assert sum(cl100k.count(p.text) for p in kept) <= 200
    assert [p.chunk_id for p in kept][:2] == [7, 8] and "promoted" in kept[1].text
    unpruned = pruner.apply("chess", [plain, page], None)
    assert unpruned[1].text == clean_html(page.text).html
    two = 2 * cl100k.count(plain.text)
    assert pruner.apply("chess", [plain] * 3, two) == [plain] * 3  # plain text is left to the next stage


def test_rag_prune_command(tmp_path):
    page = tmp_path / "page.html"
    page.write_bytes(topical_page())
    out = tmp_path / "out.html"
    runner = CliRunner()
    result = runner.invoke(main, ["prune", str(page), "--query", "violin strings", "--budget", "90",
                                  "--max-words", "40", "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert load_tokenizer("cl100k_base").count(html) <= 90 and "violin" in html and is_valid(html)
    result = runner.invoke(main, ["prune", str(page), "-q", "violin", "--budget", "90", "--json", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tokens_after"] <= 90 and report["html"].startswith("<html>")
    missing = runner.invoke(main, ["prune", str(tmp_path / "nope.html"), "-q", "x"])
    assert missing.exit_code != 0 and "no such file" in missing.output
    tiny = runner.invoke(main, ["prune", str(page), "-q", "x", "--budget", "2", "--device", "cpu"])
    assert tiny.exit_code != 0 and "smaller than an empty page" in tiny.output


# --- finer granularity: an oversized block gives up its best pieces (issue 16, point 1) -------------

def test_split_pieces_cover_their_block_and_cut_to_valid_html():
    from indexers.html import block_text, split_block, word_counts

    page = clean_html((PAGES / "library_math.html").read_bytes())
    counts = word_counts(page.root)
    pending, checked = build_blocks(page, 256), 0
    while pending and checked < 400:
        block = pending.pop()
        pieces = split_block(page, block, counts)
        if not pieces:
            continue
        checked += 1
        assert " ".join(block_text(p) for p in pieces).split() == block_text(block).split()
        spans = [(p.cut_start, p.cut_end) for p in pieces]
        assert spans == sorted(spans) and all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
        assert block.start <= spans[0][0] and spans[-1][1] <= block.end
        pending.extend(pieces)
    assert checked > 20
    sentences = [p for p in pending if p.tag == "#sentence"]
    from rag.html.prune import cut_blocks

    is_valid(clean_html(cut_blocks(page.html, sentences[::2])).html)  # any subset cuts to valid HTML


def test_a_block_larger_than_the_budget_gives_up_its_best_sentences(pruner):
    filler = " ".join(f"Item {i} of the archive lists pottery shards and coins from the harbour." for i in range(60))
    page = f"<html><body><p>{filler} In chess a pawn that reaches the last rank is promoted to a queen. {filler}</p></body></html>"
    result = pruner.prune(page.encode(), "How is a pawn promoted in chess?", 60)
    text = read_html_page(result.html)[1]
    assert "pawn that reaches the last rank is promoted" in text
    assert 0.8 * 60 <= result.tokens_after <= 60 and is_valid(result.html)


def test_the_issue_pages_are_never_emptied(embedder):
    cl100k = load_tokenizer("cl100k_base")
    pruner = HtmlPruner(embedder=embedder)
    result = pruner.prune((PAGES / "library_math.html").read_bytes(),
                          "What does math.isclose use as the default relative tolerance?", 512)
    text = read_html_page(result.html)[1]
    assert "1e-09" in text and "isclose" in text  # the signature (rel_tol=1e-09) or the sentence saying so
    assert 0.9 * 512 <= result.tokens_after == cl100k.count(result.html) <= 512
    assert result.blocks_kept > 0 and is_valid(result.html)


def test_nothing_fits_whole_so_the_best_piece_is_cut(pruner):
    page = b"<p>" + b"Ghent treaty negotiations lasted through the whole autumn of 1814 without a break " * 3 + b"</p>"
    result = pruner.prune(page, "treaty of Ghent", 16)
    assert result.tokens_after <= 16 and read_html_page(result.html)[1].startswith("Ghent treaty")
    assert is_valid(result.html)


def test_rag_prune_of_the_issue_fragment_keeps_its_text():
    fragment = "<p>unclosed <b>bold <table><tr><td>x<td></table><div>treaty of Ghent 1814\n"
    result = CliRunner().invoke(main, ["prune", "-", "-q", "treaty", "--budget", "30", "--max-words", "3",
                                       "--device", "cpu"], input=fragment)
    assert result.exit_code == 0, result.output
    html = result.output.split("\n")[0]
    assert "treaty of Ghent 1814" in html and "<body></body>" not in html and is_valid(html)
    assert load_tokenizer("cl100k_base").count(html) <= 30


# --- ranking: identifiers, code names and definitions (issue 16, 31 of 32 at 512 tokens) -----------

def test_identifier_terms_are_split_and_stemmed():
    from rag.html.lexical import code_names, defined_name, word_terms

    assert {"json", "decod", "error", "jsondecodeerror"} <= word_terms("json.JSONDecodeError")
    assert "decod" in word_terms("Which exception does JSON decoding raise?")
    assert {"pars", "constant"} <= word_terms("parse_constant") or {"parse", "constant"} <= word_terms("parse_constant")
    assert code_names("What is the default width used by textwrap.wrap?") == ["textwrap.wrap"]
    assert code_names("a JSONDecodeError or max_lines") == ["JSONDecodeError", "max_lines"]
    assert defined_name("exception json.JSONDecodeError(msg, doc, pos)¶") == "json.JSONDecodeError"
    assert defined_name("--no-ensure-ascii¶") is None


def api_page(repeats: int = 1) -> bytes:
    """An API page: the answer lives only in a signature (``<dt>``), which reads nothing like the
    question; the attribute list of a class answers the same question in other words."""
    options = "".join(f"<dl><dt>{name}</dt><dd><p>(default: {value}) {text}</p></dd></dl>" for name, value, text in [
        ("width", 70, "The maximum length of wrapped lines, the default width of every wrapped line of text."),
        ("tabsize", 8, "Tab characters in the text are expanded to this many spaces before wrapping."),
        ("max_lines", None, "The output holds at most this many lines; the rest of the text is dropped."),
    ])
    wrap = ("<dl><dt>wrapper.wrap(<em>text</em>, <em>width=70</em>, <em>tabsize=8</em>, <em>max_lines=None</em>, "
            "<em>placeholder=' [...]'</em>, <em>drop_whitespace=True</em>)</dt><dd><p>Wraps the single paragraph "
            "so every line is at most width characters long and returns a list of lines.</p></dd></dl>")
    errors = ("<h2>Errors</h2><dl><dt>exception wrapper.WrapperDecodeError(msg, pos)</dt><dd><p>Subclass of "
              "ValueError with the attributes msg and pos.</p></dd></dl>")
    shared = "<p>If the text cannot be read as lines of words, a WrapperDecodeError will be raised.</p>" * repeats
    return (f"<html><body><h1>wrapper: line wrapping</h1><p>The wrapper module wraps and fills text.</p>{wrap}"
            f"<h2>Wrapper objects</h2><dl><dt>class wrapper.Wrapper(**kwargs)</dt><dd>{options}{shared}</dd></dl>"
            f"<h2>Reading</h2><p>Lines of text are read one by one and decoded.</p>{shared}{errors}"
            "</body></html>").encode()


def test_the_definition_of_a_code_name_the_question_names_is_kept(embedder):
    pruner = HtmlPruner(embedder=embedder, max_words=30)
    for budget in (100, 120, 140):
        result = pruner.prune(api_page(), "What is the default width used by wrapper.wrap?", budget)
        assert "width=70" in read_html_page(result.html)[1]  # the signature, not only "width (default: 70)"
        assert result.tokens_after <= budget


def test_a_kept_mention_of_a_code_name_brings_its_definition(embedder):
    pruner = HtmlPruner(embedder=embedder, max_words=30)
    result = pruner.prune(api_page(repeats=1), "Which exception does reading invalid text raise?", 120)
    text = read_html_page(result.html)[1]
    assert "WrapperDecodeError will be raised" in text
    assert "wrapper.WrapperDecodeError(msg, pos)" in text  # the definition the kept sentence mentions


def test_a_repeated_text_is_kept_once(embedder):
    pruner = HtmlPruner(embedder=embedder, max_words=30)
    result = pruner.prune(api_page(repeats=1), "Which exception is raised when text cannot be read as lines?", 200)
    text = read_html_page(result.html)[1]
    assert text.count("a WrapperDecodeError will be raised") == 1


def test_the_model_embeds_the_first_words_of_a_block(embedder):
    scorer = EmbeddingScorer(embedder, embed_words=3)
    assert scorer.model_texts(["one two  three four five", "six"]) == ["one two three", "six"]
    assert EmbeddingScorer(embedder, embed_words=None).model_texts(["a  b"]) == ["a  b"]
