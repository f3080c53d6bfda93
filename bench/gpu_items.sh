#!/usr/bin/env bash
# SmolLM2-135M-Instruct with item tokens (`sft --item-tokens --item-init cooc`, all weights) on the whole LastFM
# training file on one GPU: SFT, then S-DPO (K = 3) from its best checkpoint, each cut at its WALL seconds (the
# best checkpoint on validation is kept, so a cut run still leaves a model), then ranked on
# resampled/lastfm-val.json and measured by the generation protocol on its first GEN samples. Validation: 500
# seeded training rows held out (not trained on), every 200 optimizer steps. Fits 10 minutes on one H100/H200
# with the defaults.
#   GGUF=path/to/SmolLM2-135M-Instruct.Q4_1.gguf LASTFM=../shared/data/lastfm/resampled bash bench/gpu_items.sh OUT
# (GGUF and LASTFM too large to copy to a remote GPU machine in one transfer: bench/gpu_items_parts.sh sends them in two)
# TASK=next-item trains on the history alone (`--task next-item`) and measures the whole catalogue too: every artist
# ranked (`--candidates all`, HR@10 / NDCG@10) and decoded constrained to the catalogue with 10 beams on GEN samples,
# beside the 20 candidates; the whole-LastFM row of bench/specs/lastfm-catalogue.yaml. It adds those evaluations to
# each stage, so its 10 minutes are not measured: lower SFT_WALL / PREF_WALL / GEN to leave them room.
# On a CPU, a check of the script end to end on a few rows (what runs on the GPU, minus the time):
#   DRY_RUN=1 GGUF=... LASTFM=... bash bench/gpu_items.sh OUT
set -euo pipefail
if [ $# -ne 1 ] || [ -z "${GGUF:-}" ] || [ -z "${LASTFM:-}" ]; then
  echo "usage: GGUF=FILE LASTFM=DIR bash bench/gpu_items.sh OUT" >&2; exit 2
fi
OUT=$1; PY=${PY:-python3}; ITEM_TEXT=${ITEM_TEXT:-token}; TASK=${TASK:-candidates}
# Item rows from the title's mean row plus co-occurrence vectors (as bench/specs/smollm2-items.yaml trains them).
# ITEM_INIT=mean|hidden for the others.
ITEM_INIT=${ITEM_INIT:-cooc}
# The history's next-item loss inside the prompt (possible with item tokens alone in prompts), as the spec trains
# it. SFT_ARGS= (empty) turns it off.
if [ "$ITEM_TEXT" = token ]; then SFT_ARGS=${SFT_ARGS---history-weight 1 --history-in prompt}; else SFT_ARGS=${SFT_ARGS-}; fi
if [ -n "${DRY_RUN:-}" ]; then
  DEV=cpu; PREC=no; BATCH=4; SFT_WALL=600; PREF_WALL=600; GEN=4; ROWS=24; EVAL_ROWS=8; VALID=8; EVERY=4
else
  DEV=${DEV:-cuda}; PREC=bf16; BATCH=${BATCH:-64}; SFT_WALL=${SFT_WALL:-270}; PREF_WALL=${PREF_WALL:-180}
  GEN=${GEN:-500}; ROWS=0; EVAL_ROWS=0; VALID=500; EVERY=200
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
mkdir -p "$OUT/data"
$PY - "$LASTFM" "$OUT/data" "$ROWS" "$EVAL_ROWS" "$VALID" <<'PY'
import random
import sys
from pathlib import Path

from sdporec.data.samples import read_samples, write_samples

src, out, rows, eval_rows, valid = Path(sys.argv[1]), Path(sys.argv[2]), *map(int, sys.argv[3:])
train = read_samples(src / "lastfm-train.json", "train")
held = read_samples(src / "lastfm-val.json", "eval")
order = random.Random("0:gpu-items-valid").sample(range(len(train)), len(train))
picked = set(order[:valid])
fit = [s for i, s in enumerate(train) if i not in picked]
write_samples(out / "valid.jsonl", [train[i] for i in order[:valid]])
write_samples(out / "train.jsonl", fit[:rows] if rows else fit)
write_samples(out / "eval.jsonl", held[:eval_rows] if eval_rows else held)
# Every title of both files gets an item token (as the built-in backbone's vocabulary is built).
titles = sorted({t for s in train + held for t in (*s.history, *s.candidates)})
(out / "titles.txt").write_text("\n".join(titles) + "\n", encoding="utf-8")
PY
D=$OUT/data
COMMON="--train $D/train.jsonl --valid $D/valid.jsonl --domain music --epochs 1 --batch-size $BATCH
  --eval-every $EVERY --eval-samples $VALID --mixed-precision $PREC --device $DEV --threads 4 --seed 0
  --no-progress --overwrite"
start=$(date +%s)
# All weights at 1e-4, as bench/gpu_smollm2.sh's full row (the 2e-5 default is not measured with new item rows).
timeout -s INT "$SFT_WALL" $PY -m sdporec sft --task "$TASK" --model "$GGUF" --item-tokens --item-text "$ITEM_TEXT" --item-init "$ITEM_INIT" --titles "$D/titles.txt" --lr "${SFT_LR:-1e-4}" $SFT_ARGS $COMMON \
  --out "$OUT/sft" > "$OUT/sft.log" 2>&1 || echo "sft stopped at its wall ($SFT_WALL s) or failed: see $OUT/sft.log"
test -d "$OUT/sft/model"
echo "sft wall $(( $(date +%s) - start )) s"
timeout -s INT "$PREF_WALL" $PY -m sdporec sdpo --model "$OUT/sft/model" --negatives 3 $COMMON \
  --out "$OUT/sdpo" > "$OUT/sdpo.log" 2>&1 || echo "sdpo stopped at its wall ($PREF_WALL s) or failed: see $OUT/sdpo.log"
echo "sft + sdpo wall $(( $(date +%s) - start )) s"
for stage in sft sdpo; do
  [ -d "$OUT/$stage/model" ] || continue
  $PY -m sdporec evaluate --model "$OUT/$stage/model" --data "$D/eval.jsonl" --protocol ranking --batch-size 64 \
    --device "$DEV" --no-progress --overwrite --out "$OUT/$stage/eval-ranking" >> "$OUT/$stage.eval.log" 2>&1
  if [ "$TASK" = next-item ]; then  # no list in the prompt: the catalogue, ranked and decoded
    $PY -m sdporec evaluate --model "$OUT/$stage/model" --data "$D/eval.jsonl" --candidates all \
      --catalogue "$D/titles.txt" --batch-size 64 --device "$DEV" --no-progress --overwrite \
      --out "$OUT/$stage/eval-catalogue" >> "$OUT/$stage.eval.log" 2>&1
    GENERATION=(--constrained --beams 10 --candidates all --catalogue "$D/titles.txt")
  else
    GENERATION=()
  fi
  $PY -m sdporec evaluate --model "$OUT/$stage/model" --data "$D/eval.jsonl" --protocol generation "${GENERATION[@]}" \
    --batch-size 64 --limit "$GEN" --device "$DEV" --no-progress --overwrite --out "$OUT/$stage/eval-generation" \
    >> "$OUT/$stage.eval.log" 2>&1
done
echo "all wall $(( $(date +%s) - start )) s"
$PY - "$OUT" <<'PY'
import json
import sys
from pathlib import Path

from sdporec.runs import EVAL_LOG, METRICS, read_evaluation_metrics, read_log

out = Path(sys.argv[1])
rows = {}
for stage in ("sft", "sdpo"):
    run = out / stage
    row = {"valid_hr@1": [(e["step"], e["hr@1"]) for e in read_log(run / EVAL_LOG)]}
    for protocol in ("ranking", "catalogue", "generation"):
        measured = run / f"eval-{protocol}" / METRICS
        row[protocol] = read_evaluation_metrics(measured) if measured.is_file() else None
    rows[stage] = row
    keys = ("hr@1", "ndcg@5", "hr@10", "ndcg@10", "valid_ratio", "n", "seconds")
    print(stage, "validation HR@1 by step", row["valid_hr@1"],
          {p: None if row[p] is None else {k: row[p].get(k) for k in keys if k in row[p]}
           for p in ("ranking", "catalogue", "generation")})
(out / "bench_summary.json").write_text(json.dumps(rows, indent=1) + "\n")
PY
