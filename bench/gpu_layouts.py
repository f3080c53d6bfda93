"""The layouts where users train: each layout at the micro-batch that runs it fastest, on models shaped as
users' are, with prompts as long as ours are in a BPE tokenizer. Run by bench/gpu_check.py (part `layouts`).

- Shapes, from a config (no weights): Llama-3.2-1B (hidden 2048, 16 layers, 32 heads, 8 key-value heads, vocabulary
  128,256, tied) and SmolLM2-135M (576, 30, 9, 3, 49,152, tied); `tiny` for dry runs on a CPU.
- Batches: random token ids, prompts of `--prompt-tokens` +- 5% (left-padded), answers of 4-10 tokens (the last an
  EOS); SFT one answer per prompt, S-DPO K = 3 (its reference forward included), ranking 20 candidates (no grad).
- Full fine-tuning (AdamW over every weight, bf16 weights) and LoRA r 16 on every block projection (peft).
- Each case doubles the micro-batch from the first of `--batch-sizes` until samples/s stops rising by 3%, memory runs
  out, or the sizes end; the best is reported with every size tried.

MFU counts the FLOPs each layout executes (the paper layout's repeated prompts included):
  forward F = 2 P T + 4 d L pairs + 2 h V M
  P: parameters of the decoder layers; T: tokens computed; d: heads x head dim; L: layers; pairs: (query, key)
  pairs the mask lets attend, padding excluded; h: hidden size; V: vocabulary; M: answer tokens scored (logits are
  formed only there). Training triples the forward (backward: gradients of inputs and weights), except that LoRA
  computes no weight gradients for the frozen base: 2x for its weight terms, 3x for attention (which has no
  weights); ranking 1x; S-DPO adds 1x for the reference. MFU = FLOPs / (seconds x the card's dense bf16 peak).
"""

from __future__ import annotations

import copy
import gc
import time

import torch
from harness import sync

SHAPES = {
    "llama-1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        vocab_size=128256,
        rope_theta=500000.0,
    ),
    "smollm2-135m": dict(
        hidden_size=576,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=1536,
        vocab_size=49152,
        rope_theta=100000.0,
    ),
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=2000,
    ),
}
ANSWERS = {"sft": 1, "sdpo": 4, "ranking": 20}
EOS, PAD = 2, 0


def build_shape(name: str, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        **SHAPES[name],
        tie_word_embeddings=True,
        max_position_embeddings=4096,
        bos_token_id=1,
        eos_token_id=EOS,
        pad_token_id=PAD,
        attn_implementation="sdpa",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(device, dtype)


def make_batch(prompts: int, answers: int, prompt_tokens: int, vocab: int, seed: int, device: str):
    from sdporec.data.batching import collate

    g = torch.Generator().manual_seed(seed)
    spread = max(1, prompt_tokens // 20)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab, (n,), generator=g).tolist()

    rows = [ids(prompt_tokens + int(torch.randint(-spread, spread + 1, (1,), generator=g))) for _ in range(prompts)]
    ans = [[ids(int(torch.randint(3, 10, (1,), generator=g))) + [EOS] for _ in range(answers)] for _ in range(prompts)]
    return collate(rows, ans, PAD).to(device)


def forward_flops(model, batch, layout: str) -> tuple[float, float]:
    """F of the module docstring for one batch in `layout`, as (weight terms, attention term)."""
    cfg = model.config
    layers = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers
    p_layers = sum(p.numel() for n, p in layers.named_parameters() if "lora_" not in n)
    prompt = batch.prompt_mask.sum(-1).double()[:, None]  # (B, 1)
    ans = batch.answer_mask.sum(-1).double()  # (B, N)
    if layout == "paper":
        tokens, pairs = (prompt + ans).sum(), ((prompt + ans) * (prompt + ans + 1) / 2).sum()
    else:
        tokens = prompt.sum() + ans.sum()
        pairs = (prompt * (prompt + 1) / 2).sum() + (ans * prompt + ans * (ans + 1) / 2).sum()
    d = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    weights = 2 * p_layers * tokens + 2 * cfg.hidden_size * cfg.vocab_size * ans.sum()
    return float(weights), float(4 * d * cfg.num_hidden_layers * pairs)


def executed_flops(model, batch, layout: str, stage: str, lora: bool) -> float:
    """The FLOPs one step of `stage` executes on `batch` (module docstring)."""
    weights, attention = forward_flops(model, batch, layout)
    if stage == "ranking":
        return weights + attention
    policy = (2 if lora else 3) * weights + 3 * attention
    return policy + (weights + attention if stage == "sdpo" else 0.0)


class Case:
    """One stage x layout x mode on one model: `measure(batch_size)` runs warm-up and timed steps."""

    def __init__(self, model, ref, stage: str, layout: str, lora: bool, args):
        from sdporec.models.scoring import scoring_layout

        self.model, self.ref, self.stage, self.layout, self.lora, self.args = model, ref, stage, layout, lora, args
        self.fn = scoring_layout(layout)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, lr=1e-6) if stage != "ranking" else None

    def step(self, batch) -> None:
        from sdporec.data.batching import split_chosen_rejected
        from sdporec.training.losses import sdpo_loss, sft_loss

        if self.stage == "ranking":
            with torch.no_grad():
                self.fn(self.model, batch)
            return
        logps, _ = self.fn(self.model, batch)
        if self.stage == "sdpo":
            with torch.no_grad():
                ref = self.reference(batch)
            loss = sdpo_loss(*split_chosen_rejected(logps, 3), *split_chosen_rejected(ref, 3), 1.0)[0].mean()
        else:
            loss = sft_loss(logps[:, 0]).mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def reference(self, batch) -> torch.Tensor:
        if self.lora:
            with self.model.disable_adapter():
                return self.fn(self.model, batch)[0]
        return self.fn(self.ref, batch)[0]

    def measure(self, batch_size: int) -> dict:
        a = self.args
        batches = [
            make_batch(batch_size, ANSWERS[self.stage], a.prompt_tokens, self.model.config.vocab_size, i, a.device)
            for i in range(a.warmup + a.steps)
        ]
        if torch.device(a.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for b in batches[: a.warmup]:
            self.step(b)
        sync(a.device)
        start = time.perf_counter()
        for b in batches[a.warmup :]:
            self.step(b)
        sync(a.device)
        seconds = time.perf_counter() - start
        timed = batches[a.warmup :]
        flops = sum(executed_flops(self.model, b, self.layout, self.stage, self.lora) for b in timed)
        tokens = sum(self.tokens(b) for b in timed)
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.device(a.device).type == "cuda" else None
        return {
            "batch": batch_size,
            "samples_per_s": round(batch_size * a.steps / seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1),
            "peak_gib": None if peak is None else round(peak, 2),
            "mfu": round(flops / seconds / (a.peak_tflops * 1e12), 4) if a.peak_tflops else None,
        }

    def tokens(self, batch) -> float:
        prompt, ans = batch.prompt_mask.sum(-1)[:, None], batch.answer_mask.sum(-1)
        return float((prompt + ans).sum() if self.layout == "paper" else prompt.sum() + ans.sum())


def out_of_memory(e: Exception) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e)


def search(case: Case, sizes: list[int], budget=None) -> dict:
    """The fastest micro-batch of `sizes` (tried in order until samples/s stops rising by 3%, memory runs out or
    the budget would be passed: a size is tried only with twice the last one's time left)."""
    tried, best, last_s = [], None, 0.0
    for size in sizes:
        if budget is not None and tried and not budget.allows(2 * last_s):
            tried.append({"batch": size, "skipped": "time budget"})
            break
        started = time.time()
        try:
            row = case.measure(size)
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            tried.append({"batch": size, "out_of_memory": True})
            break
        finally:
            case.opt and case.opt.zero_grad(set_to_none=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        tried.append(row)
        last_s = time.time() - started
        if best is not None and row["samples_per_s"] < best["samples_per_s"] * 1.03:
            best = max(best, row, key=lambda r: r["samples_per_s"])
            break
        best = row if best is None else max(best, row, key=lambda r: r["samples_per_s"])
    return {"best": best, "tried": tried}


def attention_kernel(model, layout: str, device: str) -> str:
    """What runs the attention: FlexAttention for `flex`, else the first SDPA backend that accepts the layout's
    inputs, in the dispatcher's order of preference."""
    if layout == "flex":
        return "flex_attention" + (" (compiled)" if torch.device(device).type == "cuda" else " (eager)")
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from sdporec.models.scoring import scoring_layout

    batch = make_batch(2, 4, 32, model.config.vocab_size, 0, device)
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION", "MATH"):
        try:
            with sdpa_kernel([getattr(SDPBackend, name)]), torch.no_grad():
                scoring_layout(layout)(model, batch)
            return "sdpa " + name.lower()
        except RuntimeError:
            continue
    return "none ran"


def layouts(args, budget, save=lambda out: None) -> dict:
    """Every shape x mode x stage x layout asked for, in that order, while the budget lasts; `save(out)` after
    each case, so a run cut short keeps what it measured."""
    from sdporec.models.lora import add_lora

    out = {"formula": __doc__.split("MFU counts")[1].strip(), "prompt_tokens": args.prompt_tokens}
    dtype = getattr(torch, args.dtype)
    for shape in args.shapes:
        for mode in args.modes:
            if not budget.allows(args.case_s):
                out[f"{shape}/{mode}"] = {"skipped": "time budget"}
                continue
            torch._dynamo.reset()  # each model compiles afresh: no case runs past torch's recompile limit
            base = build_shape(shape, dtype, args.device)
            model = add_lora(base, 16, 32, 0.0) if mode == "lora" else base
            ref = None if mode == "lora" else copy.deepcopy(base).eval().requires_grad_(False)
            for stage in args.stages:
                for layout in args.layouts:  # flex last: it switches the model's attention (`use_flex`)
                    key = f"{shape}/{mode}/{stage}/{layout}"
                    if not budget.allows(args.case_s):
                        out[key] = {"skipped": "time budget"}
                        continue
                    started = time.time()
                    try:
                        row = search(Case(model, ref, stage, layout, mode == "lora", args), args.batch_sizes, budget)
                        row["kernel"] = attention_kernel(model, layout, args.device)
                    except Exception as e:  # recorded; the other cases still run
                        row = {"failed": f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"}
                    row["seconds"] = round(time.time() - started, 1)
                    out[key] = row
                    save(out)
                    print(key, row.get("best") or row, flush=True)
            del model, ref, base
            gc.collect()
    return out


def flex_equivalence(args) -> dict:
    """Values and gradients of the flex layout against the paper layout on this device (FlexAttention has no CPU
    backward, so only a GPU checks its gradients): a 2-layer SmolLM2-shaped model in float32."""
    from sdporec.models.logprobs import answer_logprobs_full
    from sdporec.models.scoring import answer_logprobs_flex

    torch.backends.cuda.matmul.allow_tf32 = False
    shape = dict(SHAPES["smollm2-135m"], num_hidden_layers=2)
    SHAPES["_check"] = shape
    model = build_shape("_check", torch.float32, args.device)
    batch = make_batch(4, 4, 100, shape["vocab_size"], 0, args.device)
    weights = torch.linspace(-1, 1, 16, device=args.device).view(4, 4)
    result = {}
    for name, fn in (("paper", answer_logprobs_full), ("flex", answer_logprobs_flex)):
        model.zero_grad()
        logps = fn(model, batch)[0]
        (logps * weights).sum().backward()
        result[name] = (logps.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None])
    values = float((result["flex"][0] - result["paper"][0]).abs().max())
    grads = max(float((a - b).abs().max()) for a, b in zip(result["flex"][1], result["paper"][1]))
    return {
        "max_value_diff": values,
        "max_grad_diff": grads,
        "same": values <= 1e-4 and grads <= 1e-4,
        "attention": model.config._attn_implementation,
    }
