"""The E1 training step's speed knobs against the default float32 eager step: precision=bfloat16
(autocast) and torch_compile=True, same config and seeds, interleaved in one process.

Steady-state throughput is read from the loop's own training clock (logging excluded) between a
logging step after the first epoch -- by then torch.compile has traced both batch shapes, the full
batch and an epoch's smaller last one -- and the last step; the seconds before it, compilation
included, are printed apart. Ratios > 1 mean the knob is faster than the default."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser  # noqa: E402

from grokprobe import config, grokking  # noqa: E402
from grokprobe.runtime import log_steps  # noqa: E402

KNOBS = {
    "float32 eager (default)": {},
    "bfloat16 autocast": {"precision": "bfloat16"},
    "torch.compile": {"torch_compile": True},
}


def one(over: dict, p: int, steps: int, seeds: int, log_points: int, device: str) -> tuple[float, float]:
    """(ms per steady-state step, seconds before it) of one run."""
    cfg = config.resolve(
        "grokking",
        dict(
            p=p, steps=steps, seeds=list(range(seeds)), lr=1e-3, log_points=log_points, device=device, **over
        ),
        "quick",
    )
    _, summary = grokking.train(cfg, progress=False)
    walls = dict((int(s), t) for s, t in summary["wall_at_step"])
    first_epoch = -(-round(cfg.train_frac * p * p) // cfg.batch_size)
    mid = min(s for s in walls if s > first_epoch)
    return 1e3 * (walls[steps] - walls[mid]) / (steps - mid), walls[mid]


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    p, steps, seeds, rounds = (23, 12, 1, 1) if args.quick else (97, args.steps, args.seeds, args.rounds)
    # the fewest logging points that still log once after the first epoch (the clock's start)
    first_epoch = -(-round(0.5 * p * p) // 512)
    log_points = next(n for n in range(2, steps) if any(first_epoch < s < steps for s in log_steps(steps, n)))
    ms = {k: [] for k in KNOBS}
    warm = {k: [] for k in KNOBS}
    for _ in range(rounds):
        for name, over in KNOBS.items():
            m, w = one(over, p, steps, seeds, log_points, args.device)
            ms[name].append(m)
            warm[name].append(w)
    print(
        f"== E1 training step on {args.device}, p={p}, {seeds} seeds batched, {steps} steps x {rounds} rounds, {torch.get_num_threads()} thread(s)"
    )
    base = sum(ms["float32 eager (default)"]) / rounds
    for name in KNOBS:
        m = sum(ms[name]) / rounds
        print(
            f"  {name:<26s} {m:8.1f} ms/step   first steps {max(warm[name]):6.1f} s   "
            f"RATIO vs default: {base / m:.2f}x"
        )


if __name__ == "__main__":
    main()
