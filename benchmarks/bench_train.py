"""E1 training throughput at the paper's shape (p = 97, 50% split, batch 512, d 128, 2 layers, one
seed): grokprobe's loop against a straightforward loop written the way typical grokking repos are
(nn.MultiheadAttention, a DataLoader, logits at every position, per-step .item(), train/val
accuracy every epoch). Both sides run the same number of steps, interleaved, in one process."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, parser, report  # noqa: E402

from grokprobe import config, grokking  # noqa: E402
from grokprobe.data import modular_arithmetic  # noqa: E402
from grokprobe.models import sinusoidal_positions  # noqa: E402


class NaiveBlock(nn.Module):
    def __init__(self, d, h, ff):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, h, bias=False, batch_first=True)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff, bias=False), nn.ReLU(), nn.Linear(ff, d, bias=False))

    def forward(self, x, mask):
        x = self.ln1(x + self.attn(x, x, x, attn_mask=mask, need_weights=False)[0])
        return self.ln2(x + self.ff(x))


class NaiveDecoder(nn.Module):
    def __init__(self, vocab, d=128, h=4, ff=512, layers=2):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.register_buffer("pos", sinusoidal_positions(50, d))
        self.blocks = nn.ModuleList(NaiveBlock(d, h, ff) for _ in range(layers))
        self.out = nn.Linear(d, vocab, bias=False)

    def forward(self, x):
        T = x.shape[1]
        mask = torch.triu(torch.ones(T, T, dtype=torch.bool), 1)
        h = self.embed(x) + self.pos[:T]
        for b in self.blocks:
            h = b(h, mask)
        return self.out(h)  # (B, T, V): every position, as typical repos do


def naive_run(steps: int, p: int, frac: float, batch: int, seed: int = 0, lr: float = 1e-3):
    data = modular_arithmetic(p, "+", frac)
    torch.manual_seed(seed)
    model = NaiveDecoder(data.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=1.0)
    ds = torch.utils.data.TensorDataset(data.train.inputs, data.train.targets)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True)
    step, history = 0, []
    while step < steps:
        for x, y in loader:
            logits = model(x)[:, 4:6]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(loss.item())  # the per-step host sync most repos have
            step += 1
            if step >= steps:
                break
        with torch.no_grad():  # accuracy on both splits once per epoch
            for split in (data.train, data.val):
                pred = model(split.inputs)[:, 4:6].argmax(-1)
                history.append((pred == split.targets).all(-1).float().mean().item())
    return history


def ours_run(steps: int, p: int, frac: float, batch: int, log_points: int):
    cfg = config.resolve(
        "grokking",
        dict(
            p=p,
            train_frac=frac,
            batch_size=batch,
            steps=steps,
            seeds=[0],
            lr=1e-3,
            log_points=log_points,
            device="cpu",
        ),
        "quick",
    )
    return grokking.train(cfg, progress=False)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument(
        "--log-points",
        type=int,
        default=0,
        help="grokprobe's logging points (0: the quick profile's density per decade of steps)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p, steps = (23, 20) if args.quick else (97, args.steps)
    # our default quick-profile schedule logs ~60 points over thousands of steps; over a short
    # benchmark we log at the same density (points per decade), so logging is charged fairly
    log_points = args.log_points or max(4, round(60 * (torch.tensor(float(steps)).log10() / 3.7).item()))
    sides = {
        "grokprobe": lambda: ours_run(steps, p, 0.5, 512, log_points),
        "typical loop": lambda: naive_run(steps, p, 0.5, 512),
    }
    totals = interleaved(sides, 1 if args.quick else args.rounds)
    work = {k: steps * (1 if args.quick else args.rounds) for k in sides}
    report(
        f"E1 training, p={p}, batch 512, d 128, 1 seed, {steps} steps x {args.rounds} rounds",
        totals,
        work,
        "steps/s",
        "grokprobe",
        "typical loop",
    )


if __name__ == "__main__":
    main()
