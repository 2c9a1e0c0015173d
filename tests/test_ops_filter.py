"""`rag datastore filter`: built-in quality rules and a SQL expression, with --dry-run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from _ops_data import passages, write_texts
from datastores import Datastore, DatastoreError
from datastores.ops.quality import QualityRules, find_low_quality, text_features
from ragcli import main

BAD = {
    "short": "Too short to keep.",
    "symbols": " ".join(f"{{{{#|}}}} <<>> ~~ w{i}" for i in range(16)),
    "repetitive": " ".join(["buy cheap pills now"] * 12),
    "numbers": " ".join(str(1000 + i) for i in range(40)) + " total",
}


def _datastore(tmp_path):
    good = passages(count=10)
    texts = good[:4] + list(BAD.values()) + good[4:]
    return write_texts(tmp_path / "ds", texts, shard_size=5), {name: 4 + i for i, name in enumerate(BAD)}


def test_text_features():
    f = text_features(BAD["repetitive"])
    assert f["words"] == 48 and f["repetition"] > 0.9
    assert text_features(BAD["symbols"])["symbol_ratio"] > 0.8
    assert text_features(BAD["numbers"])["non_alpha_ratio"] == 40 / 41
    clean = text_features(passages(count=1)[0])
    assert clean["repetition"] < 0.1 and clean["symbol_ratio"] < 0.05 and clean["non_alpha_ratio"] < 0.1


@pytest.mark.parametrize("rule, value, planted", [
    ("min_words", 13, "short"),
    ("max_symbol_ratio", 0.3, "symbols"),
    ("max_repetition", 0.3, "repetitive"),
    ("max_non_alpha", 0.5, "numbers"),
])
def test_each_rule_removes_its_planted_chunk(tmp_path, rule, value, planted):
    root, ids = _datastore(tmp_path)
    result = find_low_quality(root, QualityRules(**{rule: value}))
    assert result.removed_ids == [ids[planted]]
    assert result.per_rule == {rule: 1} and result.samples[0].rules == (rule,)


def test_where_expression_keeps_matching_chunks(tmp_path):
    root, ids = _datastore(tmp_path)
    result = find_low_quality(root, QualityRules(where="doc_id NOT IN ('doc0001', 'doc0002') AND text NOT LIKE '%pills%'"))
    assert result.removed_ids == [1, 2, ids["repetitive"]]
    with pytest.raises(DatastoreError, match="invalid SQL|not a filter"):
        find_low_quality(root, QualityRules(where="true) UNION SELECT 1 --"))
    with pytest.raises(ValueError, match="no filter"):
        find_low_quality(root, QualityRules())


def test_cli_dry_run_changes_nothing_then_filter_commits(tmp_path):
    root, ids = _datastore(tmp_path)
    args = ["datastore", "filter", str(root), "--min-words", "13", "--max-symbol-ratio", "0.3",
            "--max-repetition", "0.3", "--max-non-alpha", "0.5", "--where", "source LIKE 'doc%'"]
    before = (root / "manifest.json").read_bytes()
    dry = CliRunner().invoke(main, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.output[dry.output.index("{"):])
    assert report["would_remove"] == 4 and len(report["samples"]) == 4 and report["dry_run"]
    assert (root / "manifest.json").read_bytes() == before
    shown = CliRunner().invoke(main, [*args, "--dry-run"])
    assert "would tombstone 4 chunk(s)" in shown.output and "pills" in shown.output
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    ds = Datastore.open(root)
    assert ds.manifest.num_deleted == 4
    assert ds.manifest.lineage[-1]["parameters"]["max_repetition"] == 0.3
    assert ds.sql().execute("SELECT count(*) FROM chunks WHERE text LIKE '%pills%'").fetchone()[0] == 0
