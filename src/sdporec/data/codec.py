"""Codecs: prompts and answers to token ids, and generated ids back to text.

Three kinds share one interface, so training and evaluation never ask which one they hold:
- `TextCodec` (pretrained backbones): titles stay text; the prompt string and " " + title go through the
  model's own tokenizer; the answer ends with EOS.
- `BuiltinCodec` (the built-in backbone, kind `builtin`): every item title is one token and every template
  word its own token. The vocabulary lives in a Hugging Face tokenizer file, so checkpoints load with
  `AutoTokenizer`; our code encodes prompts piece by piece instead of parsing text, because a title may
  equal or contain a template word ("Yes", "Low", "Air Supply").
- `HybridCodec` (`data/hybrid.py`, kind `hybrid`): a pretrained model's tokenizer plus one token per item
  (`sft --item-tokens`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from sdporec.data.prompts import Prompt, split_words, template_words
from sdporec.data.samples import Sample, sample_error

SPECIALS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


class UnknownTitle(KeyError):
    def __str__(self) -> str:
        return (
            f"title {self.args[0]!r} has no token in the built-in backbone's vocabulary; the vocabulary "
            "is built from the data files given to `sft` (train and valid)"
        )


class ReservedTitle(ValueError):
    pass


def _word_token(word: str) -> str:
    return f"<|w:{word}|>"


class _Codec:
    kind: str
    tokenizer: object
    chat = False
    # Every answer one token then EOS, so `scoring.answer_logprobs_short` may score it (the hybrid codec).
    short_answers = False

    def record(self) -> dict:
        """What a checkpoint records of this codec (`models.checkpoints.save_codec` writes it beside the
        tokenizer, `models.codecs.load_codec` reads it back)."""
        return {"kind": self.kind, "chat": self.chat}

    def item_titles(self) -> list[str] | None:
        """The titles it has an item token for, in token order: the catalogue it ranks (None: titles as text)."""
        return None


class BuiltinCodec(_Codec):
    kind = "builtin"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        self.pad_id = self.vocab[SPECIALS["pad"]]
        self.bos_id = self.vocab[SPECIALS["bos"]]
        self.eos_id = self.vocab[SPECIALS["eos"]]
        self.unk_id = self.vocab[SPECIALS["unk"]]
        self._id_to_text = {i: (t[4:-2] if t.startswith("<|w:") else t) for t, i in self.vocab.items()}
        self._special_ids = {self.pad_id, self.bos_id, self.eos_id, self.unk_id}

    def knows(self, title: str) -> bool:
        i = self.vocab.get(title)
        return i is not None and not title.startswith("<|w:") and i not in self._special_ids

    def item_titles(self) -> list[str]:
        return [t for t, _ in sorted(self.vocab.items(), key=lambda x: x[1]) if self.knows(t)]

    def title_id(self, title: str) -> int:
        i = self.vocab.get(title)
        if i is None or title.startswith("<|w:") or i in self._special_ids:
            raise UnknownTitle(title)
        return i

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        return [i for piece in self._piece_ids(prompt) for i in piece]

    def encode_prompt_history(self, prompt: Prompt, ignore: int) -> tuple[list[int], list[int]]:
        """The prompt's ids (`encode_prompt`) and labels: the token of every history title after the first
        where it stands, `ignore` elsewhere (the history's next-item loss inside the prompt)."""
        labelled = {j + 1 for j in prompt.history[1:]}  # _piece_ids puts BOS first
        ids, labels = [], []
        for j, piece in enumerate(self._piece_ids(prompt)):
            ids += piece
            labels += piece if j in labelled else [ignore] * len(piece)
        return ids, labels

    def _piece_ids(self, prompt: Prompt) -> list[list[int]]:
        """BOS, then each piece's ids: a title its one token, text a token per word, a separator none."""
        out = [[self.bos_id]]
        for kind, text in prompt.pieces:
            if kind == "title":
                out.append([self.title_id(text)])
            elif kind == "text":
                out.append([self.vocab.get(_word_token(w), self.unk_id) for w in split_words(text)])
            else:
                out.append([])
        return out

    def encode_answer(self, title: str) -> list[int]:
        return [self.title_id(title), self.eos_id]

    def encode_history(self, titles: Sequence[str], ignore: int) -> tuple[list[int], list[int]]:
        """BOS, then one token per title; labels: every title after the first (see data/batching.py)."""
        ids = [self.bos_id] + [self.title_id(t) for t in titles]
        return ids, [ignore, ignore] + ids[2:]

    def encode_next_title(self, title: str) -> list[int]:
        """A title as it follows a history in `encode_history` (the history readout's answer)."""
        return [self.title_id(title)]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in self._special_ids and int(i) in self._id_to_text:  # ids past the vocabulary: nothing
                out.append(self._id_to_text[int(i)])
        return " ".join(out)


class TextCodec(_Codec):
    """Titles as text. With `chat`, the prompt is the user turn of the tokenizer's chat template and the
    answer follows the assistant turn's opening (title, then EOS, which is the template's end of turn);
    without it, the prompt is plain text and the answer is " " + title, then EOS. Every stage encodes
    through this one object, so SFT, the reference pass, ranking, generation and `recommend` see the same
    prompt."""

    kind = "text"

    def __init__(self, tokenizer, chat: bool = False):
        if chat and not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template")
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no EOS token; answers must end with one")
        if tokenizer.pad_token_id is None:
            # Our batches carry their own masks, so padding with EOS changes no result.
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.chat = tokenizer, chat
        self.pad_id, self.eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        text, specials = self._prompt_string(prompt)
        return list(self.tokenizer(text, add_special_tokens=specials)["input_ids"])

    def encode_prompt_history(self, prompt: Prompt, ignore: int) -> tuple[list[int], list[int]]:
        """The prompt's ids (`encode_prompt`) and labels: the tokens wholly inside every history title after the
        first, with the separator before it (as `encode_history`), `ignore` elsewhere. The prompt is tokenized
        whole, as everywhere else, and the titles found through the tokenizer's character offsets."""
        if not self.tokenizer.is_fast:
            raise ValueError(
                "a history loss inside the prompt needs a fast tokenizer (character offsets); use --history-in sequence"
            )
        text, specials = self._prompt_string(prompt)
        start = text.find(prompt.text)
        if start < 0:
            raise ValueError("the chat template changed the prompt's text; use --history-in sequence")
        ends = [start + n for n in itertools.accumulate(len(t) for _, t in prompt.pieces)]
        spans = [(ends[j - 2], ends[j]) for j in prompt.history[1:]]  # the separator before title j, and j
        enc = self.tokenizer(text, add_special_tokens=specials, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        inside = [b > a and any(lo <= a and b <= hi for lo, hi in spans) for a, b in enc["offset_mapping"]]
        return ids, [i if keep else ignore for i, keep in zip(ids, inside)]

    def prompt_text(self, prompt: Prompt) -> str:
        """The prompt's text as the user turn shows it (the hybrid codec adds item tokens)."""
        return prompt.text

    def _prompt_string(self, prompt: Prompt) -> tuple[str, bool]:
        """The string the tokenizer reads, and whether it adds its special tokens itself."""
        text = self.prompt_text(prompt)
        if not self.chat:
            return text, True
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        ), False

    def encode_history(self, titles: Sequence[str], ignore: int) -> tuple[list[int], list[int]]:
        """The titles as plain text joined by ", " (BOS first where the tokenizer has one); labels: the
        tokens of every title after the first, with the separator before it (see data/batching.py)."""
        tok = self.tokenizer
        ids = [tok.bos_token_id] if tok.bos_token_id is not None else []
        labels = [ignore] * len(ids)
        for j, title in enumerate(titles):
            piece = tok(title if j == 0 else ", " + title, add_special_tokens=False)["input_ids"]
            ids += piece
            labels += [ignore] * len(piece) if j == 0 else list(piece)
        return ids, labels

    def encode_next_title(self, title: str) -> list[int]:
        """A title as it follows a history in `encode_history` (the history readout's answer): its separator
        and tokens, with no end marker (a history has none between titles)."""
        return list(self.tokenizer(", " + title, add_special_tokens=False)["input_ids"])

    def encode_answer(self, title: str) -> list[int]:
        text = title if self.chat else " " + title
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [self.eos_id]

    def decode(self, ids: Sequence[int]) -> str:
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def build_builtin_codec(titles: Sequence[str]) -> BuiltinCodec:
    """A word-level tokenizer: specials, then template words, then one token per title."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = list(SPECIALS.values()) + [_word_token(w) for w in template_words()] + sorted(set(titles))
    if len(set(tokens)) != len(tokens):
        clash = sorted(t for t in set(titles) if t in SPECIALS.values() or t.startswith("<|w:"))
        raise ReservedTitle(
            f"titles clash with the built-in backbone's reserved token names: {clash[:5]}; rename them in the data"
        )
    # PreTrainedTokenizerFast sets the model's unknown token from its own unk_token (the saved file has it).
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIALS["pad"],
        bos_token=SPECIALS["bos"],
        eos_token=SPECIALS["eos"],
        unk_token=SPECIALS["unk"],
    )
    return BuiltinCodec(hf)


def first_unknown_title(samples: Sequence[Sample], knows) -> tuple[Sample, str, str] | None:
    """(sample, field, title) of the first history or candidate title for which `knows(title)` is false."""
    for s in samples:
        for fld, titles in (("historyList", s.history), ("itemList", s.candidates)):
            unknown = next((t for t in titles if not knows(t)), None)
            if unknown is not None:
                return s, fld, unknown
    return None


def require_known_titles(codec, model: str, samples: Sequence[Sample], path: str) -> None:
    """Codecs with item tokens (the built-in backbone's, the hybrid's) score only titles they have a token for;
    the first title of `samples` (read from `path`) such a codec lacks is a `DataError` at that row and field.
    Text codecs know every title."""
    found = first_unknown_title(samples, codec.knows) if hasattr(codec, "knows") else None
    if found is not None:
        s, fld, unknown = found
        raise sample_error(
            path,
            s,
            fld,
            f"title {unknown!r} has no token in the vocabulary of {model} (a "
            f"{'built-in backbone' if codec.kind == 'builtin' else 'model with item tokens'} "
            "knows the titles of the files its `sft` read, and those of --titles FILE: "
            "retrain with every title listed there)",
        )


CHAT_CHOICES = ("auto", "on", "off")  # how `models.codecs.load_codec` picks chat prompts
