"""Shared helpers: interleaved timing, so both sides of a ratio see the same machine load."""

from __future__ import annotations

import argparse
import time


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that it runs (CI), not a measurement"
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per side")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    return ap


def interleaved(sides: dict, rounds: int) -> dict:
    """Run each side's callable once per round, alternating; returns total seconds per side."""
    totals = {k: 0.0 for k in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            t = time.perf_counter()
            fn()
            totals[name] += time.perf_counter() - t
    return totals


def report(title: str, totals: dict, work: dict, unit: str, ours: str, other: str) -> float:
    """Print per-side throughput and the ratio ours/other (higher = ours faster)."""
    print(f"== {title}")
    for k in totals:
        print(f"  {k:<28s} {work[k] / totals[k]:10.2f} {unit}  ({totals[k]:.2f} s)")
    ratio = (work[ours] / totals[ours]) / (work[other] / totals[other])
    print(f"  RATIO {ours} / {other}: {ratio:.2f}x")
    return ratio
