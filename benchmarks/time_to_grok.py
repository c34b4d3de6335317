"""Time-to-grok rows for the README: train (or reload) the E1 run of a profile and print, per seed,
the steps and training seconds to 95% validation accuracy, ms per step and peak memory."""

from __future__ import annotations

import argparse
import platform

import torch

from grokprobe import analysis, config, paths, train


def rows_for(run) -> list[dict]:
    walls = dict((int(s), t) for s, t in run.summary.get("wall_at_step", []))
    out = []
    for seed in run.seeds:
        steps, va = run.metrics.series("acc", "val", seed)
        t95 = analysis.first_step(steps, va, 0.95)
        out.append(
            {
                "seed": seed,
                "steps_to_95%": t95,
                "seconds_to_95%": walls.get(t95) if t95 is not None else None,
                "ms_per_step": run.summary.get("ms_per_step"),
                "peak_mem_MB": run.summary.get("peak_memory_mb"),
            }
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="quick", choices=config.PROFILES)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--recompute", action="store_true")
    args = ap.parse_args()
    cfg = config.resolve("grokking", {"device": args.device}, args.profile)
    run = train.run(cfg, recompute=args.recompute, root=paths.results_root(args.profile))
    dev = run.summary.get("device", "?")
    name = (
        torch.cuda.get_device_name(0)
        if dev.startswith("cuda")
        else f"{platform.processor() or 'CPU'}, {torch.get_num_threads()} threads"
    )
    print(f"== time to grok, profile {args.profile}, device {dev} ({name}), seeds batched: {list(cfg.seeds)}")
    print(
        f"   wall {run.summary.get('seconds')} s for {cfg.steps} steps, logging share {run.summary.get('log_share')}"
    )
    print(analysis.format_table(rows_for(run)))


if __name__ == "__main__":
    main()
