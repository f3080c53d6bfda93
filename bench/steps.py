"""The runner's own steps, beside sdporec's commands in a spec's `setup` and `rows` (bench/run.py): data that
comes without a validation split, a sample of a file, or a catalogue gets one.

    split-tail SOURCE TRAIN VALID FRACTION    subset SOURCE DEST N SEED    catalogue DEST SOURCE...
"""

from __future__ import annotations

import random
from pathlib import Path

from harness import ResultsError


def split_tail(source: str, train: str, valid: str, fraction: str) -> None:
    """The `split-tail` step, `split-tail SOURCE TRAIN VALID FRACTION`: the last FRACTION of SOURCE's
    samples written as VALID and the rest as TRAIN (a validation split for data that has none, as LastFM)."""
    from sdporec.data.samples import read_samples, write_samples

    rows = read_samples(source, "train")
    cut = int(len(rows) * (1 - float(fraction)))
    Path(train).parent.mkdir(parents=True, exist_ok=True)
    write_samples(train, rows[:cut])
    write_samples(valid, rows[cut:])


def subset(source: str, dest: str, size: str, seed: str) -> None:
    """The `subset` step, `subset SOURCE DEST N SEED`: N samples of SOURCE drawn at random (seeded by SEED and
    DEST's name, so that a seed's train, valid and test draws differ), in SOURCE's order, written as DEST."""
    from sdporec.data.samples import read_samples, write_samples

    rows = read_samples(source, "train")
    if int(size) > len(rows):
        raise ResultsError(f"subset: {source} has {len(rows)} samples, fewer than the {size} asked for")
    picked = sorted(random.Random(f"{seed}:{Path(dest).name}").sample(range(len(rows)), int(size)))
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    write_samples(dest, [rows[i] for i in picked])


def catalogue(dest: str, *sources: str) -> None:
    """The `catalogue` step, `catalogue DEST SOURCE...`: every title the SOURCE sample files name (histories,
    candidates, targets), sorted, one per line as DEST (a catalogue for data that comes without one, as LastFM's
    JSON, whose lists draw from all of its artists)."""
    from sdporec.data.samples import read_samples
    from sdporec.evaluation.catalogue import Catalogue

    items = Catalogue.of_samples(*(read_samples(source, "train") for source in sources))
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    Path(dest).write_text("".join(f"{title}\n" for title in items.titles), encoding="utf-8")


# The runner's own steps: name -> (function, how its arguments read, a check of them).
BUILTINS = {
    "split-tail": (
        split_tail,
        "split-tail SOURCE TRAIN VALID FRACTION (0 < FRACTION < 1)",
        lambda a: len(a) == 4 and a[3].replace(".", "", 1).isdigit() and 0 < float(a[3]) < 1,
    ),
    "subset": (
        subset,
        "subset SOURCE DEST N SEED (N and SEED whole numbers)",
        lambda a: len(a) == 4 and a[2].isdigit() and int(a[2]) > 0 and a[3].isdigit(),
    ),
    "catalogue": (catalogue, "catalogue DEST SOURCE... (one or more sample files)", lambda a: len(a) >= 2),
}
