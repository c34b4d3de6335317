"""Metric cost: the share of wall time the E1 loop spends on logging, per profile schedule.

One process trains the E1 model (3 seeds batched) for a few hundred steps with logging steps
spread through the run, repeated for `--rounds`; the loop itself times its steps and its logging
steps (loss/accuracy on every train and val row, kappa and its variants, NCC, NC1-NC4, angles).
From the measured seconds per training step and per logging step it prints the share each profile's
schedule implies: n_log * t_log / (n_log * t_log + steps * t_step). The default schedule is
GrokConfig's (160 log-spaced points over 1e5 steps, the paper profile); quick packs 60 points into
3.5k steps, so its share is higher.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser  # noqa: E402

from grokprobe import config, grokking  # noqa: E402
from grokprobe.runtime import log_steps  # noqa: E402


def measure(cfg, rounds: int) -> tuple[float, float]:
    """Seconds per training step and per logging step, summed over `rounds` runs of cfg."""
    train_s = log_s = 0.0
    n_steps = n_logs = 0
    for _ in range(rounds):
        _, summary = grokking.train(cfg, progress=False)
        log_s += summary["log_seconds"]
        train_s += summary["seconds"] - summary["log_seconds"]
        n_steps += summary["steps_run"]
        n_logs += len(summary["wall_at_step"])
    return train_s / n_steps, log_s / n_logs


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--steps", type=int, default=200, help="training steps per round")
    ap.add_argument("--log-points", type=int, default=8, help="logging steps per round")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = dict(p=23, d_model=32, d_ff=64, n_heads=4) if args.quick else {}
    steps = 20 if args.quick else args.steps
    params = dict(shape, steps=steps, log_points=args.log_points, device=args.device)
    cfg = config.resolve("grokking", params, "quick")
    t_step, t_log = measure(cfg, 1 if args.quick else args.rounds)
    print(f"== logging cost, E1 model p={cfg.p} d={cfg.d_model} batch {cfg.batch_size} S={len(cfg.seeds)}")
    print(f"  one training step  {1000 * t_step:9.1f} ms")
    print(f"  one logging step   {1000 * t_log:9.1f} ms  (= {t_log / t_step:.1f} training steps)")
    for profile in ("quick", "paper"):
        sched = config.resolve("grokking", {}, profile)
        n_log = len(log_steps(sched.steps, sched.log_points))
        share = n_log * t_log / (n_log * t_log + sched.steps * t_step)
        default = "  (GrokConfig's default schedule)" if sched.log_points == 160 else ""
        print(
            f"  SHARE {profile}: {n_log} logging steps over {sched.steps} steps -> {100 * share:.1f}%{default}"
        )


if __name__ == "__main__":
    main()
