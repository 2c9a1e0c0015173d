"""DatastoreWriter's constructors: create / resume / overwrite, and the one resume rule."""

from __future__ import annotations

import json

import pytest

from datastores import Bm25Params, Datastore, DatastoreWriter
from datastores.dense import DenseSpec
from datastores.errors import DatastoreError
from datastores.layout import SHARD_INFO, DatastoreLayout
from datastores.writer import fingerprint
from datastores.records import Chunk
from tests._ops_data import CHUNKER, text_vectors

TEXTS = [f"passage number {i} about rivers and hills" for i in range(12)]
CHUNKS = [Chunk(f"d{i}", 0, len(t), t) for i, t in enumerate(TEXTS)]
#: the default rescoring depth (docs/benchmarks.md, "Default rescoring depth")
NEW_DEFAULT_DEPTH = 10
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


def started_binary(root, params: dict, depth: int | None) -> DatastoreWriter:
    """A binary-flat + int8 build of TEXTS killed after its first shard, at rescoring ``depth``."""
    spec = DenseSpec("binary-flat") if depth is None else DenseSpec("binary-flat", rescore_multiplier=depth)
    writer = DatastoreWriter.create(root, params, *SETTINGS[1:], spec)
    writer.train_dense(text_vectors(TEXTS))
    writer.add_shard(CHUNKS[:6], text_vectors(TEXTS[:6]), 0)
    return writer


def older_fingerprint(params: dict, spec: DenseSpec) -> str:
    """The fingerprint code before issue 19 gave a build: its depth in the dense settings."""
    _, embedder, chunker, bm25 = SETTINGS
    return fingerprint({"params": params, "embedder": embedder, "chunker": chunker, "bm25": bm25.to_dict(),
                        "dense_index": spec.settings()})


def finish_resumed(root, params: dict, spec: DenseSpec) -> tuple[DatastoreWriter, Datastore]:
    writer = DatastoreWriter.resume(root, params, *SETTINGS[1:], spec)
    writer.add_shard(CHUNKS[:6], text_vectors(TEXTS[:6]), 0)
    writer.add_shard(CHUNKS[6:], text_vectors(TEXTS[6:]), 6)
    writer.finish({"documents": len(TEXTS)}, 16)
    return writer, Datastore.open(root)


def test_a_build_started_at_the_old_default_depth_resumes_at_the_new_one(tmp_path):
    root, params = tmp_path / "ds", SETTINGS[0]
    started = started_binary(root, params, depth=4)  # what every binary build got by default before
    assert started.fingerprint == older_fingerprint(params, started.dense)  # so such builds resume
    writer, ds = finish_resumed(root, params, DenseSpec("binary-flat"))
    assert writer.resumed_shards == 1
    assert ds.manifest.dense_index["rescore_multiplier"] == NEW_DEFAULT_DEPTH
    assert ds.shards[0].dense_layer().spec.rescore_multiplier == NEW_DEFAULT_DEPTH  # what its searches fetch


def test_a_build_older_code_started_at_an_explicit_depth_resumes(tmp_path):
    root, params = tmp_path / "ds", {**SETTINGS[0], "rescore_multiplier": 7}
    started_binary(root, params, depth=7)
    layout = DatastoreLayout(root)
    older = older_fingerprint(params, DenseSpec("binary-flat", rescore_multiplier=7))
    for path in (layout.build_state, layout.shard("shard-00000") / SHARD_INFO):  # as older code wrote them
        path.write_text(json.dumps({**json.loads(path.read_text()), "fingerprint": older}))
    writer, ds = finish_resumed(root, params, DenseSpec("binary-flat", rescore_multiplier=7))
    assert writer.resumed_shards == 1 and ds.manifest.dense_index["rescore_multiplier"] == 7


def test_the_depth_is_no_part_of_a_builds_identity_but_the_files_settings_are(tmp_path):
    root, params = tmp_path / "ds", SETTINGS[0]
    started_binary(root, params, depth=12)
    writer, _ = finish_resumed(root, params, DenseSpec("binary-flat", rescore_multiplier=5))
    assert writer.resumed_shards == 1
    started_binary(tmp_path / "other", params, depth=None)
    with pytest.raises(DatastoreError, match="different parameters"):
        DatastoreWriter.resume(tmp_path / "other", params, *SETTINGS[1:], DenseSpec("binary-flat", rescore="float16"))
