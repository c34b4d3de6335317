"""figures/manifest.json: which notebook makes which figure (run_all.sh and the tests read it)."""

from __future__ import annotations

import argparse
import json

from . import paths


def load() -> list[dict]:
    return json.loads((paths.FIGURES / "manifest.json").read_text())["figures"]


def notebooks(only: str = "") -> list[str]:
    """Notebooks in manifest order, each once; `only` = comma-separated prefixes like '01,03'."""
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    seen = []
    for entry in load():
        nb = entry["notebook"]
        if nb not in seen and (not wanted or any(nb.startswith(w) for w in wanted)):
            seen.append(nb)
    return seen


if __name__ == "__main__":
    ap = argparse.ArgumentParser(prog="python -m grokprobe.manifest")
    ap.add_argument("what", choices=["notebooks"])
    ap.add_argument("--only", default="")
    print("\n".join(notebooks(ap.parse_args().only)))
