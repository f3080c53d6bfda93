#!/usr/bin/env bash
# The "Bigger models" workflow of the README, timed: a model of a real family built from a config
# (init-model), full SFT, S-DPO with LoRA (reference = the SFT model, adapter off), both evaluation
# protocols, export --merge (the merged model must score as the adapter did), and the same S-DPO
# stage in 2 processes under torchrun. Prints a table (also OUT/table.md).
#
#   bench/bigger.sh [OUT]                                   # CPU: a tiny Qwen3 on the built-in data
#   FAMILY=llama HIDDEN=2048 LAYERS=16 HEADS=32 KV=8 INTER=8192 VOCAB=32000 \
#     EXTRA="--mixed-precision bf16 --device cuda" NPROC=0 bench/bigger.sh runs/bigger-1b   # a ~1B Llama on a GPU
set -euo pipefail
OUT=${1:-runs/bigger}
PY=${PY:-.venv/bin/python}
FAMILY=${FAMILY:-qwen3}; HIDDEN=${HIDDEN:-128}; LAYERS=${LAYERS:-2}; HEADS=${HEADS:-4}; KV=${KV:-2}
INTER=${INTER:-0}; VOCAB=${VOCAB:-4000}; SFT_EPOCHS=${SFT_EPOCHS:-2}; EXTRA=${EXTRA:-}; NPROC=${NPROC:-2}
mkdir -p "$OUT"
: > "$OUT/times.txt"

step() {  # step NAME sdporec-args...: run, keep its output, record wall seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  if ! "$@" > "$OUT/$name.log" 2>&1; then tail -30 "$OUT/$name.log"; exit 1; fi
  echo "$name $(awk "BEGIN{print $(date +%s.%N) - $t0}")" >> "$OUT/times.txt"
  echo "$name done" >&2
}
S="$PY -m sdporec"
D=$OUT/data
FILES="--train $D/train.jsonl --valid $D/valid.jsonl --eval-samples 500 --no-progress --batch-size 16"

[ -f "$D/test.jsonl" ] || step prepare $S prepare builtin --out "$D" --users "${USERS:-800}"
step init $S init-model --overwrite --family "$FAMILY" --train "$D/train.jsonl" --out "$OUT/init" --hidden "$HIDDEN" \
  --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV" --intermediate "$INTER" --vocab-size "$VOCAB"
step sft $S sft --overwrite --model "$OUT/init" --out "$OUT/sft" --epochs "$SFT_EPOCHS" $FILES $EXTRA
step sdpo $S sdpo --overwrite --model "$OUT/sft/model" --out "$OUT/sdpo" --negatives 3 --lora --eval-every 200 \
  --reference-cache none $FILES $EXTRA
for p in ranking generation; do
  step "eval-$p" $S evaluate --overwrite --model "$OUT/sdpo/model" --data "$D/test.jsonl" --out "$OUT/eval-$p" --protocol "$p" \
    --no-progress
done
step export $S export --overwrite --model "$OUT/sdpo/model" --merge --out "$OUT/merged"
step eval-merged $S evaluate --overwrite --model "$OUT/merged" --data "$D/test.jsonl" --out "$OUT/eval-merged" --no-progress
if [ "$NPROC" -gt 1 ]; then
  # Same global batch (16) as the one-process run: 8 per process.
  step sdpo-2proc env OMP_NUM_THREADS=1 $PY -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m sdporec \
    sdpo --overwrite --model "$OUT/sft/model" --out "$OUT/sdpo-2proc" --negatives 3 --lora --eval-every 200 \
    --reference-cache none --threads 1 ${FILES/--batch-size 16/--batch-size $((16 / NPROC))} $EXTRA
fi

$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
from sdporec.runs import METRICS, SUMMARY, read_evaluation_metrics, read_summary
out = Path(sys.argv[1])
times = dict(line.split() for line in (out / "times.txt").read_text().splitlines())
params = json.loads((out / "init" / "sdporec_checkpoint.json").read_text())["parameters"]
lines = [f"model: {json.loads((out / 'init' / 'config.json').read_text())['model_type']}, {params:,} parameters", "",
         "| step | wall time | HR@1 | ValidRatio | samples/s | tokens/s | peak memory GiB |", "|---|---|---|---|---|---|---|"]
for name in ("sft", "sdpo", "sdpo-2proc", "eval-ranking", "eval-generation", "eval-merged", "export"):
    if name not in times:
        continue
    s = read_summary(out / name / SUMMARY)
    m = read_evaluation_metrics(out / name) if (out / name / METRICS).is_file() else {}
    hr = m.get("hr@1", s.get("best_valid_hr@1"))
    cells = [f"{float(times[name]):.0f} s", "-" if hr is None else f"{hr:.4f}" + ("" if m else " (valid)"),
             f"{m['valid_ratio']:.4f}" if m else "-", str(s.get("samples_per_second", "-")),
             str(s.get("tokens_per_second", "-")), str(s.get("peak_memory_gib", "-"))]
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
rank, merged = (read_evaluation_metrics(out / n) for n in ("eval-ranking", "eval-merged"))
lines += ["", f"export --merge: merged model HR@1 {merged['hr@1']:.4f}, MRR {merged['mrr']:.4f} against the adapter's "
          f"{rank['hr@1']:.4f}, {rank['mrr']:.4f}"]
text = "\n".join(lines)
(out / "table.md").write_text(text + "\n")
print(text)
EOF
