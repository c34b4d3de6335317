"""Seed and lambda sweeps: one job per grid point, each calling train.run, on this machine or on Slurm.

    python -m grokprobe.sweep grokking --grid seed=1,42,15213 penalty=anti_flat lam=1e-3,1e-2 \\
        --profile paper --executor slurm --slurm-partition gpu --gpus-per-task 1

Every job writes into the same results store as the notebooks (results/<experiment>/<config-hash>/),
so a figure notebook that asks for one of the swept configs reloads it instead of training. Points
already DONE are skipped; a point whose job failed or was preempted keeps its checkpoint and resumes
from it when the same command is run again. Job records (ids, logs, outcomes) live in
<root>/<experiment>/_sweeps/<stamp>/jobs.json, and `--status` reports every point without submitting.

Python API (notebooks, scripts):
    cfgs = sweep.grid("grokking", {"seed": [1, 42, 15213], "penalty": ["anti_flat"], "lam": [1e-3, 1e-2]}, "paper")
    sweep.submit(cfgs, executor="local").wait()     # or executor="slurm", slurm=dict(partition=...)
    sweep.status(cfgs, root)                        # rows: hash, params, state, detail, log
    runs = sweep.collect(cfgs, root)                # the stored runs; never trains

This module submits and holds the CLI; building grids is in sweep_grid and reading the state of
points in sweep_status, both re-exported here so that sweep.<name> stays the one API.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shlex
import shutil
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from . import config as C
from . import paths, store, train
from .runtime import NonFiniteLoss
from .sweep_grid import grid, parse_grid

# unused here (collect) but re-exported: notebooks, scripts and the README call sweep.collect
from .sweep_status import (  # noqa: F401
    IN_FLIGHT,
    RESUBMIT,
    SWEEPS,
    Row,
    _fmt,
    _last_line,
    _varying,
    collect,
    format_rows,
    status,
    summary_line,
)

EXECUTORS = ("local", "slurm")


# ----------------------------------------------------------------------------------------------- job


@dataclass
class Result:
    """What a job returns (small and picklable): the stored run's hash, folder and summary."""

    hash: str
    path: str
    state: str  # done | diverged
    summary: dict = field(default_factory=dict)
    reason: str | None = None
    trained: bool = True  # False: the run was already stored when the job started


class TrainJob:
    """One grid point: train.run(cfg) into the store. Checkpointable for submitit (by duck typing, so
    that this module imports without submitit): on preemption or time-out, submitit calls checkpoint()
    and requeues the same call, and train.run resumes from the store's checkpoint.pt."""

    def __call__(self, cfg, root, log=None) -> Result:
        if "SLURM_CPUS_PER_TASK" in os.environ:  # one torch thread per allocated CPU, not per node core
            os.environ.setdefault("GROKPROBE_THREADS", os.environ["SLURM_CPUS_PER_TASK"])
        h = C.config_hash(cfg)
        folder = store.run_dir(cfg.experiment, h, root)
        with _logging_to(log):
            print(f"grokprobe.sweep: {cfg.experiment} {h} -> {folder}", flush=True)
            trained = not store.is_done(folder)
            try:
                run = train.run(cfg, root=root, progress=True)
            except NonFiniteLoss as e:
                return Result(h, str(folder), "diverged", reason=str(e))
            return Result(h, str(run.path), "done", dict(run.summary), trained=trained)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


@contextlib.contextmanager
def _logging_to(log):
    if log is None:
        yield
        return
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            yield
        except BaseException:
            traceback.print_exc(file=f)
            raise


def _worker_init(threads: int) -> None:
    os.environ.setdefault("GROKPROBE_THREADS", str(threads))


class _Inline:
    """A local job run in this process when its result is first asked for (like submitit's debug
    executor): no process start, no pickling, and pdb works."""

    def __init__(self, fn, *args):
        self._call, self._done, self._value, self._error = (fn, args), False, None, None

    def result(self):
        if not self._done:
            fn, args = self._call
            try:
                self._value = fn(*args)
            except Exception as e:
                self._error = e
            self._done = True
        if self._error is not None:
            raise self._error
        return self._value


# -------------------------------------------------------------------------------------------- submit


def _check_slurm() -> None:
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise RuntimeError("the slurm executor needs submitit: pip install -e '.[cluster]'") from None
    if shutil.which("sbatch") is None or shutil.which("srun") is None:
        raise RuntimeError(
            "the slurm executor needs sbatch and srun on PATH: run it on the cluster's login node"
        )


def slurm_executor(
    folder,
    *,
    partition: str | None = None,
    gpus_per_task: int = 1,
    cpus_per_task: int | None = 4,
    timeout_min: int = 240,
    mem_gb: float | None = None,
    array_parallelism: int | None = None,
    account: str | None = None,
    qos: str | None = None,
    constraint: str | None = None,
    setup: list[str] | None = None,
    max_timeouts: int = 5,
    name: str = "grokprobe",
):
    """A submitit executor for Slurm. One task per job, so gpus_per_task becomes --gpus-per-node.
    A job that times out is requeued up to max_timeouts times (preemptions do not count)."""
    _check_slurm()
    import submitit

    ex = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=max_timeouts)
    params = dict(
        name=name,
        timeout_min=timeout_min,
        gpus_per_node=gpus_per_task or None,
        cpus_per_task=cpus_per_task,
        mem_gb=mem_gb,
        slurm_partition=partition,
        slurm_array_parallelism=array_parallelism,
        slurm_account=account,
        slurm_qos=qos,
        slurm_constraint=constraint,
        slurm_setup=list(setup) if setup else None,
    )
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


@dataclass
class Job:
    config: object
    hash: str
    handle: object  # _Inline, concurrent.futures.Future or submitit.Job: .result() raises on failure
    job_id: str
    log: str | None


class Sweep:
    """Submitted jobs of one sweep. Local jobs run inside wait(); Slurm jobs run on the cluster."""

    def __init__(self, configs, root: Path, folder: Path, executor: str, jobs, skipped, pool=None, meta=None):
        self.configs, self.root, self.folder, self.executor = configs, root, folder, executor
        self.jobs, self.skipped, self._pool, self._meta = jobs, skipped, pool, meta or {}

    def _iter_done(self):
        if isinstance(self._pool, concurrent.futures.Executor):
            index = {j.handle: j for j in self.jobs}
            for fut in concurrent.futures.as_completed(index):
                yield index[fut]
        else:
            yield from self.jobs

    def wait(self, progress=None) -> list[Row]:
        """Run or wait for every job; records each outcome; returns status rows of all points.
        progress(i, n, job, state, detail) is called as each job finishes."""
        outcomes = {}
        try:
            for i, job in enumerate(self._iter_done(), 1):
                try:
                    res = job.handle.result()
                    state = res.state
                    if res.reason:
                        detail = res.reason.split(";")[0]
                    else:
                        detail = (
                            f"trained in {res.summary.get('seconds', '?')} s" if res.trained else "stored"
                        )
                except Exception as e:
                    state, detail = "failed", _last_line(f"{type(e).__name__}: {e}")
                outcomes[job.hash] = {"outcome": state, "detail": detail}
                self._write_records(outcomes)
                if progress:
                    progress(i, len(self.jobs), job, state, detail)
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
        return self.status()

    def status(self) -> list[Row]:
        return status(self.configs, self.root)

    def _write_records(self, outcomes=None) -> None:
        if not self.jobs:
            return
        jobs = []
        for j in self.jobs:
            rec = {"hash": j.hash, "job_id": j.job_id, "executor": self.executor, "log": j.log}
            if self.executor == "slurm":
                paths_ = j.handle.paths
                rec.update(folder=str(self.folder), result_pickle=str(paths_.result_pickle))
                rec.update(stdout=str(paths_.stdout), log=str(paths_.stderr))
            rec.update((outcomes or {}).get(j.hash, {}))
            jobs.append(rec)
        store.write_json(self.folder / "jobs.json", {**self._meta, "jobs": jobs})


def _new_folder(root: Path, experiment: str) -> Path:
    # microseconds in the name: sweep_status._job_records reads sweeps in name order, and two sweeps
    # started within one second must still sort by creation (a resubmission overrides the older record)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    folder = root / experiment / SWEEPS / f"{stamp}-{uuid.uuid4().hex[:4]}"
    folder.mkdir(parents=True)
    return folder


def submit(
    configs,
    *,
    root=None,
    executor: str = "local",
    workers: int = 1,
    folder=None,
    slurm: dict | None = None,
    retry_diverged: bool = False,
    force: bool = False,
) -> Sweep:
    """Submit a job for every config that is not finished (failed, partial or missing points; diverged
    ones too with retry_diverged; ones with a live job too with force). Finished runs are never touched.

    executor='local' runs the jobs in this process (workers=1) or in a pool of spawned processes, inside
    Sweep.wait(); executor='slurm' submits one Slurm job array through submitit, `slurm` holding the
    keyword arguments of slurm_executor()."""
    C._check_choice("executor", executor, EXECUTORS)
    if executor == "slurm":
        _check_slurm()
    root = Path(root or paths.RESULTS).resolve()
    if len({c.experiment for c in configs}) > 1:
        raise ValueError("a sweep covers one experiment; submit each experiment separately")
    wanted = (
        set(RESUBMIT) | ({"diverged"} if retry_diverged else set()) | (set(IN_FLIGHT) if force else set())
    )
    rows = status(configs, root)
    todo = [c for c, r in zip(configs, rows) if r.state in wanted]
    skipped = [r for r in rows if r.state not in wanted]
    if not todo:
        return Sweep(configs, root, Path(folder) if folder else None, executor, [], skipped)
    experiment = configs[0].experiment
    folder = Path(folder).resolve() if folder else _new_folder(root, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"experiment": experiment, "executor": executor, "root": str(root), "created": time.ctime()}
    fn, pool, jobs = TrainJob(), None, []
    hashes = [C.config_hash(c) for c in todo]
    if executor == "local":
        if workers > 1:
            import multiprocessing

            threads = max(1, (os.cpu_count() or 1) // workers)
            pool = concurrent.futures.ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(threads,),
            )
        for n, (cfg, h) in enumerate(zip(todo, hashes)):
            log = str(folder / f"{h}.log")
            handle = pool.submit(fn, cfg, str(root), log) if pool else _Inline(fn, cfg, str(root), log)
            jobs.append(Job(cfg, h, handle, f"local-{n}", log))
    else:
        ex = slurm_executor(folder, **{"name": f"grokprobe-{experiment}", **(slurm or {})})
        handles = ex.map_array(fn, todo, [str(root)] * len(todo))
        jobs = [Job(c, h, j, j.job_id, str(j.paths.stderr)) for c, h, j in zip(todo, hashes, handles)]
        meta["slurm"] = {k: v for k, v in (slurm or {}).items() if v is not None}
    sweep = Sweep(configs, root, folder, executor, jobs, skipped, pool, meta)
    sweep._write_records()
    return sweep


# ----------------------------------------------------------------------------------------------- CLI


def _parser():
    import argparse

    ap = argparse.ArgumentParser(
        prog="python -m grokprobe.sweep",
        description="Train a grid of configs into the results store, locally or on Slurm (submitit).",
    )
    ap.add_argument("experiment", choices=list(C.CONFIGS))
    ap.add_argument(
        "--grid",
        nargs="+",
        default=[],
        metavar="NAME=V1,V2",
        help="values per config field, one job per combination; seed=1,42 is a job per seed, "
        "seeds=1,42,15213 one job training them batched ('/' between batches)",
    )
    ap.add_argument("--profile", default="quick", choices=C.PROFILES)
    ap.add_argument("--executor", default="local", choices=EXECUTORS)
    ap.add_argument("--root", type=Path, help="results root (default: the profile's, see paths.results_root)")
    ap.add_argument("--status", action="store_true", help="report every point, submit nothing")
    ap.add_argument("--workers", type=int, default=1, help="local: parallel processes (1 = in this process)")
    ap.add_argument("--wait", action="store_true", help="slurm: wait for the jobs and report them")
    ap.add_argument("--retry-diverged", action="store_true", help="train diverged points again")
    ap.add_argument("--force", action="store_true", help="resubmit points whose jobs look queued or running")
    s = ap.add_argument_group("slurm")
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-account")
    s.add_argument("--slurm-qos")
    s.add_argument("--slurm-constraint")
    s.add_argument("--slurm-setup", action="append", help="shell line run before the job (repeatable)")
    s.add_argument(
        "--gpus-per-task", type=int, default=1, help="GPUs per job (one task each: --gpus-per-node)"
    )
    s.add_argument("--cpus-per-task", type=int, default=4)
    s.add_argument("--mem-gb", type=float)
    s.add_argument("--timeout-min", type=int, default=240, help="per job; timed-out jobs requeue and resume")
    s.add_argument("--max-timeouts", type=int, default=5)
    s.add_argument("--array-parallelism", type=int, help="jobs of the array running at once")
    return ap


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = _parser()
    a = ap.parse_args(argv)
    try:
        configs = grid(a.experiment, parse_grid(a.experiment, a.grid), a.profile)
    except (ValueError, TypeError) as e:
        ap.error(str(e))
    root = (a.root or paths.results_root(a.profile)).resolve()
    where = root / a.experiment
    if a.status:
        rows = status(configs, root)
        print(format_rows(rows), summary_line(rows), f"results: {where}", sep="\n")
        return int(any(r.state == "failed" for r in rows))
    slurm = dict(
        partition=a.slurm_partition,
        account=a.slurm_account,
        qos=a.slurm_qos,
        constraint=a.slurm_constraint,
        setup=a.slurm_setup,
        gpus_per_task=a.gpus_per_task,
        cpus_per_task=a.cpus_per_task,
        mem_gb=a.mem_gb,
        timeout_min=a.timeout_min,
        max_timeouts=a.max_timeouts,
        array_parallelism=a.array_parallelism,
    )
    try:
        sw = submit(
            configs,
            root=root,
            executor=a.executor,
            workers=a.workers,
            slurm=slurm,
            retry_diverged=a.retry_diverged,
            force=a.force,
        )
    except RuntimeError as e:  # no submitit, no Slurm here, or sbatch refused the job
        print(f"error: {e}", file=sys.stderr)
        return 2
    how = f"{a.executor} ({a.workers} worker{'s' * (a.workers > 1)})" if a.executor == "local" else "slurm"
    print(
        f"sweep {a.experiment} (profile {a.profile}): {len(configs)} points, {len(sw.jobs)} to run on "
        f"{how}, skipped: {summary_line(sw.skipped).partition(': ')[2] if sw.skipped else 'none'}",
        flush=True,
    )
    if sw.folder:
        print(f"logs: {sw.folder}", flush=True)
    varying = _varying(configs)

    def progress(i, n, job, state, detail):
        d = C.hashed_dict(job.config)
        params = " ".join(f"{k}={_fmt(d[k])}" for k in varying)
        print(f"[{i}/{n}] {job.hash}  {params}  {state}: {detail}", flush=True)

    if a.executor == "slurm" and sw.jobs:
        ids = [j.job_id for j in sw.jobs]
        print(
            f"Slurm job array {ids[0].split('_')[0]} ({ids[0]} .. {ids[-1]})"
            if len(ids) > 1
            else f"Slurm job {ids[0]}"
        )
        if not a.wait:
            print("progress: python -m grokprobe.sweep " + shlex.join([*argv, "--status"]))
            print(f"results: {where}")
            return 0
    rows = sw.wait(progress) if sw.jobs else status(configs, root)
    print(format_rows(rows), summary_line(rows), f"results: {where}", sep="\n")
    return int(any(r.state == "failed" for r in rows))


if __name__ == "__main__":  # run through the package module, so jobs pickle grokprobe.sweep, not __main__
    from grokprobe import sweep as _sweep

    sys.exit(_sweep.main())
