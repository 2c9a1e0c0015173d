"""`rag index` options derived from BuildConfig: each setting declared once, one option each."""

from __future__ import annotations

import json
from collections import Counter

import click
from click.testing import CliRunner

from indexers.config import BuildConfig, config_options
from ragcli.config_options import PARAM_PREFIX, config_overrides
from ragcli.index import index_command

#: flags `rag index` had before the options were derived; scripts that use them keep working
OLD_FLAGS = {"--chunker", "--chunk-size", "--overlap", "--tokenizer", "--embedder", "--device", "--batch-size",
             "--embed-backend", "--shard-size", "--dense-index", "--rescore", "--bits", "--train-sample", "--hnsw-m",
             "--hnsw-ef-construction", "--hnsw-ef-search", "--ivf-nlist", "--ivf-nprobe", "--query-prefix",
             "--passage-prefix", "--bm25-tokenizer", "--bm25-stopwords", "--bm25-idf", "--bm25-k1", "--bm25-b",
             "--metadata-type", "--include", "--exclude", "--strict", "--no-strict", "--vectors-field",
             "--vectors-per", "--dim", "--normalize"}


def test_every_setting_has_exactly_one_option_and_every_option_one_setting():
    params = [p for p in index_command.params if isinstance(p, click.Option)]
    config_params = {p.name for p in params if p.name.startswith(PARAM_PREFIX)}
    settings = config_options()
    assert len(config_params) == len(settings) == len({o.path for o in settings})
    assert config_params == {PARAM_PREFIX + "__".join(o.path) for o in settings}
    flags = Counter(flag for p in params for flag in p.opts + p.secondary_opts)
    assert [flag for flag, n in flags.items() if n > 1] == []
    assert OLD_FLAGS <= set(flags)
    assert all(o.metadata.get("help") for o in settings)  # every option says what it does


def test_choices_come_from_the_fields():
    by_name = {p.opts[0]: p for p in index_command.params if isinstance(p, click.Option)}
    assert "binary-ivf" in by_name["--dense-index"].type.choices
    assert "flat-ip" in by_name["--dense-index"].type.choices
    assert list(by_name["--bm25-idf"].type.choices) == ["rank-bm25", "lucene"]
    assert by_name["--include"].multiple and by_name["--metadata-type"].metavar == "FIELD:TYPE"


def test_overrides_are_nested_and_only_the_given_ones():
    given = {PARAM_PREFIX + "__".join(o.path): None for o in config_options()}
    given.update({PARAM_PREFIX + "bm25__k1": 2.0, PARAM_PREFIX + "dense__type": "binary-flat",
                  PARAM_PREFIX + "include": ("*.md",), PARAM_PREFIX + "exclude": (), "resume": False})
    overrides = config_overrides(given)
    assert overrides == {"bm25": {"k1": 2.0}, "dense": {"type": "binary-flat"}, "include": ("*.md",)}
    assert given == {"resume": False}  # the config options were taken out
    config = BuildConfig().replace(**overrides)
    assert (config.bm25.k1, config.dense.type, config.dense.rescore) == (2.0, "binary-flat", "int8")


def test_cli_flags_override_the_yaml_file(tmp_path, small_corpus):
    from ragcli import main

    yaml = tmp_path / "build.yaml"
    yaml.write_text("chunk_size: 100\ndevice: cpu\nbm25:\n  k1: 1.1\n  b: 0.6\ndense:\n  type: binary-flat\n")
    out = tmp_path / "ds"
    result = CliRunner().invoke(main, ["index", str(small_corpus), "-o", str(out), "--config", str(yaml),
                                       "--bm25-k1", "0.9", "--rescore", "float16", "-q"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["bm25"]["k1"], manifest["bm25"]["b"]) == (0.9, 0.6)
    assert (manifest["dense_index"]["type"], manifest["dense_index"]["rescore"]) == ("binary-flat", "float16")
    assert manifest["build"]["params"]["chunk_size"] == 100


def test_old_flat_yaml_key_is_a_one_line_error(tmp_path, small_corpus):
    from ragcli import main

    yaml = tmp_path / "old.yaml"
    yaml.write_text("bm25_k1: 1.1\n")
    result = CliRunner().invoke(main, ["index", str(small_corpus), "-o", str(tmp_path / "ds"), "--config", str(yaml)])
    assert result.exit_code != 0
    assert "bm25_k1 is now bm25.k1" in result.output and not (tmp_path / "ds").exists()
