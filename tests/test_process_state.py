"""Library calls change no process-wide state (issue 14, point 7): importing the packages and a
build + search + rerank + embedder loads through the Python API leave the environment, the Hugging
Face logging settings and FAISS's thread count as they were; the ``rag`` command line sets them
once (``ragcli.runtime``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]

#: Run in a fresh interpreter, so that importing the packages is part of what is checked.
SCRIPT = r"""
import json, logging, os, sys
import faiss
from transformers.utils import logging as hf_logging
# third-party imports that set variables themselves (sklearn: KMP_*, ray: RAY_CLIENT_MODE) come first
import onnxruntime, sentence_transformers, sklearn, torch
try:
    import ray
except ImportError:
    pass

def state():
    return {"env": dict(os.environ), "hf_verbosity": hf_logging.get_verbosity(),
            "hf_progress": hf_logging.is_progress_bar_enabled(), "faiss_threads": faiss.omp_get_max_threads(),
            "logging_disable": logging.root.manager.disable, "root_handlers": len(logging.getLogger().handlers)}

before = state()
import importlib, pkgutil
for package in ("datastores", "indexers", "rag", "evaluators"):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        importlib.import_module(info.name)
from datastores import Bm25Params
from datastores.dense import DenseSpec
from indexers.build import build_datastore
from indexers.config import BuildConfig
from indexers.embedding import load_embedder
from rag import Datastore
from rag.retrieve import build_retriever

corpus, out, cross_encoder = sys.argv[1:4]
torch_embedder = load_embedder(device="cpu", backend="torch")
onnx_embedder = load_embedder(device="cpu", backend="onnx")
onnx_embedder.encode_passages(["one passage"])
from indexers.tokenizers import HuggingFaceTokenizer
HuggingFaceTokenizer(torch_embedder.backend.location.path_or_name)
config = BuildConfig(chunk_size=60, overlap=0, shard_size=20, device="cpu", dense=DenseSpec(type="float-hnsw"),
                     bm25=Bm25Params(tokenizer="hf:" + torch_embedder.backend.location.path_or_name))
build_datastore([corpus], out, config, embedder=torch_embedder, progress=False)
store = Datastore.open(out, device="cpu")
hits = build_retriever(store, "hybrid", rerank="cross-encoder:" + cross_encoder, rerank_depth=8,
                       device="cpu").retrieve("taxes and the public revenue", 5)
after = state()
changed = {k: [before["env"].get(k), after["env"].get(k)] for k in set(before["env"]) | set(after["env"])
           if before["env"].get(k) != after["env"].get(k)}
print(json.dumps({"hits": len(hits), "env_changed": changed,
                  **{k: [before[k], after[k]] for k in before if k != "env"}}))
"""

#: Variables the command line sets; removed so the child would show a library call setting them.
RUNTIME_VARIABLES = ("TOKENIZERS_PARALLELISM", "TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS",
                     "OMP_NUM_THREADS")


def test_python_api_changes_no_process_state(tmp_path, small_corpus, cross_encoder_dir):
    env = {k: v for k, v in os.environ.items() if k not in RUNTIME_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))  # this tree's code
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(small_corpus), str(tmp_path / "ds"),
                           str(cross_encoder_dir)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["hits"] == 5
    assert report["env_changed"] == {}
    for key in ("hf_verbosity", "hf_progress", "faiss_threads", "logging_disable", "root_handlers"):
        before, after = report[key]
        assert before == after, key


def test_hnsw_single_thread_changes_only_the_calling_thread():
    import faiss

    from datastores.dense.families import single_thread

    threads = faiss.omp_get_max_threads()
    inside, seen_elsewhere = threading.Event(), []
    release = threading.Event()

    def writer() -> None:
        with single_thread():
            seen_elsewhere.append(faiss.omp_get_max_threads())
            inside.set()
            release.wait(30)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(30)
    during = faiss.omp_get_max_threads()  # this thread's count while the writer holds one thread
    release.set()
    thread.join(30)
    assert seen_elsewhere == [1] and during == threads and faiss.omp_get_max_threads() == threads


def test_the_command_line_sets_process_state_once(monkeypatch):
    from ragcli import main
    from ragcli.runtime import gpu_visible

    for name in RUNTIME_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # a value the user set wins
    result = CliRunner().invoke(main, ["info", "/nonexistent/terarag-ds"])  # the group callback runs first
    assert "no datastore at" in result.output
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert os.environ.get("TOKENIZERS_PARALLELISM") == (None if gpu_visible() else "false")
