#!/usr/bin/env bash
# Behaviour check for refactors: a small pipeline (120 users, 2 SFT epochs, DPO, S-DPO, one thread) whose
# metric values and training logs must be identical before and after a change that should not alter results
# (the metrics are hashed as read by sdporec.runs, so a new schema stamp does not change the hash).
#   bash bench/identical.sh OUT            # writes OUT/pipeline and prints one sha256 per file
#   diff <(bash bench/identical.sh /tmp/a) <(git stash; bash bench/identical.sh /tmp/b; git stash pop)
set -euo pipefail
out=${1:?usage: bash bench/identical.sh OUT}
bin=${SDPOREC:-.venv/bin/sdporec}
"$bin" pipeline --out "$out/pipeline" --users 120 --sft-epochs 2 --threads 1 --no-progress --overwrite \
    > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
py=$(dirname "$bin")/python
[ -x "$py" ] || py=.venv/bin/python
"$py" - "$out/pipeline" <<'PY'
import hashlib, json, sys
from pathlib import Path
from sdporec.runs import METRICS, TRAIN_LOG, read_pipeline_metrics
run = Path(sys.argv[1])
metrics = json.dumps(read_pipeline_metrics(run / METRICS), sort_keys=True).encode()
print(hashlib.sha256(metrics).hexdigest(), "metric values")
for stage in ("sft", "dpo", "sdpo"):
    print(hashlib.sha256((run / stage / TRAIN_LOG).read_bytes()).hexdigest(), f"{stage}/{TRAIN_LOG}")
PY
