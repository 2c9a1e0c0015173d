"""The Ray engine on a real local Ray cluster: same datastore as the local engine, retries, failures,
resume, and distributed search with shard groups held by actors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from datastores.layout import DatastoreLayout, shard_name  # noqa: E402
from datastores.manifest import read_manifest  # noqa: E402
from indexers.build import build_datastore  # noqa: E402
from indexers.engines import EngineOptions, ShardBuildError  # noqa: E402

QUERIES = ["the militia and the defense of the frontier", "duties on imported spirits", "treaty with the Indian tribes"]


@pytest.fixture(scope="module")
def ray_config(small_config):
    # ~45 chunks of 100 tokens in shards of 5: at least 8 shards.
    return small_config.replace(shard_size=5)


@pytest.fixture(scope="module")
def corpus(small_corpus) -> Path:
    """The two Washington addresses of the small corpus (keeps the Ray builds quick)."""
    return small_corpus / "sotu"


@pytest.fixture(scope="module")
def local_ds(tmp_path_factory, corpus, ray_config, embedder) -> Path:
    out = tmp_path_factory.mktemp("engines") / "local"
    build_datastore([corpus], out, ray_config, embedder=embedder, progress=False)
    return out


@pytest.fixture(scope="module")
def ray_ds(tmp_path_factory, corpus, ray_config, embedder, ray_cluster) -> Path:
    out = tmp_path_factory.mktemp("engines") / "ray"
    build_datastore([corpus], out, ray_config, embedder=embedder, progress=False,
                    engine=EngineOptions("ray", num_workers=2))
    return out


class OtherEmbedder:
    """A stand-in model with another name: its shards must not be mixed into the build."""

    dim = 384
    spec = {"name": "some-other-model", "backend": "stub"}

    def encode(self, texts, batch_size=None, progress=None):
        import numpy as np

        return np.full((len(texts), self.dim), 1 / np.sqrt(self.dim), dtype=np.float32)


def other_embedder():
    from indexers.embedding import Embedder

    return Embedder(backend=OtherEmbedder())


def _shard_files(root: Path) -> dict[str, bytes]:
    shards = DatastoreLayout(root).shards_dir
    return {p.relative_to(shards).as_posix(): p.read_bytes() for p in sorted(shards.rglob("*")) if p.is_file()}


def fail_first_attempt(marker_dir: str, shard: int, how: str):
    """A task hook that fails the first time shard ``shard`` is built (a marker file remembers it):
    ``raise`` raises an exception, ``exit`` kills the worker process."""
    def hook(index: int) -> None:
        marker = Path(marker_dir) / f"failed-{index}"
        if index == shard and not marker.exists():
            marker.write_text("1")
            if how == "exit":
                import os

                os._exit(1)
            raise RuntimeError(f"injected failure on shard {index}")
    return hook


def always_fail(shard: int):
    def hook(index: int) -> None:
        if index == shard:
            raise OSError(f"disk on fire while building shard {index}")
    return hook


def test_ray_build_equals_local_build(local_ds, ray_ds):
    local, remote = read_manifest(DatastoreLayout(local_ds)), read_manifest(DatastoreLayout(ray_ds))
    assert len(local.shards) >= 8
    assert remote.content_checksum == local.content_checksum
    assert [s.name for s in remote.shards] == [s.name for s in local.shards]
    assert _shard_files(ray_ds) == _shard_files(local_ds)
    assert DatastoreLayout(ray_ds).bm25_terms.read_bytes() == DatastoreLayout(local_ds).bm25_terms.read_bytes()


def test_shard_assignment_does_not_depend_on_worker_count(tmp_path, corpus, ray_config, embedder,
                                                          ray_cluster, local_ds):
    out = tmp_path / "one-worker"
    report = build_datastore([corpus], out, ray_config, embedder=embedder, progress=False,
                             engine=EngineOptions("ray", num_workers=1))
    assert report.manifest.content_checksum == read_manifest(DatastoreLayout(local_ds)).content_checksum


@pytest.mark.parametrize("how", ["raise", "exit"])
def test_failed_task_is_retried(tmp_path, corpus, ray_config, embedder, ray_cluster, local_ds, how):
    markers = tmp_path / "markers"
    markers.mkdir()
    out = tmp_path / "retried"
    hook = fail_first_attempt(str(markers), 3, how)
    report = build_datastore([corpus], out, ray_config, embedder=embedder, progress=False,
                             engine=EngineOptions("ray", max_retries=2, task_hook=hook))
    assert (markers / "failed-3").exists()          # the failure did happen ...
    assert report.manifest.content_checksum == read_manifest(DatastoreLayout(local_ds)).content_checksum  # ... and healed


def test_shard_that_keeps_failing_stops_the_build_and_resume_finishes_it(tmp_path, corpus, ray_config,
                                                                        embedder, ray_cluster, local_ds):
    out = tmp_path / "broken"
    with pytest.raises(ShardBuildError, match=r"shard 2 .*failed 2 time\(s\).*disk on fire"):
        build_datastore([corpus], out, ray_config, embedder=embedder, progress=False,
                        engine=EngineOptions("ray", max_retries=1, task_hook=always_fail(2)))
    layout = DatastoreLayout(out)
    assert not layout.manifest.exists()              # nothing reads as a valid datastore
    assert not (layout.shards_dir / shard_name(2)).exists()   # the failing shard left no folder
    report = build_datastore([corpus], out, ray_config, embedder=embedder, progress=False, resume=True,
                             engine=EngineOptions("ray"))
    assert report.shards_resumed >= 1                # shards finished before the failure were kept
    assert report.shards_written + report.shards_resumed == len(report.manifest.shards)
    assert report.manifest.content_checksum == read_manifest(DatastoreLayout(local_ds)).content_checksum


def test_worker_with_a_different_embedder_is_refused(tmp_path, corpus, ray_config, embedder, ray_cluster):
    out = tmp_path / "mixed"
    with pytest.raises(ShardBuildError, match="same embedder"):
        build_datastore([corpus], out, ray_config, embedder=embedder, progress=False,
                        engine=EngineOptions("ray", max_retries=0),
                        embedder_factory=other_embedder)
    assert not any((out / "shards").iterdir())      # nothing written that a resume could adopt


def test_ray_search_returns_the_same_hits_as_local_search(local_ds, ray_cluster, embedder):
    from rag import Datastore
    from rag.serve import RayShardSearcher

    local = Datastore.open(local_ds)
    searcher = RayShardSearcher(local_ds, groups=3)
    try:
        assert len(searcher.groups) == 3 and sorted(sum(searcher.groups, [])) == list(range(len(local.shards)))
        for mode in ("dense", "bm25"):
            expected = local.search_many(QUERIES, k=7, mode=mode)
            got = searcher.search_many(QUERIES, k=7, mode=mode)
            assert [[(h.chunk_id, h.shard, round(h.score, 5)) for h in hits] for hits in got] == \
                   [[(h.chunk_id, h.shard, round(h.score, 5)) for h in hits] for hits in expected]
            assert all(len(hits) == 7 for hits in got)
        where = "doc_id LIKE '%1795%'"
        filtered = searcher.search_many(QUERIES[:1], k=5, where=where)[0]
        assert [h.chunk_id for h in filtered] == [h.chunk_id for h in local.search(QUERIES[0], k=5, where=where)]
        assert all("1795" in h.doc_id for h in filtered)
    finally:
        searcher.close()


def test_every_search_mode_gives_the_same_hits_locally_and_over_ray(local_ds, ray_cluster,
                                                                    cross_encoder_dir):  # noqa: F811
    """One interface, one composition: a rag.Datastore and a Ray searcher (2 shard groups) return
    identical hits, scores and metadata for dense, BM25 and hybrid, with MMR, rerank and where."""
    from datastores.retrieval import SearchRequest
    from rag import Datastore
    from rag.retrieve import load_reranker
    from rag.serve import RayShardSearcher

    local = Datastore.open(local_ds, device="cpu")
    reranker = load_reranker(f"cross-encoder:{cross_encoder_dir}", device="cpu")
    where = "doc_id LIKE '%1795%'"
    variants = [({}, None), ({"mmr": 0.5}, None), ({"where": where}, None), ({}, reranker),
                ({"mmr": 0.3, "where": where}, reranker)]
    searcher = RayShardSearcher(local_ds, groups=2, device="cpu")
    try:
        assert len(searcher.groups) == 2
        for mode in ("dense", "bm25", "hybrid"):
            plain = None
            for extra, rerank in variants:
                request = SearchRequest(mode=mode, k=8, depth=20, rerank_depth=10, **extra)
                expected = local.run(QUERIES, request, rerank)
                got = searcher.run(QUERIES, request, rerank)
                key = [[(h.chunk_id, h.shard, round(h.score, 5), h.metadata) for h in hits] for hits in got]
                assert key == [[(h.chunk_id, h.shard, round(h.score, 5), h.metadata) for h in hits]
                               for hits in expected], (mode, extra, rerank)
                if "where" in extra:   # BM25 finds fewer rows with a query term inside the filter
                    assert all(hits for hits in got) and all("1795" in h.doc_id for hits in got for h in hits)
                else:
                    assert all(len(hits) == 8 for hits in got), (mode, extra)
                plain = key if plain is None else plain
                if extra or rerank:
                    assert key != plain, (mode, extra, rerank)     # each option changed the lists
    finally:
        searcher.close()


def test_serve_stdin_mode_with_the_ray_engine(local_ds, ray_cluster):
    from click.testing import CliRunner

    from rag import Datastore
    from ragcli import main

    result = CliRunner().invoke(main, ["serve", str(local_ds), "--stdin", "--engine", "ray", "--groups", "2",
                                       "-k", "3"], input="\n".join(QUERIES[:2]) + "\n")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["query"] for line in lines] == QUERIES[:2]
    local = Datastore.open(local_ds)
    assert [[h["chunk_id"] for h in line["hits"]] for line in lines] == \
           [[h.chunk_id for h in local.search(q, k=3)] for q in QUERIES[:2]]


def _app_client(searcher, engine: str):
    from fastapi.testclient import TestClient

    from rag.serve import build_engine
    from rag.service import ServiceSettings, create_app

    return TestClient(create_app(build_engine(searcher, engine, device="cpu"), ServiceSettings(default_k=4)))


def test_ray_actors_behind_the_http_app_answer_like_the_local_engine(local_ds, ray_cluster):
    """The same endpoints over Ray shard groups and over one local datastore give the same hits."""
    from rag import Datastore
    from rag.serve import RayShardSearcher

    searcher = RayShardSearcher(local_ds, groups=3)
    cases = [{"q": QUERIES[0], "mode": "bm25", "k": 3}, {"q": QUERIES[1], "mode": "dense"},
             {"q": QUERIES[2], "mode": "hybrid", "mmr": 0.5, "depth": 20, "k": 6},
             {"q": QUERIES[0], "where": "doc_id LIKE '%1795%'", "k": 5}]
    try:
        with _app_client(searcher, "ray") as ray_app, _app_client(Datastore.open(local_ds), "local") as local_app:
            assert ray_app.get("/info").json()["engine"] == "ray"
            for params in cases:
                got, expected = ray_app.get("/search", params=params), local_app.get("/search", params=params)
                assert got.status_code == 200 and got.json()["hits"], got.text
                assert [h["chunk_id"] for h in got.json()["hits"]] == [h["chunk_id"] for h in expected.json()["hits"]]
            bad = ray_app.get("/search", params={"q": QUERIES[0], "where": "no_such_column = 1"})
            assert bad.status_code == 400 and bad.json()["error"]
            assert ray_app.get("/health").json() == {"ok": True}
            with ray_app.stream("GET", "/ask", params={"q": QUERIES[0], "k": 3}) as response:
                assert "event: answer" in response.read().decode()
    finally:
        searcher.close()


def test_ray_search_encodes_queries_with_the_datastore_query_prefix(tmp_path, corpus, ray_config, embedder,
                                                                   ray_cluster):
    """A datastore built with --query-prefix: Ray serving returns what rag.Datastore returns."""
    from rag import Datastore
    from rag.serve import RayShardSearcher

    out = tmp_path / "prefixed"
    build_datastore([corpus], out, ray_config.replace(query_prefix="query: ", passage_prefix="passage: "),
                    embedder=embedder, progress=False)
    local = Datastore.open(out, device="cpu")
    searcher = RayShardSearcher(out, groups=2, device="cpu")
    try:
        got = searcher.search_many(QUERIES, k=6)
        expected = local.search_many(QUERIES, k=6)
        assert [[(h.chunk_id, round(h.score, 5)) for h in hits] for hits in got] == \
               [[(h.chunk_id, round(h.score, 5)) for h in hits] for hits in expected]
        plain = local.search_vectors(embedder.encode_passages(QUERIES), k=6)   # without the prefix: other scores
        assert [[round(h.score, 5) for h in hits] for hits in plain] != [[round(h.score, 5) for h in hits] for hits in got]
    finally:
        searcher.close()


def test_ray_searcher_sees_commits(tmp_path, local_ds, ray_cluster):
    """After `rag datastore filter` commits, the next Ray search never returns a deleted row."""
    import shutil
    import subprocess

    from rag.serve import RayShardSearcher

    root = tmp_path / "ds"
    shutil.copytree(local_ds, root)
    searcher = RayShardSearcher(root, groups=2)
    try:
        before = searcher.search(QUERIES[0], k=20, mode="bm25")
        assert any("1795" in h.doc_id for h in before)
        actors = list(searcher.actors)
        done = subprocess.run([sys.executable, "-m", "ragcli", "datastore", "filter", str(root),
                               "--where", "doc_id NOT LIKE '%1795%'"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        for mode in ("bm25", "dense"):
            after = searcher.search(QUERIES[0], k=20, mode=mode)
            assert after and not any("1795" in h.doc_id for h in after), mode
        assert searcher.actors != actors                    # the groups were re-created on the new manifest
    finally:
        searcher.close()


def test_local_engine_never_imports_ray():
    import subprocess

    code = ("import sys, indexers.build, indexers.engines, ragcli, rag.serve, evaluators.scaling; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_engine_options_are_validated_on_the_command_line(tmp_path, corpus):
    from click.testing import CliRunner

    from ragcli import main

    for extra, message in ((["--num-workers", "2"], "need --engine ray"),
                           (["--engine", "ray", "--num-workers", "0"], "num_workers must be at least 1")):
        result = CliRunner().invoke(main, ["index", str(corpus), "-o", str(tmp_path / "x"), "-q", *extra])
        assert result.exit_code != 0 and message in result.output
        assert not (tmp_path / "x" / "manifest.json").exists()
