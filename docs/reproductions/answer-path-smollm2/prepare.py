"""Data for the smollm2 answer-path reproductions, written under OUT (argv[1]).

- heldout.jsonl / store.jsonl: the 73 paragraphs of ../shared/data/squad2_dev_sample (CC BY-SA 4.0,
  SQuAD 2.0 dev), every 4th paragraph held out for perplexity, the others for the datastore (with
  the Chroma general-evaluation corpora, MIT, as distractors: see ../shared/data/chroma_general_eval).
- html_questions.jsonl: examples/html_pages/questions.jsonl with an empty reference list (the
  answer-evaluation reader needs the field; these questions name a page, not spans).
"""

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
data = json.loads((REPO.parent / "shared/data/squad2_dev_sample/squad2_dev_sample.json").read_text())["data"]
paragraphs = [p["context"] for article in data for p in article["paragraphs"]]
with open(out / "heldout.jsonl", "w") as held, open(out / "store.jsonl", "w") as store:
    for i, text in enumerate(paragraphs):
        (held if i % 4 == 0 else store).write(json.dumps({"id": f"squad{i:03d}", "text": text}) + "\n")
with open(out / "html_questions.jsonl", "w") as handle:
    for line in (REPO / "examples/html_pages/questions.jsonl").read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            handle.write(json.dumps({**record, "references": []}) + "\n")
