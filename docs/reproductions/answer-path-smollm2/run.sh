#!/usr/bin/env bash
# The four answer-path reproductions with SmolLM2-135M-Instruct (rag.lm "smollm2") on CPU, one thread.
# Usage: bash docs/reproductions/answer-path-smollm2/run.sh [WORK_DIR]   (from the repository root)
# Questions are subsampled (seeded; LIMIT, default 8) so each study takes minutes on a 2-core machine
# (BUDGETS, KS, HTML_BUDGETS widen the grids); outputs (JSON,
# PNG, per-question JSONL) land next to this script, or in $OUT. Generations are cached ($TERARAG_CACHE/answers),
# so a killed run resumes.
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} TOKENIZERS_PARALLELISM=false
R=docs/reproductions/answer-path-smollm2
O=${OUT:-$R}   # where the outputs go (OUT=/tmp/x keeps a trial run out of the tree)
W=${1:-/tmp/terarag-repro}
BIN=${BIN:-.venv/bin}
SQUAD=../shared/data/squad2_dev_sample/squad2_dev_sample.json
CHROMA=../shared/data/chroma_general_eval/corpora
SYSTEM="Answer the question with a short phrase copied from the passages. Do not explain."
mkdir -p "$W/configs" "$O"
$BIN/python "$R/prepare.py" "$W"

config() {  # config NAME K BUDGET COMPRESSOR REORDER PRUNER
  local compressor="null" pruner="null"
  case "$4" in none) ;; token) compressor="{method: token, model: smollm2}" ;; *) compressor="{method: $4}" ;; esac
  [ "${6:-none}" = html ] && pruner="{method: html}"
  cat > "$W/configs/$1.yaml" <<YAML
k: $2
budget: $3
device: cpu
retriever: {mode: dense}
pruner: $pruner
compressor: $compressor
reorder: $5
generator: {spec: "hf:smollm2", max_new_tokens: 16, system: "$SYSTEM"}
YAML
  echo "$W/configs/$1.yaml"
}

echo "== 1. perplexity against datastore fraction (MassiveDS; skipped where its JSON exists)"
PPL="--texts $W/heldout.jsonl --lm smollm2 --window 128 --query-tokens 64 -k 3 --max-windows 24 --device cpu"
if [ ! -f $O/perplexity-fraction.json ]; then
  [ -d "$W/ppl_ds" ] || $BIN/rag index "$W/store.jsonl" "$CHROMA" -o "$W/ppl_ds" --chunk-size 128 --device cpu
  $BIN/rag eval perplexity --datastore "$W/ppl_ds" $PPL --fractions 0.01,0.03,0.1,0.3,1 \
    --plot $O/perplexity-fraction.png --out $O/perplexity-fraction.json
fi
if [ ! -f $O/perplexity-contaminated-kept.json ] || [ ! -f $O/perplexity-contaminated-removed.json ]; then
  [ -d "$W/ppl_ds_all" ] || $BIN/rag index "$W/heldout.jsonl" "$W/store.jsonl" "$CHROMA" -o "$W/ppl_ds_all" \
    --chunk-size 128 --device cpu
  $BIN/rag eval perplexity --datastore "$W/ppl_ds_all" $PPL --keep-overlaps --out $O/perplexity-contaminated-kept.json
  $BIN/rag eval perplexity --datastore "$W/ppl_ds_all" $PPL --out $O/perplexity-contaminated-removed.json
fi

QA="--dataset $SQUAD --limit ${LIMIT:-8} --seed 0 --device cpu --batch-size 4"
echo "== 2. F1 against compression budget (TCRA-LLM)"
rows=(--config "$(config full 5 2048 none false)")
for method in truncate sentence semantic token; do
  for budget in ${BUDGETS:-128}; do rows+=(--config "$(config "$method-$budget" 5 $budget $method false)"); done
done
$BIN/rag eval answers $QA "${rows[@]}" --out $O/compression.jsonl --json > $O/compression.json

echo "== 3. reordered against retrieval order"
rows=()
for k in ${KS:-3 10}; do
  rows+=(--config "$(config "k$k-retrieval-order" $k 2048 none false)" --config "$(config "k$k-reordered" $k 2048 none true)")
done
$BIN/rag eval answers $QA "${rows[@]}" --no-oracle --no-closed-book --out $O/reorder.jsonl --json > $O/reorder.json

echo "== 4. pruned HTML against cleaned plain text at the same budget (HtmlRAG)"
[ -d "$W/html_ds" ] || $BIN/rag index examples/html_pages -o "$W/html_ds" --chunk-size 512 --device cpu
rows=()
for budget in ${HTML_BUDGETS:-256}; do
  rows+=(--config "$(config "plain-$budget" 3 $budget none false)" --config "$(config "pruned-$budget" 3 $budget none false html)")
done
$BIN/rag eval answers --dataset "$W/html_questions.jsonl" --datastore "$W/html_ds" --limit ${LIMIT:-8} --seed 0 --device cpu \
  --batch-size 4 "${rows[@]}" --no-oracle --out $O/html.jsonl --json > $O/html.json
echo "done"
