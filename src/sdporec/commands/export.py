"""`sdporec export`: a trained checkpoint as a plain Hugging Face model directory.

With `--merge`, a LoRA adapter is folded into its base weights (W + B·A·alpha/r) and the result saved as
a full model that loads with `AutoModelForCausalLM.from_pretrained` and no peft; full checkpoints are
re-saved (in `--dtype`). The tokenizer and sdporec's codec file travel with it, and so does what its training
recorded (its config, with the domain and task its prompts use, and the history readout's λ), so the export
ranks as the checkpoint does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sdporec.commands.groups import dtype_setting, trust_remote_code_setting
from sdporec.commands.settings import setting
from sdporec.errors import ConfigError, require
from sdporec.models.checkpoints import claim_checkpoint_dir
from sdporec.models.sources import resolve_model
from sdporec.outputs import require_apart

# What an export keeps of its checkpoint's record: how it was trained, which `Checkpoint` reads to rank alike.
TRAINING_RECORD = ("config", "history_readout", "learned_history", "trained_from")


@dataclass
class ExportConfig:
    model: str = setting(
        "",
        "checkpoint directory to export (full model or LoRA adapter), or a GGUF file (written "
        "dequantised, as an ordinary checkpoint)",
    )
    out: str = setting("", "directory for the exported model")
    merge: bool = setting(False, "fold a LoRA adapter into its base weights and write a full model")
    dtype: str = dtype_setting("dtype of the written weights")
    trust_remote_code: bool = trust_remote_code_setting()
    overwrite: bool = setting(False, "replace an earlier export in OUT")

    def check(self) -> None:
        require(bool(self.model), "model", "required")
        require(bool(self.out), "out", "required")

    def resolve(self) -> None:
        self.model = resolve_model(self.model)
        require_apart(self.out, {"model": self.model})
        claim_checkpoint_dir(self.out, self.overwrite)


def run_export(cfg: ExportConfig) -> dict:
    from sdporec.models.checkpoints import Checkpoint, is_adapter, save_checkpoint
    from sdporec.models.loading import load_model
    from sdporec.models.lora import merge_adapter

    adapter = is_adapter(cfg.model)
    if adapter and not cfg.merge:
        raise ConfigError(f"setting 'merge': {cfg.model} is a LoRA adapter; add --merge to write a full model")
    trained = {k: v for k, v in Checkpoint.read(cfg.model).meta.items() if k in TRAINING_RECORD}
    model, codec = load_model(cfg.model, cfg.dtype)
    if adapter:
        model = merge_adapter(model)
    meta = {**trained, "stage": "export", "exported_from": cfg.model, "merged": adapter, "export": asdict(cfg)}
    save_checkpoint(model, codec, cfg.out, meta)
    return {"out": cfg.out, "merged": adapter, "parameters": sum(p.numel() for p in model.parameters())}
