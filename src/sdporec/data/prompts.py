"""Prompt templates and the one function that builds a prompt.

A template is text with two placeholders, `{history}` and `{candidates}` (the paper's task, `candidates`: pick
from a list), or `{history}` alone (the `next-item` task: what comes next, from the whole catalogue; its
templates use only words the list templates have, so the built-in backbone's vocabulary is the same for both
tasks and checkpoints of either load alike). `build_prompt` fills them and
returns the prompt as pieces: ("text", words of the template), ("title", an item title), ("sep", the
", " between listed titles). A text tokenizer reads the joined string; the built-in item-token codec
maps each title piece to its one token and skips separators (titles are self-delimiting tokens there).
Training draws a template per sample from a seeded generator; evaluation uses template 0.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from sdporec.data.candidates import sample_rng
from sdporec.data.samples import Sample

TEMPLATES: dict[str, list[str]] = {
    "music": [
        "Listening history, oldest first: {history}. Candidate artists: {candidates}. "
        "Which one of the candidate artists will this listener play next? Answer with its name.",
        "A listener recently played these artists in this order: {history}. "
        "From this list: {candidates}, name the single artist they are most likely to play next.",
        "Here is what someone has been listening to lately: {history}. "
        "Choose exactly one artist from {candidates} that they will want to hear next.",
        "Recent artists of a user: {history}. Options: {candidates}. "
        "Reply with the name of the one option this user will listen to next.",
    ],
    "movies": [
        "Movies watched, oldest first: {history}. Candidate movies: {candidates}. "
        "Which one of the candidate movies will this viewer watch next? Answer with its title.",
        "A viewer recently watched these films in this order: {history}. "
        "From this list: {candidates}, name the single film they are most likely to watch next.",
        "Here is what someone has been watching lately: {history}. "
        "Choose exactly one movie from {candidates} that they will want to see next.",
        "Recent movies of a user: {history}. Options: {candidates}. "
        "Reply with the title of the one option this user will watch next.",
    ],
    "books": [
        "Books read, oldest first: {history}. Candidate books: {candidates}. "
        "Which one of the candidate books will this reader pick up next? Answer with its title.",
        "A reader recently finished these books in this order: {history}. "
        "From this list: {candidates}, name the single book they are most likely to read next.",
        "Here is what someone has been reading lately: {history}. "
        "Choose exactly one book from {candidates} that they will want to read next.",
        "Recent books of a user: {history}. Options: {candidates}. "
        "Reply with the title of the one option this user will read next.",
    ],
}
# The next-item task: the history alone. Template i asks as the list task's template i does.
NEXT_ITEM_TEMPLATES: dict[str, list[str]] = {
    "music": [
        "Listening history, oldest first: {history}. Which artist will this listener play next? Answer with its name.",
        "A listener recently played these artists in this order: {history}. "
        "Reply with the name of the single artist they are most likely to play next.",
        "Here is what someone has been listening to lately: {history}. "
        "Choose exactly one artist that they will want to hear next.",
        "Recent artists of a user: {history}. Reply with the name of the one artist this user will listen to next.",
    ],
    "movies": [
        "Movies watched, oldest first: {history}. Which movie will this viewer watch next? Answer with its title.",
        "A viewer recently watched these films in this order: {history}. "
        "Reply with the title of the single film they are most likely to watch next.",
        "Here is what someone has been watching lately: {history}. "
        "Choose exactly one movie that they will want to see next.",
        "Recent movies of a user: {history}. Reply with the title of the one movie this user will watch next.",
    ],
    "books": [
        "Books read, oldest first: {history}. Which book will this reader pick up next? Answer with its title.",
        "A reader recently finished these books in this order: {history}. "
        "Reply with the title of the single book they are most likely to read next.",
        "Here is what someone has been reading lately: {history}. "
        "Choose exactly one book that they will want to read next.",
        "Recent books of a user: {history}. Reply with the title of the one book this user will read next.",
    ],
}
DOMAINS = tuple(TEMPLATES)
# candidates: the prompt lists the candidates (the paper's); next-item: the history alone.
TASKS = ("candidates", "next-item")
LIST_SEP = ", "


def templates(domain: str, task: str = "candidates") -> list[str]:
    if domain not in TEMPLATES:
        raise ValueError(f"unknown domain {domain!r}; choose one of {', '.join(DOMAINS)}")
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return (TEMPLATES if task == "candidates" else NEXT_ITEM_TEMPLATES)[domain]


@dataclass(frozen=True)
class Prompt:
    pieces: tuple[tuple[str, str], ...]  # (kind, text) with kind in {"text", "title", "sep"}
    history: tuple[int, ...] = ()  # indices into `pieces` of the history's titles, in order

    @property
    def text(self) -> str:
        return "".join(t for _, t in self.pieces)


def build_prompt(
    history: Sequence[str],
    candidates: Sequence[str],
    domain: str = "music",
    template: int = 0,
    task: str = "candidates",
) -> Prompt:
    """The prompt of template `template` of `domain` and `task` (a next-item prompt shows no candidates)."""
    lists = {"{history}": history, "{candidates}": candidates}
    pieces: list[tuple[str, str]] = []
    history: list[int] = []
    for part in re.split(r"(\{history\}|\{candidates\})", templates(domain, task)[template]):
        if part in lists:
            for j, title in enumerate(lists[part]):
                if j:
                    pieces.append(("sep", LIST_SEP))
                if part == "{history}":
                    history.append(len(pieces))
                pieces.append(("title", title))
        elif part:
            pieces.append(("text", part))
    return Prompt(tuple(pieces), tuple(history))


def split_words(text: str) -> list[str]:
    """Words and punctuation marks: the built-in backbone's tokens for template text."""
    return re.findall(r"\w+|[^\w\s]", text)


def pick_template(domain: str, rng: random.Random, task: str = "candidates") -> int:
    return rng.randrange(len(templates(domain, task)))


def template_words() -> list[str]:
    """Every word and punctuation mark of every template, for the built-in word vocabulary."""
    words: set[str] = set()
    for fmt in (f for group in (TEMPLATES, NEXT_ITEM_TEMPLATES) for fmts in group.values() for f in fmts):
        words.update(split_words(fmt.replace("{history}", " ").replace("{candidates}", " ")))
    words.update(split_words(LIST_SEP))
    return sorted(words)


def training_prompt(sample: Sample, domain: str, seed: int, epoch: int, task: str = "candidates") -> Prompt:
    """A training prompt: its template drawn per sample and epoch from a seeded generator (SFT, DPO and
    S-DPO, and the reference pass, draw the same one)."""
    template = pick_template(domain, sample_rng(seed, "template", sample.key, epoch), task)
    return build_prompt(sample.history, sample.candidates, domain, template, task)
