"""Dense index families behind one registry: every family builds and searches, float HNSW and
IVF-Flat recall, IVF nlist chosen from the training sample, and no type parsing outside the registry."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from indexers.embedding import Embedder
from datastores.dense import (
    DENSE_INDEX_TYPES,
    EMBEDDINGS_F16_FILE,
    FAMILIES,
    INDEX_ALIASES,
    DenseConfigError,
    DenseShard,
    DenseSpec,
    auto_nlist,
    family,
    manifest_dense_index,
    train_dense,
    write_dense_files,
)
from datastores.dense.families import MIN_POINTS_PER_CENTROID, auto_pq_bits
from datastores.verify import verify_datastore
from indexers.build import build_datastore
from rag import Datastore

REPO = Path(__file__).resolve().parents[1]
DIM = 64
QUERIES = ["treaty with Spain", "the militia and the public debt", "commerce and navigation",
           "Indian tribes on the frontier", "the national bank", "taxes on whiskey", "the army and the navy",
           "relations with France", "the post office and roads", "public credit and loans"]


def clustered(n: int, seed: int) -> np.ndarray:
    """Unit vectors around 20 shared centres: structured like embeddings, unlike uniform noise."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(20, DIM))
    x = centres[rng.integers(0, 20, n)] + rng.normal(scale=0.8, size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


VECTORS, QVECS = clustered(2000, 0), clustered(40, 1)
EXACT = np.argsort(-(QVECS @ VECTORS.T), axis=1, kind="stable")[:, :10]


def small_spec(name: str, **extra) -> DenseSpec:
    """Each family with settings sized for 2,000 vectors."""
    settings = {"ivf_nlist": 16, "ivf_nprobe": 4} if family(name).trained else {}
    if family(name).structure == "hnsw":
        settings["hnsw_m"] = 16
    return DenseSpec(name, **{**settings, **extra})


def open_shard(folder: Path, spec: DenseSpec, vectors: np.ndarray = VECTORS) -> DenseShard:
    folder.mkdir(parents=True, exist_ok=True)
    training = train_dense(spec, vectors[::2]) if spec.needs_training else None
    write_dense_files(folder, vectors, spec, training)
    return DenseShard(folder, spec, training, vectors.shape[1], len(vectors))


def recall(rows: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(r.tolist()) & set(e.tolist())) / exact.shape[1] for r, e in zip(rows, exact)]))


# -- the registry ------------------------------------------------------------------------------------


def test_registry_names_every_family_once_and_parses_aliases():
    assert DENSE_INDEX_TYPES == tuple(FAMILIES)
    assert {"float-flat", "float-hnsw", "float-ivf", "float-ivfpq", "binary-flat", "binary-hnsw",
            "binary-ivf"} == set(DENSE_INDEX_TYPES)
    assert all(FAMILIES[name].name == name for name in DENSE_INDEX_TYPES)
    assert family("flat-ip") is FAMILIES["float-flat"] and DenseSpec("flat-ip").type == "float-flat"
    with pytest.raises(DenseConfigError, match="dense_index must be one of float-flat, float-hnsw"):
        family("float-lsh")


def test_cli_choices_come_from_the_registry():
    from ragcli.index import index_command

    option = next(p for p in index_command.params if "--dense-index" in p.opts)
    assert list(option.type.choices) == [*DENSE_INDEX_TYPES, *INDEX_ALIASES]


def _type_name_comparisons(path: Path) -> list[str]:
    """``x == "binary-ivf"``-style comparisons (or ``in`` a tuple of names, or ``startswith``) in a file."""
    names = set(FAMILIES) | set(INDEX_ALIASES)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            values = [c for comp in node.comparators for c in (comp.elts if isinstance(comp, ast.Tuple) else [comp])]
            if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "startswith":
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(a in ("binary-", "float-") for a in args):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_module_branches_on_index_type_names_outside_the_registry():
    files = [p for package in ("datastores", "indexers", "rag", "evaluators") for p in (REPO / package).rglob("*.py")]
    assert len(files) > 50
    hits = [hit for path in files if path.name != "families.py" for hit in _type_name_comparisons(path)]
    assert hits == []
    assert _type_name_comparisons(REPO / "datastores" / "dense" / "families.py") == []  # classes, not branches


# -- every family ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DENSE_INDEX_TYPES)
def test_every_family_builds_and_searches_best_first(tmp_path, name):
    spec = small_spec(name)
    shard = open_shard(tmp_path, spec)
    scores, rows = shard.search(QVECS, 10, rescore_multiplier=10)
    assert rows.shape == (40, 10) and np.all(rows >= 0) and all(len(set(r)) == 10 for r in rows.tolist())
    assert np.all(np.diff(scores, axis=1) <= 0)
    assert recall(rows, EXACT) >= (0.9 if spec.family.exact_codes or spec.layer.rescores else 0.2), name
    allowed = np.zeros(len(VECTORS), dtype=bool)
    allowed[::7] = True
    _, rows = shard.search(QVECS, 10, allowed)
    assert rows.shape == (40, 10) and np.all(rows >= 0) and allowed[rows].all()


@pytest.mark.parametrize("name", ["float-hnsw", "float-ivf"])
def test_float_hnsw_and_ivf_scores_are_the_exact_inner_products(tmp_path, name):
    shard = open_shard(tmp_path, small_spec(name))
    scores, rows = shard.search(QVECS, 10)
    exact = np.einsum("qkd,qd->qk", VECTORS[rows].astype(np.float64), QVECS.astype(np.float64))
    np.testing.assert_allclose(scores, exact, rtol=1e-6, atol=1e-7)
    assert (tmp_path / EMBEDDINGS_F16_FILE).is_file()  # kept for MMR and rewrites, like float-flat
    assert shard.spec.rescore == "none" and not shard.spec.layer.rescores


def test_float_hnsw_and_ivf_recall_grows_with_their_search_width(tmp_path):
    narrow = open_shard(tmp_path / "a", small_spec("float-ivf", ivf_nprobe=1))
    wide = DenseShard(narrow.folder, small_spec("float-ivf", ivf_nprobe=8), narrow.training, DIM, len(VECTORS))
    assert recall(wide.search(QVECS, 10)[1], EXACT) > recall(narrow.search(QVECS, 10)[1], EXACT)
    assert recall(wide.search(QVECS, 10)[1], EXACT) >= 0.95
    hnsw = open_shard(tmp_path / "b", small_spec("float-hnsw", hnsw_m=4, hnsw_ef_search=10))
    assert recall(hnsw.search(QVECS, 10)[1], EXACT) >= 0.8


@pytest.mark.parametrize("values, message", [
    ({"type": "float-hnsw", "rescore": "int8"}, "float-hnsw scores exactly"),
    ({"type": "float-ivf", "rescore": "float16"}, "float-ivf scores exactly"),
    ({"type": "float-hnsw", "bits": 2}, "bits > 1 needs a binary index"),
    ({"type": "float-ivf", "ivf_nlist": 2, "ivf_nprobe": 3}, "ivf_nprobe"),
    ({"type": "float-ivf", "ivf_nlist": 0}, "ivf_nlist must be at least 1"),
])
def test_bad_settings_of_the_new_families_are_named(values, message):
    with pytest.raises(DenseConfigError, match=message):
        DenseSpec(**values)


# -- nlist from the training sample ------------------------------------------------------------------


@pytest.mark.parametrize("samples, expected", [(1, 1), (38, 1), (158, 4), (1000, 25), (20_000, 512),
                                                (1_000_000, 4000)])
def test_auto_nlist_is_about_4_sqrt_n_with_39_points_per_list(samples, expected):
    nlist = auto_nlist(samples)
    assert nlist == expected
    assert samples < MIN_POINTS_PER_CENTROID or samples // nlist >= MIN_POINTS_PER_CENTROID
    assert nlist <= max(1, round(4 * np.sqrt(samples)))


def test_auto_pq_bits_keep_8_bits_whenever_the_sample_allows():
    assert [auto_pq_bits(n) for n in (1, 78, 158, 255, 256, 20_000)] == [1, 1, 2, 2, 8, 8]


@pytest.mark.parametrize("name", ["float-ivf", "float-ivfpq", "binary-ivf"])
def test_auto_nlist_is_recorded_in_the_manifest(tmp_path, name):
    spec = DenseSpec(name)
    sample = VECTORS[:158]
    training = train_dense(spec, sample)
    recorded = manifest_dense_index(spec, training)["ivf"]
    assert recorded["nlist"] == auto_nlist(158) == 4 and recorded["nprobe"] == 4  # nprobe capped at nlist
    assert DenseSpec.coerce(manifest_dense_index(spec, training)).ivf_nlist == 4
    assert spec.settings()["ivf"]["nlist"] == "auto"  # the build fingerprint: what the user asked for
    if name == "float-ivfpq":
        assert recorded["pq_bits"] == 2


@pytest.fixture(scope="module")
def chunk_cache():
    """Vectors of every text embedded so far (the families' builds share one corpus)."""
    return {}


class CachedEmbedder:
    """The real embedder's backend, each text embedded once across this module's builds."""

    def __init__(self, inner, cache: dict):
        self.inner, self.cache = inner, cache

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, batch_size=None, progress=None):
        missing = [t for t in dict.fromkeys(texts) if t not in self.cache]
        if missing:
            self.cache.update(zip(missing, self.inner.encode(missing, batch_size, progress)))
        return np.stack([self.cache[t] for t in texts])


@pytest.fixture(scope="module")
def build(tmp_path_factory, small_corpus, small_config, embedder, chunk_cache):
    """``build(dense_index, **settings)``: the small corpus (about 150 chunks) in shards of 40 with that index."""
    def build_with(dense_index: str, **settings) -> Path:
        out = tmp_path_factory.mktemp(dense_index) / "ds"
        config = small_config.replace(dense={"type": dense_index, **settings})
        build_datastore([small_corpus], out, config, embedder=Embedder(backend=CachedEmbedder(embedder.backend, chunk_cache)),
                        progress=False)
        return out
    return build_with


@pytest.fixture(scope="module")
def query_vectors(embedder):
    return embedder.encode_passages(QUERIES)


def hit_ids(root: Path, vectors: np.ndarray, k: int = 10) -> np.ndarray:
    return np.array([[h.chunk_id for h in hits] for hits in Datastore.open(root).search_vectors(vectors, k=k)])


@pytest.fixture(scope="module")
def exact_ids(build, query_vectors):
    return hit_ids(build("float-flat"), query_vectors)


@pytest.mark.parametrize("name", ["float-hnsw", "float-ivf"])
def test_float_hnsw_and_ivf_recall_on_a_real_corpus(build, query_vectors, exact_ids, name):
    root = build(name, hnsw_m=8)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["dense_index"]["type"] == name and len(manifest["shards"]) > 2
    assert recall(hit_ids(root, query_vectors), exact_ids) >= 0.95
    assert verify_datastore(root).ok


@pytest.mark.parametrize("name", ["float-ivfpq", "binary-ivf"])
def test_ivf_with_nlist_from_a_sample_of_under_256_chunks(build, query_vectors, exact_ids, name):
    root = build(name)  # no ivf_nlist: before, the default 256 needed 256 training vectors and failed
    manifest = json.loads((root / "manifest.json").read_text())
    chunks, ivf = manifest["stats"]["chunks"], manifest["dense_index"]["ivf"]
    assert 100 <= chunks < 256  # the whole corpus is the training sample
    assert ivf["nlist"] == auto_nlist(chunks) >= 2 and ivf["nprobe"] == ivf["nlist"]
    ids = hit_ids(root, query_vectors)
    assert ids.shape == (len(QUERIES), 10)
    assert recall(ids, exact_ids) >= 0.8  # int8 rescoring of 4x candidates from every list
    assert verify_datastore(root).ok


def test_cli_builds_a_float_hnsw_datastore(tmp_path, small_corpus):
    from click.testing import CliRunner

    from ragcli import main

    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["index", str(small_corpus / "sotu"), "-o", str(out), "--chunk-size", "100",
                                       "--device", "cpu", "-q", "--dense-index", "float-hnsw", "--hnsw-m", "8"])
    assert result.exit_code == 0, result.output
    dense = json.loads((out / "manifest.json").read_text())["dense_index"]
    assert dense["type"] == "float-hnsw" and dense["hnsw"]["m"] == 8 and dense["rescore"] == "none"
