"""Absolute paths: papermill, Jupyter, nbmake and pytest all start in different working directories."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "figures"
# GROKPROBE_RESULTS lets tests and cluster jobs point the store somewhere else.
RESULTS = Path(os.environ.get("GROKPROBE_RESULTS", ROOT / "results")).resolve()
BUILD = ROOT / "build"
DATA = Path(os.environ.get("GROKPROBE_DATA", ROOT / "data")).resolve()


def results_root(profile: str) -> Path:
    """Smoke runs (CI, nbmake) live under build/smoke/ and never touch results/ or figures/."""
    return BUILD / "smoke" / "results" if profile == "smoke" else RESULTS


def figures_root(profile: str) -> Path:
    return BUILD / "smoke" / "figures" if profile == "smoke" else FIGURES
