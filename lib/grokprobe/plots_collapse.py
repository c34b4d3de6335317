"""Figures of notebook 03 (collapse control): Figs 2, 3, 5 and 6 of the paper, for any task.

Every panel draws the seed mean with a min-max band, one colour per condition. Classifier runs are
drawn against epochs (linear axis), grokking runs against steps (log axis, step 0 at 1).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import FuncFormatter

from . import metrics as M
from .analysis import mean_band
from .collapse import final
from .collapse_tables import FACTOR
from .plotting import use_style

COND_COLORS = {"baseline": "#2c3e50", "prevent": "#d35400", "encourage": "#2980b9"}
LABELS = {
    "baseline": "baseline (CE)",
    "prevent": "prevent (CE − λ·NCC)",
    "encourage": "encourage (CE + λ·NCC)",
}


def _label(o) -> str:
    lab = LABELS[o.condition] + (f", λ={o.lam:g}" if o.condition != "baseline" else "")
    if o.diverged:
        lab += f" [{len(o.diverged)} seed(s) diverged]"
    return lab


def _axis(ax, logx: bool) -> None:
    ax.set_xlabel("training step" if logx else "epoch")
    if logx:
        ax.set_xscale("log")


def _band(ax, metrics, name, split, *, color, label, logx, scale=1.0, ls="-"):
    try:
        steps, v = metrics.series(name, split)
    except KeyError:
        return False
    m, lo, hi = mean_band(scale * v)
    x = np.maximum(steps, 1) if logx else steps
    ax.plot(x, m, color=color, label=label, ls=ls)
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, linewidth=0)
    return True


def _finished(outcomes):
    return [o for o in outcomes.values() if o.metrics is not None]


def accuracy_flatness_ncc(outcomes, *, logx=False, title=""):
    """Fig 2: (a) train (dashed) and validation (solid) accuracy, (b) validation accuracy over the
    second half of training, zoomed (the claim is about points, invisible on a 0-100 axis),
    (c) relative flatness kappa, (d) NCC of the training set, per condition."""
    use_style()
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for o in _finished(outcomes):
        c = COND_COLORS[o.condition]
        _band(axes[0], o.metrics, "acc", "val", color=c, label=_label(o), logx=logx, scale=100)
        _band(axes[0], o.metrics, "acc", "train", color=c, label=None, logx=logx, scale=100, ls="--")
        _band(axes[1], o.metrics, "acc", "val", color=c, label=_label(o), logx=logx, scale=100)
        _band(axes[2], o.metrics, "kappa", "train", color=c, label=_label(o), logx=logx)
        _band(axes[3], o.metrics, "ncc", "train", color=c, label=_label(o), logx=logx)
    axes[0].set(ylabel="accuracy (%)", title="(a) accuracy: validation (solid), train (dashed)")
    axes[1].set(ylabel="validation accuracy (%)", title="(b) validation accuracy, second half of training")
    axes[2].set(ylabel="κ (τ = 1, raw φ)", yscale="log", title="(c) relative flatness κ (train)")
    axes[3].set(ylabel="NCC", yscale="log", title="(d) neural-collapse clustering NCC (train)")
    for i, ax in enumerate(axes):
        _axis(ax, logx and i != 1)  # the zoom is linear: on a log axis its range has no labels
    axes[1].set_xlabel("training step" if logx else "epoch")
    finished = _finished(outcomes)
    if finished:  # zoom on the second half of training (in steps, also on a log axis)
        steps = finished[0].metrics.series("acc", "val")[0]
        late = steps >= steps[-1] / 2
        lo = min(100 * o.metrics.series("acc", "val")[1][:, late].min() for o in finished)
        axes[1].set_xlim(steps[late][0], steps[-1])
        axes[1].set_ylim(max(lo - 1, 0), 100.5)
    axes[0].legend(loc="lower right")
    fig.suptitle(title or "Preventing or encouraging collapse moves NCC; does it move accuracy?", y=1.02)
    fig.tight_layout()
    return fig


GEOMETRY = (
    ("mean_distance", "mean ‖μ_c − μ_c'‖", True),
    ("mean_variance", "mean V_c + V_c'", True),
    ("nc1", "NC1 = tr(Σ_W Σ_B⁺)/C", True),
    ("nc2", "NC2 (distance from a simplex ETF)", True),
    ("nc3", "NC3 (self-duality)", True),
    ("nc4", "NC4 (disagreement with nearest centre)", False),
)


def geometry(outcomes, *, logx=False):
    """NCC's two parts (class-mean distance, within-class variance) and NC1-NC4, per condition."""
    use_style()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.2))
    for ax, (name, label, logy) in zip(axes.flat, GEOMETRY):
        for o in _finished(outcomes):
            _band(ax, o.metrics, name, "train", color=COND_COLORS[o.condition], label=_label(o), logx=logx)
        ax.set(title=label)
        if logy:
            ax.set_yscale("log")
        _axis(ax, logx)
    axes[0, 0].legend()
    fig.suptitle("What moves NCC: class-mean distances, within-class variances, NC1–NC4 (train)", y=1.01)
    fig.tight_layout()
    return fig


QUANTS = ("angle_min", "angle_q25", "angle_median", "angle_q75", "angle_max")


def angles(outcomes, *, num_classes, logx=False):
    """Fig 3: pairwise angles between centred class means against the simplex-ETF angle
    arccos(-1/(C-1)). Left: median (line), interquartile band and min/max (thin) over training,
    seed means. Right: the final distribution per condition (seed means of each quantile)."""
    use_style()
    etf = M.simplex_etf_angle(num_classes)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.8, 1]})
    stats, names = [], []
    for o in _finished(outcomes):
        try:
            steps = o.metrics.series("angle_median")[0]
            q = {k: o.metrics.series(k)[1].mean(0) for k in QUANTS}
        except KeyError:  # a run stored before the angle quantiles were logged
            ax.text(
                0.02,
                0.95 - 0.07 * len(ax.texts),
                f"{o.condition}: no angle quantiles stored (rerun with recompute)",
                transform=ax.transAxes,
                va="top",
                fontsize=7,
            )
            continue
        c, x = COND_COLORS[o.condition], (np.maximum(steps, 1) if logx else steps)
        ax.plot(x, q["angle_median"], color=c, label=_label(o))
        ax.fill_between(x, q["angle_q25"], q["angle_q75"], color=c, alpha=0.2, linewidth=0)
        ax.plot(x, q["angle_min"], color=c, lw=0.6, alpha=0.7)
        ax.plot(x, q["angle_max"], color=c, lw=0.6, alpha=0.7)
        f = {k: float(np.mean(final(o.metrics, k))) for k in QUANTS}
        stats.append(
            {
                "med": f["angle_median"],
                "q1": f["angle_q25"],
                "q3": f["angle_q75"],
                "whislo": f["angle_min"],
                "whishi": f["angle_max"],
            }
        )
        names.append(o.condition)
    for a in (ax, bx):
        a.axhline(
            etf, color="k", ls="--", lw=1, label=f"simplex ETF: arccos(−1/{num_classes - 1}) = {etf:.2f}°"
        )
    ax.set(ylabel="angle between centred class means (°)", title="median, interquartile band, min/max")
    _axis(ax, logx)
    ax.legend(loc="lower right")
    if stats:
        boxes = bx.bxp(stats, showfliers=False, patch_artist=True, widths=0.5, medianprops={"color": "k"})
        for patch, n in zip(boxes["boxes"], names):
            patch.set(facecolor=COND_COLORS[n], alpha=0.35)
        bx.set_xticks(range(1, len(names) + 1), names)
    bx.set(ylabel="angle (°)", title="final distribution (whiskers: min/max; dashed: ETF)")
    fig.suptitle("Pairwise class-mean angles against the simplex-ETF angle", y=1.02)
    fig.tight_layout()
    return fig


def losses(outcomes, *, logx=False):
    """Fig 5: train and validation cross-entropy of the frozen model, and the training objective as
    the authors log it (epoch mean of CE ∓ λ·NCC_batch over the training batches)."""
    use_style()
    has_batch = any("batch_loss" in {m for _, m in o.metrics.names} for o in _finished(outcomes))
    fig, axes = plt.subplots(1, 3 if has_batch else 2, figsize=(13 if has_batch else 9, 3.6))
    panels = [("loss", "train", "train cross-entropy"), ("loss", "val", "validation cross-entropy")]
    if has_batch:
        panels.append(("batch_loss", "train", "training objective CE ∓ λ·NCC (batch mean)"))
    for ax, (name, split, title) in zip(axes, panels):
        for o in _finished(outcomes):
            _band(ax, o.metrics, name, split, color=COND_COLORS[o.condition], label=_label(o), logx=logx)
        ax.set(title=title)
        if name == "loss":
            ax.set_yscale("log")
        _axis(ax, logx)
    axes[0].legend()
    fig.tight_layout()
    return fig


def lambda_sweep(rows, *, baseline=None, chosen=None, logx=False):
    """Fig 6: one row per direction. (a) final accuracy against lam with the baseline's as lines,
    (b) final NCC relative to the baseline (the 2x thresholds dotted), (c) NCC curves per lam.
    Diverged runs are drawn as red crosses at the epoch (or lam) where the loss became non-finite."""
    use_style()
    dirs = [d for d in ("prevent", "encourage") if any(r["direction"] == d for r in rows)]
    fig, axes = plt.subplots(len(dirs), 3, figsize=(13, 3.5 * len(dirs)), squeeze=False)
    for (ax, bx, cx), d in zip(axes, dirs):
        pts = sorted((r for r in rows if r["direction"] == d), key=lambda r: r["lam"])
        ok = [r for r in pts if r["status"] == "ok"]
        bad = [r for r in pts if r["status"] != "ok"]
        lam_ok = [r["lam"] for r in ok]
        ax.plot(lam_ok, [r["val_acc"] for r in ok], "o-", color=COND_COLORS[d], label="validation")
        ax.plot(lam_ok, [r["train_acc"] for r in ok], "s--", color=COND_COLORS[d], mfc="none", label="train")
        ax.axhline(pts[0]["base_val_acc"], color=COND_COLORS["baseline"], lw=1, label="baseline validation")
        bx.plot(
            lam_ok, [r["ncc_ratio"] for r in ok], "o-", color=COND_COLORS[d], label="final NCC / baseline"
        )
        bx.axhline(1, color=COND_COLORS["baseline"], lw=1)
        bx.axhline(FACTOR if d == "prevent" else 1 / FACTOR, color="k", ls=":", lw=1, label=f"{FACTOR:g}x")
        for a in (ax, bx):
            if bad:
                y = a.get_ylim()[0]
                a.plot(
                    [r["lam"] for r in bad],
                    [y] * len(bad),
                    "x",
                    color="red",
                    ms=9,
                    mew=2,
                    label="diverged",
                    clip_on=False,
                )
            if chosen and chosen.get(d, {}).get("lam") is not None:
                a.axvline(
                    chosen[d]["lam"], color="0.5", ls="--", lw=1, label=f"chosen λ = {chosen[d]['lam']:g}"
                )
            a.set(xscale="log", xlabel="λ")
        ax.set(ylabel="final accuracy (%)", title=f"{d}: accuracy against λ")
        bx.set(yscale="log", ylabel="final NCC / baseline", title=f"{d}: NCC against λ")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 2 rather than 5x10^-1, 2x10^0
        bx.yaxis.set_major_formatter(plain)
        bx.yaxis.set_minor_formatter(plain)
        ax.legend(fontsize=7)
        bx.legend(fontsize=7)
        cmap = plt.cm.viridis
        for i, r in enumerate(pts):
            color = cmap(i / max(1, len(pts) - 1))
            m = r["outcome"].metrics or r["outcome"].partial
            if m is None:
                continue
            steps, v = m.series("ncc", "train", r["seed"])
            x = np.maximum(steps, 1) if logx else steps
            cx.plot(x, v, color=color, ls="-" if r["status"] == "ok" else "--", label=f"λ={r['lam']:g}")
            if r["status"] != "ok":
                cx.plot(x[-1], v[-1], "x", color="red", ms=8, mew=2)
        seed = pts[0]["seed"]
        if baseline is not None and seed in baseline.seeds:
            steps, v = baseline.metrics.series("ncc", "train", seed)
            cx.plot(np.maximum(steps, 1) if logx else steps, v, color="k", lw=2, label="baseline")
        cx.set(yscale="log", ylabel="NCC (train)", title=f"{d}: NCC during training (× = diverged)")
        _axis(cx, logx)
        cx.legend(fontsize=6, ncol=2)
    seed = rows[0]["seed"] if rows else "?"
    fig.suptitle(f"λ sweep, seed {seed}: final values against λ and NCC curves per λ", y=1.01)
    fig.tight_layout()
    return fig
