"""The process set-up of the ``rag`` command line, done once before any command runs.

Library code (``datastores``, ``indexers``, ``rag``, ``evaluators``) changes no process-wide state:
no environment variables, no third-party logging levels, no global thread counts. What a command
line process wants is set here, by the ``rag`` group callback:

- terarag's log records go to the console (``terarag`` logger, INFO);
- Hugging Face libraries log errors only and show no download/loading progress bars (through
  their environment variables, and directly when ``transformers`` is already imported);
- ``TOKENIZERS_PARALLELISM=false`` on machines without a visible NVIDIA GPU: on CPU the model's
  threads own the cores and tokenizing is 1-2% of the time; on a GPU the Rust tokenizer's own
  threads make the torch backend about 4x faster (docs/benchmarks.md), so it is left alone there.
  A value the user set is never changed.

FAISS threads are not set here. The one place that needs a thread count, HNSW insertion (one
thread keeps shard files reproducible), sets it with ``datastores.dense.families.single_thread``:
OpenMP's thread count is a per-thread setting (the ``nthreads-var`` ICV), so that changes only the
calling thread's own parallel regions, and is restored on exit; searches in other threads keep
``faiss.omp_get_max_threads()``.

Python API users get library defaults; calling ``configure_runtime()`` gives them the command
line's settings.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from ragcli.common import console_handler

#: Environment defaults of a command line process (a value already set wins).
HF_QUIET = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def configure_runtime() -> None:
    """Set up logging, Hugging Face verbosity and tokenizer threads for a ``rag`` process (idempotent)."""
    _console_logging()
    for name, value in HF_QUIET.items():
        os.environ.setdefault(name, value)
    if "transformers" in sys.modules:  # imported already: its environment variables were read
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if not gpu_visible():
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _console_logging() -> None:
    root = logging.getLogger("terarag")
    if not root.handlers:
        root.addHandler(console_handler())
        root.setLevel(logging.INFO)
        root.propagate = False


def gpu_visible() -> bool:
    """Whether an NVIDIA GPU is visible to this process (checked without importing torch)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "0").strip() in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())
