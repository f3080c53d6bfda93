"""Models: the built-in backbone (`builtin`), model families from a config (`families`), model sources and
GGUF (`sources`), loading pretrained models and checkpoints (`loading`), a checkpoint's files and record
(`checkpoints`) and codec (`codecs`), LoRA (`lora`), item tokens inside a pretrained model (`item_rows`), the
policy and its reference (`policy`), and answer log-probs: the layouts (`logprobs`, `flex`) and which one
scores a batch (`scoring`)."""
