"""Seed batching: S seeds trained as one batched model against S sequential single-seed runs of the
same E1 config and length, interleaved in one process. On a CPU the model is already FLOP-bound, so
expect little; on a GPU batching removes S-1 of every S kernel launches and Python steps. The script
also splits a step into its shared and per-seed parts, which bounds what batching can win."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, parser, report  # noqa: E402

from grokprobe import config, grokking  # noqa: E402


def run(seeds, steps, p, device):
    cfg = config.resolve(
        "grokking",
        dict(p=p, train_frac=0.5, steps=steps, seeds=list(seeds), lr=1e-3, log_points=2, device=device),
        "quick",
    )
    return grokking.train(cfg, progress=False)


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    S, steps, p = (2, 5, 23) if args.quick else (args.seeds, args.steps, 97)
    seeds = list(range(S))
    sides = {
        f"batched S={S}": lambda: run(seeds, steps, p, args.device),
        f"sequential {S} x S=1": lambda: [run([s], steps, p, args.device) for s in seeds],
    }
    run(seeds[:1], 2, p, args.device)  # warm-up: first-call allocations would be charged to one side
    rounds = 1 if args.quick else args.rounds
    totals = interleaved(sides, rounds)
    work = {k: S * steps * rounds for k in sides}
    names = list(sides)
    report(
        f"seed batching on {args.device}, p={p}, {steps} steps",
        totals,
        work,
        "seed-steps/s",
        names[0],
        names[1],
    )
    # Model a run's cost per step as t(S) = a + b*S: a is what S seeds share when batched (Python,
    # dispatch, launches, optimizer bookkeeping), b what every seed costs (FLOPs, memory traffic).
    # Batching saves at most a*(S-1) per step, so a/(a+b) says how much there is to win at all.
    t1 = totals[names[1]] / (S * steps * rounds)  # one S=1 step
    tS = totals[names[0]] / (steps * rounds)  # one batched step
    b = (tS - t1) / (S - 1)
    a = t1 - b
    bound = f"{(a + b) / b:.2f}x" if b > 0 else "unbounded"
    print(
        f"  per step t(S) = a + b*S: a = {1e3 * a:.1f} ms shared, b = {1e3 * b:.1f} ms per seed; "
        f"shared part of a 1-seed step {a / t1:.0%}, so batching any number of seeds wins at most {bound}"
    )


if __name__ == "__main__":
    main()
