"""`sdporec report`: figures and a markdown summary from the logs every run writes.

A RUN_DIR is one training run (it has a train log), a pipeline directory (its stage runs `sft/`, `dpo/`,
`sdpo/` and its metrics) or an evaluation (its metrics); `sdporec.runs` names and reads the files. Several
RUN_DIRs share axes, with a legend. The command is `sdporec.commands.report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdporec.errors import ConfigError
from sdporec.files import atomic_write_text, output_set
from sdporec.runs import EVAL_LOG, METRICS, MODEL, REPORT, SUMMARY, TRAIN_LOG, read_log, read_metrics, read_summary

BAR_METRICS = ("hr@1", "hr@5", "ndcg@5", "mrr")


@dataclass
class ReportedRun:
    label: str
    stage: str  # "sft", "dpo", "sdpo" or the run's own stage name
    train_log: list[dict]
    eval_log: list[dict]
    summary: dict


def _stage_of(run_dir: Path) -> str:
    from sdporec.models.checkpoints import Checkpoint

    return Checkpoint.read(run_dir / MODEL).stage or run_dir.name


def collect(run_dirs: list[str]) -> tuple[list[ReportedRun], dict[str, dict]]:
    """(training runs, name -> final metrics of every stage and baseline)."""
    runs: list[ReportedRun] = []
    finals: dict[str, dict] = {}
    several = len(run_dirs) > 1
    for d in map(Path, run_dirs):
        prefix = f"{d.name}/" if several else ""
        stage_dirs = [d] if (d / TRAIN_LOG).is_file() else sorted(p for p in d.iterdir() if (p / TRAIN_LOG).is_file())
        if not stage_dirs and not (d / METRICS).is_file():
            raise ConfigError(
                f"setting 'runs': {d} holds neither a training run's {TRAIN_LOG} nor a pipeline's {METRICS}"
            )
        for s in stage_dirs:
            label = prefix + (s.name if s != d else d.name)
            runs.append(
                ReportedRun(
                    label, _stage_of(s), read_log(s / TRAIN_LOG), read_log(s / EVAL_LOG), read_summary(s / SUMMARY)
                )
            )
        if (d / METRICS).is_file():
            pipeline, metrics = read_metrics(d / METRICS)
            if pipeline:
                finals.update({prefix + name: m for name, m in metrics.items()})
            else:  # an `evaluate` output: one model
                finals[d.name] = metrics
    order = {"sft": 0, "dpo": 1, "sdpo": 2}
    # sft first so that colours line up across figures
    runs.sort(key=lambda r: (order.get(r.stage, 3), r.label))
    return runs, finals


STAGE_COLORS = {"popularity": "tab:gray", "sft": "tab:blue", "dpo": "tab:orange", "sdpo": "tab:red"}
LINESTYLES = ("-", "--", ":", "-.")


def _style(label: str, prefixes: list[str]) -> dict:
    """The same colour for a stage in every figure; one line style per run directory."""
    prefix, _, stage = label.rpartition("/")
    index = prefixes.index(prefix) if prefix in prefixes else 0
    return {"color": STAGE_COLORS.get(stage), "linestyle": LINESTYLES[index % len(LINESTYLES)]}


def _plot_lines(ax, runs: list[ReportedRun], key: str, x: str = "step", source: str = "train") -> bool:
    prefixes = _prefixes([r.label for r in runs])
    drawn = False
    for r in runs:
        rows = [
            row
            for row in (r.train_log if source == "train" else r.eval_log)
            if row.get(key) is not None and row.get(x) is not None
        ]
        if rows:
            ax.plot(
                [row[x] for row in rows],
                [row[key] for row in rows],
                label=r.label,
                marker="o" if len(rows) < 15 else None,
                **_style(r.label, prefixes),
            )
            drawn = True
    return drawn


def _prefixes(labels: list[str]) -> list[str]:
    return list(dict.fromkeys(label.rpartition("/")[0] for label in labels))


def _finish(fig, ax_list, path: Path) -> None:
    for ax in ax_list:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def make_figures(runs: list[ReportedRun], finals: dict[str, dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    sft = [r for r in runs if r.stage == "sft"]
    pref = [r for r in runs if r.stage != "sft"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group, title in ((axes[0], sft, "SFT"), (axes[1], pref, "DPO / S-DPO")):
        if not _plot_lines(ax, group, "loss"):
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        ax.set(title=f"{title}: training loss", xlabel="optimizer step", ylabel="loss")
    _finish(fig, axes, out / "loss.png")
    written.append("loss.png")
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, group, title in ((axes[0], sft, "SFT"), (axes[1], pref, "DPO / S-DPO (from the SFT model)")):
        _plot_lines(ax, group, "hr@1", x="epoch", source="eval")
        ax.set(title=f"{title}: validation HR@1", xlabel="epoch", ylabel="HR@1")
    _finish(fig, axes, out / "valid_hr1.png")
    written.append("valid_hr1.png")
    plt.close(fig)

    if pref:
        fig, axes = plt.subplots(1, 3, figsize=(15, 4))
        for ax, key, title in (
            (axes[0], "reward_chosen", "chosen reward"),
            (axes[1], "reward_rejected", "rejected reward (mean over K)"),
            (axes[2], "reward_margin", "margin: chosen − mean rejected"),
        ):
            _plot_lines(ax, pref, key)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set(title=title, xlabel="optimizer step", ylabel="β·(log π − log π_ref)")
        _finish(fig, axes, out / "rewards.png")
        written.append("rewards.png")
        plt.close(fig)

        fig, ax = plt.subplots(figsize=(7, 4))
        _plot_lines(ax, pref, "logp_chosen")
        ax.set(title="Log-prob of the chosen answer (policy)", xlabel="optimizer step", ylabel="log π(y_w | x)")
        _finish(fig, [ax], out / "chosen_logp.png")
        written.append("chosen_logp.png")
        plt.close(fig)

    if finals:
        _final_metrics_figure(plt, finals, out / "final_metrics.png")
        written.append("final_metrics.png")
    return written


def _final_metrics_figure(plt, finals: dict[str, dict], path: Path) -> None:
    """Bars of each run's final metrics, side by side per metric."""
    import numpy as np

    names = list(finals)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(BAR_METRICS) + 0.4 * len(names)), 4))
    xs = np.arange(len(BAR_METRICS))
    for i, name in enumerate(names):
        vals = [finals[name].get(m) or 0.0 for m in BAR_METRICS]
        style = _style(name, _prefixes(names))
        bars = ax.bar(
            xs + i * width - 0.4 + width / 2,
            vals,
            width,
            label=name,
            color=style["color"],
            hatch=None if style["linestyle"] == "-" else "//",
            edgecolor="white",
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(xs, BAR_METRICS)
    ax.set(title="Final metrics", ylabel="value", ylim=(0, 1.05))
    _finish(fig, [ax], path)
    plt.close(fig)


def write_report(runs: list[ReportedRun], finals: dict[str, dict], out: Path) -> list[str]:
    """The figures and report.md in `out`, written as one set (report.md last); returns the figures' names."""
    with output_set(out, REPORT) as stage:
        figures = make_figures(runs, finals, stage)
        write_markdown(runs, finals, figures, stage)
    return figures


def write_markdown(runs: list[ReportedRun], finals: dict[str, dict], figures: list[str], out: Path) -> str:
    lines = ["# sdporec report", ""]
    if finals:
        lines += [
            "## Final metrics",
            "",
            "| | " + " | ".join(("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr", "valid_ratio", "n")) + " |",
            "|---" * 8 + "|",
        ]
        for name, m in finals.items():
            cells = [
                "-" if m.get(k) is None else (str(m[k]) if k == "n" else f"{m[k]:.4f}")
                for k in ("hr@1", "hr@5", "ndcg@5", "ndcg@10", "mrr", "valid_ratio", "n")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if runs:
        lines += [
            "## Training runs",
            "",
            "| run | stage | optimizer steps | best valid HR@1 | train seconds |",
            "|---|---|---|---|---|",
        ]
        for r in runs:
            best = r.summary.get("best_valid_hr@1")
            lines.append(
                f"| {r.label} | {r.stage} | {r.summary.get('optimizer_steps', '-')} | "
                f"{'-' if best is None else format(best, '.4f')} | {r.summary.get('train_seconds', '-')} |"
            )
        lines.append("")
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / REPORT, text)
    return text
