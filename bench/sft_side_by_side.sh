#!/usr/bin/env bash
# SFT rows of the built-in backbone run side by side (for a GPU, which one tiny model leaves mostly idle), each
# cut at WALL seconds, then the best kept model of each ranked on EVAL. DATA holds train.jsonl and valid.jsonl
# as bench/specs/lastfm.yaml's split-tail writes them (the last 5% of training) (validation: 1,000 held-out training rows, every epoch). Seed 0, LastFM.
#   WALL=270 [DEV=cuda] [ONLY="e10-lr1e-3 ..."] bash bench/sft_side_by_side.sh DATA EVAL OUT
set -uo pipefail
if [ $# -ne 3 ]; then echo "usage: bash bench/sft_side_by_side.sh DATA EVAL OUT" >&2; exit 2; fi
DATA=$1; EVAL=$2; OUT=$3; WALL=${WALL:-270}; DEV=${DEV:-cuda}; PY=${PY:-python3}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$OUT"
COMMON="--train $DATA/train.jsonl --valid $DATA/valid.jsonl --domain music --eval-samples 1000 --no-progress --seed 0
  --device $DEV --threads 2"
declare -A ROWS=(
  [e10-lr1e-3]="--epochs 10"
  [e30-lr1e-3]="--epochs 30"
  [e30-lr5e-4]="--epochs 30 --lr 5e-4"
  [e10-lr2e-3]="--epochs 10 --lr 2e-3"
  [e30-h256-lr5e-4]="--epochs 30 --hidden 256 --lr 5e-4"
  [e30-d0.2]="--epochs 30 --dropout 0.2"
)
for name in "${!ROWS[@]}"; do [[ -z "${ONLY:-}" || " $ONLY " == *" $name "* ]] || unset "ROWS[$name]"; done
start=$(date +%s)
for name in "${!ROWS[@]}"; do
  timeout -s INT "$WALL" $PY -m sdporec sft $COMMON ${ROWS[$name]} --out "$OUT/$name" > "$OUT/$name.log" 2>&1 &
done
wait
echo "training wall $(( $(date +%s) - start )) s"
for name in "${!ROWS[@]}"; do
  if [ -d "$OUT/$name/model" ]; then
    $PY -m sdporec evaluate --model "$OUT/$name/model" --data "$EVAL" --domain music --protocol ranking \
      --device "$DEV" --no-progress --out "$OUT/$name/eval" > "$OUT/$name.eval.log" 2>&1 &
  fi
done
wait
echo "all wall $(( $(date +%s) - start )) s"
$PY - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

from sdporec.runs import EVAL_LOG, METRICS, read_evaluation_metrics, read_log

out = Path(sys.argv[1])
rows = {}
for run in sorted(p for p in out.iterdir() if p.is_dir()):
    valid = read_log(run / EVAL_LOG)
    measured = run / "eval" / METRICS
    rows[run.name] = {"valid_hr@1": [(e["epoch"], e["hr@1"]) for e in valid],
                      "eval": read_evaluation_metrics(measured) if measured.is_file() else None}
    test = rows[run.name]["eval"]
    print(run.name, "validation HR@1 by epoch", rows[run.name]["valid_hr@1"],
          "measured HR@1", None if test is None else round(test["hr@1"], 4))
(out / "bench_summary.json").write_text(json.dumps(rows, indent=1))
PY
