#!/usr/bin/env bash
# SmolLM2-135M-Instruct (the real pretrained LM, from its GGUF file) fine-tuned on a whole LastFM training file
# on one GPU, side by side in two ways (all weights, and a LoRA adapter), each cut at WALL seconds (the best
# checkpoint on validation is kept, so a cut run still leaves a model), then ranked on EVAL and measured by
# the paper's generation protocol on its first GEN samples. DATA holds train.jsonl and valid.jsonl as
# bench/specs/lastfm.yaml writes them (validation: 500 held-out training rows every 200 optimizer steps). Seed 0.
#   GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf [WALL=300] [GEN=500] [DEV=cuda] \
#     bash bench/gpu_smollm2.sh DATA EVAL OUT
# On a CPU, a quick check of the script: GGUF=... DEV=cpu BATCH=2 WALL=300 GEN=4 LIMIT=8 bash bench/gpu_smollm2.sh ...
set -uo pipefail
if [ $# -ne 3 ] || [ -z "${GGUF:-}" ]; then echo "usage: GGUF=FILE bash bench/gpu_smollm2.sh DATA EVAL OUT" >&2; exit 2; fi
DATA=$1; EVAL=$2; OUT=$3; WALL=${WALL:-300}; GEN=${GEN:-500}; DEV=${DEV:-cuda}; LIMIT=${LIMIT:-0}; BATCH=${BATCH:-32}; PY=${PY:-python3}
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT"
PREC=$([ "$DEV" = cpu ] && echo no || echo bf16)
COMMON="--model $GGUF --train $DATA/train.jsonl --valid $DATA/valid.jsonl --domain music --epochs 1 --batch-size $BATCH
  --eval-every 200 --eval-samples 500 --mixed-precision $PREC --device $DEV --threads 4 --seed 0
  --no-progress --overwrite"
declare -A ROWS=(
  [full-lr1e-4]="--lr 1e-4"
  [lora-lr1e-3]="--lora --lr 1e-3"
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
    ( $PY -m sdporec evaluate --model "$OUT/$name/model" --data "$EVAL" --domain music --protocol ranking \
        --batch-size 32 --limit "$LIMIT" --device "$DEV" --no-progress --overwrite --out "$OUT/$name/eval-ranking"
      $PY -m sdporec evaluate --model "$OUT/$name/model" --data "$EVAL" --domain music --protocol generation \
        --batch-size 32 --limit "$GEN" --device "$DEV" --no-progress --overwrite --out "$OUT/$name/eval-generation"
    ) > "$OUT/$name.eval.log" 2>&1 &
  fi
done
wait
echo "all wall $(( $(date +%s) - start )) s"
$PY - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

from sdporec.runs import EVAL_LOG, METRICS, SUMMARY, read_evaluation_metrics, read_log, read_summary

out = Path(sys.argv[1])
rows = {}
for run in sorted(p for p in out.iterdir() if p.is_dir()):
    valid = read_log(run / EVAL_LOG)
    summary = run / SUMMARY
    row = {"valid_hr@1": [(e["step"], e["hr@1"]) for e in valid],
           "train": read_summary(summary) if summary.is_file() else None}
    for protocol in ("ranking", "generation"):
        measured = run / f"eval-{protocol}" / METRICS
        row[protocol] = read_evaluation_metrics(measured) if measured.is_file() else None
    rows[run.name] = row
    print(run.name, "validation HR@1 by step", row["valid_hr@1"],
          {p: None if row[p] is None else {k: row[p].get(k) for k in ("hr@1", "valid_ratio", "n", "seconds")}
           for p in ("ranking", "generation")})
(out / "bench_summary.json").write_text(json.dumps(rows, indent=1))
PY
