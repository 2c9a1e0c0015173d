"""A build killed with SIGKILL and resumed equals an uninterrupted build."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from indexers.build import build_datastore
from rag import Datastore

pytestmark = pytest.mark.slow


def index_command(corpus, out, *extra):
    return [sys.executable, "-m", "ragcli", "index", str(corpus), "-o", str(out), "--chunker", "recursive",
            "--chunk-size", "100", "--overlap", "0", "--shard-size", "10", "--device", "cpu", "-q", *extra]


def test_killed_build_resumes_to_the_same_datastore(tmp_path, small_corpus, small_config, embedder):
    reference = tmp_path / "reference"
    build_datastore([small_corpus], reference, small_config.replace(shard_size=10), embedder=embedder,
                    progress=False)

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(index_command(small_corpus, out), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (out / "shards" / "shard-00002" / "shard.json").exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the build never wrote its third shard"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()

    assert not (out / "manifest.json").exists()
    with pytest.raises(Exception, match="unfinished build"):
        Datastore.open(out)
    written_before = sorted(p.name for p in (out / "shards").iterdir() if (p / "shard.json").exists())
    assert 3 <= len(written_before) < len(Datastore.open(reference).shards)

    resumed = subprocess.run(index_command(small_corpus, out, "--resume"), capture_output=True, text=True,
                             timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(written_before)} kept from an earlier run" in " ".join(resumed.stdout.split())

    a, b = Datastore.open(reference), Datastore.open(out)
    assert a.manifest.content_checksum == b.manifest.content_checksum
    assert json.loads((reference / "manifest.json").read_text())["shards"] == \
        json.loads((out / "manifest.json").read_text())["shards"]
    assert not (out / "build.json").exists()
    for query in ["treaty with Spain", "the militia and the public debt"]:
        for mode in ("dense", "bm25"):
            assert [(h.chunk_id, h.score) for h in a.search(query, k=5, mode=mode)] == \
                [(h.chunk_id, h.score) for h in b.search(query, k=5, mode=mode)]
