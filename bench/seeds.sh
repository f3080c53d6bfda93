#!/usr/bin/env bash
# DPO (K = 1) and S-DPO (K = 3) again from bench/quality.py's SFT checkpoints with other seeds (the seed
# draws the candidate lists, the negatives, the order and the templates), each measured by ranking on the
# same evaluation file as in bench/quality.py: how much of the gap between them is one seed's luck.
#
#   bench/seeds.sh [QUALITY_OUT] [OUT]        e.g. bench/seeds.sh runs/quality runs/seeds
#   SEEDS="1 2" DATASETS="lastfm movielens" bench/seeds.sh runs/quality runs/seeds
set -euo pipefail
Q=${1:-runs/quality}
OUT=${2:-runs/seeds}
PY=${PY:-.venv/bin/python}
METRICS=$($PY -c "from sdporec.runs import METRICS; print(METRICS)")   # an evaluation's metrics file
SEEDS=${SEEDS:-1}
DATASETS=${DATASETS:-lastfm movielens}
# Runs sdporec with its output in LOG; on failure shows that log and stops.
logged() { local log=$1; shift; $PY -m sdporec "$@" >> "$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
for ds in $DATASETS; do
  case $ds in
    lastfm) domain=music; eval=../shared/data/lastfm/resampled/lastfm-val.json ;;
    movielens) domain=movies; eval=$Q/movielens/data/test.jsonl ;;
    *) echo "unknown data set $ds" >&2; exit 2 ;;
  esac
  for seed in $SEEDS; do
    for stage in "dpo 1" "sdpo 3"; do
      set -- $stage
      run=$OUT/$ds/$1-seed$seed
      mkdir -p "$OUT/$ds"
      [ -f "$run/eval/$METRICS" ] && continue
      : > "$run.log"
      logged "$run.log" "$1" --overwrite --negatives "$2" --seed "$seed" --eval-every 300 --eval-samples 1000 \
        --model "$Q/$ds/sft/model" --train "$Q/$ds/data/train.jsonl" --valid "$Q/$ds/data/valid.jsonl" \
        --domain $domain --no-progress --out "$run"
      logged "$run.log" evaluate --overwrite --model "$run/model" --data "$eval" --domain $domain --no-progress --out "$run/eval"
    done
  done
done
$PY - "$OUT" <<'PYEOF'
import sys
from pathlib import Path
from sdporec.runs import METRICS, read_evaluation_metrics
out = Path(sys.argv[1])
print("| data set | seed | DPO (K=1) HR@1 | S-DPO (K=3) HR@1 | S-DPO − DPO |")
print("|---|---|---|---|---|")
for ds in sorted(p.name for p in out.iterdir() if p.is_dir()):
    seeds = sorted({p.name.split("-seed")[1] for p in (out / ds).glob("*-seed*") if p.is_dir()}, key=int)
    for seed in seeds:
        m = {st: read_evaluation_metrics(out / ds / f"{st}-seed{seed}" / "eval")["hr@1"]
             for st in ("dpo", "sdpo") if (out / ds / f"{st}-seed{seed}" / "eval" / METRICS).is_file()}
        if len(m) == 2:
            print(f"| {ds} | {seed} | {m['dpo']:.4f} | {m['sdpo']:.4f} | {m['sdpo'] - m['dpo']:+.4f} |")
PYEOF
