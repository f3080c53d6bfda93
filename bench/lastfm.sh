#!/usr/bin/env bash
# SFT -> DPO (K = 1) -> S-DPO (K = 3) on the paper's LastFM training file with per-epoch re-drawn
# candidates, validated and evaluated on resampled/lastfm-val.json (leak-free negatives), then the report.
# Usage: bench/lastfm.sh [OUT_DIR]   (default runs/lastfm; reads ../shared/data/lastfm)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/lastfm}
DATA=${SDPOREC_DATA:-../shared/data}/lastfm
BIN=.venv/bin
SFT_EPOCHS=${SFT_EPOCHS:-3}
mkdir -p "$OUT"
TRAIN="$DATA/lastfm-train.json"
VALID="$DATA/resampled/lastfm-val.json"
for f in "$TRAIN" "$VALID"; do [ -f "$f" ] || { echo "missing $f (see ../shared/data/README.md)"; exit 1; }; done
COMMON=(--train "$TRAIN" --valid "$VALID" --eval-samples 1000 --no-progress)
start=$(date +%s)
$BIN/sdporec sft --overwrite --out "$OUT/sft" --epochs "$SFT_EPOCHS" "${COMMON[@]}"
$BIN/sdporec dpo --overwrite --out "$OUT/dpo" --model "$OUT/sft/model" --negatives 1 --eval-every 200 "${COMMON[@]}"
$BIN/sdporec sdpo --overwrite --out "$OUT/sdpo" --model "$OUT/sft/model" --negatives 3 --eval-every 200 "${COMMON[@]}"
for stage in sft dpo sdpo; do
  $BIN/sdporec evaluate --overwrite --model "$OUT/$stage/model" --data "$VALID" --out "$OUT/eval/$stage" --no-progress > /dev/null
  $BIN/sdporec evaluate --overwrite --model "$OUT/$stage/model" --data "$VALID" --out "$OUT/eval-generation/$stage" \
    --protocol generation --no-progress > /dev/null
done
$BIN/python - "$OUT" <<'PY'
import sys
from pathlib import Path
from sdporec.runs import METRICS, pipeline_metrics, read_evaluation_metrics, write_json
out = Path(sys.argv[1])
ranking = {s: read_evaluation_metrics(out / "eval" / s) for s in ("sft", "dpo", "sdpo")}
generation = {s: read_evaluation_metrics(out / "eval-generation" / s) for s in ("sft", "dpo", "sdpo")}
# Every stage's ranking metrics, as a pipeline's METRICS: what `sdporec report` below shows as final metrics.
write_json(out / METRICS, pipeline_metrics(ranking))
for s in ranking:
    print(f"{s:<6} ranking hr@1 {ranking[s]['hr@1']:.4f} ndcg@5 {ranking[s]['ndcg@5']:.4f} mrr {ranking[s]['mrr']:.4f}"
          f" | generation hr@1 {generation[s]['hr@1']:.4f} valid {generation[s]['valid_ratio']:.4f}")
PY
$BIN/sdporec report "$OUT" --out "${OUT%/}-report"   # apart from the run it reads
echo "wall time: $(( $(date +%s) - start )) s"
