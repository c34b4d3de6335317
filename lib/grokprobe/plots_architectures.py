"""The figures of notebook 04, one row per architecture (Figs 13-19 analogues): accuracy, flatness,
and validation accuracy per seed. Curves are the mean over seeds with a min-max band; the unplug
epoch is dotted. A diverged seed ends early with an x."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .anti_flat import LABELS
from .plotting import draw_outcomes, use_style

STYLE = {
    "baseline": dict(color="#2c3e50", ls="-"),
    "reg": dict(color="#c0392b", ls="-"),
    "unplug": dict(color="#2980b9", ls="-"),
}


def accuracy(results: dict):
    """Figs 4b/16/18 analogue: train and validation accuracy of baseline, REG and REG unplugged,
    per architecture; dashed: the C3 target, 90% of the baseline's final validation accuracy.
    results: {arch: (outcomes, unplug_at, c3 result)}."""
    use_style()
    n = len(results)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.7 * n), sharey=True, squeeze=False)
    for (arch, (outcomes, unplug_at, res)), row in zip(results.items(), axes):
        for ax, split in zip(row, ("train", "val")):
            for cond, by_seed in outcomes.items():
                draw_outcomes(ax, by_seed, "acc", split, label=LABELS[cond], scale=100, **STYLE[cond])
            ax.axvline(unplug_at, color="k", lw=0.8, ls=":", zorder=0)
            ax.set_title(f"{arch}: {split} accuracy (%)")
        finals = [o.final("acc", "val") for o in outcomes.get("baseline", {}).values()]
        finals = [f for f in finals if f is not None]
        if finals:
            row[1].axhline(90 * np.mean(finals), color="k", lw=0.8, ls="--")
        row[1].annotate(
            f"C3: {res['verdict']}", (0.98, 0.04), xycoords="axes fraction", ha="right", fontsize=8
        )
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(loc="lower right", framealpha=0.9)
    fig.suptitle(
        "Accuracy per architecture: REG vs REG unplugged vs baseline (Figs 4b, 16, 18 analogues)", y=1.0
    )
    fig.tight_layout()
    return fig


def flatness(results: dict, *, n_classes: int = 10):
    """Figs 14/17/19 analogue: canonical kappa (tau 1, raw phi; SPEC D14) and the regulariser's R
    (tau 2, phi/||phi||) with its ceiling cap^2 (1 - 1/C), per architecture, log scale."""
    use_style()
    n = len(results)
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.7 * n), squeeze=False)
    for (arch, (outcomes, unplug_at, _)), row in zip(results.items(), axes):
        cfg = next(iter(next(iter(outcomes.values())).values())).config
        for ax, metric, title in (
            (row[0], "kappa", "κ canonical (τ = 1, raw φ)"),
            (row[1], "penalty_R", "R (τ = 2, φ/‖φ‖)"),
        ):
            for cond, by_seed in outcomes.items():
                draw_outcomes(ax, by_seed, metric, "train", label=LABELS[cond], floor=1e-6, **STYLE[cond])
            ax.axvline(unplug_at, color="k", lw=0.8, ls=":", zorder=0)
            ax.set_yscale("log")
            ax.set_title(f"{arch}: {title}")
        if cfg.cap:
            row[1].axhline(cfg.cap**2 * (1 - 1 / n_classes), color="k", lw=0.8, ls="--")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(loc="lower left", framealpha=0.9)
    fig.suptitle(
        "Relative flatness per architecture (Figs 14, 17, 19 analogues); dashed: cap²(1 − 1/C)", y=1.0
    )
    fig.tight_layout()
    return fig


def seeds(results: dict):
    """Figs 15/16/18 analogue: validation accuracy of every seed on its own, baseline vs REG vs
    unplugged (the paper shows seeds separately: averaging over them is 'not meaningful', SPEC D16)."""
    use_style()
    n = len(results)
    k = max(len(next(iter(o.values()))) for o, _, _ in results.values())
    fig, axes = plt.subplots(n, k, figsize=(3.4 * k, 2.5 * n), sharey=True, squeeze=False)
    for (arch, (outcomes, unplug_at, _)), row in zip(results.items(), axes):
        for ax, seed in zip(row, sorted(outcomes["baseline"])):
            for cond, by_seed in outcomes.items():
                if seed in by_seed:
                    draw_outcomes(
                        ax, {seed: by_seed[seed]}, "acc", "val", label=LABELS[cond], scale=100, **STYLE[cond]
                    )
            ax.axvline(unplug_at, color="k", lw=0.8, ls=":", zorder=0)
            ax.set_title(f"{arch}, seed {seed}: val acc (%)")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    axes[0, 0].legend(loc="lower right", framealpha=0.9, fontsize=7)
    fig.suptitle("Validation accuracy per seed (Figs 15, 16, 18 analogues)", y=1.0)
    fig.tight_layout()
    return fig
