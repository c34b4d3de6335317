"""The E1 training loop: the GrokTransformer on modular arithmetic, all seeds batched.

The step loop keeps the data on the device, draws batches by index and never synchronises with
the host: the learning rate is set from Python numbers, and a non-finite loss is only *recorded*
on the device (the first bad step) and checked at logging steps, where all metric work happens.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time

import torch
import torch.nn.functional as F

from . import hessian
from . import metrics as M
from .data import modular_arithmetic
from .models import GrokTransformer, GrokTransformerConfig
from .regularizers import Unplug, frobenius_cap, penalty_term
from .representativeness import representativeness
from .runtime import NonFiniteLoss, log_steps, peak_memory_mb, pick_device


def build(cfg, device):
    data = modular_arithmetic(cfg.p, cfg.op, cfg.train_frac, cfg.split_seed)
    mcfg = GrokTransformerConfig(
        vocab_size=data.vocab_size,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
    )
    model = GrokTransformer(seeds=cfg.seeds, config=mcfg).to(device)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), eps=1e-8, weight_decay=cfg.weight_decay
    )
    return data, model, opt


@torch.no_grad()
def forward_all(model, data, split, eval_batch):
    """Logits and phi at positions 4 and 5 for every row of a split, in chunks of eval_batch rows."""
    S = model.n_seeds
    prefixes = data.prefixes.to(split.tokens.device)
    outs = [
        model.forward_prefixed(prefixes, i.expand(S, -1), s.expand(S, -1, -1))
        for i, s in zip(split.prefix_index.split(eval_batch), split.suffix.split(eval_batch))
    ]
    return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)  # (S,N,2,V), (S,N,2,D)


@torch.no_grad()
def evaluate(model, data, step, eval_batch, cfg=None, penalty_on=False) -> list[tuple]:
    """All logged metrics at one step: loss/accuracy on both splits, the geometry on the train split.

    phi and the faithful kappa use the "=" position (SPEC §2.2, recommended version); kappa_code is
    the authors'-code variant (softmax of the product of both positions' logits, both phis; D6).
    NCC and NC1-4 use the "=" position's features labelled by the answer (equal to the authors'
    two-position NCC once their EOS class is dropped, D7).
    """
    rows = []
    W_all = model.output_weight()
    # every parameter has a leading seed dimension: one squared norm per seed
    weight_norm = sum(p.detach().double().flatten(1).pow(2).sum(1) for p in model.parameters()).sqrt()
    train_eq = {}  # seed -> ("=" features, logits) of the train split, for representativeness
    for split_name, split in (("train", data.train), ("val", data.val)):
        logits, phi = forward_all(model, data, split, eval_batch)
        tgt = split.targets  # (N, 2)
        finite = torch.isfinite(logits).flatten(1).all(1).tolist()
        if not all(finite):  # the last update already broke the weights; no metric is meaningful
            raise NonFiniteLoss(step, [sd for sd, ok in zip(model.seeds, finite) if not ok])
        for s, seed in enumerate(model.seeds):
            z, f, W = logits[s], phi[s], W_all[s]
            loss = F.cross_entropy(z.reshape(-1, z.shape[-1]).double(), tgt.reshape(-1))
            acc = (z.argmax(-1) == tgt).all(-1).double().mean()
            vals = {"loss": loss, "acc": acc, "kappa": M.relative_flatness(f[:, 0], z[:, 0], W)}
            if split_name == "train":
                y = tgt[:, 0]
                stats = M.class_mean_stats(f[:, 0], y)
                angles = M.class_mean_angles(f[:, 0], y)
                off = ~torch.eye(len(angles), dtype=torch.bool, device=angles.device)
                etf = M.simplex_etf_angle(len(angles))  # over the answer classes present
                vals.update(
                    kappa_exact=M.relative_flatness_exact(f[:, 0], z[:, 0], W),
                    kappa_code=M.relative_flatness_grok_code(f[:, 0], f[:, 1], z[:, 0], z[:, 1], W),
                    trace_h=M.hessian_trace_wrt_weight(f[:, 0], z[:, 0]),
                    ncc=M.ncc(f[:, 0], y),
                    nc1=M.nc1(f[:, 0], y),
                    nc2=M.nc2(f[:, 0], y),
                    nc3=M.nc3(f[:, 0], y, W),
                    nc4=M.nc4(f[:, 0], y, z[:, 0]),
                    mean_distance=stats["mean_distance"],
                    mean_variance=stats["mean_variance"],
                    angle_dev=(angles[off] - etf).abs().mean(),  # Fig 3, as classify.evaluate
                    **M.angle_quantiles(angles[off]),
                    w_norm=W.double().norm(),
                    weight_norm=weight_norm[s],
                )
                if cfg is not None and cfg.representativeness:
                    train_eq[s] = (f[:, 0], z[:, 0])
            elif cfg is not None and cfg.representativeness:  # held-out loss vs the train KDE's
                n = cfg.kde_rows or len(f)  # a mean over held-out rows: a subset estimates it
                vals["rep"] = representativeness(
                    *train_eq[s], f[:n, 0], z[:n, 0], tgt[:n, 0], bandwidth=cfg.kde_bandwidth
                )
                if cfg is not None and cfg.penalty != "none":  # the regulariser's own view (SPEC D14)
                    vals["penalty_R"] = M.relative_flatness(
                        f[:, 0], z[:, 0], W, tau=cfg.tau, normalize_features=cfg.normalize_features
                    )
                    vals["penalty_on"] = torch.tensor(float(penalty_on))
            values = torch.stack([torch.as_tensor(v, dtype=torch.float64) for v in vals.values()]).tolist()
            rows += [(step, seed, split_name, k, v) for k, v in zip(vals, values)]
    return rows


def curvature(model, data, cfg, step, v0=None):
    """Hessian trace (Hutchinson) and top eigenvalue of the training loss over all parameters.

    The loss is the training objective without any penalty, on the first cfg.curvature_rows rows of
    the (already shuffled) training split, each seed's mean as in the step loop; the Hessian of the
    sum over seeds is block diagonal, so one Hessian-vector product serves every seed. The probes
    are seeded by the step, so a resumed run draws the same ones. Returns (rows, vectors) where
    vectors warm-start the power iteration at the next logging step.
    """
    split = data.train
    n, S = min(cfg.curvature_rows, len(split)), model.n_seeds
    idx = torch.arange(n, device=split.tokens.device).expand(S, n)  # (S, n)
    prefixes = data.prefixes.to(split.tokens.device)
    a, suffix, tgt = split.prefix_index[idx], split.suffix[idx], split.targets[idx]

    def loss_fn():
        logits, _ = model.forward_prefixed(prefixes, a, suffix)  # (S, n, 2, V)
        per = F.cross_entropy(logits.flatten(0, 2), tgt.flatten(), reduction="none")
        return per.view(S, -1).mean(1).sum()

    g = torch.Generator().manual_seed(1_000_003 * (step + 1))
    with torch.enable_grad():
        out = hessian.curvature(
            model, loss_fn, probes=cfg.curvature_probes, iters=cfg.curvature_iters, generator=g, v0=v0
        )
    rows = []
    for s, seed in enumerate(model.seeds):
        for k in ("hess_trace", "hess_trace_se", "hess_top"):
            rows.append((step, seed, "train", k, float(out[k][s])))
        rows.append((step, seed, "train", "hess_iters", float(out["hess_iters"])))
    return rows, out["vectors"]


def train(cfg, *, resume=None, checkpoint=None, progress=True):
    """Train every seed of `cfg`; returns (rows, summary).

    resume: a state from `checkpoint` to continue from (bitwise on CPU); checkpoint(state, rows) is
    called every cfg.checkpoint_every steps at a logging step.
    """
    device = pick_device(cfg.device)
    data, model, opt = build(cfg, device)
    # "EOS a op" is shared by every equation with the same a: computed once per a (forward_prefixed)
    data = type(data)(data.p, data.op, data.train.to(device), data.val.to(device))
    prefixes, train_a, train_suffix = data.prefixes.to(device), data.train.prefix_index, data.train.suffix
    train_tgt = data.train.targets
    N, S, B = len(data.train), model.n_seeds, cfg.batch_size
    gens = [torch.Generator().manual_seed(seed) for seed in cfg.seeds]
    schedule = log_steps(cfg.steps, cfg.log_points)
    rows, step, perm, pos, last_ckpt = [], 0, None, N, 0
    first_bad = torch.full((S,), -1, dtype=torch.long, device=device)
    unplug = Unplug(
        at=cfg.unplug_at, total=cfg.steps, bump=cfg.bump, wd_after=cfg.wd_after, eta_min=cfg.eta_min
    )

    def penalty_on(at):
        return cfg.penalty != "none" and unplug.active(at)

    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["opt"])
        for g, st in zip(gens, resume["gens"]):
            g.set_state(st)
        rows, step, pos, last_ckpt = list(resume["rows"]), resume["step"], resume["pos"], resume["step"]
        perm = resume["perm"].to(device)
    t_grok = resume.get("t_grok") if resume is not None else None  # all seeds' val acc >= 99%
    curv_v = None  # power-iteration vectors carried between logging steps (and checkpoints)
    if resume is not None and resume.get("curv_v") is not None:
        curv_v = [v.to(device) for v in resume["curv_v"]]
    start, t0 = step, time.perf_counter()
    prior_seconds = resume.get("seconds", 0.0) if resume is not None else 0.0
    walls = list(resume.get("walls", [])) if resume is not None else []
    pending = [t for t in schedule if t >= step and not (resume is not None and t == step)]

    log_seconds = 0.0

    def log(at):
        nonlocal last_ckpt, log_seconds, curv_v, t_grok
        t_log = time.perf_counter()
        bad = first_bad.tolist()
        if any(b >= 0 for b in bad):
            raise NonFiniteLoss(
                min(b for b in bad if b >= 0), [sd for sd, b in zip(cfg.seeds, bad) if b >= 0], rows
            )
        model.eval()
        # training wall time so far (logging excluded), for time-to-grok tables; kept out of
        # metrics.csv so that identical configs keep identical metric files
        walls.append([at, round(t_log - t0 - log_seconds + prior_seconds, 3)])
        try:
            new_rows = evaluate(model, data, at, cfg.eval_batch, cfg, penalty_on(at))
            rows.extend(new_rows)
        except NonFiniteLoss as e:
            raise NonFiniteLoss(e.step, e.seeds, rows) from None
        if cfg.curvature_probes > 0:
            curv_rows, curv_v = curvature(model, data, cfg, at, curv_v)
            rows.extend(curv_rows)
        if t_grok is None and cfg.early_stop:
            if all(r[4] >= 0.99 for r in new_rows if r[2] == "val" and r[3] == "acc"):
                t_grok = max(at, 1)
        model.train()
        if progress and (at in schedule[:: max(1, len(schedule) // 12)] or at == cfg.steps):
            accs = {(r[1], r[2]): r[4] for r in rows if r[0] == at and r[3] == "acc"}
            tr = " ".join(f"{accs[(sd, 'train')]:.2f}" for sd in cfg.seeds)
            va = " ".join(f"{accs[(sd, 'val')]:.2f}" for sd in cfg.seeds)
            print(
                f"step {at:>7d}  {time.perf_counter() - t0:7.1f}s  train acc {tr}  val acc {va}", flush=True
            )
        if checkpoint is not None and at - last_ckpt >= cfg.checkpoint_every and at < cfg.steps:
            checkpoint(
                {
                    "model": model.state_dict(),
                    "opt": opt.state_dict(),
                    "gens": [g.get_state() for g in gens],
                    "rows": rows,
                    "step": at,
                    "seconds": t_log - t0 - log_seconds + prior_seconds,
                    "walls": walls,
                    "pos": pos,
                    "perm": perm.cpu(),
                    "curv_v": None if curv_v is None else [v.cpu() for v in curv_v],
                    "t_grok": t_grok,
                },
                rows,
            )
            last_ckpt = at
        log_seconds += time.perf_counter() - t_log

    # the speed knobs touch the training step only; metrics stay float32 and eager
    if cfg.torch_compile and device.type == "cpu" and not (shutil.which("g++") or shutil.which("clang++")):
        raise RuntimeError(
            "torch_compile=True on the CPU needs a C++ compiler (g++ or clang++) for torch.compile's "
            "inductor backend; install one (e.g. apt install g++) or leave torch_compile off"
        )
    forward = (
        torch.compile(model.forward_prefixed, dynamic=False) if cfg.torch_compile else model.forward_prefixed
    )
    if cfg.precision == "bfloat16":
        amp = functools.partial(torch.autocast, device.type, dtype=torch.bfloat16)
    else:
        amp = contextlib.nullcontext
    model.train()
    if pending and pending[0] == step:
        log(pending.pop(0))
    while step < cfg.steps:
        if pos >= N:  # new epoch: every seed reshuffles with its own generator
            perm = torch.stack([torch.randperm(N, generator=g) for g in gens]).to(device)  # (S, N)
            pos = 0
        idx = perm[:, pos : pos + B]  # (S, b)
        pos += B
        # linear warm-up, then constant (SPEC §4 E1); after an unplug: bump, weight decay, cosine
        warm = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        unplug.apply(opt, step, warm, cfg.weight_decay)
        with amp():
            logits, phi = forward(prefixes, train_a[idx], train_suffix[idx])  # (S,b,2,V), (S,b,2,D)
            tgt = train_tgt[idx]  # (S, b, 2)
            per_seed = F.cross_entropy(logits.flatten(0, 2), tgt.flatten(), reduction="none")
            per_seed = per_seed.view(S, -1).mean(1)  # (S,)
            loss = per_seed.sum()  # a sum: each copy gets exactly its own gradient
            if penalty_on(step):  # on the "=" position: phi, its logits and the answer as label
                W = model.output_weight()
                for s in range(S):
                    term, _ = penalty_term(
                        cfg.penalty,
                        lam=cfg.lam,
                        features=phi[s, :, 0],
                        logits=logits[s, :, 0],
                        weight=W[s],
                        labels=tgt[s, :, 0],
                        tau=cfg.tau,
                        normalize_features=cfg.normalize_features,
                    )
                    loss = loss + term
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cfg.cap > 0:
            for s in range(S):
                frobenius_cap(model.unembed.data[s], cfg.cap)
        step += 1
        first_bad = torch.where((first_bad < 0) & ~torch.isfinite(per_seed), step, first_bad)
        if pending and pending[0] == step:
            log(pending.pop(0))
            if t_grok is not None and step >= cfg.early_stop * t_grok:
                break
    elapsed = time.perf_counter() - t0
    summary = {
        "device": str(device),
        "seconds": round(elapsed, 2),
        "steps_run": step - start,
        "stopped_at": step,  # < cfg.steps when early_stop ended the run
        "ms_per_step": round(1000 * elapsed / max(1, step - start), 3),
        "log_seconds": round(log_seconds, 2),  # metrics, progress and checkpoints at logging steps
        "log_share": round(log_seconds / max(elapsed, 1e-9), 4),
        "peak_memory_mb": peak_memory_mb(device),
        "wall_at_step": walls,  # [step, seconds of training before it]
    }
    return rows, summary
