"""Every benchmark runs end to end with --quick (tiny sizes) and prints its ratio or share: the
numbers themselves are measured on a quiet machine (README, Performance), never asserted here."""

import os
import subprocess
import sys

import pytest

from grokprobe import paths

BENCH = paths.ROOT / "benchmarks"


@pytest.mark.parametrize(
    "script, marker",
    [
        ("bench_metrics.py", "RATIO"),
        ("bench_train.py", "RATIO"),
        ("bench_seeds.py", "RATIO"),
        ("bench_logging.py", "SHARE paper"),
        ("bench_quick_profile.py", "RATIO"),
        ("bench_flags.py", "RATIO vs default"),
    ],
)
def test_benchmark_runs_quick_and_prints_its_number(script, marker):
    env = {**os.environ, "GROKPROBE_THREADS": "1"}
    r = subprocess.run(
        [sys.executable, str(BENCH / script), "--quick", "--rounds", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert marker in r.stdout
