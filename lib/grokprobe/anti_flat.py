"""Notebook 02 (SPEC §3.2, §4 E3, D13-D16): does penalising flatness delay generalization, and does
unplugging the penalty restore it? Conditions, configs, the runs and the sweeps; the per-task tables
and claim C3 are in anti_flat_tables.

Conditions, each seed its own stored run (grokking: the seeds batched in one run):

    baseline   no penalty, constant lr. The Frobenius cap stays on, as in every other condition, so
               that the penalty and the schedule are the only differences (SPEC D15, §7)
    reg        loss = CE - lam * R for the whole run
    unplug     R until `unplug_at`, then off: lr x bump, weight decay wd_after, cosine to eta_min
    bump_only  no penalty, but the unplug's bump / weight decay / cosine at `unplug_at`
    reg_bump   R for the whole run plus the bump / weight decay / cosine at `unplug_at`: does the
               schedule alone recover, without removing the penalty? (SPEC D13; image tasks only,
               GrokConfig has no such switch)

Tasks: `digits` (small CNN, SGD; the CPU stand-in), `cifar10` (ResNet-18, the paper's E3; paper profile
only) and `grokking` (the E1 transformer, phi at the "=" position). The unit of time is the epoch for
image tasks and the optimizer step for grokking. A run that produces a non-finite loss is kept as
*diverged* (its metrics up to then), never dropped.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import config as C
from . import store, train
from .runtime import NonFiniteLoss

CONDITIONS = ("baseline", "reg", "unplug", "bump_only", "reg_bump")
LABELS = {
    "baseline": "baseline",
    "reg": "REG (whole run)",
    "unplug": "REG, unplugged",
    "bump_only": "no REG, bump only (ablation)",
    "reg_bump": "REG + bump, not unplugged (D13)",
}
TASKS = ("digits", "grokking", "cifar10")
EXPERIMENT = {"digits": "anti_flat", "cifar10": "anti_flat", "grokking": "grokking"}
UNIT = {"digits": "epoch", "cifar10": "epoch", "grokking": "step"}
COLLAPSED_BELOW = 0.2  # final train accuracy under this (2x chance for 10 classes): not a working model

# The grokking task on top of notebook 01's profile: the E1 model and optimiser, plus the penalty.
# AdamW, so the unplug bump is x3, not the x10 of the SGD runs (a 1e-2 Adam step breaks the model).
# Cap 50: above the baseline's own ||W_out|| (about 33 at lr 1e-3, 48 in the paper's run), so that it
# does not bind without the penalty; quick: the 50% split, where the baseline groks within 3k steps.
GROKKING = {
    "smoke": dict(penalty="anti_flat", lam=0.1, cap=20.0, steps=60, bump=3.0),
    "quick": dict(
        penalty="anti_flat", lam=0.1, cap=50.0, train_frac=0.5, steps=6000, bump=3.0, log_points=150
    ),
    "paper": dict(penalty="anti_flat", lam=1e-2, cap=50.0, bump=3.0),
}


# The sweeps of Figs 11/12 (digits): lam at the profile's cap, cap at the profile's lam; lam 0 is the
# baseline and cap 0 no cap at all. The paper swept lam {0.5, 0.1, 1e-3, 1e-4} and cap {20, 100, 150, 200}.
SWEEP_VALUES = {
    "smoke": {"lam": [0.0, 1.0], "cap": [0.0, 30.0]},
    "quick": {
        "lam": [0.0, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0],
        "cap": [0.0, 10.0, 20.0, 30.0, 50.0, 100.0, 200.0],
    },
    "paper": {"lam": [0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5], "cap": [20.0, 50.0, 100.0, 150.0, 200.0]},
}
SWEEP_TASKS = ("digits",)  # a grokking or CIFAR-10 sweep is a cluster job: python -m grokprobe.sweep


def sweep_seed(seeds) -> int:
    """The seed of the sweeps: 42 as in the paper's Figs 11/12 when it is among the seeds."""
    return 42 if 42 in seeds else seeds[0]


def tag(overrides: dict) -> str:
    """A short name for a set of notebook overrides (the figure folder of a non-default run)."""
    blob = json.dumps(overrides, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def n_logits(cfg) -> int:
    """C of the bound R <= cap^2 (1 - 1/C): the width of the final layer."""
    from .data import vocab_size

    return vocab_size(cfg.p) if cfg.experiment == "grokking" else 10


def task_params(task: str, profile: str) -> dict:
    """The task's settings on top of the experiment's profile (config.PROFILE_OVERRIDES)."""
    C._check_choice("task", task, TASKS)
    if task == "grokking":
        return dict(GROKKING[profile])
    if task == "cifar10":
        if profile != "paper":
            raise ValueError(
                "task='cifar10' is the paper's ResNet-18 run (400 epochs, hours on a GPU) and exists only "
                "in profile='paper'; the CPU stand-in is task='digits'"
            )
        return dict(task="cifar10", arch="resnet18")
    # digits: the quick profile's stand-in, which the paper profile keeps (the paper has no digits run)
    return dict(C.PROFILE_OVERRIDES["anti_flat"]["quick"]) if profile == "paper" else {}


def condition_params(condition: str, *, unplug_at: int) -> dict:
    C._check_choice("condition", condition, CONDITIONS)
    no_penalty = dict(penalty="none", lam=0.0)  # lam 0: one baseline for every lambda
    return {
        "baseline": dict(**no_penalty, unplug_at=0),
        "reg": dict(penalty="anti_flat", unplug_at=0),
        "unplug": dict(penalty="anti_flat", unplug_at=unplug_at),
        "bump_only": dict(**no_penalty, unplug_at=unplug_at),
        "reg_bump": dict(penalty="anti_flat", unplug_at=unplug_at, keep_penalty=True),
    }[condition]


def resolve(task: str, condition: str, *, params: dict | None = None, profile: str = "quick"):
    """The validated config of one condition. params: config fields (None = the profile's value);
    unplug_at None = half the run (as in every setting of the paper)."""
    p = {**task_params(task, profile), **{k: v for k, v in (params or {}).items() if v is not None}}
    if condition == "reg_bump" and task == "grokking":
        raise ValueError("condition 'reg_bump' needs keep_penalty, which only the image tasks have")
    unplug_at = p.pop("unplug_at", None)
    base = C.resolve(EXPERIMENT[task], {**p, "unplug_at": 0, "penalty": "none", "lam": 0.0}, profile)
    unplug_at = unplug_at or (base.steps if task == "grokking" else base.epochs) // 2
    return C.resolve(EXPERIMENT[task], {**p, **condition_params(condition, unplug_at=unplug_at)}, profile)


@dataclass
class Outcome:
    """One (condition, seed): its config, its metrics (up to the divergence if it diverged)."""

    condition: str
    seed: int
    config: object
    metrics: store.Metrics
    path: Path
    diverged: str | None = None  # the NonFiniteLoss message
    diverged_at: int | None = None  # epoch or step of the first non-finite loss
    summary: dict = field(default_factory=dict)

    def series(self, metric: str, split: str = "train"):
        """(x, values) of this seed; empty arrays if the metric was never logged."""
        try:
            return self.metrics.series(metric, split, self.seed)
        except KeyError:
            return np.array([], dtype=int), np.array([])

    def final(self, metric: str, split: str = "train"):
        return float(self.series(metric, split)[1][-1]) if len(self.series(metric, split)[1]) else None

    @property
    def status(self) -> str:
        """ok; diverged at <t> (non-finite loss); collapsed (learned, then fell back near chance);
        at chance (never learned: too short, or broken from the start)."""
        if self.diverged:
            return f"diverged at {self.diverged_at}"
        _, acc = self.series("acc", "train")
        if not len(acc) or acc[-1] >= COLLAPSED_BELOW:
            return "ok"
        return "collapsed" if acc.max() >= 0.5 else "at chance"


def _stored_divergence(cfg, root):
    """(metrics, reason) of a run the store holds as FAILED for a non-finite loss, else None."""
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    if store.is_done(folder) or not (folder / "FAILED").exists():
        return None
    try:
        if store.read_json(folder / "config.json").get("config") != C.hashed_dict(cfg):
            return None
        reason = store.read_json(folder / "FAILED").get("reason", "")
        return store.Metrics.read(folder / "metrics.csv"), reason
    except store.StoreError:
        return None


def run_one(cfg, *, condition: str, root=None, recompute=False, progress=False) -> list[Outcome]:
    """Train (or reload) one config: one Outcome per seed. A divergence is kept, not raised, and a
    stored divergence is reloaded rather than trained again (unless recompute)."""
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    failed = None if recompute else _stored_divergence(cfg, root)
    if failed is None:
        try:
            run = train.run(cfg, recompute=recompute, progress=progress, root=root)
            return [Outcome(condition, s, cfg, run.metrics, run.path, summary=run.summary) for s in cfg.seeds]
        except NonFiniteLoss as e:
            failed = store.Metrics(e.rows), str(e)
    metrics, reason = failed
    m = re.search(r"at (?:epoch|step) (\d+)", reason)
    at = int(m.group(1)) if m else None
    return [Outcome(condition, s, cfg, metrics, folder, diverged=reason, diverged_at=at) for s in cfg.seeds]


def run_conditions(
    task: str,
    *,
    seeds=None,
    params: dict | None = None,
    profile: str = "quick",
    conditions=None,
    root=None,
    recompute: bool = False,
    log=print,
) -> dict[str, dict[int, Outcome]]:
    """{condition: {seed: Outcome}} for every condition (default: all that the task supports)."""
    conditions = conditions or [c for c in CONDITIONS if not (task == "grokking" and c == "reg_bump")]
    seeds = list(seeds or resolve(task, "baseline", params=params, profile=profile).seeds)
    batched = task == "grokking"  # the transformer trains its seeds as one batched model
    groups = [seeds] if batched else [[s] for s in seeds]
    out: dict[str, dict[int, Outcome]] = {}
    for cond in conditions:
        out[cond] = {}
        for group in groups:
            cfg = resolve(task, cond, params={**(params or {}), "seeds": group}, profile=profile)
            for o in run_one(cfg, condition=cond, root=root, recompute=recompute):
                out[cond][o.seed] = o
                if log:
                    secs = o.summary.get("seconds")
                    val = o.final("acc", "val")
                    log(
                        f"{cond:>9s} seed {o.seed:<5d} {o.status:>14s}  final val acc "
                        f"{float('nan') if val is None else val:.3f}  ({'stored' if secs is None else f'{secs} s'})"
                    )
    return out


def sweep(
    task: str,
    kind: str,
    values,
    *,
    seed: int,
    params: dict | None = None,
    profile: str = "quick",
    root=None,
    recompute: bool = False,
) -> list[tuple[float, Outcome]]:
    """Figs 11/12 analogue: the REG condition (penalty for the whole run) for each lam (kind='lam') or
    Frobenius cap (kind='cap', 0 = no cap), everything else fixed. lam = 0 is the baseline."""
    C._check_choice("kind", kind, ("lam", "cap"))
    points = []
    for v in values:
        cond = "baseline" if kind == "lam" and v == 0 else "reg"
        p = {**(params or {}), kind: float(v), "seeds": [seed]}
        cfg = resolve(task, cond, params=p, profile=profile)
        points.append((float(v), run_one(cfg, condition=cond, root=root, recompute=recompute)[0]))
    return points
