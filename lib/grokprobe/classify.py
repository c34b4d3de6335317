"""The training loop for image classifiers (E2/E3 and their CPU stand-ins on digits).

Seeds run one after another (each its own model). Inside an epoch nothing synchronises with the
host: batch losses, the penalty and the first non-finite step accumulate on the device and are
read once per epoch, when the metrics of the frozen model are computed on the full train and
validation sets (SPEC D17: the authors averaged over the epoch's training passes instead; the
`batch_*` metrics keep that view for loss and penalty).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from . import metrics as M
from .classifiers import build_classifier
from .data import image_data
from .regularizers import Unplug, frobenius_cap, penalty_term
from .runtime import NonFiniteLoss, pick_device


@torch.no_grad()
def forward_all(model, x, eval_batch):
    outs = [model(xb) for xb in x.split(eval_batch)]
    return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])


@torch.no_grad()
def evaluate(model, data, cfg, *, epoch, seed, penalty_on) -> list[tuple]:
    model.eval()
    rows = []
    W = model.classifier.weight
    for split, x, y in (("train", data.x_train, data.y_train), ("val", data.x_val, data.y_val)):
        z, f = forward_all(model, x, cfg.eval_batch)
        if not torch.isfinite(z).all():
            raise NonFiniteLoss(epoch, [seed], unit="epoch")
        vals = {
            "loss": F.cross_entropy(z.double(), y),
            "acc": M.accuracy(z, y),
            "kappa": M.relative_flatness(f, z, W),  # canonical: tau = 1, raw phi (SPEC D14)
        }
        if split == "train":
            stats = M.class_mean_stats(f, y)
            etf = M.simplex_etf_angle(data.num_classes)
            angles = M.class_mean_angles(f, y)
            off = ~torch.eye(len(angles), dtype=torch.bool, device=angles.device)
            vals.update(
                kappa_exact=M.relative_flatness_exact(f, z, W),
                penalty_R=M.relative_flatness(
                    f, z, W, tau=cfg.tau, normalize_features=cfg.normalize_features
                ),
                ncc=M.ncc(f, y),
                nc1=M.nc1(f, y),
                nc2=M.nc2(f, y),
                nc3=M.nc3(f, y, W),
                nc4=M.nc4(f, y, z),
                mean_distance=stats["mean_distance"],
                mean_variance=stats["mean_variance"],
                angle_dev=(angles[off] - etf).abs().mean(),  # mean |angle - simplex ETF angle| (Fig 3)
                **M.angle_quantiles(angles[off]),
                w_norm=W.double().norm(),
                penalty_on=torch.tensor(float(penalty_on)),
            )
        values = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vals.values()]).tolist()
        rows += [(epoch, seed, split, k, v) for k, v in zip(vals, values)]
    model.train()
    return rows


def augment_batch(x, g):
    """Random crop (pad 4) + horizontal flip on the device, as the CIFAR Fig 7 runs."""
    B, _, H, W = x.shape
    pad = F.pad(x, (4, 4, 4, 4))
    i = torch.randint(0, 9, (B,), generator=g).tolist()
    j = torch.randint(0, 9, (B,), generator=g).tolist()
    out = torch.stack([pad[b, :, i[b] : i[b] + H, j[b] : j[b] + W] for b in range(B)])
    flip = torch.rand(B, generator=g) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train(cfg, *, resume=None, checkpoint=None, progress=True):
    """Train every seed of cfg in turn; returns (rows, summary). Epoch 0 is the initial model."""
    device = pick_device(cfg.device)
    data = image_data(cfg.task, split_seed=cfg.split_seed, normalize="cifar" if cfg.augment else "half").to(
        device
    )
    N = len(data.y_train)
    unplug = Unplug(
        at=cfg.unplug_at, total=cfg.epochs, bump=cfg.bump, wd_after=cfg.wd_after, eta_min=cfg.eta_min
    )
    rows, t0, epochs_run = [], time.perf_counter(), 0
    start_seed, start_epoch = 0, 0
    if resume is not None:
        rows, start_seed, start_epoch = list(resume["rows"]), resume["seed_index"], resume["epoch"]
    for si in range(start_seed, len(cfg.seeds)):
        seed = cfg.seeds[si]
        torch.manual_seed(seed)  # model initialisation
        model = build_classifier(
            cfg.arch, in_shape=tuple(data.x_train.shape[1:]), num_classes=data.num_classes
        )
        model = model.to(device)
        opt = torch.optim.SGD(
            model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        g = torch.Generator().manual_seed(seed)
        epoch = 0
        if resume is not None and si == start_seed and start_epoch > 0:
            model.load_state_dict(resume["model"])
            opt.load_state_dict(resume["opt"])
            g.set_state(resume["gen"])
            epoch = start_epoch
        else:
            rows += evaluate(model, data, cfg, epoch=0, seed=seed, penalty_on=cfg.penalty != "none")
        model.train()
        while epoch < cfg.epochs:
            unplug.apply(opt, epoch, cfg.lr, cfg.weight_decay)
            # keep_penalty (AntiFlatConfig): the SPEC D13 ablation, bump/wd/cosine with the penalty still on
            on = cfg.penalty != "none" and (unplug.active(epoch) or getattr(cfg, "keep_penalty", False))
            sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, ce, penalty
            bad = torch.zeros((), dtype=torch.bool, device=device)
            perm = torch.randperm(N, generator=g).to(device)
            n_batches = 0
            for idx in perm.split(cfg.batch_size):
                x, y = data.x_train[idx], data.y_train[idx]
                if cfg.augment:
                    x = augment_batch(x, g)
                logits, phi = model(x)
                ce = F.cross_entropy(logits, y)
                loss, r = ce, torch.zeros((), device=device)
                if on:
                    term, r = penalty_term(
                        cfg.penalty,
                        lam=cfg.lam,
                        features=phi,
                        logits=logits,
                        weight=model.classifier.weight,
                        labels=y,
                        tau=cfg.tau,
                        normalize_features=cfg.normalize_features,
                    )
                    loss = ce + term
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if cfg.cap > 0:
                    frobenius_cap(model.classifier.weight, cfg.cap)
                sums += torch.stack([loss.detach().double(), ce.detach().double(), r.detach().double()])
                bad |= ~torch.isfinite(loss.detach())
                n_batches += 1
            epoch += 1
            epochs_run += 1
            if bad.item():
                raise NonFiniteLoss(epoch, [seed], rows, unit="epoch")
            batch = (sums / n_batches).tolist()
            rows += [
                (epoch, seed, "train", k, v)
                for k, v in zip(("batch_loss", "batch_ce", "batch_penalty"), batch)
            ]
            try:
                rows += evaluate(model, data, cfg, epoch=epoch, seed=seed, penalty_on=on)
            except NonFiniteLoss as e:
                raise NonFiniteLoss(e.step, e.seeds, rows, unit="epoch") from None
            if progress and (epoch % max(1, cfg.epochs // 10) == 0 or epoch == cfg.epochs):
                acc = {r[2]: r[4] for r in rows[-40:] if r[0] == epoch and r[3] == "acc"}
                print(
                    f"seed {seed} epoch {epoch:>4d}  {time.perf_counter() - t0:7.1f}s  "
                    f"train acc {acc['train']:.3f}  val acc {acc['val']:.3f}",
                    flush=True,
                )
            if checkpoint is not None and epoch % cfg.checkpoint_every == 0 and epoch < cfg.epochs:
                checkpoint(
                    {
                        "seed_index": si,
                        "epoch": epoch,
                        "model": model.state_dict(),
                        "opt": opt.state_dict(),
                        "gen": g.get_state(),
                        "rows": rows,
                    },
                    rows,
                )
        resume = None
    elapsed = time.perf_counter() - t0
    summary = {
        "device": str(device),
        "seconds": round(elapsed, 2),
        "epochs_run": epochs_run,
        "ms_per_epoch": round(1000 * elapsed / max(1, epochs_run), 2),
    }
    return rows, summary
