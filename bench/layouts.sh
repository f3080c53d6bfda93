#!/usr/bin/env bash
# The LastFM S-DPO stage and its evaluation, in the paper's layout (the prompt repeated for the chosen
# answer and every negative; 20 full sequences per sample when ranking) against ours (each prompt once),
# from one SFT checkpoint, on the same machine, one after the other. Prints the wall time of each.
#
#   bench/layouts.sh SFT_MODEL_DIR [OUT]     e.g. bench/layouts.sh runs/q10/lastfm/sft/model runs/layouts
set -euo pipefail
SFT=${1:?the SFT checkpoint to start from}
OUT=${2:-runs/layouts}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-runs/q10/lastfm/data}
EVAL=${EVAL:-../shared/data/lastfm/resampled/lastfm-val.json}
mkdir -p "$OUT"
: > "$OUT/times.txt"
for layout in shared paper; do
  t0=$(date +%s.%N)
  $PY -m sdporec dpo --loss sdpo --negatives 3 --model "$SFT" --layout "$layout" --reference-cache none \
    --train "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" --eval-samples 1000 --eval-every 300 --domain music \
    --no-progress --out "$OUT/sdpo-$layout" > "$OUT/sdpo-$layout.log" 2>&1
  t1=$(date +%s.%N)
  $PY -m sdporec evaluate --model "$OUT/sdpo-$layout/model" --data "$EVAL" --layout "$layout" --domain music \
    --no-progress --out "$OUT/eval-$layout" > "$OUT/eval-$layout.log" 2>&1
  t2=$(date +%s.%N)
  echo "$layout $(awk "BEGIN{print $t1 - $t0}") $(awk "BEGIN{print $t2 - $t1}")" >> "$OUT/times.txt"
done
$PY - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
t = {l.split()[0]: [float(x) for x in l.split()[1:]] for l in (out / "times.txt").read_text().splitlines()}
m = {k: json.loads((out / f"eval-{k}" / "metrics.json").read_text()) for k in t}
print("| layout | S-DPO K=3, 1 epoch (validation included) | ranking evaluation | total | HR@1 | MRR |")
print("|---|---|---|---|---|---|")
for k in ("paper", "shared"):
    print(f"| {k} | {t[k][0]:.0f} s | {t[k][1]:.0f} s | {sum(t[k]):.0f} s | {m[k]['hr@1']:.4f} | {m[k]['mrr']:.4f} |")
print(f"\nshared / paper wall time: S-DPO {t['paper'][0] / t['shared'][0]:.2f}x faster, evaluation "
      f"{t['paper'][1] / t['shared'][1]:.2f}x, total {sum(t['paper']) / sum(t['shared']):.2f}x")
EOF
