"""What state each point of a sweep is in, read from the results store and the sweeps' job records.

Apart from submitting because status() and collect() only read: notebooks and `--status` call them
without importing the executors, and sweep.submit() decides what to (re)run from these same rows."""

from __future__ import annotations

import fcntl
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import config as C
from . import paths, store, train

SWEEPS = "_sweeps"  # <root>/<experiment>/_sweeps/<stamp>/: job records and logs, next to the runs
# done: stored and complete. diverged: FAILED marker (non-finite loss), kept as a result.
# failed: the job died (traceback or Slurm state in the log). partial: a checkpoint, no live job.
# queued/running/submitted: a job is (or may be) on it. missing: nothing stored.
RESUBMIT = ("failed", "partial", "missing")
IN_FLIGHT = ("queued", "running", "submitted")
_SLURM_QUEUED = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "SUSPENDED", "RESIZING"}
_SLURM_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING"}


@dataclass
class Row:
    hash: str
    params: dict
    state: str
    detail: str = ""
    path: str = ""
    log: str | None = None
    job_id: str | None = None


def _varying(configs) -> list[str]:
    dicts = [C.hashed_dict(c) for c in configs]
    return [k for k in dicts[0] if any(d.get(k) != dicts[0][k] for d in dicts)] if len(dicts) > 1 else []


def _job_records(root: Path, experiment: str) -> dict[str, dict]:
    """The latest job record of every hash over all sweeps of this experiment."""
    records: dict[str, dict] = {}
    for f in sorted((root / experiment / SWEEPS).glob("*/jobs.json")):
        try:
            for rec in store.read_json(f).get("jobs", []):
                records[rec["hash"]] = rec
        except (store.StoreError, AttributeError, KeyError, TypeError):
            continue
    return records


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _slurm_state(rec: dict) -> str | None:
    if shutil.which("sacct") is None:
        return None
    try:
        from submitit.slurm.slurm import SlurmJob

        return SlurmJob(folder=rec["folder"], job_id=rec["job_id"]).state
    except Exception:
        return None


def _job_state(rec: dict) -> tuple[str, str] | None:
    """(state, detail) that a job record tells about a point the store does not show as finished."""
    if rec.get("outcome") == "failed":
        return "failed", rec.get("detail") or "the job failed"
    if rec.get("executor") != "slurm" or rec.get("outcome"):
        return None
    result = Path(rec.get("result_pickle", ""))
    if result.is_file():
        try:
            from submitit.core.utils import pickle_load

            kind, value = pickle_load(result)
        except Exception as e:
            return "failed", f"unreadable job result {result}: {type(e).__name__}: {e}"
        return ("failed", _last_line(value)) if kind == "error" else None
    state = _slurm_state(rec)
    if state is None or state.startswith("UNKNOWN"):
        return "submitted", f"Slurm job {rec['job_id']}"
    word = state.split()[0]
    if word in _SLURM_QUEUED:
        return "queued", f"Slurm job {rec['job_id']} {word}"
    if word in _SLURM_RUNNING:
        return "running", f"Slurm job {rec['job_id']} {word}"
    if word == "COMPLETED":
        return None
    return "failed", f"Slurm job {rec['job_id']} {state}"


def _lock_held(folder: Path) -> bool:
    lock = folder / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def _logged_to(folder: Path) -> str:
    try:
        steps = [r[0] for r in store.Metrics.read(folder / "metrics.csv").rows]
        return f", logged to step {max(steps)}" if steps else ""
    except store.StoreError:
        return ""


def _point(cfg, root: Path, rec: dict | None, params: dict) -> Row:
    h = C.config_hash(cfg)
    folder = store.run_dir(cfg.experiment, h, root)
    row = Row(h, params, "missing", path=str(folder))
    if rec:
        row.log, row.job_id = rec.get("log"), rec.get("job_id")
    if store.is_done(folder):
        try:
            done = train.load(cfg, root).summary
            row.state, row.detail = "done", f"{done.get('seconds', '?')} s on {done.get('device', '?')}"
            return row
        except store.StoreError as e:
            row.state, row.detail = "failed", f"stored run is damaged ({e}); resubmitting retrains it"
            return row
    if (folder / "FAILED").exists():
        try:
            reason = store.read_json(folder / "FAILED").get("reason", "")
        except store.StoreError:
            reason = "FAILED marker unreadable"
        row.state, row.detail = "diverged", reason.split(";")[0]
        return row
    ckpt = (folder / "checkpoint.pt").exists()
    resume = f"checkpoint{_logged_to(folder)}; resubmitting resumes" if ckpt else ""
    job = _job_state(rec) if rec else None
    if _lock_held(folder):
        row.state, row.detail = "running", resume or "training on this machine"
    elif job is not None:
        row.state = job[0]
        row.detail = f"{job[1]} ({resume})" if resume and job[0] == "failed" else job[1]
    elif ckpt:
        row.state, row.detail = "partial", resume
    return row


def status(configs, root=None) -> list[Row]:
    """One row per config: done | diverged | failed | running | queued | submitted | partial | missing,
    with a detail (time, reason, Slurm state, checkpoint step) and the job's log where one ran."""
    root = Path(root or paths.RESULTS).resolve()
    varying = _varying(configs)
    records = {e: _job_records(root, e) for e in {c.experiment for c in configs}}
    rows = []
    for cfg in configs:
        h, d = C.config_hash(cfg), C.hashed_dict(cfg)
        rows.append(_point(cfg, root, records[cfg.experiment].get(h), {k: d[k] for k in varying}))
    return rows


def collect(configs, root=None, *, allow_missing: bool = False) -> list[train.Run]:
    """The stored runs of configs, found by config hash; never trains. StoreError names the runs that
    are not finished (unless allow_missing, which returns the finished ones)."""
    runs, missing = [], []
    for cfg in configs:
        try:
            runs.append(train.load(cfg, root))
        except store.StoreError:
            missing.append(C.config_hash(cfg))
    if missing and not allow_missing:
        where = Path(root or paths.RESULTS).resolve()
        raise store.StoreError(
            f"{len(missing)} of {len(configs)} runs are not finished in {where}: {', '.join(missing)}; "
            "run the sweep (python -m grokprobe.sweep ...) first"
        )
    return runs


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def format_rows(rows: list[Row]) -> str:
    names = list(rows[0].params) if rows else []
    head = ["hash", *names, "state", "detail"]
    cells = [[r.hash, *(_fmt(r.params[n]) for n in names), r.state, r.detail] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *cells]]
    for r in rows:
        if r.state == "failed" and r.log:
            lines.append(f"log of {r.hash}: {r.log}")
    return "\n".join(lines)


def summary_line(rows: list[Row]) -> str:
    counts = {s: sum(r.state == s for r in rows) for s in dict.fromkeys(r.state for r in rows)}
    return f"{len(rows)} points: " + ", ".join(f"{n} {s}" for s, n in counts.items())
