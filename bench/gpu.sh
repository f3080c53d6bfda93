#!/usr/bin/env bash
# The GPU checks, as one script for a lent GPU (each part under its own time limit; outputs in $OUT or runs/gpu):
#   1. the numerical tests of the scoring layouts on this machine's transformers (CPU tensors)
#   2. bench/scoring.py, case wide (128k vocabulary): the current scoring against the baseline's, on CUDA
#   3. bench/speed.py at ~1B-like width, bf16, on CUDA
#   4. bench/bigger.sh: a ~1B Llama through SFT, S-DPO with LoRA, both protocols and export --merge, on CUDA
# The baseline's src/ must be at .old/src:  git archive 6101414 src | (mkdir -p .old && tar -x -C .old)
#   bash bench/gpu.sh
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout 90 $PY -m pytest -q -p no:cacheprovider tests/test_logprobs.py tests/test_families.py -k "not round_trips" 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 120 $PY bench/scoring.py --baseline-src .old/src --cases wide --device cuda --samples 500 --batch-size 16 \
  --work /tmp/scoring --out "$OUT/scoring.json" 2>&1 | tail -8 | tee "$OUT/scoring.txt"
timeout 140 $PY bench/speed.py --hidden 2048 --layers 16 --heads 16 --dtype bfloat16 --device cuda --steps 4 \
  --eval-samples 64 --out "$OUT/speed.json" 2>&1 | tail -40 | tee "$OUT/speed.txt"
FAMILY=llama HIDDEN=2048 LAYERS=16 HEADS=32 KV=8 INTER=8192 VOCAB=32000 SFT_EPOCHS=1 USERS=400 PY=$PY \
  EXTRA="--mixed-precision bf16 --device cuda" NPROC=0 timeout 180 bash bench/bigger.sh /tmp/bigger-1b 2>&1 | tail -30 \
  | tee "$OUT/bigger.txt"
cp /tmp/bigger-1b/table.md "$OUT/bigger-table.md" 2>/dev/null || true
