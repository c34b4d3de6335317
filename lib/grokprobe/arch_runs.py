"""The runs of notebook 04: the anti-flatness conditions on other architectures (SPEC §4 E4, E5).

`run_architecture(arch, ...)` is what the notebook calls: baseline, REG (whole run) and REG unplugged
halfway. The digits stand-ins (architectures.DIGITS_ARCHS: mlp, vit, gpt_rows) train through
anti_flat.run_conditions with their own settings (architectures.DIGITS_PARAMS); the paper's models
(vit_tiny_patch16_224, tinybert, distilgpt2) through paper_scale, in profile paper only. `c3` is
anti_flat's claim C3 with its thresholds, named per architecture.
"""

from __future__ import annotations

import numpy as np

from . import anti_flat, anti_flat_tables
from . import config as C
from .paper_scale import ARCHS, PAPER_SETTINGS, resolve, run_conditions

CONDITIONS = ("baseline", "reg", "unplug")


def task_of(arch: str) -> str:
    return PAPER_SETTINGS[arch]["task"] if arch in PAPER_SETTINGS else "digits"


def archs_for(profile: str) -> list[str]:
    """Notebook 04's default architectures: the digits stand-ins, plus the paper's in profile paper."""
    from .architectures import DIGITS_ARCHS

    return list(DIGITS_ARCHS) + (list(ARCHS) if profile == "paper" else [])


def run_architecture(
    arch: str,
    *,
    seeds=None,
    params: dict | None = None,
    profile: str = "quick",
    root=None,
    data_dir=None,
    num_workers: int = 8,
    recompute: bool = False,
    log=print,
):
    """(outcomes {condition: {seed: Outcome}}, unplug_at, the unplug condition's config) for baseline,
    REG and REG unplugged. params: config fields, None = the architecture's setting."""
    from .architectures import digits_params

    params = {k: v for k, v in (params or {}).items() if v is not None}
    if arch in PAPER_SETTINGS:
        seeds = list(seeds or C.PAPER_SEEDS)
        cfg = resolve(arch, "unplug", params={**params, "seeds": seeds}, profile=profile)
        out = run_conditions(
            arch, seeds=seeds, params=params, profile=profile, root=root, data_dir=data_dir,
            num_workers=num_workers, recompute=recompute, log=log,
        )  # fmt: skip
        return out, cfg.unplug_at, cfg
    p = {**digits_params(arch, profile), **params}
    cfg = anti_flat.resolve(
        "digits", "unplug", params={**p, **({"seeds": seeds} if seeds else {})}, profile=profile
    )
    out = anti_flat.run_conditions(
        "digits", seeds=cfg.seeds, params=p, profile=profile, conditions=CONDITIONS, root=root,
        recompute=recompute, log=log,
    )  # fmt: skip
    return out, cfg.unplug_at, cfg


def c3(outcomes, *, arch: str, unplug_at: int) -> dict:
    """Claim C3 for one architecture: anti_flat's C3 function and thresholds, named C3/<task>/<arch>."""
    task = task_of(arch)
    r = anti_flat_tables.c3_anti_flatness_delays_generalization(outcomes, task="digits", unplug_at=unplug_at)
    return {**r, "claim": f"C3/{task}/{arch}", "task": task, "arch": arch}


def missing(arch: str, data_dir=None) -> str | None:
    """Why a paper-scale architecture cannot run here (missing extra, weights or data), else None."""
    if arch not in PAPER_SETTINGS:
        return None
    try:
        if task_of(arch) == "imagenet100":
            from .imagenet100 import imagenet100

            imagenet100(data_dir)
        else:
            from . import hf

            hf.load_sst5(data_dir)
            hf.load_pretrained(arch, data_dir=data_dir)
    except (ImportError, FileNotFoundError) as e:
        return str(e)
    return None


def summary_table(results: dict) -> list[dict]:
    """One row per architecture: final val acc of each condition and steps to generalize (mean and
    min..max over seeds; 'never' counted), kappa under REG vs the baseline, and the C3 verdict.
    results: {arch: (outcomes, unplug_at, c3 result)}."""

    def stat(values):
        v = [x for x in values if x is not None]
        if not v:
            return "-"
        return (
            f"{np.mean(v):.3f} [{min(v):.3f}, {max(v):.3f}]"
            if max(v) <= 1
            else f"{np.mean(v):.3g} [{min(v):.3g}, {max(v):.3g}]"
        )

    def steps(values):
        never = sum(v is None for v in values)
        v = [int(x) for x in values if x is not None]
        return (" ".join(map(str, v)) or "") + (f" never x{never}" if never else "")

    rows = []
    for arch, (outcomes, unplug_at, res) in results.items():
        table = anti_flat_tables.condition_table(outcomes, unplug_at=unplug_at)
        by = {c: [r for r in table if r["condition"] == c] for c in CONDITIONS}
        rows.append(
            {
                "arch": arch,
                "val_base": stat([r["val_acc"] for r in by["baseline"]]),
                "val_reg": stat([r["val_acc"] for r in by["reg"]]),
                "val_unplug": stat([r["val_acc"] for r in by["unplug"]]),
                "t_gen_base": steps([r["t_gen"] for r in by["baseline"]]),
                "t_gen_reg": steps([r["t_gen"] for r in by["reg"]]),
                "kappa_reg": stat([r["kappa_reg"] for r in by["reg"]]),
                "kappa_base": stat([r["kappa_reg"] for r in by["baseline"]]),
                "R_reg": stat([r["R_reg"] for r in by["reg"]]),
                "C3": f"{res['verdict']} ({res['summary']})",
            }
        )
    return rows
