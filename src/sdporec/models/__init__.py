"""Models: the built-in backbone (`builtin`), loading pretrained models and checkpoints (`loading`), LoRA
(`lora`), the policy and its reference (`policy`) and checkpoint files (`checkpoints`)."""
