"""The checks a GPU should answer, in one process under a time budget, written as one small JSON.

- `flex_equivalence`: the flex layout's values and gradients against the paper layout's on this device;
- `layouts` (bench/gpu_layouts.py): Llama-3.2-1B- and SmolLM2-shaped models, ~400-token prompts, SFT, S-DPO K = 3
  and ranking 20 candidates, full fine-tuning and LoRA, each layout at its fastest micro-batch: samples/s,
  tokens/s, peak memory, the attention kernel, MFU with attention FLOPs (formula in that file);
On a ~1B Llama built from a config (no download) in bf16, with text prompts from the built-in data:
- ranking (packed) against the paper's generation protocol: samples/s;
- which SDPA kernel accepts the packed layout's 4D mask (flash, memory-efficient, math), each timed;
- flex attention with the packed pattern as a block mask against SDPA with the dense 4D mask (one
  attention call of the packed rows' shape);
- a QLoRA step (4-bit NF4 base, LoRA) where bitsandbytes is installed.
Each part is skipped, with the reason recorded, once the budget (`--budget-s`) would be exceeded.

    python bench/gpu_check.py --out runs/gpu/check.json                       # a GPU: ~1B, bf16
    python bench/gpu_check.py --device cpu --hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 \\
        --vocab 2000 --dtype float32 --batch-size 2 --eval-samples 4 --shapes tiny --batch-sizes 2 4 \\
        --prompt-tokens 40 --out /tmp/check.json                               # dry run on a CPU
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from gpu_layouts import flex_equivalence, layouts
from harness import sync

# Dense bf16 peaks; the PCIe H100 before the SXM one, whose name it contains.
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


class Budget:
    def __init__(self, seconds: float):
        self.end = time.time() + seconds

    def allows(self, need_s: float) -> bool:
        return time.time() + need_s < self.end


def _peak_gib(device) -> float | None:
    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _reset_peak(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def build(args):
    from sdporec.data.codec import TextCodec
    from sdporec.data.prepare import builtin_splits
    from sdporec.models.families import build_family, tokenizer_texts

    samples = builtin_splits(users=200, items=300, genres=10, seed=0)["train"]
    model, tokenizer = build_family(
        "llama",
        tokenizer_texts(samples),
        args.hidden,
        args.layers,
        args.heads,
        0,
        args.vocab,
        args.kv_heads,
        args.intermediate,
    )
    dtype = getattr(torch, args.dtype)
    return model.to(args.device, dtype), TextCodec(tokenizer), samples


def batch_of(codec, samples, k: int, device):
    from sdporec.data.batching import collate
    from sdporec.data.candidates import draw_negatives
    from sdporec.data.prompts import build_prompt

    answers = [
        [codec.encode_answer(t) for t in [s.target] + (draw_negatives(s, k, 0, 0) if k else [])] for s in samples
    ]
    return collate(
        [codec.encode_prompt(build_prompt(s.history, s.candidates)) for s in samples], answers, codec.pad_id
    ).to(device)


def ranking_vs_generation(model, codec, samples, args) -> dict:
    from sdporec.evaluation.evaluate import evaluate_generation, evaluate_ranking
    from sdporec.evaluation.scoring import LMScorer

    scorer = LMScorer(model, codec, "music", args.batch_size, progress=False)  # --layout auto's choice here
    out = {"ranking_layout": scorer.layout}
    samples = samples[: args.eval_samples]
    for name, run in (
        ("ranking", lambda xs: evaluate_ranking(scorer, xs)),
        ("generation", lambda xs: evaluate_generation(model, codec, xs, "music", args.batch_size, progress=False)),
    ):
        run(samples[: args.batch_size])
        sync(args.device)
        start = time.perf_counter()
        run(samples)
        sync(args.device)
        out[name] = {"samples_per_s": round(len(samples) / (time.perf_counter() - start), 2)}
    return out


def sdpa_kernels(model, codec, samples, args) -> dict:
    """Which SDPA backend runs the packed layout's forward (its 4D mask rules some out), and how fast."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sdporec.models.scoring import scoring_layout

    batch = batch_of(codec, samples[: args.batch_size], 19, args.device)
    out = {}
    for name, backend in (
        ("flash", SDPBackend.FLASH_ATTENTION),
        ("efficient", SDPBackend.EFFICIENT_ATTENTION),
        ("math", SDPBackend.MATH),
    ):
        try:
            with sdpa_kernel([backend]), torch.no_grad():
                scoring_layout("packed")(model, batch)
                sync(args.device)
                start = time.perf_counter()
                scoring_layout("packed")(model, batch)
                sync(args.device)
            out[name] = {"runs": True, "seconds": round(time.perf_counter() - start, 4)}
        except RuntimeError as e:
            out[name] = {"runs": False, "why": " ".join(str(e).split())[:160]}
    return out


def flex_vs_sdpa(args) -> dict:
    """One attention call over packed rows (prompt of P tokens, 20 answers of A tokens each): flex
    attention with the pattern as a block mask against SDPA with the same pattern as a dense 4D mask."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    P, A, N, heads, dim = 400, 8, 20, args.heads, args.hidden // args.heads
    length = P + N * A
    block = torch.cat([torch.zeros(P, dtype=torch.long), torch.arange(1, N + 1).repeat_interleave(A)]).to(args.device)
    pos = torch.arange(length, device=args.device)

    def mask_mod(b, h, q, kv):
        return (kv <= q) & ((block[kv] == 0) | (block[kv] == block[q]))

    dense = mask_mod(0, 0, pos[:, None], pos[None, :])
    dtype = getattr(torch, args.dtype)
    q, k, v = (torch.randn(args.batch_size, heads, length, dim, device=args.device, dtype=dtype) for _ in range(3))
    block_mask = create_block_mask(mask_mod, None, None, length, length, device=args.device)
    flex = torch.compile(flex_attention) if torch.device(args.device).type == "cuda" else flex_attention
    timings = {}
    for name, call in (
        ("sdpa_dense_mask", lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, dense)),
        ("flex_block_mask", lambda: flex(q, k, v, block_mask=block_mask)),
    ):
        result = call()
        sync(args.device)
        start = time.perf_counter()
        for _ in range(5):
            call()
        sync(args.device)
        timings[name] = {"ms": round((time.perf_counter() - start) / 5 * 1000, 3), "check": float(result.float().sum())}
    same = abs(timings["sdpa_dense_mask"]["check"] - timings["flex_block_mask"]["check"]) <= 1e-2 * max(
        1.0, abs(timings["sdpa_dense_mask"]["check"])
    )
    return {**timings, "same_output": same, "shape": {"prompt": P, "answers": N, "answer_tokens": A}}


def qlora_step(model, codec, samples, args) -> dict:
    import importlib.util

    if torch.device(args.device).type != "cuda" or importlib.util.find_spec("bitsandbytes") is None:
        return {"skipped": "needs CUDA and bitsandbytes"}
    from sdporec.models.loading import load_weights
    from sdporec.models.lora import add_lora

    path = Path(args.work) / "qlora-base"
    model.save_pretrained(str(path))
    codec.tokenizer.save_pretrained(str(path))
    qmodel = add_lora(load_weights(str(path), "bfloat16", load_in_4bit=True), 16, 32, 0.0)
    from gpu_layouts import Case, search

    return search(Case(qmodel, None, "sft", "paper", True, args), [args.batch_size])


def write(result: dict, path: str, **parts) -> None:
    """The JSON as it stands (after each part, and after each case of the long one)."""
    result.update(parts)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float32"))
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=8192)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--eval-samples", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per case and micro-batch")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps before them (flex compiles in the first)")
    ap.add_argument("--shapes", nargs="+", default=["llama-1b", "smollm2-135m"], help="bench/gpu_layouts.py SHAPES")
    ap.add_argument("--modes", nargs="+", default=["full", "lora"], choices=("full", "lora"))
    ap.add_argument("--stages", nargs="+", default=["sdpo", "sft", "ranking"], choices=("sdpo", "sft", "ranking"))
    ap.add_argument("--layouts", nargs="+", default=["paper", "flex"], help="flex last: it switches the attention")
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[8, 16, 32, 64, 128], help="micro-batches tried")
    ap.add_argument("--prompt-tokens", type=int, default=400)
    ap.add_argument("--case-s", type=float, default=25.0, help="time a layouts case needs (skipped when not left)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the card's dense bf16 peak (0: by its name)")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--work", default="/tmp/gpu-check")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    budget = Budget(args.budget_s)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")  # CPU dry runs
    Path(args.work).mkdir(parents=True, exist_ok=True)
    card = torch.cuda.get_device_name() if torch.device(args.device).type == "cuda" else "cpu"
    if not args.peak_tflops:
        args.peak_tflops = next((v for k, v in PEAK_TFLOPS.items() if k in card), 0.0)
    model, codec, samples = build(args)
    result = {
        "card": card,
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": args.dtype,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_tflops": args.peak_tflops or None,
    }
    parts = [
        ("flex_equivalence", lambda: flex_equivalence(args), 20),
        ("sdpa_kernels", lambda: sdpa_kernels(model, codec, samples, args), 20),
        ("flex_vs_sdpa", lambda: flex_vs_sdpa(args), 30),
        # The layouts leave 60 s for the two parts after them.
        (
            "layouts",
            lambda: layouts(
                args, Budget(budget.end - time.time() - 60), lambda out: write(result, args.out, layouts=out)
            ),
            60,
        ),
        ("ranking_vs_generation", lambda: ranking_vs_generation(model, codec, samples, args), 30),
        ("qlora", lambda: qlora_step(model, codec, samples, args), 30),
    ]
    for name, part, need_s in parts:
        if not budget.allows(need_s):
            result[name] = {"skipped": f"time budget ({args.budget_s:.0f} s) would be exceeded"}
            continue
        started = time.time()
        try:
            result[name] = part()
        except Exception as e:  # a part that fails is recorded, and the others still run
            result[name] = {"failed": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
        result[name + "_seconds"] = round(time.time() - started, 1)
        write(result, args.out)
        print(name, json.dumps(result[name])[:400], flush=True)


if __name__ == "__main__":
    main()
