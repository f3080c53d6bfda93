#!/usr/bin/env bash
# The checks for a GPU, as one script that fits in 8 minutes (outputs in $OUT, default runs/gpu):
#   1. the numerical tests of the scoring layouts and families on this machine's transformers
#   2. bench/gpu_check.py: the flex layout's values and gradients against the paper layout on the GPU; each
#      layout (paper, flex) at its fastest micro-batch for SFT, S-DPO K = 3 and ranking 20 candidates, full
#      fine-tuning and LoRA, on Llama-3.2-1B- and SmolLM2-shaped models with ~400-token prompts (samples/s,
#      tokens/s, peak memory, kernel, MFU with attention FLOPs: bench/gpu_layouts.py); which SDPA kernel takes
#      the packed 4D mask, flex attention's block mask against SDPA's dense mask, ranking against generation, a
#      QLoRA step where bitsandbytes is installed; written to $OUT/check.json (kept as docs/gpu/check-*.json)
#   FULL=1 also runs bench/scoring.py (needs the baseline's src/ at .old/src: git archive 6101414 src |
#   (mkdir -p .old && tar -x -C .old)), bench/speed.py at ~1B width and bench/bigger.sh (over 8 minutes).
#   DRY_RUN=1 runs the same steps on a CPU with a tiny model, to check the script before it runs on a GPU.
#     bash bench/gpu.sh            # on the GPU machine
#     DRY_RUN=1 bash bench/gpu.sh  # here
set -uo pipefail
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
PY=${PY:-python3}
if [ "${DRY_RUN:-0}" = 1 ]; then
  SIZE="--device cpu --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 2000 --dtype float32 --batch-size 2 --eval-samples 4 --shapes tiny --batch-sizes 2 4 --prompt-tokens 40 --case-s 1"
  echo "dry run on $(uname -m) CPU" | tee "$OUT/gpu.txt"
else
  SIZE=""
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
# bitsandbytes is not on the GPU machine's image and it cannot reach the internet: a wheel copied there in .wheels/
# (pip download bitsandbytes==0.50.2 --no-deps -d .wheels; 43 MB) is installed first.
if [ "${DRY_RUN:-0}" != 1 ] && ls .wheels/bitsandbytes-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-deps .wheels/bitsandbytes-*.whl 2>&1 | tail -2 | tee -a "$OUT/gpu.txt"
fi
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
timeout 80 $PY -m pytest -q -p no:cacheprovider tests/test_logprobs.py tests/test_logprobs_paths.py tests/test_flex.py tests/test_families.py \
  -k "not round_trips" 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 370 $PY bench/gpu_check.py $SIZE --budget-s 340 --out "$OUT/check.json" 2>&1 | tee "$OUT/check.txt" | tail -40
if [ "${FULL:-0}" = 1 ]; then
  timeout 120 $PY bench/scoring.py --baseline-src .old/src --cases wide --device cuda --samples 500 --batch-size 16 \
    --work /tmp/scoring --out "$OUT/scoring.json" 2>&1 | tail -8 | tee "$OUT/scoring.txt"
  timeout 140 $PY bench/speed.py --hidden 2048 --layers 16 --heads 16 --dtype bfloat16 --device cuda --steps 4 \
    --eval-samples 64 --out "$OUT/speed.json" 2>&1 | tail -40 | tee "$OUT/speed.txt"
  FAMILY=llama HIDDEN=2048 LAYERS=16 HEADS=32 KV=8 INTER=8192 VOCAB=32000 SFT_EPOCHS=1 USERS=400 PY=$PY \
    EXTRA="--mixed-precision bf16 --device cuda" NPROC=0 timeout 180 bash bench/bigger.sh /tmp/bigger-1b 2>&1 | tail -30 \
    | tee "$OUT/bigger.txt"
  cp /tmp/bigger-1b/table.md "$OUT/bigger-table.md" 2>/dev/null || true
fi
