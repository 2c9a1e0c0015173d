"""`rag datastore decontaminate`: n-gram Jaccard and longest common word run against eval sets."""

from __future__ import annotations

import json

from click.testing import CliRunner

from _ops_data import passages, write_texts
from conftest import CHROMA
from datastores import Datastore
from datastores.ops.minhash import normalise_words
from datastores.ops.decontaminate import EvalText, find_contaminated, longest_common_run
from evaluators.eval_texts import load_eval_texts
from ragcli import main


def _questions(tmp_path, texts):
    words7 = texts[7].split()
    records = [
        {"id": "copied", "question": texts[3].replace(texts[3].split()[10], "something", 1),
         "answers": [], "references": []},
        {"id": "quoted", "question": "Which speech said: " + " ".join(words7[5:45]) + " and who gave it?",
         "answers": ["Washington"], "references": []},
        {"id": "clean", "question": "What is the airspeed of an unladen swallow?", "answers": ["11 m/s"],
         "references": []},
    ]
    path = tmp_path / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


def test_ngram_jaccard_flags_a_near_copy_only(tmp_path):
    texts = passages(count=12)
    root = write_texts(tmp_path / "ds", texts, shard_size=5)
    evals = load_eval_texts(_questions(tmp_path, texts))
    assert [e.label for e in evals] == ["copied", "quoted", "clean"]
    result = find_contaminated(root, evals, method="ngram", n=5, threshold=0.8)
    assert [(m.chunk_id, m.label) for m in result.matches] == [(3, "copied")]
    assert 0.8 <= result.matches[0].score < 1.0
    assert result.scanned == len(texts)


def test_longest_run_flags_quoted_passages(tmp_path):
    texts = passages(count=12)
    root = write_texts(tmp_path / "ds", texts, shard_size=5)
    evals = load_eval_texts(_questions(tmp_path, texts))
    result = find_contaminated(root, evals, method="longest", min_words=32)
    assert sorted((m.chunk_id, m.label) for m in result.matches) == [(3, "copied"), (7, "quoted")]
    quoted = next(m for m in result.matches if m.label == "quoted")
    assert quoted.score == 40 and "40 consecutive words" in quoted.evidence
    stricter = find_contaminated(root, evals, method="longest", min_words=41)
    assert [m.label for m in stricter.matches] == ["copied"]  # 49 words shared, the quote only 40


def test_longest_common_run():
    assert longest_common_run("a b c d e".split(), "x b c d y".split()) == 3
    assert longest_common_run(["a"], ["b"]) == 0


def test_chroma_references_as_evaluation_texts(tmp_path):
    evals = load_eval_texts(CHROMA, fields=["references"])
    long_refs = [e for e in evals if len(e.text.split()) >= 60][:3]
    texts = passages(count=8) + [e.text for e in long_refs]
    root = write_texts(tmp_path / "ds", texts, shard_size=4)
    result = find_contaminated(root, long_refs + [EvalText("other", "nothing in common here")], method="longest",
                               min_words=32)
    assert sorted(m.chunk_id for m in result.matches) == [8, 9, 10]
    by_label = {e.label: e.text for e in long_refs}
    for m in result.matches:  # overlapping references may claim each other's chunk; the run is real
        assert longest_common_run(normalise_words(texts[m.chunk_id]), normalise_words(by_label[m.label])) >= 32
    questions = load_eval_texts(CHROMA / "questions_df.csv")
    assert len(questions) == 472 and all(e.label.startswith("q") for e in questions)


def test_cli_decontaminate_reports_and_tombstones(tmp_path):
    texts = passages(count=12)
    root = write_texts(tmp_path / "ds", texts, shard_size=5)
    questions = _questions(tmp_path, texts)
    result = CliRunner().invoke(main, ["datastore", "decontaminate", str(root), "--against", str(questions),
                                       "--method", "longest", "--min-words", "32", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    assert report["removed"] == 2 and {m["label"] for m in report["matches"]} == {"copied", "quoted"}
    ds = Datastore.open(root)
    assert ds.manifest.lineage[-1]["parameters"]["method"] == "longest"
    assert {h.chunk_id for h in ds.search(texts[7], k=20, mode="bm25")}.isdisjoint({3, 7})
    bad = CliRunner().invoke(main, ["datastore", "decontaminate", str(root), "--against", str(questions),
                                    "--fields", "bogus"])
    assert bad.exit_code != 0 and "unknown field" in bad.output
