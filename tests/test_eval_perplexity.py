"""rag eval perplexity: windows, MassiveDS overlap removal, context budget and order, batched NLL,
fractions and the plot, the CLI, and the real smollm2 on a few windows (the fake gain of a
datastore that holds the evaluation text, and its removal)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from _tiny_models import tiny_causal_lm
from click.testing import CliRunner

from evaluators.answer_eval import index_documents
from evaluators.datasets import load_qa_set
from evaluators.perplexity import (
    PerplexitySettings,
    Window,
    context_ids,
    continuation_nll,
    evaluate_perplexity,
    make_windows,
    overlaps,
    read_texts,
)
from ragcli import main
from rag.lm import load_causal_lm

SQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2_dev_sample" / "squad2_dev_sample.json"


@pytest.fixture(scope="module")
def paragraphs():
    """The 12 longest SQuAD sample paragraphs, lower-cased (the tiny tokenizer's vocabulary is)."""
    texts = sorted(load_qa_set(SQUAD).documents.values(), key=len, reverse=True)[:12]
    return [t.lower() for t in texts]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, paragraphs):
    folder = tiny_causal_lm(tmp_path_factory.mktemp("ppl_lm"), extra_text=" ".join(paragraphs))
    return load_causal_lm(str(folder), device="cpu")


@pytest.fixture(scope="module")
def stores(tmp_path_factory, paragraphs):
    """A datastore holding every paragraph (the held-out ones too) and one without the held-out ones."""
    root = tmp_path_factory.mktemp("ppl_ds")
    everything = {f"p{i}": t for i, t in enumerate(paragraphs)}
    clean = {k: v for i, (k, v) in enumerate(everything.items()) if i >= 3}
    return (index_documents(everything, root / "all", chunk_size=64, device="cpu"),
            index_documents(clean, root / "clean", chunk_size=64, device="cpu"))


def settings(**changes) -> PerplexitySettings:
    return PerplexitySettings(**{"window": 64, "query_tokens": 32, "k": 2, "budget": 256, "top_k": 20,
                                 "max_windows": 6, **changes})


def test_read_texts_jsonl_and_plain(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one"}\n\n{"text": "two"}\n')
    (tmp_path / "b.txt").write_text("three")
    assert read_texts([tmp_path / "a.jsonl", tmp_path / "b.txt"]) == ["one", "two", "three"]
    (tmp_path / "bad.jsonl").write_text('{"title": "x"}\n')
    with pytest.raises(ValueError, match="line 1 has no string field 'text'"):
        read_texts([tmp_path / "bad.jsonl"])
    with pytest.raises(FileNotFoundError):
        read_texts([tmp_path / "none.jsonl"])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="query tokens"):
        PerplexitySettings(window=10, query_tokens=10)
    with pytest.raises(ValueError, match="order"):
        PerplexitySettings(order="random")
    with pytest.raises(ValueError, match="k <= top_k"):
        PerplexitySettings(k=5, top_k=2)


def test_windows_cut_prefix_and_continuation(tiny, paragraphs):
    s = settings(max_windows=None)
    windows = make_windows(paragraphs, tiny.tokenizer, s)
    lengths = [len(tiny.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in paragraphs]
    assert len(windows) == sum(n // 64 for n in lengths)
    assert all(len(w.prefix) == 32 and len(w.continuation) == 32 for w in windows)
    assert len(make_windows(paragraphs, tiny.tokenizer, settings(max_windows=2))) == 2
    with pytest.raises(ValueError, match="lower --window"):
        make_windows(["too short"], tiny.tokenizer, s)


def test_overlap_rules(paragraphs):
    from datastores.ops.minhash import normalise_words, shingles_of_words

    s = settings()
    window = paragraphs[0]
    words = normalise_words(window)
    grams = shingles_of_words(words, 13)
    assert overlaps(window, words, grams, s)                                    # Jaccard 1
    assert not overlaps(paragraphs[1], words, grams, s)                         # unrelated
    run = " ".join(words[:40])
    assert overlaps(paragraphs[1] + " " + run + " " + paragraphs[2], words, grams, s)  # 40-word run
    short_run = " ".join(words[:20])
    assert not overlaps(paragraphs[1] + " " + short_run, words, grams, s)


def test_context_budget_and_order(tiny):
    chunks = ["treaty of ghent", "the king and the queen", "river city"]
    first = context_ids(chunks, tiny.tokenizer, settings(order="best-first", budget=100))
    last = context_ids(chunks, tiny.tokenizer, settings(order="best-last", budget=100))
    assert sorted(first) == sorted(last) and first != last
    assert tiny.tokenizer.decode(last).startswith("river city")
    assert len(context_ids(chunks, tiny.tokenizer, settings(budget=5))) == 5


def test_batched_nll_equals_the_model_loss(tiny, paragraphs):
    import torch

    windows = make_windows(paragraphs, tiny.tokenizer, settings())[:3]
    contexts = [[], tiny.tokenizer("treaty of ghent", add_special_tokens=False)["input_ids"], [5, 6, 7, 8, 9]]
    batched = continuation_nll(tiny, list(zip(contexts, windows)), batch_size=3)
    for ctx, window, value in zip(contexts, windows, batched):
        ids = torch.tensor([ctx + list(window.prefix) + list(window.continuation)])
        labels = ids.clone()
        labels[0, :len(ctx) + len(window.prefix)] = -100
        with torch.no_grad():
            loss = tiny.model(input_ids=ids, labels=labels).loss.item()
        assert math.isclose(value, loss * len(window.continuation), rel_tol=1e-4)


def test_overlapping_chunks_are_removed_and_counted(tiny, paragraphs, stores):
    contaminated, clean = stores
    held_out = paragraphs[:3]
    kept = evaluate_perplexity(contaminated, held_out, tiny, settings(remove_overlaps=False))
    removed = evaluate_perplexity(contaminated, held_out, tiny, settings(fractions=(0.3, 1.0)))
    assert kept.removed == 0 and removed.removed > 0 and removed.info["removed_pairs"] >= removed.removed
    assert kept.no_retrieval == removed.no_retrieval and kept.retrieval != removed.retrieval
    assert set(removed.fractions) == {0.3, 1.0} and removed.retrieval == removed.fractions[1.0]
    assert evaluate_perplexity(clean, held_out, tiny, settings()).removed == 0
    assert all(np.isfinite(v) and v > 1 for v in removed.fractions.values())


def test_cli_json_and_plot(tmp_path, stores, paragraphs, tiny):
    texts = tmp_path / "held.jsonl"
    texts.write_text("".join(json.dumps({"text": t}) + "\n" for t in paragraphs[:3]))
    plot = tmp_path / "ppl.png"
    args = ["eval", "perplexity", "--datastore", str(stores[0].root), "--texts", str(texts), "--lm",
            tiny.name, "--window", "64", "--query-tokens", "32", "-k", "2", "--top-k", "20", "--device", "cpu"]
    result = CliRunner().invoke(main, args + ["--fractions", "0.5,1", "--plot", str(plot), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"no_retrieval", "retrieval", "removed", "fractions"} <= set(data)
    assert set(data["fractions"]) == {"0.5", "1.0"} and data["removed"] > 0
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:4] == b"\x89PNG"
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and "no retrieval" in table.output and "overlapping" in table.output
    bad = CliRunner().invoke(main, args[:7] + ["./nowhere/lm"])
    assert bad.exit_code != 0 and "model path not found" in bad.output


# ------------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct on a few windows


def test_smollm2_fake_gain_of_a_contaminated_datastore(smollm2, tmp_path):
    texts = sorted(load_qa_set(SQUAD).documents.values(), key=len, reverse=True)[:8]
    store = index_documents({f"p{i}": t for i, t in enumerate(texts)}, tmp_path / "ds", chunk_size=96, device="cpu")
    s = PerplexitySettings(window=96, query_tokens=48, k=2, budget=256, top_k=8, max_windows=3)
    leaky = evaluate_perplexity(store, texts[:2], smollm2, PerplexitySettings(**{**s.__dict__,
                                                                              "remove_overlaps": False}))
    honest = evaluate_perplexity(store, texts[:2], smollm2, s)
    assert 1 < leaky.retrieval < leaky.no_retrieval / 2       # the text itself in front: a fake gain
    assert honest.removed >= 1 and honest.retrieval > leaky.retrieval
    assert honest.no_retrieval == leaky.no_retrieval and 2 < honest.no_retrieval < 100
