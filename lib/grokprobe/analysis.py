"""Onsets, lead/lag and seed aggregation over logged curves (numpy only).

All inputs are (steps, values) arrays of one seed, logged on the log-spaced schedule; the C1
statistic is the one of SPEC §10: per seed, which share of a metric's total log-decrease happens
inside the generalisation window, and which share before memorisation ends.
"""

from __future__ import annotations

import numpy as np


def first_step(steps, values, threshold, *, after=None):
    """First logged step with value >= threshold (at or after `after`), or None."""
    steps, values = np.asarray(steps), np.asarray(values)
    ok = values >= threshold
    if after is not None:
        ok &= steps >= after
    return int(steps[ok.argmax()]) if ok.any() else None


def first_below(steps, values, threshold, *, after=None):
    return first_step(steps, -np.asarray(values), -threshold, after=after)


def running_median(values, width=5):
    """Centred running median; the window shrinks at the ends instead of padding."""
    v = np.asarray(values, dtype=float)
    h = width // 2
    return np.array([np.median(v[max(0, i - h) : i + h + 1]) for i in range(len(v))])


def mean_band(values, axis=0):
    """Mean and (min, max) band across seeds: with 3 seeds a std band would mislead."""
    v = np.asarray(values, dtype=float)
    return v.mean(axis), v.min(axis), v.max(axis)


def generalization_window(steps, train_acc, val_acc, *, mem_threshold=0.99):
    """t_mem, and the steps where val acc covers 10%, 50% and 90% of its rise after t_mem."""
    steps = np.asarray(steps)
    t_mem = first_step(steps, train_acc, mem_threshold)
    if t_mem is None:
        return None
    v0 = float(np.asarray(val_acc)[steps == t_mem][0])
    v1 = float(np.asarray(val_acc)[-1])
    rise = v1 - v0
    out = {"t_mem": t_mem, "v0": v0, "v1": v1}
    for q in (10, 50, 90):
        out[f"t_g{q}"] = first_step(steps, val_acc, v0 + q / 100 * rise, after=t_mem) if rise > 0 else None
    return out


def descent_shares(steps, values, window, *, width=5):
    """Share of the smoothed log-metric's total decrease (max -> final value) inside the
    generalisation window (S) and before memorisation ends (M), plus its half-decrease step."""
    return level_shares(
        steps, np.log(np.maximum(np.asarray(values, dtype=float), 1e-300)), window, width=width
    )


def level_shares(steps, level, window, *, width=5):
    """descent_shares on a level already on its comparison scale (log, or linear for quantities
    that can be negative): smoothed, then measured from its maximum to its final value."""
    steps = np.asarray(steps)
    L = running_median(level, width)
    i_max = int(L.argmax())
    total = L[i_max] - L[-1]
    if total <= 0:
        return {"S": 0.0, "M": 0.0, "t_peak": int(steps[i_max]), "t_half": None, "decrease": float(total)}

    def level_at(t):  # smoothed level at step t, clamped to the descent segment [t_max, end]
        i = int(np.searchsorted(steps, t, side="right")) - 1
        return L[max(i, i_max)]

    def share(a, b):
        return float(np.clip((level_at(a) - level_at(b)) / total, 0.0, 1.0))

    t_half = first_below(steps[i_max:], L[i_max:], L[i_max] - total / 2)
    return {
        "S": share(window["t_g10"], window["t_g90"]),
        "M": share(steps[0], window["t_mem"]),
        "t_peak": int(steps[i_max]),
        "t_half": t_half,
        "decrease": float(total),
    }


def log_lag(t, t_ref):
    """Lag in decades of steps (negative: t comes before t_ref)."""
    if t is None or t_ref is None or t <= 0 or t_ref <= 0:
        return None
    return float(np.log10(t) - np.log10(t_ref))


def onset_table(metrics, seed) -> dict:
    """The per-seed milestones printed under Fig 1."""
    steps, tr = metrics.series("acc", "train", seed)
    _, va = metrics.series("acc", "val", seed)
    _, kap = metrics.series("kappa", "train", seed)
    _, ncc = metrics.series("ncc", "train", seed)
    i_peak = int(kap.argmax())
    return {
        "seed": seed,
        "train_acc>=99%": first_step(steps, tr, 0.99),
        "val_acc>=50%": first_step(steps, va, 0.50),
        "val_acc>=95%": first_step(steps, va, 0.95),
        "kappa_peak_step": int(steps[i_peak]),
        "kappa_peak": float(kap[i_peak]),
        "kappa<half_peak": first_below(steps, kap, kap[i_peak] / 2, after=steps[i_peak]),
        "ncc<half_start": first_below(steps, ncc, ncc[0] / 2),
        "final_val_acc": float(va[-1]),
    }


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    cols = list(rows[0])

    def fmt(v):
        if v is None:
            return "never"
        if isinstance(v, float):
            return f"{v:.3g}"
        return str(v)

    cells = [[fmt(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)
