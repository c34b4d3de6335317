"""The paper-scale runs of notebook 04 (profile paper only; GPU jobs): SPEC §4 E4 and E5.

    vit_tiny_patch16_224   ImageNet-100 as an ImageFolder from a local path, from scratch (E4)
    tinybert, distilgpt2   SST-5 through Hugging Face transformers, the extra [hf] (E5, hf.py)

The data do not fit in memory as tensors, so these runs stream batches from a DataLoader, unlike
classify.train. The objective, the Frobenius cap, the unplug schedule and the conditions are the
same library pieces as notebook 02's (regularizers, anti_flat.condition_params). Train-split metrics
are averages over each epoch's training passes, taken before each step's update, as the authors
logged them (SPEC D17); validation metrics come from a pass over the validation set after every
epoch. Each (condition, seed) is one stored run under results/arch_paper/<config hash>/; the outcomes
are anti_flat.Outcome, so anti_flat_tables.condition_table and the C3 function read them like digits runs.

Every `checkpoint_every` epochs the run folder gets metrics.csv and checkpoint.pt (model, optimizer,
shuffling generator, torch RNG, rows so far), written atomically; run_one goes through the store
life cycle every loop shares (train.stored), so it resumes from that checkpoint, bitwise on the CPU,
and an unreadable checkpoint or a damaged finished run is reported (a warning) and trained again.
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
from . import train as T
from .imagenet100 import imagenet100
from .regularizers import Unplug, frobenius_cap, penalty_term
from .runtime import NonFiniteLoss, pick_device

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
    checkpoint_every: int = 1  # epochs between resumable checkpoints (outside the hash, as device)
    device: str = "auto"

    experiment: typing.ClassVar[str] = "arch_paper"


PAPER_SETTINGS = {
    "vit_tiny_patch16_224": dict(task="imagenet100"),
    # Table 1; paper wd_after 2e-4 (the code's is 3e-4, SPEC D12)
    "tinybert": dict(
        task="sst5",
        batch_size=32,
        lr=1e-3,
        lam=0.3,
        cap=30.0,
        bump=3.0,
        wd_after=2e-4,
        eta_min=1e-4,
        checkpoint_every=10,  # SST-5 epochs take seconds: checkpoint less often than ImageNet's
    ),
    # Table 1; the paper's lr after unplug 5e-3 = x5 (the run_script's x2 gives 2e-3, SPEC D12)
    "distilgpt2": dict(
        task="sst5",
        batch_size=64,
        lr=1e-3,
        lam=0.03,
        cap=30.0,
        bump=5.0,
        wd_after=1e-4,
        eta_min=5e-5,
        checkpoint_every=10,  # about 0.7 GB of weights and momentum per checkpoint
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
    if isinstance(cfg.checkpoint_every, bool) or not isinstance(cfg.checkpoint_every, int):
        raise ValueError(f"checkpoint_every must be an int (epochs), got {cfg.checkpoint_every!r}")
    if cfg.checkpoint_every < 1:
        raise ValueError(f"checkpoint_every={cfg.checkpoint_every} must be >= 1 (epochs)")
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


CHECKPOINT = T.CHECKPOINT
STATE_KEYS = ("seed_index", "seed", "epoch", "model", "opt", "gen", "torch_rng", "rows")


def _state(si, seed, epoch, model, opt, g, device, rows) -> dict:
    """Everything a resumed seed needs to continue bitwise: weights, SGD momentum, the shuffling
    generator (the DataLoader draws each epoch's order and worker seed from it), torch's RNG."""
    state = {
        "seed_index": si,
        "seed": seed,
        "epoch": epoch,  # epochs done; the next one to run is `epoch` (0-based)
        "model": model.state_dict(),
        "opt": opt.state_dict(),
        "gen": g.get_state(),
        "torch_rng": torch.get_rng_state(),
        "rows": rows,
    }
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore(state, model, opt, g, device) -> None:
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:  # same config hash, other model: the data folder's classes changed
        first = str(e).strip().splitlines()[-1].strip()
        raise store.StoreError(
            f"the run's {CHECKPOINT} does not fit the model built now ({first}); did the data folder "
            "change under the same config? Delete the checkpoint or rerun with recompute=True"
        ) from None
    opt.load_state_dict(state["opt"])
    g.set_state(state["gen"])
    torch.set_rng_state(state["torch_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)


def check_resume(state, cfg) -> dict:
    """state, if it is a checkpoint that train can continue cfg from; StoreError otherwise."""
    if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise store.StoreError(f"not a paper_scale checkpoint (keys {got}, expected {list(STATE_KEYS)})")
    si, epoch = state["seed_index"], state["epoch"]
    if not (isinstance(si, int) and 0 <= si < len(cfg.seeds) and cfg.seeds[si] == state["seed"]):
        raise store.StoreError(
            f"checkpoint seed {state['seed']!r} (index {si!r}) is not in seeds {cfg.seeds}"
        )
    if not (isinstance(epoch, int) and 0 < epoch < cfg.epochs):
        raise store.StoreError(f"checkpoint epoch {epoch!r} is outside 1..{cfg.epochs - 1}")
    return state


def train(
    cfg,
    *,
    build,
    data,
    collate=None,
    num_workers: int = 0,
    progress=True,
    resume: dict | None = None,
    checkpoint=None,
):
    """Train every seed of cfg in turn on streamed batches; returns (rows, summary). Epoch 0 holds
    the initial model's validation metrics.

    resume: a state that `checkpoint` was given, to continue from (bitwise on the CPU);
    checkpoint(state, rows) is called after every cfg.checkpoint_every-th epoch but a seed's last.
    """
    device = pick_device(cfg.device)
    unplug = Unplug(
        at=cfg.unplug_at, total=cfg.epochs, bump=cfg.bump, wd_after=cfg.wd_after, eta_min=cfg.eta_min
    )
    rows, t0, epochs_run, start_seed = [], time.perf_counter(), 0, 0
    if resume is not None:
        rows, start_seed = list(resume["rows"]), resume["seed_index"]
    val_loader = torch.utils.data.DataLoader(
        data["val"], batch_size=cfg.batch_size, collate_fn=collate, num_workers=num_workers
    )
    for si in range(start_seed, len(cfg.seeds)):
        seed = cfg.seeds[si]
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
        start = 0
        if resume is not None and si == start_seed:
            _restore(resume, model, opt, g, device)
            start = resume["epoch"]
        else:
            rows += [(0, seed, "val", k, v) for k, v in _validate(model, val_loader, device).items()]
        resume = None
        model.train()
        for epoch in range(start, cfg.epochs):
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
            epochs_run += 1
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
            done = epoch + 1
            if checkpoint is not None and done % cfg.checkpoint_every == 0 and done < cfg.epochs:
                checkpoint(_state(si, seed, done, model, opt, g, device, rows), rows)
    elapsed = time.perf_counter() - t0
    return rows, {"device": str(device), "seconds": round(elapsed, 2), "epochs_run": epochs_run}


def run_one(cfg, *, condition: str, root=None, data_dir=None, num_workers=8, recompute=False, progress=True):
    """The stored run of cfg, or train it through the store's life cycle that every loop shares
    (train.stored: resumed from its checkpoint, a damaged run retrained): one anti_flat.Outcome per
    seed; a divergence is kept as an outcome, not raised."""

    def make_trainer():  # after the store's DONE check, so a finished run never opens its data
        build, data, collate, _ = datasets(cfg, data_dir)

        def trainer(cfg, *, resume, checkpoint, progress):
            return train(
                cfg,
                build=build,
                data=data,
                collate=collate,
                num_workers=num_workers,
                progress=progress,
                resume=resume,
                checkpoint=checkpoint,
            )

        return trainer

    try:
        run = T.stored(
            cfg,
            make_trainer,
            recompute=recompute,
            progress=progress,
            root=root,
            check_resume=lambda state: check_resume(state, cfg),
        )
    except NonFiniteLoss as e:
        folder, m = store.run_dir(cfg.experiment, C.config_hash(cfg), root), store.Metrics(e.rows)
        return [
            anti_flat.Outcome(condition, s, cfg, m, folder, diverged=str(e), diverged_at=e.step)
            for s in cfg.seeds
        ]
    return [
        anti_flat.Outcome(condition, s, cfg, run.metrics, run.path, summary=run.summary) for s in cfg.seeds
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
