#!/usr/bin/env bash
# FSDP on one GPU against a plain process, on the built-in data: full SFT (1 epoch) and S-DPO with LoRA (from the
# plain SFT model), both with resumable checkpoints (--save-every) and validation; then every model ranked on the
# test split by one plain process. examples/accelerate/fsdp.yaml with --num_processes 1 and no mixed precision,
# so the two runs of each stage should agree to float noise (losses, validation HR@1, test metrics).
#   bash bench/fsdp_check.sh [WORK]     # on a CUDA machine; prints one line per comparison
set -uo pipefail
W=${1:-/tmp/fsdp-check}; PY=${PY:-python3}; DEV=${DEV:-cuda}   # DEV=cpu PREP="--users 60": a dry run of the flow
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
mkdir -p "$W"
LAUNCH="$PY -m accelerate.commands.launch --config_file examples/accelerate/fsdp.yaml --num_processes 1 --mixed_precision no"
DATA="--train $W/data/train.jsonl --valid $W/data/valid.jsonl --eval-samples 200 --no-progress --seed 0 --device $DEV"
$PY -m sdporec prepare --out "$W/data" --overwrite ${PREP:-} > "$W/prepare.log" 2>&1 || { tail -5 "$W/prepare.log"; exit 1; }
stage() {   # name, then the command's arguments after `sdporec`
  local name=$1; shift
  local s=$SECONDS
  "$@" > "$W/$name.log" 2>&1; local rc=$?
  echo "$name: rc $rc, $(( SECONDS - s )) s"; [ $rc = 0 ] || tail -n 15 "$W/$name.log"
}
stage sft-plain $PY -m sdporec sft $DATA --epochs 1 --save-every 200 --out "$W/sft-plain"
stage sft-fsdp $LAUNCH -m sdporec sft $DATA --epochs 1 --save-every 200 --out "$W/sft-fsdp"
PREF="--model $W/sft-plain/model --lora --epochs 1 --eval-every 200 --save-every 200"
stage sdpo-plain $PY -m sdporec sdpo $DATA $PREF --out "$W/sdpo-plain"
stage sdpo-fsdp $LAUNCH -m sdporec sdpo $DATA $PREF --out "$W/sdpo-fsdp"
for run in sft-plain sft-fsdp sdpo-plain sdpo-fsdp; do
  [ -d "$W/$run/model" ] && stage "eval-$run" $PY -m sdporec evaluate --model "$W/$run/model" --data "$W/data/test.jsonl" \
    --device "$DEV" --no-progress --out "$W/$run/eval"
  ls "$W/$run/checkpoints" 2>/dev/null | sed "s|^|$run checkpoint: |"
done
$PY - "$W" <<'PY'
import sys
from pathlib import Path

from sdporec.runs import EVAL_LOG, METRICS, SUMMARY, TRAIN_LOG, read_evaluation_metrics, read_log, read_summary

work = Path(sys.argv[1])

for stage in ("sft", "sdpo"):
    plain, fsdp = work / f"{stage}-plain", work / f"{stage}-fsdp"
    a, b = read_log(plain / TRAIN_LOG), read_log(fsdp / TRAIN_LOG)
    if not a or len(a) != len(b):
        print(stage, "train logs differ in length:", len(a), len(b))
        continue
    loss = max(abs(x["loss"] - y["loss"]) for x, y in zip(a, b))
    va = [e["hr@1"] for e in read_log(plain / EVAL_LOG)]
    vb = [e["hr@1"] for e in read_log(fsdp / EVAL_LOG)]
    ea, eb = (read_evaluation_metrics(m) if (m := run / "eval" / METRICS).is_file() else None
              for run in (plain, fsdp))
    print(f"{stage}: {len(a)} logged steps, max |loss difference| {loss:.2e}; validation HR@1 plain {va}, fsdp {vb}")
    if ea and eb:
        print(f"{stage}: test HR@1 plain {ea['hr@1']:.4f}, fsdp {eb['hr@1']:.4f}; MRR {ea['mrr']:.4f}, {eb['mrr']:.4f}")
    print(stage, "fsdp summary:", read_summary(fsdp / SUMMARY) if (fsdp / SUMMARY).is_file() else "none")
PY
