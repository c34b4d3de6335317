"""Figures of notebook 06: the predictor heat maps and a few curve panels."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from . import analysis, plotting
from .predictors import QUANTITIES


def heat_maps(rows, tasks=None):
    """Quantities x tasks: S (inside the generalisation window), M (before memorisation) and the
    lag of the steepest descent behind t_g50, each the mean over seeds."""
    from .predictors import heat

    plotting.use_style()
    specs = (  # key, title, colormap, range, decimals
        ("S", "S: share of decrease in gen. window", "viridis", (0, 1), 2),
        ("M", "M: share before memorisation ends", "viridis", (0, 1), 2),
        ("lag", "lag of steepest descent (decades)", "RdBu_r", (-1.5, 1.5), 1),
    )
    H0, qs, ts = heat(rows, "S", tasks=tasks)
    if not qs:  # no seed of any task generalised (e.g. the smoke profile): say so on the canvas
        fig, ax = plt.subplots(figsize=(5, 1.5))
        ax.text(0.5, 0.5, "no task-seed with a generalisation window", ha="center", va="center")
        ax.set_axis_off()
        return fig
    # ~0.5 in per task column keeps two-decimal labels at fontsize 6 apart
    fig, axes = plt.subplots(
        1, 3, figsize=(3 * (0.5 * len(ts) + 1.3) + 1.5, 0.32 * len(qs) + 1.8), sharey=True
    )
    labels = [_task_label(t) for t in ts]
    unscored = [j for j in range(len(ts)) if not np.isfinite(H0[:, j]).any()]
    for ax, (key, title, cmap, (lo, hi), dec) in zip(axes, specs):
        H, _, _ = heat(rows, key, quantities=qs, tasks=ts)
        im = ax.imshow(H, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
        for i in range(H.shape[0]):
            for j in range(H.shape[1]):
                if np.isfinite(H[i, j]):
                    dark = (H[i, j] - lo) / (hi - lo) < 0.45 if cmap == "viridis" else abs(H[i, j]) > 1.0
                    label = f"{H[i, j]:.{dec}f}".replace(f"-{0:.{dec}f}", f"{0:.{dec}f}")  # no "-0.0"
                    ax.text(j, i, label, ha="center", va="center", fontsize=6,
                            color="white" if dark else "black")  # fmt: skip
        for j in unscored:  # a task whose seeds have no generalisation window: nothing to score
            ax.axvspan(j - 0.5, j + 0.5, facecolor="0.92", hatch="///", edgecolor="0.75", lw=0)
            ax.text(j, (len(qs) - 1) / 2, "no gen. window", rotation=90, ha="center", va="center",
                    fontsize=7, color="0.35")  # fmt: skip
        ax.set_xticks(range(len(ts)), labels, rotation=45, ha="right")
        ax.set_yticks(range(len(qs)), [QUANTITIES[q][1] for q in qs])
        ax.set_title(title)
        ax.grid(False)
        fig.colorbar(im, ax=ax, shrink=0.6, pad=0.02)
    fig.tight_layout()
    return fig


def _task_label(task: str) -> str:
    return task.replace("x^2+y^2", "x²+y²")


def curve_panels(runs: dict, quantities=("kappa", "hess_trace", "hess_top", "weight_norm", "ncc", "rep")):
    """One column per task: accuracies (top) and each quantity normalised to its own maximum
    (bottom, log scale where it is positive), mean and min-max band over seeds."""
    plotting.use_style()
    tasks = list(runs)
    fig, axes = plt.subplots(2, len(tasks), figsize=(3.0 * len(tasks), 5.2), sharex="col", squeeze=False)
    cmap = plt.get_cmap("tab10")
    for j, task in enumerate(tasks):
        m = runs[task].metrics
        top, bot = axes[0, j], axes[1, j]
        for split, color in (("train", plotting.COLORS["train"]), ("val", plotting.COLORS["val"])):
            steps, vals = m.series("acc", split)
            mu, lo, hi = analysis.mean_band(vals)
            top.plot(steps, mu, color=color, label=f"{split} acc")
            top.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        top.set_title(_task_label(task))
        top.set_xscale("log")
        positive = True
        for k, q in enumerate(quantities):
            split = QUANTITIES[q][0]
            if (split, q) not in set(m.names):
                continue
            steps, vals = m.series(q, split)
            scale = np.nanmax(np.abs(vals), axis=1, keepdims=True)
            vals = vals / np.where(scale > 0, scale, 1.0)
            positive &= bool(np.all(vals > 0))
            mu, lo, hi = analysis.mean_band(vals)
            bot.plot(steps, mu, color=cmap(k), label=QUANTITIES[q][1])
            bot.fill_between(steps, lo, hi, color=cmap(k), alpha=0.15, lw=0)
        bot.set_yscale("symlog", linthresh=1e-3) if not positive else bot.set_yscale("log")
        bot.set_xscale("log")
        bot.set_xlabel("step")
        if j == 0:
            top.set_ylabel("accuracy")
            bot.set_ylabel("quantity / its max")
    axes[0, 0].legend(loc="upper left")
    axes[1, -1].legend(loc="lower left", fontsize=6)
    fig.tight_layout()
    return fig
