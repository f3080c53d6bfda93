"""The hybrid codec: a pretrained model's own tokenizer, plus one added token per catalogue item.

Titles stay text where the model can read them, and every item also gets a token of its own, so an answer
is one item token then EOS (not several BPE pieces per title) and a candidate list is scored from the
logits of its candidates' tokens at one position (`scoring.answer_logprobs_short`). The prompt shows each
history and candidate item as `title <|item:N|>` (`item_text="title"`) or as the token alone
(`item_text="token"`, shorter prompts). The tokens are ordinary added tokens of the tokenizer (saved with
it, so a checkpoint loads in plain transformers); `sdporec_codec.json` records which title each one names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sdporec.data.codec import ReservedTitle, TextCodec, UnknownTitle
from sdporec.data.prompts import Prompt

ITEM_TEXT = ("title", "token")
ITEM_MARK = "<|item:"
# How the importers name an item id whose title another id has already (`importers.distinct_titles`): such
# ids are one item listed twice (MovieLens has 18), so they share one item token.
SHARED_TITLE = re.compile(r"^(?P<title>.*) \[item [^\[\]]+\]$")


def item_token(n: int) -> str:
    return f"{ITEM_MARK}{n}|>"


def item_key(title: str) -> str:
    """The title an item token is named by: the title itself, or the one it shares (SHARED_TITLE)."""
    shared = SHARED_TITLE.match(title)
    return shared["title"] if shared else title


class UnknownItem(UnknownTitle):
    def __str__(self) -> str:
        return (
            f"title {self.args[0]!r} has no item token in this checkpoint; its item vocabulary is built from "
            "the data files given to `sft --item-tokens` (train and valid, and --titles)"
        )


class HybridCodec(TextCodec):
    """`TextCodec` with item tokens: `titles[n]` is the item named by token `item_token(n)`; a title the
    importers marked as shared (`SHARED_TITLE`) uses the token of the title it shares."""

    kind = "hybrid"
    short_answers = True

    def __init__(self, tokenizer, chat: bool, titles: Sequence[str], item_text: str = "title"):
        super().__init__(tokenizer, chat)
        if item_text not in ITEM_TEXT:
            raise ValueError(f"item_text must be one of {ITEM_TEXT}, got {item_text!r}")
        self.titles, self.item_text = list(titles), item_text
        ids = tokenizer.convert_tokens_to_ids([item_token(n) for n in range(len(self.titles))])
        unk = getattr(tokenizer, "unk_token_id", None)
        if any(i is None or i == unk for i in ids):
            raise ValueError("the tokenizer lacks the item tokens its codec record names")
        self.item_ids: dict[str, int] = dict(zip(self.titles, ids))
        self._title_of = {i: t for t, i in self.item_ids.items()}
        self._token_of = {t: item_token(n) for n, t in enumerate(self.titles)}

    def record(self) -> dict:
        return {"kind": self.kind, "chat": self.chat, "item_text": self.item_text, "items": self.titles}

    @property
    def token_ids(self) -> list[int]:
        """The item tokens' ids, in catalogue order (the embedding rows training adds and trains)."""
        return [self.item_ids[t] for t in self.titles]

    def item_titles(self) -> list[str]:
        return list(self.titles)

    def knows(self, title: str) -> bool:
        return item_key(title) in self.item_ids

    def title_id(self, title: str) -> int:
        i = self.item_ids.get(item_key(title))
        if i is None:
            raise UnknownItem(title)
        return i

    def _piece_text(self, kind: str, text: str) -> str:
        if kind != "title":
            return text
        self.title_id(text)  # an unknown title is an error here, not text the tokenizer splits
        token = self._token_of[item_key(text)]
        return token if self.item_text == "token" else f"{text} {token}"

    def prompt_text(self, prompt: Prompt) -> str:
        """The prompt as the tokenizer reads it: every title followed by its item token, or the token alone."""
        return "".join(self._piece_text(kind, text) for kind, text in prompt.pieces)

    def encode_prompt_history(self, prompt: Prompt, ignore: int) -> tuple[list[int], list[int]]:
        """The prompt's ids and labels: the item token of every history title after the first, `ignore`
        elsewhere. Each title piece puts exactly one item token in the prompt, in order, so the k-th item
        token of the ids is the k-th title piece."""
        ids = self.encode_prompt(prompt)
        titles = [j for j, (kind, _) in enumerate(prompt.pieces) if kind == "title"]
        at = [n for n, i in enumerate(ids) if i in self._title_of]
        if len(at) != len(titles):
            raise ValueError("the chat template changed the prompt's item tokens; use --history-in sequence")
        labelled = {at[titles.index(j)] for j in prompt.history[1:]}
        return ids, [i if n in labelled else ignore for n, i in enumerate(ids)]

    def encode_history(self, titles: Sequence[str], ignore: int) -> tuple[list[int], list[int]]:
        """BOS where the tokenizer has one, then one item token per title; labels: every title after the first."""
        bos = self.tokenizer.bos_token_id
        head = [bos] if bos is not None else []
        items = [self.title_id(t) for t in titles]
        return head + items, [ignore] * (len(head) + 1) + items[1:]

    def encode_next_title(self, title: str) -> list[int]:
        return [self.title_id(title)]

    def encode_answer(self, title: str) -> list[int]:
        return [self.title_id(title), self.eos_id]

    def generated_candidate(self, ids: Sequence[int], candidates: Sequence[str]) -> str | None:
        """The candidate whose item token is the first one generated before EOS (None: no item token, or not a
        candidate's)."""
        title = self.generated_title(ids)
        if title is None:
            return None
        token = self.item_ids[title]
        return next((c for c in candidates if self.item_ids.get(item_key(c)) == token), None)

    def generated_title(self, ids: Sequence[int]) -> str | None:
        """The title of the first item token generated before EOS (None where there is none)."""
        for i in ids:
            if i == self.eos_id:
                return None
            if int(i) in self._title_of:
                return self._title_of[int(i)]
        return None

    def decode(self, ids: Sequence[int]) -> str:
        title = self.generated_title(ids)
        return title if title is not None else super().decode(ids)


def check_titles(titles: Sequence[str]) -> None:
    clash = sorted(t for t in titles if ITEM_MARK in t)
    if clash:
        raise ReservedTitle(
            f"titles contain {ITEM_MARK!r}, which names item tokens: {clash[:5]}; rename them in the data"
        )


def add_item_tokens(tokenizer, titles: Sequence[str]) -> list[str]:
    """Add one token per distinct title (`item_key`) to `tokenizer` (in sorted order: the same catalogue gives
    the same ids) and return the titles in token order. A space before a token is part of it (`lstrip`), so
    `title <|item:N|>` costs the title's own tokens and one more."""
    from tokenizers import AddedToken

    items = sorted({item_key(t) for t in titles})
    check_titles(items)
    tokens = [
        AddedToken(item_token(n), special=False, normalized=False, lstrip=True, rstrip=False) for n in range(len(items))
    ]
    if any(tokenizer.convert_tokens_to_ids(t.content) not in (None, tokenizer.unk_token_id) for t in tokens):
        raise ReservedTitle("the tokenizer already has item tokens; start from a model without them")
    tokenizer.add_tokens(tokens)
    return items
