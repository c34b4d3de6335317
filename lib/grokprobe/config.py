"""Experiment configs: one frozen dataclass per experiment, three profiles, strict validation.

`resolve(experiment, params, profile)` starts from the dataclass defaults (the paper's settings),
applies the profile, then every parameter that is not None, and validates the result before any
training starts. `config_hash` names the results folder; it covers every field that changes what
is computed, plus the package version, so a code change that alters results never reuses old runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass

from . import __version__
from .data import OPERATORS, is_prime

PROFILES = ("smoke", "quick", "paper")
PAPER_SEEDS = (1, 42, 15213)
# Fields that say where or how fast a run executes, not what it computes: outside the hash.
NOT_HASHED = ("device", "checkpoint_every")
# Fields added after runs were stored: hashed only when set away from their default, so a run that
# could not have used them keeps its folder.
HASHED_IF_SET = {"precision": "float32", "torch_compile": False}
PRECISIONS = ("float32", "bfloat16")


@dataclass(frozen=True)
class GrokConfig:
    """E1 (SPEC §4): the decoder on modular arithmetic. Defaults are the paper's settings."""

    p: int = 97  # modulus
    op: str = "+"  # one of data.OPERATORS
    train_frac: float = 0.5  # share of all equations used for training
    split_seed: int = 0  # fixed shuffle of the equation list, independent of the training seeds
    seeds: tuple = PAPER_SEEDS  # trained together as one batched model
    steps: int = 100_000  # the authors' run_script (the paper text says 1e6, SPEC D3)
    lr: float = 1e-4  # max lr after warm-up (SPEC D5)
    weight_decay: float = 1.0  # AdamW, decoupled, on every parameter
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 10  # linear warm-up, then constant
    batch_size: int = 512  # reshuffled every epoch; the last batch of an epoch is smaller
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 512
    penalty: str = "none"  # none | anti_flat | collapse_prevent | collapse_encourage (notebooks 02, 03)
    lam: float = 0.0  # penalty strength
    tau: float = 2.0  # anti_flat: softmax temperature inside R
    normalize_features: bool = True  # anti_flat: phi / ||phi|| inside R
    cap: float = 0.0  # Frobenius cap on the output layer after every step; 0 = none
    unplug_at: int = 0  # step from which the penalty is off and the lr bump/wd/cosine apply; 0 = never
    bump: float = 10.0  # lr multiplier at unplug
    wd_after: float = 1.0  # weight decay after unplug
    eta_min: float = 1e-5  # cosine floor after unplug
    log_points: int = 160  # log-spaced logging steps (plus step 0 and the last step)
    eval_batch: int = 1024  # rows per forward pass when computing metrics (small chunks stay in cache)
    # Loss-landscape curvature over all parameters at every logging step (notebook 06); off by
    # default because each logging step then costs probes + iters Hessian-vector products.
    curvature_probes: int = 0  # Hutchinson probes for the Hessian trace; 0 = no curvature metrics
    curvature_iters: int = 20  # max power iterations for the top eigenvalue (warm-started)
    curvature_rows: int = 1024  # the first rows of the training split that the Hessian covers
    representativeness: bool = False  # log the KDE representativeness estimate (SPEC §2.4, D18)
    kde_bandwidth: float = 1.0  # its Gaussian kernel bandwidth (the paper's 1.0)
    kde_rows: int = 0  # held-out rows it averages over (the first of the shuffled split); 0 = all
    # > 0: once every seed's val acc has reached 99% (first at step t), stop at the first logging
    # step >= early_stop * t, so a grid of tasks spends its steps where something still happens
    early_stop: float = 0.0  # 0 = always run all steps
    deterministic: bool = False  # torch.use_deterministic_algorithms, for bitwise repeats
    # Speed knobs of the training step, off by default: grokking is sensitive to numerical
    # precision, and neither is shown to keep Fig 1's curves (README, Performance). Metrics are
    # always computed in float32, uncompiled.
    precision: str = "float32"  # float32 | bfloat16 (autocast of the training forward pass)
    torch_compile: bool = False  # torch.compile the training forward pass
    checkpoint_every: int = 2000  # steps between resumable checkpoints
    device: str = "auto"  # auto | cpu | cuda | cuda:N

    experiment: typing.ClassVar[str] = "grokking"


@dataclass(frozen=True)
class ClassifierConfig:
    """An image classifier trained with SGD and an optional penalty (E2/E3 and their stand-ins).

    Defaults are the paper's ResNet-18 / CIFAR-10 settings (SPEC §4 E2, E3); subclasses set the
    experiment's own penalty, lambda and length."""

    task: str = "cifar10"  # digits (bundled, CPU) | cifar10 (local folder)
    arch: str = "resnet18"  # cnn | mlp | resnet18 | resnet18_cifar
    seeds: tuple = PAPER_SEEDS
    epochs: int = 250
    batch_size: int = 64
    lr: float = 0.01  # SGD, constant unless unplugged
    momentum: float = 0.9
    weight_decay: float = 0.0
    penalty: str = "none"  # none | anti_flat | collapse_prevent | collapse_encourage
    lam: float = 0.0  # penalty strength
    tau: float = 2.0  # anti_flat: softmax temperature inside R
    normalize_features: bool = True  # anti_flat: phi / ||phi|| inside R
    cap: float = 0.0  # Frobenius cap on the final layer after every step; 0 = none
    unplug_at: int = 0  # epoch from which the penalty is off and the lr bump/wd/cosine apply; 0 = never
    bump: float = 10.0  # lr multiplier at unplug
    wd_after: float = 2e-4  # weight decay after unplug
    eta_min: float = 1e-4  # cosine floor after unplug
    augment: bool = False  # random crop + flip (CIFAR Fig 7 runs)
    split_seed: int = 0  # digits: fixed train/val split
    eval_batch: int = 1024
    deterministic: bool = False
    checkpoint_every: int = 10  # epochs
    device: str = "auto"

    experiment: typing.ClassVar[str] = "classifier"


@dataclass(frozen=True)
class AntiFlatConfig(ClassifierConfig):
    """E3: anti-flatness regulariser, lambda 1e-2, tau 2, cap 50, unplug at 200 of 400 (SPEC §3.2)."""

    epochs: int = 400
    penalty: str = "anti_flat"
    lam: float = 1e-2
    cap: float = 50.0
    unplug_at: int = 200
    # True: at unplug_at only the lr bump, weight decay and cosine start, the penalty stays on
    # (the ablation SPEC D13 asks for; the paper has no such run)
    keep_penalty: bool = False

    experiment: typing.ClassVar[str] = "anti_flat"


@dataclass(frozen=True)
class CollapseConfig(ClassifierConfig):
    """E2: anti-collapse regulariser CE - lambda NCC, lambda 1e-3, 250 epochs (SPEC §3.1)."""

    penalty: str = "collapse_prevent"
    lam: float = 1e-3

    experiment: typing.ClassVar[str] = "collapse"


PROFILE_OVERRIDES: dict[str, dict[str, dict]] = {
    "grokking": {
        # Every code path in seconds: a small modulus and model, a few hundred steps.
        "smoke": dict(
            p=23,
            train_frac=0.5,
            seeds=(1, 42),
            steps=60,
            lr=1e-3,
            d_model=32,
            n_heads=4,
            d_ff=64,
            batch_size=128,
            log_points=12,
            checkpoint_every=25,
        ),
        # lr 1e-3 on the paper's 50% split: every seed groks by ~3k steps (val acc >= 95% at 1.1k-3k
        # steps in a measured run), about 10 min for 3 batched seeds on a 2-core CPU (SPEC §7, §10).
        "quick": dict(lr=1e-3, steps=3500, log_points=60),
        "paper": dict(deterministic=True),
    },
    # digits + small CNN on the CPU (SPEC §7); helpers of notebooks 02/03 tune these
    "anti_flat": {
        "smoke": dict(task="digits", arch="cnn", seeds=(1,), epochs=4, unplug_at=2, lam=0.1, cap=30.0),
        "quick": dict(task="digits", arch="cnn", epochs=30, unplug_at=15, lam=0.1, cap=30.0),
        "paper": dict(deterministic=True),
    },
    "collapse": {
        "smoke": dict(task="digits", arch="cnn", seeds=(1,), epochs=3),
        "quick": dict(task="digits", arch="cnn", epochs=40),
        "paper": dict(deterministic=True),
    },
}

CONFIGS = {c.experiment: c for c in (GrokConfig, AntiFlatConfig, CollapseConfig)}
PENALTIES = ("none", "anti_flat", "collapse_prevent", "collapse_encourage")
TASKS = ("digits", "cifar10")
ARCHS = ("cnn", "mlp", "resnet18", "resnet18_cifar", "vit", "gpt_rows", "vit_tiny_patch16_224")


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of: {', '.join(map(str, choices))}")


def _check_positive(cfg, *names, allow_zero=False):
    for name in names:
        v = getattr(cfg, name)
        if not (v >= 0 if allow_zero else v > 0):
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{name} must be {bound}, got {v!r}")


def _check_types(cfg) -> None:
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        v, want = getattr(cfg, f.name), hints[f.name]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            continue
        if want is int and isinstance(v, bool):
            raise TypeError(f"{f.name} must be an int, got the bool {v!r}")
        if not isinstance(v, want):
            raise TypeError(f"{f.name} must be of type {want.__name__}, got {type(v).__name__} {v!r}")


def validate(cfg) -> None:
    _check_types(cfg)
    if isinstance(cfg, GrokConfig):
        _check_choice("op", cfg.op, list(OPERATORS))
        if cfg.p < 2:
            raise ValueError(f"p must be >= 2, got {cfg.p}")
        if cfg.op == "/" and not is_prime(cfg.p):
            raise ValueError(f"op '/' needs a prime p (modular inverses), got p={cfg.p}")
        if not 0.0 < cfg.train_frac < 1.0:
            raise ValueError(f"train_frac must lie in (0, 1), got {cfg.train_frac}")
        _check_positive(
            cfg,
            "steps",
            "lr",
            "batch_size",
            "d_model",
            "n_layers",
            "n_heads",
            "d_ff",
            "log_points",
            "eval_batch",
            "checkpoint_every",
            "curvature_iters",
            "curvature_rows",
            "kde_bandwidth",
        )
        _check_positive(cfg, "weight_decay", "warmup_steps", "curvature_probes", "kde_rows", allow_zero=True)
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"d_model={cfg.d_model} must be divisible by n_heads={cfg.n_heads}")
        _check_choice("penalty", cfg.penalty, PENALTIES)
        _check_choice("precision", cfg.precision, PRECISIONS)
        _check_positive(cfg, "tau", "bump")
        _check_positive(cfg, "lam", "cap", "unplug_at", "wd_after", "eta_min", allow_zero=True)
        if cfg.early_stop and cfg.early_stop < 1.0:
            raise ValueError(
                f"early_stop must be 0 (off) or >= 1 (a multiple of the step), got {cfg.early_stop}"
            )
        if cfg.unplug_at and cfg.unplug_at >= cfg.steps:
            raise ValueError(f"unplug_at={cfg.unplug_at} must be < steps={cfg.steps} (0 = never unplug)")
        if cfg.penalty != "none" and cfg.lam == 0:
            raise ValueError(f"penalty={cfg.penalty!r} needs lam > 0 (or penalty='none')")
        if not all(0.0 <= b < 1.0 for b in cfg.betas) or len(cfg.betas) != 2:
            raise ValueError(f"betas must be two numbers in [0, 1), got {cfg.betas}")
    if isinstance(cfg, ClassifierConfig):
        _check_choice("task", cfg.task, TASKS)
        _check_choice("arch", cfg.arch, ARCHS)
        _check_choice("penalty", cfg.penalty, PENALTIES)
        _check_positive(cfg, "epochs", "batch_size", "lr", "tau", "bump", "eval_batch", "checkpoint_every")
        _check_positive(
            cfg, "momentum", "weight_decay", "lam", "cap", "unplug_at", "wd_after", "eta_min", allow_zero=True
        )
        if cfg.unplug_at and cfg.unplug_at >= cfg.epochs:
            raise ValueError(f"unplug_at={cfg.unplug_at} must be < epochs={cfg.epochs} (0 = never unplug)")
        if cfg.penalty != "none" and cfg.lam == 0:
            raise ValueError(f"penalty={cfg.penalty!r} needs lam > 0 (or penalty='none')")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds must be a non-empty list of distinct integers, got {list(cfg.seeds)}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in cfg.seeds):
        raise ValueError(f"seeds must be non-negative integers, got {list(cfg.seeds)}")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"device={dev!r} is not valid; choose auto, cpu, cuda or cuda:N")


def resolve(experiment: str, params: dict | None = None, profile: str = "quick"):
    """The validated config of `experiment` under `profile`, with `params` (None = keep) applied."""
    _check_choice("experiment", experiment, list(CONFIGS))
    _check_choice("profile", profile, PROFILES)
    cls = CONFIGS[experiment]
    values = dict(PROFILE_OVERRIDES[experiment].get(profile, {}))
    names = {f.name for f in dataclasses.fields(cls)}
    for k, v in (params or {}).items():
        if v is None:
            continue
        if k == "seed":  # one seed is the common case on the command line: -p seed 3
            k, v = "seeds", (v,)
        if k not in names:
            raise ValueError(f"unknown parameter {k!r} for {experiment}; valid: {', '.join(sorted(names))}")
        values[k] = tuple(v) if isinstance(v, list) else v
    cfg = cls(**values)
    validate(cfg)
    return cfg


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def from_dict(experiment: str, d: dict):
    cls = CONFIGS[experiment]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in names})


def hashed_dict(cfg) -> dict:
    """The fields that decide what a run computes (what config.json stores and the hash covers)."""
    return {
        k: v
        for k, v in to_dict(cfg).items()
        if k not in NOT_HASHED and not (k in HASHED_IF_SET and v == HASHED_IF_SET[k])
    }


def config_hash(cfg) -> str:
    blob = json.dumps(
        {"experiment": cfg.experiment, "version": __version__, "config": hashed_dict(cfg)}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def overrides(cfg, profile: str) -> dict:
    """Fields where cfg differs from the plain profile (how a figure run departs from the default)."""
    base = resolve(cfg.experiment, {}, profile)
    return {k: v for k, v in to_dict(cfg).items() if to_dict(base)[k] != v and k not in NOT_HASHED}
