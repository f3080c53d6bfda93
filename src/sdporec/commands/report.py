"""`sdporec report`: figures and report.md from run directories (`ReportConfig`, `run_report`); what it reads
and draws is `sdporec.evaluation.report`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdporec.commands.settings import setting
from sdporec.errors import require
from sdporec.evaluation.evaluate import format_table
from sdporec.evaluation.report import collect, write_report
from sdporec.outputs import claim_out_dir, require_apart


@dataclass
class ReportConfig:
    runs: list[str] = setting([], "run directories: pipeline outputs or single training runs", positional=True)
    out: str = setting("", "output directory for the PNG figures and report.md")

    def check(self) -> None:
        require(bool(self.runs), "runs", "give at least one run directory")
        require(bool(self.out), "out", "required")

    def resolve(self) -> None:
        for r in self.runs:
            require(Path(r).is_dir(), "runs", f"{r} is not a directory")
        require_apart(self.out, {"runs": self.runs})
        claim_out_dir(self.out, (), overwrite=True)


def run_report(cfg: ReportConfig) -> dict:
    out = Path(cfg.out)
    runs, finals = collect(cfg.runs)
    figures = write_report(runs, finals, out)
    if finals:
        print(format_table(finals))
    print(f"\nReport: {out / 'report.md'}; figures: {', '.join(str(out / f) for f in figures)}")
    return {"figures": figures, "runs": [r.label for r in runs]}
