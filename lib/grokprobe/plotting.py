"""One figure style, and savefig(fig, name) -> PNG + PDF with deterministic metadata.

Committed figures come from the default `quick` profile only; any other profile or any override
writes under build/figures/<profile>[-<config hash>]/ so ad-hoc runs never replace them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np

from . import paths
from .analysis import mean_band

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,  # TrueType: venues reject Type 3 fonts
    "ps.fonttype": 42,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.25,
    "lines.linewidth": 1.4,
}
COLORS = {
    "kappa": "#c0392b",
    "train": "#2c3e50",
    "val": "#2980b9",
    "ncc": "#27ae60",
    "kappa_code": "#e67e22",
    "kappa_exact": "#8e44ad",
}


def use_style() -> None:
    mpl.rcParams.update(STYLE)


def figure_dir(profile: str, overrides: dict | None = None, tag: str = "") -> Path:
    """figures/ for the plain quick profile (the committed set), else a folder under build/."""
    if profile == "smoke":
        return paths.figures_root("smoke")
    if profile == "quick" and not overrides:
        return paths.FIGURES
    return paths.BUILD / "figures" / (profile + (f"-{tag}" if tag and overrides else ""))


def savefig(fig, name: str, out_dir: Path | None = None) -> list[Path]:
    out_dir = Path(out_dir or paths.FIGURES)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, metadata={"Software": None})
    fig.savefig(pdf, metadata={"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None})
    return [png, pdf]


def band(ax, steps, values, *, color, label, log=False):
    """Mean line and min-max band over seeds (values: (n_seeds, n_steps))."""
    m, lo, hi = mean_band(values)
    x = np.maximum(steps, 1)  # step 0 drawn at 1 on the log axis
    ax.plot(x, m, color=color, label=label)
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")


def grokking_geometry(metrics, *, title: str = ""):
    """Fig 1 analogue: kappa (left, log), train/val accuracy and NCC (right), plus NC1-4 and the
    kappa variants, all against log steps with mean and min-max band over seeds."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), gridspec_kw={"width_ratios": [1.5, 1, 1]})
    ax = axes[0]
    steps, kap = metrics.series("kappa", "train")
    band(ax, steps, kap, color=COLORS["kappa"], label="relative flatness κ (train)", log=True)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("κ (log)", color=COLORS["kappa"])
    ax2 = ax.twinx()
    for split in ("train", "val"):
        _, acc = metrics.series("acc", split)
        band(ax2, steps, 100 * acc, color=COLORS[split], label=f"{split} accuracy (%)")
    _, ncc = metrics.series("ncc", "train")
    band(ax2, steps, 100 * ncc / ncc[:, :1], color=COLORS["ncc"], label="NCC (% of step 0)")
    ax2.set_ylim(-3, 103)
    ax2.set_ylabel("accuracy, NCC (%)")
    ax2.grid(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="center left", framealpha=0.9)
    ax.set_title(title or "κ drops as validation accuracy rises; NCC falls earlier")

    ax = axes[1]
    for name, label in (("nc1", "NC1"), ("nc2", "NC2"), ("nc3", "NC3"), ("nc4", "NC4"), ("ncc", "NCC")):
        _, v = metrics.series(name, "train")
        band(
            ax,
            steps,
            np.maximum(v, 1e-6),
            color=None or plt.cm.viridis(len(ax.lines) / 5),
            label=label,
            log=True,
        )
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_title("neural-collapse conditions (train)")
    ax.legend()

    ax = axes[2]
    for name, label in (
        ("kappa", 'κ, paper bound ("=" position)'),
        ("kappa_exact", "κ exact (Petzka trace)"),
        ("kappa_code", "κ as in authors' code (D6)"),
    ):
        _, v = metrics.series(name, "train")
        band(ax, steps, np.maximum(v, 1e-12), color=COLORS[name], label=label, log=True)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_title("flatness variants (train)")
    ax.legend()
    fig.tight_layout()
    return fig


def stack_outcomes(by_seed: dict, metric: str, split: str):
    """Per-seed outcomes (anything with .series(metric, split) and .diverged): x (union over seeds)
    and values (n_seeds, n_x) with NaN where a seed has no point."""
    series = [o.series(metric, split) for o in by_seed.values()]
    series = [(x, v) for x, v in series if len(x)]
    if not series:
        return None, None
    xs = np.unique(np.concatenate([x for x, _ in series]))
    vals = np.full((len(series), len(xs)), np.nan)
    for i, (x, v) in enumerate(series):
        vals[i, np.searchsorted(xs, x)] = v
    return xs, vals


def draw_outcomes(ax, by_seed, metric, split, *, label, color, ls="-", scale=1.0, floor=None):
    """Mean line and min-max band over seeds; a cross at the last point of every diverged seed."""
    xs, vals = stack_outcomes(by_seed, metric, split)
    if xs is None:
        return
    vals = vals * scale
    if floor is not None:
        vals = np.maximum(vals, floor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after a divergence
        m, lo, hi = np.nanmean(vals, 0), np.nanmin(vals, 0), np.nanmax(vals, 0)
    ax.plot(xs, m, color=color, ls=ls, label=label)
    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
    for o in by_seed.values():
        if o.diverged:
            x, v = o.series(metric, split)
            if len(x):
                ax.plot(x[-1], max(v[-1] * scale, floor or -np.inf), "x", color=color, ms=8, mew=2)
