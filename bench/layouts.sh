#!/usr/bin/env bash
# The LastFM S-DPO stage and its evaluation, in the paper's layout (the prompt repeated for the chosen
# answer and every negative; 20 full sequences per sample when ranking) against ours (each prompt once:
# packed, the default, and cache), from one SFT checkpoint, on the same machine, one after the other.
# Prints the wall time of each. LAYOUTS picks which to (re)run; the table shows every layout in OUT.
#
#   bench/layouts.sh SFT_MODEL_DIR [OUT]     e.g. bench/layouts.sh runs/specs/lastfm/seed0/sft/train/model runs/layouts
#   LAYOUTS=packed bench/layouts.sh runs/specs/lastfm/seed0/sft/train/model runs/layouts
set -euo pipefail
SFT=${1:?the SFT checkpoint to start from}
OUT=${2:-runs/layouts}
PY=${PY:-.venv/bin/python}
DATA=${DATA:-runs/specs/lastfm/seed0/data}
EVAL=${EVAL:-../shared/data/lastfm/resampled/lastfm-val.json}
LAYOUTS=${LAYOUTS:-packed cache paper}
mkdir -p "$OUT"
for layout in $LAYOUTS; do
  t0=$(date +%s.%N)
  $PY -m sdporec sdpo --overwrite --negatives 3 --model "$SFT" --layout "$layout" --reference-cache none \
    --train "$DATA/train.jsonl" --valid "$DATA/valid.jsonl" --eval-samples 1000 --eval-every 300 --domain music \
    --no-progress --out "$OUT/sdpo-$layout" > "$OUT/sdpo-$layout.log" 2>&1
  t1=$(date +%s.%N)
  $PY -m sdporec evaluate --overwrite --model "$OUT/sdpo-$layout/model" --data "$EVAL" --layout "$layout" --domain music \
    --no-progress --out "$OUT/eval-$layout" > "$OUT/eval-$layout.log" 2>&1
  t2=$(date +%s.%N)
  echo "$(awk "BEGIN{print $t1 - $t0}") $(awk "BEGIN{print $t2 - $t1}") $(date -u +%F)" > "$OUT/times-$layout.txt"
done
$PY - "$OUT" <<'EOF'
import sys
from pathlib import Path
from sdporec.runs import read_evaluation_metrics
out = Path(sys.argv[1])
t = {f.stem[len("times-"):]: f.read_text().split() for f in out.glob("times-*.txt")}
print("| layout | S-DPO K=3, 1 epoch (validation included) | ranking evaluation | total | HR@1 | MRR | run on |")
print("|---|---|---|---|---|---|---|")
for k in ("paper", "cache", "packed"):
    if k in t:
        m = read_evaluation_metrics(out / f"eval-{k}")
        s, e = float(t[k][0]), float(t[k][1])
        print(f"| {k} | {s:,.0f} s | {e:,.0f} s | {s + e:,.0f} s | {m['hr@1']:.4f} | {m['mrr']:.4f} | {t[k][2]} |")
if "paper" in t:
    for k in ("cache", "packed"):
        if k in t:
            p, o = [float(x) for x in t["paper"][:2]], [float(x) for x in t[k][:2]]
            print(f"\n{k} against paper: S-DPO {p[0] / o[0]:.1f}x less wall time, evaluation {p[1] / o[1]:.1f}x, "
                  f"total {sum(p) / sum(o):.1f}x")
EOF
