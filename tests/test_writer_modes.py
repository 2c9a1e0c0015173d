"""DatastoreWriter's constructors: create / resume / overwrite, and the one resume rule."""

from __future__ import annotations

import pytest

from datastores import Bm25Params, DatastoreWriter
from datastores.errors import DatastoreError
from datastores.records import Chunk
from tests._ops_data import CHUNKER, text_vectors

TEXTS = [f"passage number {i} about rivers and hills" for i in range(12)]
CHUNKS = [Chunk(f"d{i}", 0, len(t), t) for i, t in enumerate(TEXTS)]
SETTINGS = ({"texts": len(TEXTS)}, {"name": "hash-vectors", "normalized": True}, CHUNKER, Bm25Params())


def interrupted(root, shards: int = 1) -> None:
    """A build of TEXTS in shards of 6 killed after ``shards`` shards (no manifest)."""
    writer = DatastoreWriter.create(root, *SETTINGS)
    for start in range(0, 6 * shards, 6):
        writer.add_shard(CHUNKS[start:start + 6], text_vectors(TEXTS[start:start + 6]), start)


def test_the_plain_constructor_touches_no_file_and_cannot_write(tmp_path):
    root = tmp_path / "ds"
    writer = DatastoreWriter(root, *SETTINGS)
    assert not root.exists()
    with pytest.raises(ValueError, match="create, resume or overwrite"):
        writer.add_shard(CHUNKS[:6], text_vectors(TEXTS[:6]), 0)
    assert not root.exists()


def test_resume_adopts_the_shards_of_the_interrupted_run_and_create_refuses_them(tmp_path):
    root = tmp_path / "ds"
    interrupted(root)
    with pytest.raises(DatastoreError, match="--resume"):
        DatastoreWriter.create(root, *SETTINGS)
    writer = DatastoreWriter.resume(root, *SETTINGS)
    assert writer.may_adopt(0) and not writer.may_adopt(1)
    first = writer.add_shard(CHUNKS[:6], text_vectors(TEXTS[:6]), 0)
    writer.add_shard(CHUNKS[6:], text_vectors(TEXTS[6:]), 6)
    assert (writer.resumed_shards, [s.name for s in writer.shards]) == (1, [first.name, writer.shards[1].name])
    assert writer.finish({"documents": len(TEXTS)}, 16).num_chunks == len(TEXTS)


def test_resume_refuses_a_shard_written_from_other_input(tmp_path):
    root = tmp_path / "ds"
    interrupted(root)
    writer = DatastoreWriter.resume(root, *SETTINGS)
    with pytest.raises(DatastoreError, match="written from different input"):
        writer.adopt_shard(0, CHUNKS[1:7], 0)


def test_overwrite_empties_the_folder_and_adopts_nothing(tmp_path):
    root = tmp_path / "ds"
    interrupted(root, shards=2)
    writer = DatastoreWriter.overwrite(root, *SETTINGS)
    assert not writer.may_adopt(0) and list((root / "shards").iterdir()) == []
    writer.add_shard(CHUNKS, text_vectors(TEXTS), 0)
    assert writer.resumed_shards == 0


def test_shards_are_recorded_in_order_only(tmp_path):
    writer = DatastoreWriter.create(tmp_path / "ds", *SETTINGS)
    second = writer.write_shard(1, CHUNKS[6:], text_vectors(TEXTS[6:]), 6)
    with pytest.raises(ValueError, match="out of order"):
        writer.record_shard(second)
    writer.record_shard(writer.write_shard(0, CHUNKS[:6], text_vectors(TEXTS[:6]), 0))
    writer.record_shard(second)
    assert [s.chunk_id_start for s in writer.shards] == [0, 6]
