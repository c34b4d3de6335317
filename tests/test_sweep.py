"""Sweeps: grid parsing, a tiny local sweep end to end, failures and resumption, and the Slurm submission
checked through a fake sbatch (no cluster needed)."""

import os
import pickle
import re
import stat
import sys

import pytest

from grokprobe import config, store, sweep, sweep_status, train

# The smoke grokking config, shortened: about half a second per point on one thread.
SHORT = ["steps=20", "checkpoint_every=10"]


def cli(capsys, *args):
    rc = sweep.main(list(args))
    return rc, capsys.readouterr().out


def no_training(*args, **kwargs):
    pytest.fail("a stored run was trained again")


# --------------------------------------------------------------------------------------------- grid


def test_grid_values_are_parsed_by_field_type():
    axes = sweep.parse_grid(
        "grokking",
        ["seed=1,42", "lam=1e-3,0.01", "penalty=anti_flat", "normalize_features=false", "steps=100"],
    )
    assert axes == {
        "seed": [1, 42],
        "lam": [1e-3, 0.01],
        "penalty": ["anti_flat"],
        "normalize_features": [False],
        "steps": [100],
    }
    # seeds= is one batched job per '/'-separated group; tuple fields keep their element type
    assert sweep.parse_grid("grokking", ["seeds=1,42,15213"]) == {"seeds": [(1, 42, 15213)]}
    assert sweep.parse_grid("grokking", ["seeds=1,2/3,4"]) == {"seeds": [(1, 2), (3, 4)]}
    assert sweep.parse_grid("grokking", ["betas=0.9,0.99"]) == {"betas": [(0.9, 0.99)]}

    cfgs = sweep.grid("grokking", axes, "smoke")
    assert [(c.seeds, c.lam) for c in cfgs] == [((1,), 1e-3), ((1,), 0.01), ((42,), 1e-3), ((42,), 0.01)]
    assert all(c.steps == 100 and c.p == 23 for c in cfgs)  # the smoke profile, then the grid
    (batched,) = sweep.grid("grokking", {"seeds": [(1, 42, 15213)]}, "paper")
    assert batched == config.resolve("grokking", {}, "paper")  # what notebook 01 asks for under paper
    assert len(sweep.grid("grokking", {"seed": [1, 1], "lam": [0.0]}, "smoke")) == 1  # duplicates dropped


@pytest.mark.parametrize(
    "tokens, message",
    [
        (["lamb=1e-3"], "unknown parameter 'lamb'"),
        (["lam=1e-3,abc"], "lam='abc' is not a valid float"),
        (["seed=1.5"], "seed='1.5' is not a valid int"),
        (["deterministic=maybe"], "is not a valid bool"),
        (["lam"], "name=value"),
        (["lam=1", "lam=2"], "given twice"),
    ],
)
def test_bad_grid_tokens_are_rejected(tokens, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_grid("grokking", tokens)


def test_invalid_points_fail_before_anything_is_submitted(results, capsys, monkeypatch):
    with pytest.raises(ValueError, match=r"grid point \{'lam': -1.0\}: lam must be >= 0"):
        sweep.grid("grokking", {"lam": [1e-3, -1.0]}, "smoke")
    with pytest.raises(ValueError, match="not both"):
        sweep.grid("grokking", {"seed": [1], "seeds": [(1, 2)]}, "smoke")
    with pytest.raises(ValueError, match="for one job per seed use seed"):
        sweep.grid("grokking", {"seeds": [1, 42]}, "smoke")
    with pytest.warns(UserWarning, match="lam has no effect with penalty='none'"):
        sweep.grid("grokking", {"lam": [0.0, 1e-2]}, "smoke")
    with pytest.raises(ValueError, match="experiment='nope' is not valid"):
        sweep.grid("nope", {}, "smoke")
    with pytest.raises(SystemExit) as exc:
        sweep.main(
            ["grokking", "--profile", "smoke", "--root", str(results), "--grid", "d_model=30", "n_heads=4"]
        )
    assert exc.value.code == 2
    assert "must be divisible by n_heads" in capsys.readouterr().err
    assert not results.exists()  # nothing trained, nothing written
    monkeypatch.setenv("PATH", str(results))  # no sbatch here
    assert sweep.main(["grokking", "--profile", "smoke", "--root", str(results), "--executor", "slurm"]) == 2
    assert "the slurm executor needs" in capsys.readouterr().err  # submitit, or sbatch and srun
    assert not results.exists()


# ------------------------------------------------------------------------------------ local, end to end


def test_local_sweep_end_to_end_then_skips_and_collects_without_training(results, capsys, monkeypatch):
    args = ["grokking", "--profile", "smoke", "--root", str(results)]
    grid = ["--grid", "seed=1,42", "penalty=anti_flat", "lam=1e-3,1e-2", *SHORT]
    rc, out = cli(capsys, *args, *grid)
    assert rc == 0, out
    assert "4 points, 4 to run on local (1 worker), skipped: none" in out
    assert "[4/4]" in out and "4 points: 4 done" in out
    assert f"results: {results.resolve() / 'grokking'}" in out
    logs = out.split("logs: ")[1].split()[0]
    cfgs = sweep.grid("grokking", sweep.parse_grid("grokking", grid[1:]), "smoke")
    for cfg in cfgs:
        folder = results / "grokking" / config.config_hash(cfg)
        assert (folder / "DONE").exists() and not (folder / "checkpoint.pt").exists()
        assert "stored" in (sweep.Path(logs) / f"{folder.name}.log").read_text()

    # a second sweep, notebooks (train.run) and collect() all find the runs by hash: nothing trains
    monkeypatch.setitem(train.TRAINERS, "grokking", no_training)
    rc, out = cli(capsys, *args, *grid)
    assert rc == 0 and "0 to run on local (1 worker), skipped: 4 done" in out and "logs:" not in out
    runs = sweep.collect(cfgs, results)
    assert [r.seeds for r in runs] == [[1], [1], [42], [42]]
    assert [r.config.lam for r in runs] == [1e-3, 1e-2, 1e-3, 1e-2]
    assert train.run(cfgs[0], root=results, progress=False).metrics.rows == runs[0].metrics.rows
    rows = sweep.status(cfgs, results)
    assert [r.state for r in rows] == ["done"] * 4
    assert list(rows[0].params) == ["seeds", "lam"]  # only what varies across the grid


def test_a_diverged_point_is_reported_and_the_others_kept(results):
    cfgs = sweep.grid(
        "grokking", {"seed": [1], "lr": [1e-3, 1e12], "warmup_steps": [0], "steps": [20]}, "smoke"
    )
    sw = sweep.submit(cfgs, root=results)
    seen = []
    rows = sw.wait(lambda i, n, job, state, detail: seen.append(state))
    assert sorted(seen) == ["diverged", "done"]
    assert [r.state for r in rows] == ["done", "diverged"]
    assert rows[1].detail.startswith("non-finite training loss at step")
    reason = store.read_json(results / "grokking" / rows[1].hash / "FAILED")["reason"]
    assert reason.startswith(rows[1].detail)

    assert len(sweep.collect(cfgs, results, allow_missing=True)) == 1
    with pytest.raises(store.StoreError, match=f"1 of 2 runs are not finished.*{rows[1].hash}"):
        sweep.collect(cfgs, results)
    # a divergence is a result: not resubmitted unless asked for, and the finished run is never touched
    assert sweep.submit(cfgs, root=results).jobs == []
    again = sweep.submit(cfgs, root=results, retry_diverged=True)
    assert [j.hash for j in again.jobs] == [rows[1].hash]


def test_failed_and_preempted_jobs_report_their_logs_and_resume(results, monkeypatch):
    real = train.TRAINERS["grokking"]

    def flaky(cfg, *, resume, checkpoint, progress):
        if cfg.lam == 0.01:
            raise RuntimeError("CUDA error: out of memory")
        if cfg.lam == 0.1:  # preempted right after its first checkpoint

            def checkpoint_then_die(state, rows):
                checkpoint(state, rows)
                raise RuntimeError("preempted")

            return real(cfg, resume=resume, checkpoint=checkpoint_then_die, progress=progress)
        return real(cfg, resume=resume, checkpoint=checkpoint, progress=progress)

    monkeypatch.setitem(train.TRAINERS, "grokking", flaky)
    axes = {
        "seed": [1],
        "penalty": ["anti_flat"],
        "lam": [1e-3, 1e-2, 1e-1],
        "steps": [30],
        "checkpoint_every": [10],
    }
    cfgs = sweep.grid("grokking", axes, "smoke")
    rows = sweep.submit(cfgs, root=results).wait()
    assert [r.state for r in rows] == ["done", "failed", "failed"]
    oom, pre = rows[1], rows[2]
    assert oom.detail == "RuntimeError: CUDA error: out of memory"
    assert "out of memory" in open(oom.log).read()  # the traceback is in the job's log
    at = re.fullmatch(
        r"RuntimeError: preempted \(checkpoint, logged to step (\d+); resubmitting resumes\)", pre.detail
    )
    assert at and 10 <= int(at[1]) < 30, pre.detail
    table = sweep.format_rows(rows)
    assert f"log of {oom.hash}: {oom.log}" in table and f"log of {pre.hash}: {pre.log}" in table
    done_mtime = (results / "grokking" / rows[0].hash / "DONE").stat().st_mtime_ns

    monkeypatch.setitem(train.TRAINERS, "grokking", real)
    sw = sweep.submit(cfgs, root=results)
    assert [j.hash for j in sw.jobs] == [oom.hash, pre.hash]  # the finished point is skipped
    assert [r.state for r in sw.wait()] == ["done"] * 3
    assert f"from step {at[1]}" in open(sw.jobs[1].log).read()  # resumed from the preempted job's checkpoint
    assert (results / "grokking" / rows[0].hash / "DONE").stat().st_mtime_ns == done_mtime


def test_an_interrupted_run_without_a_job_record_is_partial(results, monkeypatch):
    real = train.TRAINERS["grokking"]

    def killed(cfg, *, resume, checkpoint, progress):
        def die(state, rows):
            checkpoint(state, rows)
            raise KeyboardInterrupt

        return real(cfg, resume=resume, checkpoint=die, progress=progress)

    (cfg,) = sweep.grid("grokking", {"steps": [20], "checkpoint_every": [10]}, "smoke")
    monkeypatch.setitem(train.TRAINERS, "grokking", killed)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg, root=results, progress=False)
    (row,) = sweep.status([cfg], results)
    assert row.state == "partial"
    assert re.fullmatch(r"checkpoint, logged to step 1\d; resubmitting resumes", row.detail), row.detail


# ------------------------------------------------------------------------------- Slurm, without a cluster

FAKE_SBATCH = """#!/bin/sh
n=$(ls "$FAKE_SLURM" | wc -l)
cp "$1" "$FAKE_SLURM/submission_$n.sh"
echo "Submitted batch job $((4242 + n))"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """sbatch and srun stand-ins on PATH: sbatch keeps each script and answers with a job id."""
    pytest.importorskip("submitit")
    bin_, spool = tmp_path / "bin", tmp_path / "spool"
    bin_.mkdir()
    spool.mkdir()
    for name, text in (("sbatch", FAKE_SBATCH), ("srun", "#!/bin/sh\nexit 1\n")):
        (bin_ / name).write_text(text)
        (bin_ / name).chmod((bin_ / name).stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(spool))
    monkeypatch.setattr(sweep_status, "_slurm_state", lambda rec: None)  # no sacct: state unknown
    return spool


def test_slurm_job_array_parameters_payload_and_resubmission(results, capsys, fake_slurm):
    from submitit.core.utils import DelayedSubmission, cloudpickle_dump

    args = ["grokking", "--profile", "smoke", "--root", str(results), "--grid", "seed=1,42", "cap=0,50"]
    slurm = ["--executor", "slurm", "--slurm-partition", "gpu", "--gpus-per-task", "1", "--timeout-min", "90"]
    slurm += [
        "--array-parallelism",
        "2",
        "--cpus-per-task",
        "3",
        "--slurm-setup",
        "source .venv/bin/activate",
    ]
    rc, out = cli(capsys, *args, *slurm)
    assert rc == 0, out
    assert "4 points, 4 to run on slurm" in out and "Slurm job array 4242 (4242_0 .. 4242_3)" in out
    assert "progress: python -m grokprobe.sweep grokking" in out and out.rstrip().endswith("/grokking")
    folder = sweep.Path(out.split("logs: ")[1].split()[0])
    assert folder.parent == results.resolve() / "grokking" / "_sweeps"

    script = (fake_slurm / "submission_0.sh").read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=90",
        "#SBATCH --array=0-3%2",
        "#SBATCH --cpus-per-task=3",
        "#SBATCH --job-name=grokprobe-grokking",
        "#SBATCH --signal=USR2@90",  # submitit's warning signal: checkpoint and requeue before the limit
        "source .venv/bin/activate",
    ):
        assert line in script.splitlines(), line
    assert f"-u -m submitit.core._submit {folder}" in script and sys.executable in script
    assert f"#SBATCH --output={folder}/%A_%a_0_log.out" in script.splitlines()

    # each array task pickles TrainJob(cfg, root): running one here trains exactly that grid point
    cfgs = sweep.grid("grokking", {"seed": [1, 42], "cap": [0.0, 50.0]}, "smoke")
    payloads = [DelayedSubmission.load(folder / f"4242_{i}_submitted.pkl") for i in range(4)]
    assert all(isinstance(p.function, sweep.TrainJob) for p in payloads)
    assert [p.args for p in payloads] == [(c, str(results.resolve())) for c in cfgs]
    requeued = payloads[0].function.checkpoint(*payloads[0].args)  # what submitit requeues on preemption
    assert requeued.function is payloads[0].function and requeued.args == payloads[0].args
    res = payloads[0].result()
    assert (
        pickle.loads(pickle.dumps(res)) == res
        and res.state == "done"
        and res.hash == config.config_hash(cfgs[0])
    )

    # task 1 dies on the cluster: submitit leaves its traceback in the result pickle
    records = store.read_json(folder / "jobs.json")["jobs"]
    assert [r["job_id"] for r in records] == [f"4242_{i}" for i in range(4)]
    cloudpickle_dump(
        ("error", "Traceback ...\nRuntimeError: CUDA error: out of memory\n"), records[1]["result_pickle"]
    )
    rc, out = cli(capsys, *args, "--status")
    assert rc == 1
    assert "4 points: 1 done, 1 failed, 2 submitted" in out
    assert f"log of {records[1]['hash']}: {folder}/4242_1_0_log.err" in out
    assert "RuntimeError: CUDA error: out of memory" in out

    # the same command again resubmits only the failed point: done is kept, live jobs are left alone
    rc, out = cli(capsys, *args, *slurm)
    assert "4 points, 1 to run on slurm, skipped: 1 done, 2 submitted" in out
    assert "Slurm job 4243\n" in out
    assert "#SBATCH --array" not in (fake_slurm / "submission_1.sh").read_text()
    (row,) = [r for r in sweep.status(cfgs, results) if r.hash == records[1]["hash"]]
    assert (row.state, row.job_id) == ("submitted", "4243")


def test_sweeps_started_in_the_same_second_sort_by_creation(tmp_path, monkeypatch):
    # _job_records lets the later sweep's record of a point win; its folder must sort later even when
    # the random suffix of the later one is smaller (this ordering once flipped in CI)
    suffixes = iter(["ffff", "0000"])
    monkeypatch.setattr(sweep.uuid, "uuid4", lambda: type("U", (), {"hex": next(suffixes) * 8})())
    first = sweep._new_folder(tmp_path, "grokking")
    second = sweep._new_folder(tmp_path, "grokking")
    assert sorted([second.name, first.name]) == [first.name, second.name]
    for folder, job in ((first, "1_0"), (second, "2")):
        store.write_json(folder / "jobs.json", {"jobs": [{"hash": "h", "job_id": job}]})
    assert sweep_status._job_records(tmp_path, "grokking")["h"]["job_id"] == "2"
