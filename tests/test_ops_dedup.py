"""`rag datastore dedup`: exact and MinHash near-duplicates, first occurrence kept."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from _ops_data import passages, write_texts
from datastores import Datastore
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.dedup import find_duplicates
from datastores.ops.tombstones import Operation, commit_tombstones
from ragcli import main


def _edit(text: str, every: int) -> str:
    """Replace every ``every``-th word: a near-duplicate."""
    words = text.split()
    return " ".join("CHANGED" if i % every == 0 else w for i, w in enumerate(words))


def planted(tmp_path):
    base = passages(count=24)
    texts = list(base)
    exact = {len(texts): 2}
    texts.append(base[2].upper().replace(",", " ,"))     # same words: an exact duplicate after normalising
    near = {len(texts): 5}
    texts.append(_edit(base[5], 30))                       # 2 of 60 words changed
    exact[len(texts)] = 0
    texts.append(base[0])
    near[len(texts)] = 9
    texts.append(_edit(base[9], 25))
    texts.append(_edit(base[11], 3))                      # a third of the words changed: not a duplicate
    return write_texts(tmp_path / "ds", texts, shard_size=7), exact, near


def test_dedup_finds_planted_duplicates_and_keeps_the_first(tmp_path):
    root, exact, near = planted(tmp_path)
    result = find_duplicates(root, threshold=0.6, shingle=3)
    assert result.exact == len(exact) and result.near == len(near)
    assert result.removed_ids == sorted([*exact, *near])
    pairs = {(p.removed, p.kept, p.kind) for p in result.examples}
    assert pairs == {(r, k, "exact") for r, k in exact.items()} | {(r, k, "near") for r, k in near.items()}
    assert all(0.6 <= p.similarity <= 1.0 for p in result.examples)


def test_exact_only_and_near_only(tmp_path):
    root, exact, near = planted(tmp_path)
    assert find_duplicates(root, exact=True, near=False).removed_ids == sorted(exact)
    only_near = find_duplicates(root, exact=False, near=True, threshold=0.6, shingle=3)
    assert set(only_near.removed_ids) >= set(near)
    assert only_near.exact == 0


def test_already_tombstoned_chunks_are_skipped(tmp_path):
    root, exact, near = planted(tmp_path)
    manifest = read_manifest(DatastoreLayout(root))
    commit_tombstones(root, manifest, np.array([2]), Operation("manual", {}))
    result = find_duplicates(root, threshold=0.6, shingle=3)
    removed_copy = next(r for r, k in exact.items() if k == 2)
    assert removed_copy not in result.removed_ids  # its original is gone, so the copy is now the first


def test_cli_dedup_tombstones_and_searches_skip_them(tmp_path):
    root, exact, near = planted(tmp_path)
    dry = CliRunner().invoke(main, ["datastore", "dedup", str(root), "--threshold", "0.6", "--shingle", "3",
                                    "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output[dry.output.index("{"):])
    assert report["would_remove"] == len(exact) + len(near) and report["examples"]
    assert read_manifest(DatastoreLayout(root)).num_deleted == 0
    result = CliRunner().invoke(main, ["datastore", "dedup", str(root), "--threshold", "0.6", "--shingle", "3"])
    assert result.exit_code == 0, result.output
    assert "exact" in result.output and "near" in result.output
    ds = Datastore.open(root)
    assert ds.manifest.num_deleted == len(exact) + len(near)
    assert ds.manifest.lineage[-1]["operation"] == "dedup"
    assert ds.manifest.lineage[-1]["parameters"]["threshold"] == 0.6
    hits = ds.search(ds.get_chunks([5])[5]["text"], k=ds.manifest.num_chunks, mode="bm25")
    assert not {h.chunk_id for h in hits} & set(near) and hits[0].chunk_id == 5
