"""One function per claim of the paper: stored runs in, verdict and numbers out.

Every verdict is recomputed from metrics a real run stored; nothing here is a constant. Results
accumulate in results/claims.json (keyed by claim and profile) and `python -m grokprobe.claims`
prints them as the table run_all.sh shows at the end.
"""

from __future__ import annotations

import json
import sys

from . import analysis, paths, store
from .predictors import c5_which_quantity_predicts  # noqa: F401  C5 (issue 10): notebook 06's grid
from .theory import c4_neural_collapse_leads_to_flatness  # noqa: F401  C4 (SPEC §1.4, §6): from theory.sweep rows

# Claims computed by the experiment modules (imported lazily to keep this module light):
#   C2  collapse_tables.c2_collapse_not_necessary             notebook 03 (id 'C2' for digits, 'C2/<task>' otherwise)
#   C3  anti_flat_tables.c3_anti_flatness_delays_generalization notebooks 02 and 04 (per task / architecture)


def c1_flatness_tracks_generalization(metrics) -> dict:
    """C1 (SPEC §1.1, test of §10): per seed, kappa's log-decrease happens inside the generalisation
    window more than NCC's (S_kappa > S_ncc), and NCC's happens before memorisation ends more than
    kappa's (M_ncc > M_kappa). Holds when both hold in every seed."""
    per_seed, holds = [], True
    for seed in metrics.seeds:
        steps, tr = metrics.series("acc", "train", seed)
        _, va = metrics.series("acc", "val", seed)
        win = analysis.generalization_window(steps, tr, va)
        if win is None or win["t_g10"] is None or win["t_g90"] is None:
            per_seed.append(
                {
                    "seed": seed,
                    "evaluable": False,
                    "why": "no memorisation (train acc < 99%)" if win is None else "val acc did not rise",
                }
            )
            holds = False
            continue
        row = {"seed": seed, "evaluable": True, **win}
        for name in ("kappa", "ncc"):
            _, v = metrics.series(name, "train", seed)
            d = analysis.descent_shares(steps, v, win)
            row.update(
                {
                    f"S_{name}": d["S"],
                    f"M_{name}": d["M"],
                    f"t_half_{name}": d["t_half"],
                    f"lag_{name}": analysis.log_lag(d["t_half"], win["t_g50"]),
                }
            )
        row["holds"] = row["S_kappa"] > row["S_ncc"] and row["M_ncc"] > row["M_kappa"]
        holds &= row["holds"]
        per_seed.append(row)
    return {
        "claim": "C1",
        "statement": "relative flatness drops as validation accuracy rises; NCC drops earlier (memorisation)",
        "criterion": "every seed: S_kappa > S_ncc and M_ncc > M_kappa (SPEC §10)",
        "verdict": "reproduced" if holds else "not reproduced",
        "per_seed": per_seed,
    }


C1_COLUMNS = (
    "seed",
    "t_mem",
    "t_g10",
    "t_g90",
    "S_kappa",
    "S_ncc",
    "M_kappa",
    "M_ncc",
    "lag_kappa",
    "lag_ncc",
    "holds",
)


def per_seed_table(result: dict, columns=C1_COLUMNS) -> str:
    return analysis.format_table([{c: r.get(c) for c in columns} for r in result["per_seed"]])


def record(result: dict, *, profile: str, run_path=None, path=None, overrides=None) -> dict | None:
    """Merge one claim result into results/claims.json (atomically, under the store's lock).

    Only a profile's default run speaks for a claim: in the smoke profile, or with `overrides` (the
    parameters a notebook run set away from the profile, e.g. `-p seed 3` or `-p precision
    bfloat16`), nothing is written and None is returned, so a side run never replaces the verdict."""
    if profile == "smoke" or overrides:
        return None
    path = path or paths.RESULTS / "claims.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with store.locked(path.parent / ".claims"):
        data = json.loads(path.read_text()) if path.exists() else {}
        key = f"{result['claim']}/{profile}"
        data[key] = {**result, "profile": profile, "run": str(run_path) if run_path else None}
        store.write_json(path, data)
    return data[key]


def table(path=None) -> str:
    path = path or paths.RESULTS / "claims.json"
    if not path.exists():
        return "no claims recorded yet (run ./run_all.sh)"
    data = json.loads(path.read_text())
    rows = [
        {"claim": v["claim"], "profile": v["profile"], "verdict": v["verdict"], "statement": v["statement"]}
        for _, v in sorted(data.items())
    ]
    return analysis.format_table(rows)


if __name__ == "__main__":
    print(table())
    sys.exit(0)
