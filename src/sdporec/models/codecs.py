"""A checkpoint's codec, read back: the record `sdporec_codec.json` (kind, chat prompts, item tokens) and the
tokenizer saved beside it, or any model's own tokenizer (a GGUF file's included)."""

from __future__ import annotations

from sdporec.data.codec import BuiltinCodec, TextCodec
from sdporec.data.hybrid import HybridCodec
from sdporec.errors import ConfigError, warn
from sdporec.models.checkpoints import Checkpoint
from sdporec.models.sources import is_gguf, load_gguf_tokenizer, tokenizer_kwargs


def load_codec(
    path: str, chat_template: str = "auto", checkpoint: Checkpoint | None = None
) -> BuiltinCodec | TextCodec:
    """The codec of a checkpoint (as it was trained: `sdporec_codec.json`) or of any model's tokenizer.

    `chat_template`: `auto` keeps a checkpoint's recorded choice and otherwise uses the tokenizer's chat
    template where it has one; `on` / `off` decide (a choice that differs from the recorded one is
    honoured with a warning: the model was trained on the other prompts). `checkpoint`: `path`'s record where
    the caller has read it already."""
    from transformers import AutoTokenizer

    checkpoint = checkpoint or Checkpoint.read(path)
    recorded = checkpoint.codec
    if is_gguf(path):
        tokenizer = load_gguf_tokenizer(path)
    else:
        tokenizer = AutoTokenizer.from_pretrained(path, **tokenizer_kwargs())
    if checkpoint.kind == "builtin":
        return BuiltinCodec(tokenizer)
    has_template = bool(tokenizer.chat_template)
    if chat_template == "auto":
        chat = recorded.get("chat", has_template if not recorded else False)
    else:
        chat = chat_template == "on"
        if chat and not has_template:
            raise ConfigError(f"setting 'chat_template': {path}'s tokenizer has no chat template; use auto or off")
        if "chat" in recorded and recorded["chat"] != chat:
            warn_chat(path, recorded, chat_template)
    if recorded.get("kind") == "hybrid":
        return HybridCodec(tokenizer, chat, recorded["items"], recorded.get("item_text", "title"))
    return TextCodec(tokenizer, chat)


def warn_chat(path: str, recorded: dict, chat_template: str) -> None:
    warn(
        f"{path} was trained with chat_template {'on' if recorded['chat'] else 'off'}; "
        f"using {chat_template} as asked, so its prompts differ from training's"
    )
