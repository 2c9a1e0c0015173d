"""A sharded and a one-shard build of the same corpus return the same hits (ids, order, scores),
exact ties included; concurrent filtered IVF searches equal sequential ones."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from indexers.embedding import Embedder
from datastores.dense import DenseShard, DenseSpec, train_dense, write_dense_files
from datastores.search import ShardResult, merge_top_k
from indexers.build import build_datastore
from rag import Datastore

DIM = 48
QUERIES = ["treaty with Spain", "the militia and the public debt", "commerce and navigation",
           "Indian tribes on the frontier", "the national bank", "taxes on whiskey", "the army and the navy",
           "relations with France", "the post office and roads", "public credit and loans",
           "the census of the people", "a uniform militia", "the Mediterranean trade", "peace with the Indians",
           "naturalization of foreigners", "weights and measures", "the mint and coinage", "Congress and the Senate",
           "agriculture and manufactures", "the western posts"]


def duplicated_vectors(seed: int = 0) -> np.ndarray:
    """300 distinct unit vectors, each stored three times at scattered rows: exact ties everywhere."""
    rng = np.random.default_rng(seed)
    distinct = rng.normal(size=(300, DIM))
    distinct /= np.linalg.norm(distinct, axis=1, keepdims=True)
    return distinct[rng.permutation(np.repeat(np.arange(300), 3))].astype(np.float32)


VECTORS = duplicated_vectors()
TRAINING = {}  # spec -> its training on VECTORS, shared by every sharding (as one datastore's shards share it)
QVECS = np.random.default_rng(1).normal(size=(40, DIM)).astype(np.float32)  # 40 >= FAISS's BLAS threshold (20)


def sharded_search(tmp_path: Path, spec: DenseSpec, shard_size: int, k: int,
                   allowed: np.ndarray | None = None) -> list[list[tuple[int, float]]]:
    """(global row, score) hits of ``QVECS`` over ``VECTORS`` cut into shards of ``shard_size``."""
    training = TRAINING.setdefault(spec, train_dense(spec, VECTORS) if spec.needs_training else None)
    per_shard = []
    for i, start in enumerate(range(0, len(VECTORS), shard_size)):
        part = VECTORS[start:start + shard_size]
        folder = tmp_path / f"{spec.type}-{shard_size}-{i}"
        folder.mkdir()
        write_dense_files(folder, part, spec, training)
        shard = DenseShard(folder, spec, training, DIM, len(part))
        mask = None if allowed is None else allowed[start:start + shard_size]
        per_shard.append(shard.search(QVECS, k, mask))
    hits = []
    for q in range(len(QVECS)):
        merged = merge_top_k([ShardResult(i, s[q], r[q]) for i, (s, r) in enumerate(per_shard)], k)
        hits.append([(shard * shard_size + row, score) for shard, row, score in merged])
    return hits


@pytest.mark.parametrize("spec", [DenseSpec("float-flat"), DenseSpec("float-ivf", ivf_nlist=8, ivf_nprobe=3)],
                         ids=["float-flat", "float-ivf"])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_shard_sizes_do_not_change_hits_or_tie_order(tmp_path, spec, k):
    one = sharded_search(tmp_path, spec, len(VECTORS), k)
    assert all(len(hits) == k for hits in one)
    ties = sum(a[1] == b[1] for hits in one for a, b in zip(hits, hits[1:]))
    assert k == 1 or ties >= len(QVECS) * (k // 3) * 0.9  # three copies of each vector tie exactly
    for size in (29, 250):
        assert sharded_search(tmp_path, spec, size, k) == one, size  # ids, order and scores, bit for bit
    for hits in one:  # equal scores come lowest row first
        assert all(a[0] < b[0] for a, b in zip(hits, hits[1:]) if a[1] == b[1])


def test_filtered_searches_do_not_depend_on_shard_sizes(tmp_path):
    allowed = np.random.default_rng(5).random(len(VECTORS)) < 0.3
    spec = DenseSpec("float-flat")
    one = sharded_search(tmp_path, spec, len(VECTORS), 10, allowed)
    assert all(allowed[row] for hits in one for row, _ in hits)
    assert sharded_search(tmp_path, spec, 37, 10, allowed) == one


# -- whole builds of a real corpus -------------------------------------------------------------------


class OneTextAtATime:
    """The real embedder, one text per call, each text embedded once: a text's vector then does not
    depend on which other texts share its batch (batched ONNX inference differs in the last bits)."""

    def __init__(self, inner):
        self.inner, self.cache = inner, {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, batch_size=None, progress=None):
        for text in texts:
            if text not in self.cache:
                self.cache[text] = self.inner.encode([text])[0]
        return np.stack([self.cache[t] for t in texts])


@pytest.fixture(scope="module")
def twice(tmp_path_factory, small_corpus):
    """Two documents of the small corpus, each also present under a second name (duplicates)."""
    root = tmp_path_factory.mktemp("twice")
    for rel in ("sotu/1790-washington.txt", "sotu/1795-washington.txt"):
        for copy in ("a", "b"):
            target = root / copy / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(small_corpus / rel, target)
    return root


@pytest.fixture(scope="module")
def builds(tmp_path_factory, twice, small_config, embedder):
    encoder = OneTextAtATime(embedder.backend)
    out = {}
    for name, shard_size in (("one", 100_000), ("many", 7)):
        out[name] = tmp_path_factory.mktemp(name) / "ds"
        build_datastore([twice], out[name], small_config.replace(shard_size=shard_size), embedder=Embedder(backend=encoder),
                        progress=False)
    return {name: Datastore.open(root) for name, root in out.items()}, encoder


def as_tuples(hit_lists) -> list[list[tuple[int, float]]]:
    return [[(h.chunk_id, h.score) for h in hits] for hits in hit_lists]


def assert_same_hits(a, b) -> None:
    assert [[c for c, _ in hits] for hits in a] == [[c for c, _ in hits] for hits in b]
    np.testing.assert_allclose([s for hits in a for _, s in hits], [s for hits in b for _, s in hits], atol=1e-6)


def test_sharded_and_one_shard_builds_return_the_same_dense_hits(builds):
    (stores, encoder) = builds
    one, many = stores["one"], stores["many"]
    assert len(one.shards) == 1 and len(many.shards) > 10 and len(one) == len(many)
    queries = np.stack([encoder.encode([q])[0] for q in QUERIES])
    chunk_texts = [one.get_chunks([i])[i]["text"] for i in range(0, len(one), 9)]
    queries = np.vstack([queries, encoder.encode(chunk_texts)])  # a chunk's text: its duplicates tie at the top
    for k in (5, 10):  # odd and even: a copy pair straddles the k boundary in some queries
        a, b = as_tuples(one.search_vectors(queries, k=k)), as_tuples(many.search_vectors(queries, k=k))
        assert_same_hits(a, b)
        ties = [hits for hits in a if any(x[1] == y[1] for x, y in zip(hits, hits[1:]))]
        assert len(ties) >= len(chunk_texts)  # the duplicated documents tie exactly
        for hits in a:
            assert all(x[0] < y[0] for x, y in zip(hits, hits[1:]) if x[1] == y[1])
    where = "chunk_id % 2 = 1"
    assert_same_hits(as_tuples(one.search_vectors(queries, k=10, where=where)),
                     as_tuples(many.search_vectors(queries, k=10, where=where)))


def test_sharded_and_one_shard_builds_return_the_same_bm25_hits(builds):
    (stores, _) = builds
    one, many = stores["one"], stores["many"]
    a = as_tuples(one.search_many(QUERIES, k=10, mode="bm25"))
    b = as_tuples(many.search_many(QUERIES, k=10, mode="bm25"))
    assert_same_hits(a, b)
    assert sum(any(x[1] == y[1] for x, y in zip(hits, hits[1:])) for hits in a) >= len(QUERIES) // 2
    for hits in a:
        assert all(x[0] < y[0] for x, y in zip(hits, hits[1:]) if x[1] == y[1])  # ties: lower chunk id first


# -- concurrent queries ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["binary-ivf", "float-ivf", "float-ivfpq"])
def test_concurrent_filtered_ivf_searches_equal_sequential_ones(tmp_path, name):
    vectors = np.random.default_rng(2).normal(size=(3000, DIM)).astype(np.float32)
    spec = DenseSpec(name, ivf_nlist=16, ivf_nprobe=2)
    training = train_dense(spec, vectors)
    write_dense_files(tmp_path, vectors, spec, training)
    shard = DenseShard(tmp_path, spec, training, DIM, len(vectors))
    rng = np.random.default_rng(3)
    masks = [rng.random(len(vectors)) < p for p in (0.002, 0.01, 0.05, 0.5, 1.0)] * 4
    nprobe = shard.index.nprobe
    sequential = [shard.search(QVECS, 10, mask) for mask in masks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(lambda mask: shard.search(QVECS, 10, mask), masks))
    for (s1, r1), (s2, r2), mask in zip(sequential, concurrent, masks):
        assert np.array_equal(r1, r2) and np.array_equal(s1, s2)
        assert mask[r1[r1 >= 0]].all() and (r1 >= 0).sum(axis=1).min() == min(10, mask.sum())
    assert shard.index.nprobe == nprobe  # searches pass theirs per call: the shared index never changes
