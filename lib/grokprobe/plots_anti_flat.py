"""The figures of notebook 02: accuracy (Fig 4 analogue), losses (Fig 8), flatness (Fig 9) and the
lambda and cap sweeps (Figs 11, 12). Every curve is the mean over seeds with a min-max band; a seed
whose run diverged ends early and its last logged point is marked with an x."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .anti_flat import LABELS, UNIT
from .plotting import draw_outcomes, use_style

STYLE = {
    "baseline": dict(color="#2c3e50", ls="-"),
    "reg": dict(color="#c0392b", ls="-"),
    "unplug": dict(color="#2980b9", ls="-"),
    "bump_only": dict(color="#7f8c8d", ls="--"),
    "reg_bump": dict(color="#e67e22", ls="--"),
}


def _unplug_line(ax, unplug_at):
    ax.axvline(unplug_at, color="k", lw=0.8, ls=":", zorder=0)


def _finish(fig, axes, unit, title):
    for ax in axes:
        ax.set_xlabel(unit)
    axes[0].legend(loc="best", framealpha=0.9)
    fig.suptitle(title, y=1.02)
    fig.tight_layout()
    return fig


def accuracy(outcomes, *, unplug_at: int, task: str):
    """Fig 4 analogue: train and validation accuracy per condition, the unplug point dotted and the
    C3 target (90% of the baseline's final validation accuracy) dashed."""
    use_style()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, split in zip(axes, ("train", "val")):
        for cond, by_seed in outcomes.items():
            draw_outcomes(ax, by_seed, "acc", split, label=LABELS[cond], scale=100, **STYLE[cond])
        _unplug_line(ax, unplug_at)
        ax.set_title(f"{split} accuracy (%)")
    base = outcomes.get("baseline", {})
    finals = [o.final("acc", "val") for o in base.values() if o.final("acc", "val") is not None]
    if finals:
        axes[1].axhline(90 * np.mean(finals), color="k", lw=0.8, ls="--", label="90% of baseline final")
        axes[1].legend(loc="lower right", framealpha=0.9, handles=axes[1].get_lines()[-1:])
    return _finish(fig, axes, UNIT[task], f"{task}: accuracy, REG vs unplug vs baseline (Fig 4 analogue)")


def losses(outcomes, *, unplug_at: int, task: str):
    """Fig 8 analogue: the training objective as optimised (CE - lam R, averaged over the epoch's
    batches; image tasks), cross-entropy on the full training set, and validation cross-entropy."""
    use_style()
    panels = [("loss", "train", "train cross-entropy (log)"), ("loss", "val", "val cross-entropy (log)")]
    if any(len(o.series("batch_loss")[0]) for by in outcomes.values() for o in by.values()):
        panels.insert(0, ("batch_loss", "train", "training objective CE - λR (symlog)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (metric, split, title) in zip(axes, panels):
        for cond, by_seed in outcomes.items():
            draw_outcomes(ax, by_seed, metric, split, label=LABELS[cond], **STYLE[cond])
        _unplug_line(ax, unplug_at)
        ax.set_yscale("symlog" if metric == "batch_loss" else "log")
        ax.set_title(title)
    return _finish(fig, axes, UNIT[task], f"{task}: losses (Fig 8 analogue)")


def flatness(outcomes, *, unplug_at: int, task: str, cap: float | None = None, n_classes: int = 10):
    """Fig 9 analogue: canonical kappa (tau 1, raw phi; SPEC D14), the regulariser's R (tau 2,
    normalised phi: what the paper plots during REG) with its ceiling cap^2 (1 - 1/C), and ||W||_F."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = (
        ("kappa", "κ canonical (τ = 1, raw φ; log)"),
        ("penalty_R", "R (τ = 2, φ/‖φ‖): the paper's RF under REG (log)"),
        ("w_norm", "‖W‖_F of the final layer"),
    )
    for ax, (metric, title) in zip(axes, panels):
        for cond, by_seed in outcomes.items():
            draw_outcomes(ax, by_seed, metric, "train", label=LABELS[cond], floor=1e-6, **STYLE[cond])
        _unplug_line(ax, unplug_at)
        ax.set_title(title)
        if metric != "w_norm":
            ax.set_yscale("log")
    if cap:
        axes[1].axhline(cap**2 * (1 - 1 / n_classes), color="k", lw=0.8, ls="--")
        axes[1].annotate("cap²(1 − 1/C)", (0.02, 0.93), xycoords="axes fraction", fontsize=8)
        axes[2].axhline(cap, color="k", lw=0.8, ls="--")
    return _finish(fig, axes, UNIT[task], f"{task}: relative flatness (Fig 9 analogue)")


def sweep(points, *, kind: str, unplug_at: int, task: str, chosen: float | None = None):
    """Figs 11/12 analogue: validation accuracy, R and kappa over time for every swept value (REG for
    the whole run), and the final validation accuracy against the value. Diverged runs end with an x
    and sit on the bottom of the last panel as red x; other failed runs are named by their status."""
    use_style()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6), gridspec_kw={"width_ratios": [1, 1, 1, 0.8]})
    name = {"lam": "λ", "cap": "cap B_F"}[kind]
    n = max(1, len(points) - 1)
    for i, (v, o) in enumerate(points):
        color = plt.cm.plasma(0.85 * i / n)  # stops before plasma's pale yellow end
        label = f"{name} = {v:g}" + (" (no cap)" if kind == "cap" and v == 0 else "")
        label += "" if o.status == "ok" else f" [{o.status}]"
        for ax, metric, split, scale in (
            (axes[0], "acc", "val", 100),
            (axes[1], "penalty_R", "train", 1),
            (axes[2], "kappa", "train", 1),
        ):
            draw_outcomes(ax, {o.seed: o}, metric, split, label=label, color=color, scale=scale, floor=1e-6)
    axes[0].set_title("val accuracy (%)")
    for ax, title in ((axes[1], "R (τ = 2, φ/‖φ‖; log)"), (axes[2], "κ canonical (log)")):
        ax.set_yscale("log")
        ax.set_title(title)
    for ax in axes[:3]:
        ax.set_xlabel(UNIT[task])
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(points), 5))
    ax = axes[3]  # one slot per value, in sweep order: 0 (baseline / no cap) has no log position
    zero = "baseline" if kind == "lam" else "no cap"
    for x, (_, o) in enumerate(points):
        if o.diverged:
            ax.plot(x, 0, "x", color="#c0392b", ms=9, mew=2)
            ax.annotate(f"diverged\n@{o.diverged_at}", (x, 4), ha="center", fontsize=7, color="#c0392b")
            continue
        acc = 100 * o.final("acc", "val")
        ax.plot(x, acc, "o", color="#c0392b" if o.status != "ok" else "#2c3e50")
        if o.status != "ok":
            ax.annotate(o.status, (x, acc + 4), ha="center", fontsize=7, color="#c0392b")
    ax.set_xticks(range(len(points)), [f"0\n({zero})" if v == 0 else f"{v:g}" for v, _ in points])
    values = [v for v, _ in points]
    if chosen is not None and chosen in values:
        ax.axvline(values.index(chosen), color="#2980b9", lw=0.8, ls="--")  # the profile's value
    ax.set_xlim(-0.5, len(points) - 0.5)
    if any(o.status != "ok" for _, o in points):  # room for the diverged / collapsed markers at 0
        ax.set_ylim(-5, 105)
    ax.set_xlabel(name)
    ax.set_title(f"final val accuracy (%) vs {name}\n(dashed: the value the profile uses)")
    fig.suptitle(
        f"{task}: {name} sweep, REG for the whole run (Fig {11 if kind == 'lam' else 12} analogue)", y=1.02
    )
    fig.tight_layout()
    return fig
