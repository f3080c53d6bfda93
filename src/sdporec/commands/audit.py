"""`sdporec audit`: a sample file's counts, candidate checks and leak check (`AuditConfig`, `run_audit`); the
checks themselves are `sdporec.evaluation.audit`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sdporec.commands.settings import setting
from sdporec.config import require_input
from sdporec.data.samples import read_samples
from sdporec.errors import require
from sdporec.evaluation.audit import audit
from sdporec.files import atomic_write_text
from sdporec.outputs import require_apart

LEAK_WARNING = 0.10


@dataclass
class AuditConfig:
    file: str = setting("", "samples to audit (the paper's JSON or JSON Lines)", positional=True)
    train: str = setting(
        "",
        "training samples: popularity and the leak check use them (default: the file itself, "
        "each sample matched against the others)",
    )
    out: str = setting("", "also write the audit as JSON to this file")

    def check(self) -> None:
        require(bool(self.file), "file", "required")

    def resolve(self) -> None:
        require_input(self.file, "file")
        require_input(self.train, "train")
        require(
            not (self.out and Path(self.out).is_dir()),
            "out",
            f"{self.out} is a directory; give a file name for the JSON",
        )
        require_apart(self.out, {"file": self.file, "train": self.train})


def run_audit(cfg: AuditConfig) -> dict:
    samples = read_samples(cfg.file)
    train = read_samples(cfg.train, "train") if cfg.train else None
    result = audit(samples, train)
    failed = [name for name, n in result["checks"].items() if n]
    result["passed"] = not failed
    print(
        f"{cfg.file}: {result['samples']} samples, {result['users'] or '?'} users, "
        f"{result['distinct_items']} distinct items"
    )
    if result["shared_titles"]:
        print(
            f"{result['shared_titles']} titles name item ids that share another id's title (marked ' [item N]' by "
            "`prepare`); `sft --item-tokens` gives each the token of the title it shares"
        )
    print("history lengths: " + ", ".join(f"{k}: {v}" for k, v in result["history_lengths"].items()))
    if result["repeat_targets"]:
        print(
            f"{result['repeat_targets']} samples' targets are in their own history (a return to an item): the 20 "
            "candidates and the whole catalogue both rank the target and no other history item, so a model that "
            "copies the history gains on them"
        )
    for name, n in result["checks"].items():
        print(f"  {'FAIL' if n else 'ok  '} {name.replace('_', ' ')}: {n} samples")
    if result["popularity_hr@1"] is not None:
        print(f"popularity HR@1 (training targets): {result['popularity_hr@1']:.4f}")
    print(
        f"leak HR@1 (target of the most similar candidate list in the {result['leak_reference']}): "
        f"{result['leak_hr@1']:.4f}"
    )
    if result["leak_hr@1"] > LEAK_WARNING:
        print(
            "\n" + "!" * 78 + f"\nWARNING: the candidate lists give the target away (leak HR@1 "
            f"{result['leak_hr@1']:.3f} > {LEAK_WARNING}).\nNumbers measured on these lists reward learning "
            "the lists, not the users. Re-draw the\nnegatives per sample (sdporec prepare) before measuring.\n"
            + "!"
            * 78
        )
    if cfg.out:
        atomic_write_text(cfg.out, json.dumps(result, indent=2) + "\n")
    if failed:
        raise SystemExit(f"audit failed: {', '.join(failed)}")
    return result
