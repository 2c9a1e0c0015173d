"""Issue 17: datastore tooling a data team can trust.

Semantic chunkers at build time, near-duplicate recall at the threshold, decontamination that
catches verbatim copies, merge/compact/live counts, metadata types, held-out importance pruning,
and plot/table labels."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from datasketch import MinHashLSH

from _ops_data import passages, write_texts
from conftest import EXAMPLES
from indexers.embedding import Embedder
from datastores import Datastore
from datastores.errors import DatastoreError
from datastores.layout import DatastoreLayout
from datastores.manifest import read_manifest
from datastores.ops.compact import compact
from datastores.ops.decontaminate import find_contaminated
from evaluators.eval_texts import load_eval_texts
from datastores.ops.dedup import find_duplicates
from datastores.ops.importance import split_questions
from datastores.ops.merge import merge
from datastores.ops.minhash import candidate_probability, lsh_params, word_shingles
from datastores.ops.tombstones import Operation, commit_tombstones
from indexers.build import build_datastore
from indexers.config import BuildConfig, ConfigError, load_config
from ragcli import main


# -- 1. semantic chunkers at build time ------------------------------------------------------------

class CountingEmbedder:
    """The session's real embedder, counting the texts it encodes (the model is loaded once)."""

    def __init__(self, inner):
        self.inner = inner
        self.texts = 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode(self, texts, batch_size=None, progress=None):
        self.texts += len(texts)
        return self.inner.encode(texts, batch_size, progress)


@pytest.fixture(scope="module")
def one_speech(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("speech")
    shutil.copy(EXAMPLES / "sotu" / "1790-washington.txt", folder / "1790-washington.txt")
    return folder


@pytest.mark.parametrize("chunker", ["cluster", "kamradt"])
def test_semantic_chunkers_build_with_the_datastores_embedder_and_exact_spans(chunker, one_speech, tmp_path,
                                                                             embedder, monkeypatch):
    def no_second_load(*args, **kwargs):
        raise AssertionError("the build loaded a second embedder")

    monkeypatch.setattr("indexers.embedding.embedder.make_backend", no_second_load)
    counting = CountingEmbedder(embedder.backend)
    config = BuildConfig(chunker=chunker, chunk_size=150, device="cpu", shard_size=16)
    report = build_datastore([one_speech], tmp_path / "ds", config, embedder=Embedder(backend=counting), progress=False)
    ds = Datastore.open(tmp_path / "ds")
    text = (one_speech / "1790-washington.txt").read_text(encoding="utf-8")
    rows = ds.get_chunks(range(len(ds)))
    assert len(rows) == report.chunks > 3
    assert all(text[r["start"]:r["end"]] == r["text"] for r in rows.values())
    assert ds.manifest.chunker["name"] == chunker and ds.manifest.chunker["embedder"] == embedder.name
    # the chunker's pieces went through the same embedder, and are not counted as embedded chunks
    assert counting.texts > report.chunks and report.embedding["texts"] == report.chunks


def test_semantic_chunkers_from_the_cli_and_a_yaml_config(one_speech, tmp_path):
    out = tmp_path / "k"
    result = CliRunner().invoke(main, ["index", str(one_speech), "-o", str(out), "--chunker", "kamradt",
                                       "--chunk-size", "150", "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert read_manifest(DatastoreLayout(out)).chunker["name"] == "kamradt"
    config = tmp_path / "cluster.yaml"
    config.write_text(yaml.safe_dump({"chunker": "cluster", "chunk_size": 100}))
    assert load_config(config).chunker == "cluster"
    config.write_text(yaml.safe_dump({"chunker": "semantic"}))
    with pytest.raises(ConfigError, match="chunker must be one of .*cluster, kamradt"):
        load_config(config)


def test_semantic_chunkers_refuse_cpu_workers(one_speech, tmp_path, embedder):
    from indexers.engines import EngineOptions

    with pytest.raises(ConfigError, match="kamradt chunker embeds"):
        build_datastore([one_speech], tmp_path / "ds", BuildConfig(chunker="kamradt", device="cpu"),
                        embedder=embedder, progress=False, engine=EngineOptions(cpu_workers=2))


# -- 2. near-duplicate recall --------------------------------------------------------------------

@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9])
@pytest.mark.parametrize("num_perm", [64, 128, 256])
def test_lsh_bands_reach_the_recall_at_the_threshold(threshold, num_perm):
    bands, rows = lsh_params(threshold, num_perm)
    assert bands * rows <= num_perm
    assert candidate_probability(threshold, bands, rows) >= 0.99
    # datasketch's own choice for the same threshold misses many pairs right at it
    default = MinHashLSH(threshold=threshold, num_perm=num_perm)
    assert candidate_probability(threshold, default.b, default.r) < candidate_probability(threshold, bands, rows)


def _jaccard(a: str, b: str, n: int = 13) -> float:
    x, y = word_shingles(a, n), word_shingles(b, n)
    return len(x & y) / len(x | y)


def _copy_at(text: str, k: int, serial: int) -> str:
    """``text`` with the word ``k`` places from the end replaced by a new word."""
    words = text.split()
    words[len(words) - k] = f"zq{serial}x"
    return " ".join(words)


def test_near_duplicates_found_at_every_level_above_the_threshold_and_none_below(tmp_path):
    base = passages(words_per_passage=80, count=60)
    rng = random.Random(3)
    texts, planted = list(base), {}
    for serial, source in enumerate(range(60)):
        k = rng.choice([3, 4, 5, 6, 7, 8, 9, 10])  # exact 13-shingle Jaccard from 0.92 down to 0.75
        planted[len(texts)] = (source, _jaccard(base[source], _copy_at(base[source], k, serial)))
        texts.append(_copy_at(base[source], k, serial))
    root = write_texts(tmp_path / "ds", texts, shard_size=25)
    result = find_duplicates(root, exact=False, near=True, threshold=0.8, max_examples=10**6)
    found = {p.removed: p for p in result.examples}
    above = [c for c, (_, j) in planted.items() if j >= 0.8]
    below = [c for c, (_, j) in planted.items() if j < 0.8]
    assert len(above) > 20 and len(below) > 10
    assert all(c in found and found[c].kept == planted[c][0] for c in above)   # recall 1 at J in [0.80, 0.92]
    assert not set(below) & set(found)                                        # nothing below the threshold
    for pair in result.examples:                                               # similarities are exact
        assert pair.similarity == pytest.approx(_jaccard(texts[pair.removed], texts[pair.kept]), abs=1e-4)
        assert pair.similarity >= 0.8


# -- 3. decontamination --------------------------------------------------------------------------

def test_decontamination_accepts_question_and_answers_only_and_catches_13_word_copies(tmp_path):
    texts = passages(words_per_passage=200, count=8)
    root = write_texts(tmp_path / "ds", texts, shard_size=4)
    words2, words5 = texts[2].split(), texts[5].split()
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "quote70", "question": "Which address says " + " ".join(words2[40:110]) + "?", "answers": ["x"]},
        {"id": "quote13", "question": "Who wrote: " + " ".join(words5[100:113]) + "?", "answers": ["y"]},
        {"id": "quote12", "question": "Who wrote: " + " ".join(texts[7].split()[20:32]) + "?", "answers": ["z"]},
    ]))
    evals = load_eval_texts(questions)
    assert [e.label for e in evals] == ["quote70", "quote13", "quote12"]
    # the Jaccard rule alone misses a 70-word quote inside a 200-word chunk; the default does not
    assert find_contaminated(root, evals, method="ngram").matches == []
    found = {m.chunk_id: m for m in find_contaminated(root, evals).matches}
    assert set(found) == {2, 5}
    assert found[2].label == "quote70" and found[2].score >= 70
    assert found[5].label == "quote13" and found[5].score == 13
    result = CliRunner().invoke(main, ["datastore", "decontaminate", str(root), "--against", str(questions),
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["removed"] == 2 and report["parameters"]["method"] == "either"
    assert Datastore.open(root).manifest.num_deleted == 2


def test_decontamination_help_states_the_rules():
    result = CliRunner().invoke(main, ["datastore", "decontaminate", "--help"])
    text = " ".join(result.output.split())
    assert "Jaccard >= THRESHOLD" in text and ">= MIN_WORDS consecutive words" in text
    assert "verbatim copy of 13 or more words" in text


def test_bad_question_lines_are_one_error(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "ok?", "answers": ["a"]}\n{"answers": ["b"]}\nnot json\n')
    with pytest.raises(ValueError, match="2 bad line"):
        load_eval_texts(path)


# -- 4. merge, live counts, compact, metadata types ----------------------------------------------

def test_merge_refuses_shared_document_ids_or_namespaces_them(tmp_path):
    texts = passages(count=12)
    a = write_texts(tmp_path / "a", texts[:6], shard_size=4)
    b = write_texts(tmp_path / "b", texts[6:], shard_size=4)  # document ids doc0000.. again
    with pytest.raises(DatastoreError, match="refusing to merge: 6 document id.*--prefix"):
        merge([a, b], tmp_path / "m")
    runner = CliRunner()
    refused = runner.invoke(main, ["datastore", "merge", str(a), str(b), "-o", str(tmp_path / "m")])
    assert refused.exit_code != 0 and "--prefix" in refused.output and not (tmp_path / "m").exists()
    result = runner.invoke(main, ["datastore", "merge", str(a), str(b), "-o", str(tmp_path / "m"), "--prefix"])
    assert result.exit_code == 0, result.output
    assert "namespaced with 'a/', 'b/'" in result.output
    merged = Datastore.open(tmp_path / "m")
    rows = merged.get_chunks(range(len(merged)))
    assert len(rows) == 12 and len({r["doc_id"] for r in rows.values()}) == 12
    assert rows[0]["doc_id"] == "a/doc0000" and rows[6]["doc_id"] == "b/doc0000"
    assert [rows[i]["text"] for i in range(12)] == texts


def test_live_counts_and_get_chunks_skip_tombstoned_rows(tmp_path):
    root = write_texts(tmp_path / "ds", passages(count=20), shard_size=6)
    commit_tombstones(root, read_manifest(DatastoreLayout(root)), np.array([1, 7, 8, 19]), Operation("manual", {}))
    ds = Datastore.open(root)
    assert len(ds) == 16 and ds.manifest.num_chunks == 20
    assert sorted(ds.get_chunks(range(20))) == [i for i in range(20) if i not in (1, 7, 8, 19)]
    assert sorted(ds.get_chunks([1, 2, 19], include_deleted=True)) == [1, 2, 19]
    group = Datastore(root, read_manifest(DatastoreLayout(root)), shards=[1])  # rows 6..11, two deleted
    assert len(group) == 4


def test_compact_repacks_to_the_configured_shard_size(tmp_path):
    texts = passages(count=40)
    root = write_texts(tmp_path / "ds", texts, shard_size=8)
    drop = [0, 3, 9, 10, 11, 20, 21, 22, 23, 33]
    commit_tombstones(root, read_manifest(DatastoreLayout(root)), np.array(drop), Operation("manual", {}))
    manifest = compact(root)
    assert [s.rows for s in manifest.shards] == [8, 8, 8, 6]
    assert manifest.build["params"]["shard_size"] == 8
    ds = Datastore.open(root)
    kept = [t for i, t in enumerate(texts) if i not in drop]
    assert [ds.get_chunks([i])[i]["text"] for i in range(len(ds))] == kept
    hit = ds.search(kept[17], k=1, mode="bm25")[0]
    assert hit.chunk_id == 17


def test_mixed_metadata_types_warn_at_index_time_and_declared_types_are_cast(tmp_path, embedder):
    docs = tmp_path / "docs"
    docs.mkdir()
    records = [{"id": "a", "text": "The harbour was dredged in the spring.", "year": 1814},
               {"id": "b", "text": "A new road reached the western towns.", "year": "1816"},
               {"id": "c", "text": "The treaty was signed in the autumn.", "year": 1805}]
    (docs / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    config = BuildConfig(chunk_size=50, device="cpu")
    report = build_datastore([docs], tmp_path / "mixed", config, embedder=embedder, progress=False)
    assert len(report.metadata_warnings) == 1 and "'year'" in report.metadata_warnings[0]
    assert "number (document 'd.jsonl#a')" in report.metadata_warnings[0]
    assert "string (document 'd.jsonl#b')" in report.metadata_warnings[0]
    mixed = Datastore.open(tmp_path / "mixed")
    with pytest.raises(DatastoreError):
        mixed.search("road", k=3, mode="bm25", where="year >= 1810")
    typed = build_datastore([docs], tmp_path / "typed", config.replace(metadata_types=["year:integer"]),
                            embedder=embedder, progress=False)
    assert typed.metadata_warnings == []
    hits = Datastore.open(tmp_path / "typed").search("harbour road treaty", k=3, mode="bm25", where="year >= 1810")
    assert sorted(h.doc_id for h in hits) == ["d.jsonl#a", "d.jsonl#b"]
    with pytest.raises(ConfigError, match="FIELD:TYPE"):
        config.replace(metadata_types=["year:decimalish"])


# -- 5. importance pruning must generalise -------------------------------------------------------

def test_split_questions_is_seeded_and_disjoint():
    train, held = split_questions(10, 0.3, seed=4)
    assert len(held) == 3 and not set(train) & set(held) and sorted([*train, *held]) == list(range(10))
    assert np.array_equal(split_questions(10, 0.3, seed=4)[1], held)
    with pytest.raises(ValueError, match="--heldout FILE"):
        split_questions(1)


FACTS = [("the Grelling lighthouse", "In what year was the Grelling lighthouse first lit?", "1874", "1902"),
         ("the Varnholt canal", "Who designed the Varnholt canal?", "Edda Quiller", "Tomas Brack"),
         ("the Osperine festival", "In which month is the Osperine festival held?", "October", "March"),
         ("the Thallow bridge", "How long is the Thallow bridge in metres?", "412", "87")]


@pytest.fixture(scope="module")
def facts_store(tmp_path_factory, embedder):
    root = tmp_path_factory.mktemp("facts")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, (subject, question, right, wrong) in enumerate(FACTS):
        (corpus / f"fact{i}-right.txt").write_text(f"According to local records, the answer about {subject} "
                                                  f"is {right}.")
        (corpus / f"fact{i}-wrong.txt").write_text(f"{question} {question} It is {wrong}.")
    build_datastore([corpus], root / "ds", BuildConfig(chunk_size=100, device="cpu"), embedder=embedder,
                    progress=False)
    poisoned = root / "poisoned.jsonl"   # held-out "gold" answers that only the mimicking chunks hold
    poisoned.write_text("".join(json.dumps({"question": q, "answers": [w]}) + "\n" for _, q, _, w in FACTS))
    true = root / "true.jsonl"
    true.write_text("".join(json.dumps({"question": q, "answers": [r]}) + "\n" for _, q, r, _ in FACTS))
    return root / "ds", poisoned, true


def test_prune_importance_refuses_a_pruning_that_lowers_held_out_utility(facts_store, tmp_path):
    source, poisoned, true = facts_store
    root = tmp_path / "ds"
    shutil.copytree(source, root)
    args = ["datastore", "prune-importance", str(root), "--dataset", str(true), "--heldout", str(poisoned),
            "--drop-below", "-0.01", "-k", "1", "--mode", "bm25"]
    refused = CliRunner().invoke(main, [*args, "--json"])
    assert refused.exit_code != 0 and "not committed" in refused.output and "--force" in refused.output
    report = json.loads(refused.output[refused.output.index("{"):refused.output.rindex("}") + 1])
    assert report["heldout"]["after"] < report["heldout"]["before"] and report["committed"] is False
    assert read_manifest(DatastoreLayout(root)).num_deleted == 0   # nothing lost
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "held-out answer-in-top-1 on 4 questions" in forced.output
    assert read_manifest(DatastoreLayout(root)).num_deleted == report["would_remove"] > 0


def test_prune_importance_commits_when_held_out_utility_holds(facts_store, tmp_path):
    source, _, true = facts_store
    root = tmp_path / "ds"
    shutil.copytree(source, root)
    result = CliRunner().invoke(main, ["datastore", "prune-importance", str(root), "--dataset", str(true),
                                       "--heldout", str(true), "--drop-below", "-0.01", "-k", "1", "--mode", "bm25",
                                       "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["committed"] and report["heldout"]["after"] >= report["heldout"]["before"]
    assert read_manifest(DatastoreLayout(root)).num_deleted == report["removed"] > 0


# -- 6. plots and tables -------------------------------------------------------------------------

def test_scaling_plot_gives_every_metric_its_own_style():
    from evaluators.scaling import ScalingResult, ScalingSettings

    rows = [{"fraction": p, "recall": 60.0 + p, "precision": 20.0 + p, "iou": 20.0 + p} for p in (0.1, 0.5, 1.0)]
    result = ScalingResult(ScalingSettings(), rows)
    fig = result.figure()
    lines = fig.axes[0].get_lines()
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(lines) == 3 and len(styles) == 3
    assert lines[2].get_zorder() > lines[1].get_zorder()   # iou drawn over precision, hollow markers
    assert lines[1].get_markerfacecolor() == "none"


def test_sweep_whiskers_stay_in_the_metric_range(tmp_path):
    from evaluators.sweep import std_range, write_plots

    low, high = std_range(np.array([95.0, 3.0, 50.0]), np.array([20.0, 10.0, 5.0]))
    assert low.tolist() == [75.0, 0.0, 45.0] and high.tolist() == [100.0, 13.0, 55.0]
    row = {"embedder": "e", "mode": "dense", "k": 5, "unit": "token", "chunker": "recursive", "overlap": 0,
           "chunk_size": 200}
    from evaluators.sweep import METRICS

    row.update({f"{m}_mean": 95.0 for m in METRICS} | {f"{m}_std": 20.0 for m in METRICS})
    assert write_plots([row], tmp_path)[0].stat().st_size > 0


def test_retrieval_row_label_names_mmr():
    from evaluators.retrieval import _engine
    from rag.retrieve.retriever import RetrieverConfig

    assert _engine(RetrieverConfig(mode="hybrid", fusion="rrf", mmr=0.7)) == "rrf(k=60) → MMR(λ=0.7)"
    assert "MMR" not in _engine(RetrieverConfig(mode="hybrid", fusion="rrf"))
