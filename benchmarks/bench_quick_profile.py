"""Wall time of notebook 01's quick E1 run (3 seeds, 3.5k steps) before and after the performance
work: the quick config trained by grokprobe (seeds batched, shared prefix, loss positions only, no
host sync outside logging, full metrics on the quick schedule) against the same seeds and steps
trained one after another by the typical loop of bench_train.py (which logs train and validation
accuracy once per epoch and nothing else, so the "before" side does *less* work).

Each side runs once (a full run is minutes long); read the ratio on a quiet machine."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import interleaved, parser, report  # noqa: E402
from bench_train import naive_run  # noqa: E402

from grokprobe import config, grokking  # noqa: E402


def main() -> None:
    ap = parser(__doc__)
    ap.set_defaults(rounds=1)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {"device": "cpu"}
    if args.quick:  # tiny sizes: proves the script runs, measures nothing
        over |= {"p": 23, "steps": 30, "log_points": 5, "seeds": [1, 2]}
    cfg = config.resolve("grokking", over, "quick")
    summary = {}

    def ours():
        summary.update(grokking.train(cfg, progress=False)[1])

    def before():
        for seed in cfg.seeds:
            naive_run(cfg.steps, cfg.p, cfg.train_frac, cfg.batch_size, seed=seed, lr=cfg.lr)

    sides = {"grokprobe (quick profile)": ours, "typical loop, seeds in turn": before}
    totals = interleaved(sides, args.rounds)
    work = {k: len(cfg.seeds) * cfg.steps * args.rounds for k in sides}
    report(
        f"notebook 01's quick E1 run: p={cfg.p}, {len(cfg.seeds)} seeds x {cfg.steps} steps, "
        f"{torch.get_num_threads()} thread(s)",
        totals,
        work,
        "seed-steps/s",
        *sides,
    )
    print(
        f"  grokprobe: logging {summary['log_seconds']} s of {summary['seconds']} s, peak {summary['peak_memory_mb']} MB"
    )


if __name__ == "__main__":
    main()
