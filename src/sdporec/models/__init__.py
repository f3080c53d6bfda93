"""Models: the built-in backbone (`builtin`), loading pretrained models and checkpoints (`loading`), LoRA
(`lora`), the policy and its reference (`policy`), checkpoint files (`checkpoints`), model sources and GGUF
(`sources`), scoring answers in three layouts (`logprobs`), and model families from a config
(`families`)."""
