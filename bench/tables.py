"""Makes the results tables of the docs from the committed results files (bench/results/NAME.json).

    .venv/bin/python bench/tables.py            # rewrite every marked table in README.md and docs/*.md
    .venv/bin/python bench/tables.py --check    # exit 1, naming them, where a table differs (make test runs it)

A table's place in a markdown file is marked by `<!-- results NAME -->` and `<!-- /results -->`; what lies
between is generated from bench/results/NAME.json (written by bench/run.py): one row per spec row with the
mean (± std over seeds) of each metric, the paired 95% intervals of the compared rows (and both again within
cold, rare and frequent targets where the spec has `groups`), and the command, machine and date that produced
it. Nothing between the markers is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from harness import RESULTS, ROOT, ResultsError, load_results

MARKED = re.compile(r"(<!-- results (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)
HEADERS = {
    "hr@1": "HR@1",
    "hr@5": "HR@5",
    "hr@10": "HR@10",
    "hr@20": "HR@20",
    "ndcg@5": "NDCG@5",
    "ndcg@10": "NDCG@10",
    "ndcg@20": "NDCG@20",
    "mrr": "MRR",
    "valid_ratio": "ValidRatio",
}


def _cell(value: dict | None, best: bool) -> str:
    if value is None:
        return "-"
    text = f"{value['mean']:.4f}" + (f" ± {value['std']:.4f}" if value.get("std") is not None else "")
    return f"**{text}**" if best else text


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


def _differences(differences: list[dict]) -> list[str]:
    """The paired intervals as a table: one row per compared pair, one column per metric."""
    if not differences:
        return []
    found_metrics = list(dict.fromkeys(d["metric"] for d in differences))
    metrics = [m for m in HEADERS if m in found_metrics] + [m for m in found_metrics if m not in HEADERS]
    pairs = list(dict.fromkeys((d["a"], d["b"]) for d in differences))
    found = {(d["a"], d["b"], d["metric"]): d for d in differences}
    lines = [
        "| difference (paired bootstrap 95%) | " + " | ".join(HEADERS.get(m, m) for m in metrics) + " |",
        "|---" * (len(metrics) + 1) + "|",
    ]
    for a, b in pairs:
        cells = []
        for m in metrics:
            d = found.get((a, b, m))
            cells.append(
                "-" if d is None else f"{_signed(d['difference'])} [{_signed(d['low'])}, {_signed(d['high'])}]"
            )
        lines.append(f"| {a} − {b} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _group(name: str, group: dict) -> list[str]:
    """The compared rows' metrics and intervals within one group of targets (`groups` of a spec)."""
    found = {m for values in group["metrics"].values() for m in values}
    metrics = [m for m in HEADERS if m in found]
    title = f"{name} targets (a training target {group['bounds']} times), {group['n']:,} samples"
    lines = [f"| {title} | " + " | ".join(HEADERS[m] for m in metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for label, values in group["metrics"].items():
        cells = ["-" if values.get(m) is None else f"{values[m]:.4f}" for m in metrics]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, "", *_differences(group["differences"])]


def render(results: dict) -> str:
    """The markdown of one results file: the table, the intervals, and where the numbers come from."""
    metrics = [m for m in HEADERS if any(m in r["metrics"] for r in results["rows"])]
    best = {m: max(r["metrics"][m]["mean"] for r in results["rows"] if m in r["metrics"]) for m in metrics}
    seeds = results["seeds"]
    sizes = {r.get("n") for r in results["rows"]}
    one_size = len(sizes) == 1 and None not in sizes  # else each row says its own number of samples
    title = f"{len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({', '.join(map(str, seeds))})"
    title += f", {next(iter(sizes)):,} samples" if one_size else ""
    headers = [HEADERS[m] for m in metrics] + ([] if one_size else ["samples"])
    lines = [f"| {title} | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]
    for r in results["rows"]:
        cells = [_cell(r["metrics"].get(m), r["metrics"].get(m, {}).get("mean") == best[m]) for m in metrics]
        cells += [] if one_size else [f"{r['n']:,}" if r.get("n") else "-"]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines += _differences(results["differences"])
    for name, group in results.get("groups", {}).items():
        lines += _group(name, group)
    m = results["machine"]
    where = f"{m.get('gpu') or m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')}"
    seconds = results.get("seconds") or []
    took = f", {sum(seconds) / len(seconds):.0f} s per seed" if seconds else ""
    lines.append(f"`{results['command']}` ({results['date']}; {where}{took})")
    return "\n".join(lines) + "\n"


def regenerate(text: str, folder: Path = RESULTS) -> str:
    """`text` with every marked table made again from its results file."""
    return MARKED.sub(lambda m: m.group(1) + render(load_results(m.group("name"), folder)) + m.group(4), text)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale(folder: Path = RESULTS) -> list[str]:
    """The documents whose marked tables differ from what the results files make."""
    return [str(p.relative_to(ROOT)) for p in documents() if regenerate(p.read_text(), folder) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say which documents differ")
    args = parser.parse_args(argv)
    try:
        if args.check:
            differ = stale()
            if differ:
                print(
                    f"bench/tables.py: tables differ from bench/results in {', '.join(differ)}: run "
                    "`python bench/tables.py`",
                    file=sys.stderr,
                )
                return 1
            return 0
        for p in documents():
            new = regenerate(p.read_text())
            if new != p.read_text():
                p.write_text(new)
                print(f"updated {p.relative_to(ROOT)}")
    except ResultsError as e:
        print(f"bench/tables.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
