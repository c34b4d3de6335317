"""The paper-scale runs of notebook 04 (profile paper only; GPU jobs): SPEC §4 E4 and E5.

    vit_tiny_patch16_224   ImageNet-100 as an ImageFolder from a local path, from scratch (E4)
    tinybert, distilgpt2   SST-5 through Hugging Face transformers, the extra [hf] (E5, hf.py)

The data do not fit in memory as tensors, so these runs stream batches from a DataLoader, unlike
classify.train. The objective, the Frobenius cap, the unplug schedule and the conditions are the
same library pieces as notebook 02's (regularizers, anti_flat.condition_params). Train-split metrics
are averages over each epoch's training passes, taken before each step's update, as the authors
logged them (SPEC D17); validation metrics come from a pass over the validation set after every
epoch. Each (condition, seed) is one stored run under results/arch_paper/<config hash>/; the outcomes
are anti_flat.Outcome, so anti_flat.condition_table and the C3 function read them like digits runs.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import anti_flat, store
from . import config as C
from . import metrics as M
from .imagenet100 import imagenet100
from .regularizers import Unplug, frobenius_cap, penalty_term
from .runtime import NonFiniteLoss, configure_threads, pick_device

# --------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PaperArchConfig:
    """One condition of E4 or E5. Defaults: ViT-tiny on ImageNet-100 (SPEC E4); PAPER_SETTINGS
    holds TinyBERT's and DistilGPT2's (Table 1)."""

    arch: str = "vit_tiny_patch16_224"  # vit_tiny_patch16_224 | tinybert | distilgpt2
    task: str = "imagenet100"  # imagenet100 | sst5
    seeds: tuple = C.PAPER_SEEDS
    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01  # SGD, no Nesterov
    momentum: float = 0.9
    weight_decay: float = 0.0
    penalty: str = "anti_flat"
    lam: float = 1e-2
    tau: float = 2.0
    normalize_features: bool = True
    cap: float = 150.0  # Frobenius cap on the final layer, all conditions, whole run
    unplug_at: int = 150  # 0 = never
    keep_penalty: bool = False
    bump: float = 5.0  # lr x bump at the unplug
    wd_after: float = 2e-4
    eta_min: float = 1e-4
    device: str = "auto"

    experiment: typing.ClassVar[str] = "arch_paper"


PAPER_SETTINGS = {
    "vit_tiny_patch16_224": dict(task="imagenet100"),
    # Table 1; paper wd_after 2e-4 (the code's is 3e-4, SPEC D12)
    "tinybert": dict(
        task="sst5", batch_size=32, lr=1e-3, lam=0.3, cap=30.0, bump=3.0, wd_after=2e-4, eta_min=1e-4
    ),
    # Table 1; the paper's lr after unplug 5e-3 = x5 (the run_script's x2 gives 2e-3, SPEC D12)
    "distilgpt2": dict(
        task="sst5", batch_size=64, lr=1e-3, lam=0.03, cap=30.0, bump=5.0, wd_after=1e-4, eta_min=5e-5
    ),
}
ARCHS = tuple(PAPER_SETTINGS)


def resolve(arch: str, condition: str, *, params: dict | None = None, profile: str = "paper"):
    """The config of one condition of a paper-scale architecture (profile 'paper' only)."""
    C._check_choice("arch", arch, ARCHS)
    if profile != "paper":
        raise ValueError(
            f"arch={arch!r} is the paper's {PAPER_SETTINGS[arch]['task']} run (hours on a GPU) and exists only "
            f"in profile='paper'; the CPU stand-ins are the digits architectures"
        )
    p = {**PAPER_SETTINGS[arch], **{k: v for k, v in (params or {}).items() if v is not None}}
    if "seed" in p:
        p["seeds"] = (p.pop("seed"),)
    unplug_at = p.pop("unplug_at", None) or PaperArchConfig.epochs // 2
    p.update(anti_flat.condition_params(condition, unplug_at=unplug_at))
    if p["penalty"] == "anti_flat" and not p.get("lam", PaperArchConfig.lam):
        raise ValueError(f"condition {condition!r} needs lam > 0")
    names = {f.name for f in dataclasses.fields(PaperArchConfig)}
    unknown = set(p) - names
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {sorted(unknown)} for {arch}; valid: {', '.join(sorted(names))}"
        )
    cfg = PaperArchConfig(arch=arch, **{k: tuple(v) if isinstance(v, list) else v for k, v in p.items()})
    if cfg.unplug_at and cfg.unplug_at >= cfg.epochs:
        raise ValueError(f"unplug_at={cfg.unplug_at} must be < epochs={cfg.epochs} (0 = never unplug)")
    return cfg


# ------------------------------------------------------------------------------------------ training


def datasets(cfg, data_dir=None):
    """(model builder seed -> model, {"train", "val"} datasets, collate or None, num_classes)."""
    if cfg.task == "imagenet100":
        from .classifiers import build_classifier

        ds = imagenet100(data_dir)
        k = len(ds["train"].classes)
        return (lambda: build_classifier(cfg.arch, in_shape=(3, 224, 224), num_classes=k)), ds, None, k
    from . import hf

    _, tok = hf.load_pretrained(cfg.arch, data_dir=data_dir)  # fails early, naming where it looked
    sst5 = hf.sst5_datasets(tok, data_dir)
    ds = {"train": sst5["train"], "val": sst5["validation"]}
    build = lambda: hf.load_pretrained(cfg.arch, data_dir=data_dir)[0]  # noqa: E731  fresh weights per seed
    return build, ds, ds["train"].collate, hf.SST5_CLASSES


def _forward(model, inputs, device):
    if isinstance(inputs, dict):
        return model(**{k: v.to(device) for k, v in inputs.items()})
    return model(inputs.to(device))


@torch.no_grad()
def _validate(model, loader, device):
    """Validation loss, accuracy and canonical kappa (tau 1, raw phi) over the whole split."""
    model.eval()
    zs, fs, ys = [], [], []
    for inputs, y in loader:
        z, f = _forward(model, inputs, device)
        zs.append(z.double().cpu())
        fs.append(f.double().cpu())
        ys.append(y)
    model.train()
    z, f, y = torch.cat(zs), torch.cat(fs), torch.cat(ys)
    W = model.classifier.weight.detach().cpu()
    return {
        "loss": F.cross_entropy(z, y).item(),
        "acc": M.accuracy(z, y).item(),
        "kappa": M.relative_flatness(f, z, W).item(),
    }


def train(cfg, *, build, data, collate=None, num_workers: int = 0, progress=True):
    """Train every seed of cfg in turn on streamed batches; returns (rows, summary). Epoch 0 holds
    the initial model's validation metrics."""
    device = pick_device(cfg.device)
    unplug = Unplug(
        at=cfg.unplug_at, total=cfg.epochs, bump=cfg.bump, wd_after=cfg.wd_after, eta_min=cfg.eta_min
    )
    rows, t0 = [], time.perf_counter()
    val_loader = torch.utils.data.DataLoader(
        data["val"], batch_size=cfg.batch_size, collate_fn=collate, num_workers=num_workers
    )
    for seed in cfg.seeds:
        torch.manual_seed(seed)
        model = build().to(device)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        g = torch.Generator().manual_seed(seed)
        loader = torch.utils.data.DataLoader(
            data["train"],
            batch_size=cfg.batch_size,
            shuffle=True,
            generator=g,
            collate_fn=collate,
            num_workers=num_workers,
        )
        rows += [(0, seed, "val", k, v) for k, v in _validate(model, val_loader, device).items()]
        model.train()
        for epoch in range(cfg.epochs):
            unplug.apply(opt, epoch, cfg.lr, cfg.weight_decay)
            on = cfg.penalty != "none" and (unplug.active(epoch) or cfg.keep_penalty)
            names = ("batch_loss", "loss", "acc", "kappa", "penalty_R")
            sums, n = torch.zeros(len(names), dtype=torch.float64, device=device), 0
            for inputs, y in loader:
                y = y.to(device)
                logits, phi = _forward(model, inputs, device)
                ce = F.cross_entropy(logits, y)
                W = model.classifier.weight
                loss = ce
                if on:
                    term, _ = penalty_term(
                        cfg.penalty,
                        lam=cfg.lam,
                        features=phi,
                        logits=logits,
                        weight=W,
                        labels=y,
                        tau=cfg.tau,
                        normalize_features=cfg.normalize_features,
                    )
                    loss = ce + term
                # the authors' train-mode, pre-update averages (SPEC D17); R also when the penalty is off
                with torch.no_grad():
                    R = M.relative_flatness(
                        phi, logits, W, tau=cfg.tau, normalize_features=cfg.normalize_features
                    )
                    vals = (loss, ce, M.accuracy(logits, y), M.relative_flatness(phi, logits, W), R)
                    sums += len(y) * torch.stack([v.detach().double() for v in vals])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.cap > 0:
                    frobenius_cap(model.classifier.weight, cfg.cap)
                n += len(y)
            avg = (sums / n).tolist()
            if not all(np.isfinite(avg)):
                raise NonFiniteLoss(epoch + 1, [seed], rows, unit="epoch")
            rows += [(epoch + 1, seed, "train", k, v) for k, v in zip(names, avg)]
            rows += [
                (epoch + 1, seed, "train", "w_norm", model.classifier.weight.detach().double().norm().item())
            ]
            rows += [(epoch + 1, seed, "train", "penalty_on", float(on))]
            rows += [(epoch + 1, seed, "val", k, v) for k, v in _validate(model, val_loader, device).items()]
            if progress:
                print(
                    f"{cfg.arch} seed {seed} epoch {epoch + 1}  {time.perf_counter() - t0:.0f}s  train acc "
                    f"{avg[2]:.3f}  val acc {rows[-2][4]:.3f}",
                    flush=True,
                )
    return rows, {"device": str(device), "seconds": round(time.perf_counter() - t0, 2)}


def run_one(cfg, *, condition: str, root=None, data_dir=None, num_workers=8, recompute=False, progress=True):
    """The stored run of cfg (or train it): one anti_flat.Outcome per seed; a divergence is kept."""
    configure_threads()
    folder = store.run_dir(cfg.experiment, C.config_hash(cfg), root)
    with store.locked(folder):
        if store.is_done(folder) and not recompute:
            m = store.check_complete(folder, C.hashed_dict(cfg))
            return [
                anti_flat.Outcome(condition, s, cfg, m, folder, summary=store.read_json(folder / "DONE"))
                for s in cfg.seeds
            ]
        build, data, collate, _ = datasets(cfg, data_dir)
        store.write_json(folder / "config.json", {"experiment": cfg.experiment, "config": C.hashed_dict(cfg)})
        try:
            rows, summary = train(
                cfg, build=build, data=data, collate=collate, num_workers=num_workers, progress=progress
            )
        except NonFiniteLoss as e:
            store.write_metrics(folder / "metrics.csv", e.rows)
            store.mark_failed(folder, str(e))
            m = store.Metrics(e.rows)
            return [
                anti_flat.Outcome(condition, s, cfg, m, folder, diverged=str(e), diverged_at=e.step)
                for s in cfg.seeds
            ]
        store.write_metrics(folder / "metrics.csv", rows)
        store.mark_done(folder, len(rows), summary)
        return [
            anti_flat.Outcome(condition, s, cfg, store.Metrics(rows), folder, summary=summary)
            for s in cfg.seeds
        ]


def run_conditions(
    arch,
    *,
    seeds,
    params=None,
    profile="paper",
    conditions=("baseline", "reg", "unplug"),
    root=None,
    data_dir=None,
    num_workers=8,
    recompute=False,
    log=print,
):
    """{condition: {seed: Outcome}} of a paper-scale architecture, each (condition, seed) one run."""
    out = {}
    for cond in conditions:
        out[cond] = {}
        for s in seeds:
            cfg = resolve(arch, cond, params={**(params or {}), "seeds": [s]}, profile=profile)
            for o in run_one(
                cfg,
                condition=cond,
                root=root,
                data_dir=data_dir,
                num_workers=num_workers,
                recompute=recompute,
                progress=log is not None,
            ):
                out[cond][o.seed] = o
                if log:
                    log(
                        f"{arch} {cond:>9s} seed {o.seed:<5d} {o.status:>14s}  final val acc {o.final('acc', 'val'):.3f}"
                    )
    return out
