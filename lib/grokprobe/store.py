"""The results store: results/<experiment>/<config-hash>/ holds one run.

    config.json     the resolved config, package version, provenance
    metrics.csv     tidy rows: step, seed, split, metric, value
    checkpoint.pt   the latest resumable training state (deleted once the run is DONE)
    DONE            written last; a folder without it is never read as a finished run
    FAILED          why a run stopped (non-finite loss, ...); its metrics up to then are kept

Every file is written to a temporary name in the same folder and renamed into place, so a killed
process leaves either the old file or the new one, never half of one. The store knows nothing of
training.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import paths

COLUMNS = ("step", "seed", "split", "metric", "value")


class StoreError(RuntimeError):
    """A run folder is incomplete, corrupted or does not match the config that asked for it."""


def run_dir(experiment: str, cfg_hash: str, root: Path | None = None) -> Path:
    return Path(root or paths.RESULTS) / experiment / cfg_hash


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise StoreError(f"cannot read {path}: {e}") from e


def write_metrics(path: Path, rows) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def save_torch(path: Path, obj) -> None:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_torch(path: Path):
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated or foreign file: report it, let the caller restart
        raise StoreError(f"unreadable checkpoint {path}: {type(e).__name__}: {e}") from e


class Metrics:
    """Tidy metric rows with the lookups the analysis needs, no pandas required."""

    def __init__(self, rows):
        self.rows = [(int(s), int(sd), str(sp), str(m), float(v)) for s, sd, sp, m, v in rows]

    @classmethod
    def read(cls, path: Path) -> Metrics:
        try:
            with open(path, newline="") as f:
                r = csv.reader(f)
                header = next(r)
                if tuple(header) != COLUMNS:
                    raise StoreError(f"{path}: header {header} is not {list(COLUMNS)}")
                rows = list(r)
            return cls(rows)
        except (OSError, ValueError, StopIteration) as e:
            raise StoreError(f"cannot read metrics {path}: {type(e).__name__}: {e}") from e

    @property
    def seeds(self) -> list[int]:
        return sorted({r[1] for r in self.rows})

    @property
    def names(self) -> list[tuple[str, str]]:
        return sorted({(r[2], r[3]) for r in self.rows})

    def series(self, metric: str, split: str = "train", seed: int | None = None):
        """(steps, values) of one metric; with seed=None, (steps, values (n_seeds, n_steps))."""
        if seed is not None:
            pts = sorted((r[0], r[4]) for r in self.rows if r[1] == seed and r[2] == split and r[3] == metric)
            if not pts:
                raise KeyError(f"no {split}/{metric} for seed {seed}")
            s, v = zip(*pts)
            return np.array(s), np.array(v)
        per_seed = [self.series(metric, split, sd) for sd in self.seeds]
        steps = per_seed[0][0]
        if any(len(s) != len(steps) or (s != steps).any() for s, _ in per_seed):
            raise StoreError(f"{split}/{metric}: seeds were logged at different steps")
        return steps, np.stack([v for _, v in per_seed])


def provenance() -> dict:
    import torch

    from . import __version__

    return {
        "grokprobe": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git": _git_describe(),
    }


def _git_describe() -> str | None:
    head = paths.ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (paths.ROOT / ".git" / ref[5:]).read_text().strip()[:12]
        return ref[:12]
    except OSError:
        return None


@contextmanager
def locked(folder: Path, timeout: float = 24 * 3600):
    """An exclusive lock on a run folder, so two processes never train or write the same run."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as f:
        start = time.monotonic()
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - start > timeout:
                    raise StoreError(f"{folder} is locked by another process") from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_done(folder: Path) -> bool:
    return (folder / "DONE").exists()


def check_complete(folder: Path, config: dict) -> Metrics:
    """The metrics of a finished run, after checking that it is whole and is the run asked for."""
    if not is_done(folder):
        raise StoreError(f"{folder} has no DONE marker: the run is incomplete")
    stored = read_json(folder / "config.json")
    if stored.get("config") != config:
        raise StoreError(f"{folder}/config.json does not match the requested config")
    metrics = Metrics.read(folder / "metrics.csv")
    done = read_json(folder / "DONE")
    if done.get("rows") != len(metrics.rows):
        raise StoreError(f"{folder}/metrics.csv has {len(metrics.rows)} rows, DONE says {done.get('rows')}")
    return metrics


def mark_done(folder: Path, n_rows: int, summary: dict | None = None) -> None:
    (folder / "FAILED").unlink(missing_ok=True)
    write_json(folder / "DONE", {"rows": n_rows, **(summary or {})})


def mark_failed(folder: Path, reason: str) -> None:
    write_json(folder / "FAILED", {"reason": reason, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
