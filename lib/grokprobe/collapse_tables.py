"""Final values, tables, the choice of lam and claim C2 of the collapse control (notebook 03).

Kept apart from collapse.py, which trains and loads the runs (and defines `final`, which its lambda
sweep needs too): everything here only reads finished Outcomes and sweep rows, so it is tested on
synthetic metrics without training. It imports collapse, never the other way round.
"""

from __future__ import annotations

import math

from .collapse import DIRECTIONS, LAMBDAS, TAIL, TUNED_BY_SWEEP, directions, final

FACTOR = 2.0  # NCC must move at least this much (either way) to count as moved
# Points of final train accuracy a regularised run may lose against the baseline and still count
# as trained: beyond that the penalty broke the optimisation, which says nothing about generalization.
MAX_TRAIN_DROP = 5.0

# ----------------------------------------------------------------------------- final values, tables


def _rectangular(rows: list[dict]) -> list[dict]:
    """Every row with every key (None where unknown), so tables of mixed rows print."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def summary_rows(outcomes: dict, *, tail=TAIL) -> list[dict]:
    """One row per condition: final val/train accuracy (%), NCC, kappa, over the finished seeds."""
    base = outcomes.get("baseline")
    base_ncc = final(base.metrics, "ncc", tail=tail).mean() if base and base.metrics else math.nan
    rows = []
    for cond, o in outcomes.items():
        row = {"condition": cond, "lam": o.lam, "seeds": len(o.seeds), "diverged": len(o.diverged)}
        if o.metrics is not None:
            va, tr = 100 * final(o.metrics, "acc", "val", tail=tail), 100 * final(o.metrics, "acc", tail=tail)
            ncc = final(o.metrics, "ncc", tail=tail)
            row.update(
                {
                    "val_acc": va.mean(),
                    "val_acc_min": va.min(),
                    "val_acc_max": va.max(),
                    "train_acc": tr.mean(),
                    "ncc": ncc.mean(),
                    "ncc_min": ncc.min(),
                    "ncc_max": ncc.max(),
                    "ncc/baseline": ncc.mean() / base_ncc,
                    "kappa": final(o.metrics, "kappa", tail=tail).mean(),
                }
            )
            if "angle_dev" in {m for _, m in o.metrics.names}:  # mean |angle - ETF angle|, degrees
                row["angle_dev"] = final(o.metrics, "angle_dev", tail=tail).mean()
        rows.append(row)
    return _rectangular(rows)


def per_seed_rows(outcomes: dict, *, tail=TAIL) -> list[dict]:
    rows = []
    for cond, o in outcomes.items():
        for s in o.seeds:
            rows.append(
                {
                    "condition": cond,
                    "seed": s,
                    "val_acc": 100 * final(o.metrics, "acc", "val", s, tail=tail),
                    "train_acc": 100 * final(o.metrics, "acc", "train", s, tail=tail),
                    "ncc": final(o.metrics, "ncc", "train", s, tail=tail),
                    "diverged_at": None,
                }
            )
        rows += [{"condition": cond, "seed": s, "diverged_at": at} for s, at in o.diverged.items()]
    return _rectangular(rows)


# ----------------------------------------------------------------------------- lambda choice


def _moved(ratio, direction, factor=FACTOR) -> bool:
    return ratio >= factor if direction == "prevent" else ratio <= 1 / factor


def choose_lambda(rows, *, direction, factor=FACTOR, max_train_drop=MAX_TRAIN_DROP) -> dict:
    """The smallest lam on the sweep grid whose run is stable and moves NCC >= `factor` in the
    intended direction. Stable = no non-finite loss and a final train accuracy at most
    `max_train_drop` points below the baseline's. Validation accuracy is deliberately not used:
    it is what claim C2 tests. Returns {'lam': float | None, 'why': str}."""
    pts = sorted((r for r in rows if r["direction"] == direction), key=lambda r: r["lam"])
    if not pts:
        return {"lam": None, "why": f"no sweep points for {direction}"}
    base_tr = pts[0]["base_train_acc"]
    sense = "up" if direction == "prevent" else "down"
    stable = [r for r in pts if r["status"] == "ok" and r["train_acc"] >= base_tr - max_train_drop]
    for i, r in enumerate(pts):
        if r in stable and _moved(r["ncc_ratio"], direction, factor):
            why = (
                f"smallest lam on the grid that moves NCC {sense} by >= {factor:g}x (x{r['ncc_ratio']:.2f}) "
                f"with stable training (finite loss, train acc {r['train_acc']:.1f}% vs {base_tr:.1f}%)"
            )
            larger = pts[i + 1] if i + 1 < len(pts) else None
            if larger is not None and larger["status"] == "diverged":
                why += f"; the next lam, {larger['lam']:g}, diverged at {larger['diverged_at']}"
            return {"lam": r["lam"], "why": why}
    best = max(stable, key=lambda r: abs(math.log(r["ncc_ratio"])), default=None)
    why = f"no lam on the grid moves NCC {sense} by >= {factor:g}x with stable training"
    if best is not None:
        why += f"; the largest stable move is x{best['ncc_ratio']:.2f} at lam={best['lam']:g}"
    return {"lam": None, "why": why}


def chosen_lams(*, task, sweep_rows=None, lam=None, direction="both") -> dict:
    """{direction: {'lam', 'why'}}: `lam` if given; else, on a stand-in task, the sweep's pick;
    else the table (LAMBDAS: the paper's 1e-3 on CIFAR)."""
    out = {}
    for d in directions(direction):
        if lam is not None:
            out[d] = {"lam": lam, "why": "set by the lam parameter"}
            continue
        pick = choose_lambda(sweep_rows, direction=d) if sweep_rows else {"lam": None, "why": "no sweep ran"}
        if task in TUNED_BY_SWEEP and pick["lam"] is not None:
            out[d] = pick
        else:
            src = "the paper's lam" if task not in TUNED_BY_SWEEP else "the tuned default (LAMBDAS)"
            out[d] = {"lam": LAMBDAS[task][d], "why": f"{src}; sweep: {pick['why']}"}
    return out


# ----------------------------------------------------------------------------- claim C2


def c2_collapse_not_necessary(
    outcomes: dict, *, profile: str, task: str = "digits", tail=TAIL, acc_tol=None
) -> dict:
    """C2 (SPEC §1.2, §1.7, D1): with prevent and with encourage, the final validation accuracy
    (mean over seeds) is within `acc_tol` points of the baseline's (2; 3 under smoke/quick), while
    the final NCC differs from the baseline's by >= 2x in the intended direction.

    Per direction: 'holds'; 'accuracy changed' (NCC moved and accuracy did not stay: a finding,
    the claim is not reproduced); inconclusive: 'NCC did not move', 'diverged' (a non-finite loss)
    or 'training failed' (a seed ends more than MAX_TRAIN_DROP points of train accuracy below the
    baseline: the penalty broke the optimisation, so its validation accuracy tests nothing)."""
    tol = acc_tol if acc_tol is not None else (2.0 if profile == "paper" else 3.0)
    base = outcomes["baseline"]
    if base.metrics is None:
        raise ValueError("the baseline has no finished run")
    b_acc = 100 * final(base.metrics, "acc", "val", tail=tail).mean()
    b_ncc = final(base.metrics, "ncc", tail=tail).mean()
    b_kappa = final(base.metrics, "kappa", tail=tail).mean()
    b_train = 100 * final(base.metrics, "acc", "train", tail=tail).mean()
    per_direction = []
    for d in (d for d in DIRECTIONS if d in outcomes):
        o = outcomes[d]
        row = {"direction": d, "lam": o.lam, "seeds": len(o.seeds), "diverged": sorted(o.diverged)}
        if o.metrics is not None:
            acc = 100 * final(o.metrics, "acc", "val", tail=tail).mean()
            row.update(val_acc=acc, delta_acc=acc - b_acc, ncc=final(o.metrics, "ncc", tail=tail).mean())
            row["ncc_ratio"] = row["ncc"] / b_ncc
            # not part of the criterion: the paper also reports kappa unchanged under prevent
            row["kappa_ratio"] = final(o.metrics, "kappa", tail=tail).mean() / b_kappa
            train_acc = 100 * final(o.metrics, "acc", "train", tail=tail)
            row["unfit_seeds"] = [s for s, t in zip(o.seeds, train_acc) if t < b_train - MAX_TRAIN_DROP]
        if o.diverged:
            row["outcome"] = "diverged"
        elif row["unfit_seeds"]:
            row["outcome"] = "training failed"
        elif not _moved(row["ncc_ratio"], d):
            row["outcome"] = "NCC did not move"
        else:
            row["outcome"] = "holds" if abs(row["delta_acc"]) <= tol else "accuracy changed"
        per_direction.append(row)
    outs = {r["outcome"] for r in per_direction}
    if outs == {"holds"}:
        verdict = "reproduced"
    elif "accuracy changed" in outs:
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    summary = "; ".join(
        f"{r['direction']} (lam {r['lam']:g}): "
        + (
            f"{r['outcome']}, val acc {r['delta_acc']:+.2f} pts, NCC x{r['ncc_ratio']:.2f}"
            if "ncc_ratio" in r
            else f"{r['outcome']}"
        )
        for r in per_direction
    )
    return {
        "claim": "C2" if task == "digits" else f"C2/{task}",
        "statement": "preventing or encouraging neural collapse leaves generalization unchanged",
        "criterion": f"mean over seeds: |val acc - baseline| <= {tol:g} points while final NCC moves >= "
        f"{FACTOR:g}x (up: prevent, down: encourage); final = mean over the last {tail:.0%} of training",
        "verdict": verdict,
        "task": task,
        "baseline": {
            "val_acc": b_acc,
            "train_acc": b_train,
            "ncc": b_ncc,
            "kappa": b_kappa,
            "seeds": len(base.seeds),
        },
        "summary": summary,
        "per_direction": _rectangular(per_direction),
        "per_seed": per_seed_rows(outcomes, tail=tail),
    }
