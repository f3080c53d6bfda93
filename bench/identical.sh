#!/usr/bin/env bash
# Behaviour check for refactors: a small pipeline (120 users, 2 SFT epochs, DPO, S-DPO, one thread) whose
# metrics and training logs must be byte-identical before and after a change that should not alter results.
#   bash bench/identical.sh OUT            # writes OUT/pipeline and prints one sha256 per file
#   diff <(bash bench/identical.sh /tmp/a) <(git stash; bash bench/identical.sh /tmp/b; git stash pop)
set -euo pipefail
out=${1:?usage: bash bench/identical.sh OUT}
bin=${SDPOREC:-.venv/bin/sdporec}
"$bin" pipeline --out "$out/pipeline" --users 120 --sft-epochs 2 --threads 1 --no-progress --overwrite \
    > "$out.log" 2>&1 || { cat "$out.log"; exit 1; }
cd "$out/pipeline"
sha256sum metrics.json sft/train_log.jsonl dpo/train_log.jsonl sdpo/train_log.jsonl
