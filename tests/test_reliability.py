"""Nothing is lost and nothing half-written is used: determinism, concurrent runs, missing data."""

import subprocess
import sys

import pytest
from conftest import TINY_GROKKING, kill_after_first_checkpoint

from grokprobe import config, data, store, train

TINY = {**TINY_GROKKING, "steps": 30, "log_points": 6}


def test_deterministic_switch_repeats_bitwise(results):
    cfg = config.resolve("grokking", {**TINY, "deterministic": True}, "smoke")
    a = train.run(cfg, root=results / "a", progress=False)
    b = train.run(cfg, root=results / "b", progress=False)
    assert a.metrics.rows == b.metrics.rows
    assert config.resolve("grokking", {}, "paper").deterministic  # on for the paper profile


def test_two_processes_on_one_run_do_not_corrupt_it(results):
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from grokprobe import config, train\n"
        f"cfg = config.resolve('grokking', {TINY!r}, 'smoke')\n"
        f"r = train.run(cfg, root={str(results)!r}, progress=False)\n"
        "print('steps_run', r.summary.get('steps_run'))\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    cfg = config.resolve("grokking", TINY, "smoke")
    run = train.load(cfg, root=results)  # complete and consistent
    assert store.is_done(run.path) and len(run.metrics.rows) == store.read_json(run.path / "DONE")["rows"]
    assert sorted(outs) == sorted(
        [f"steps_run {cfg.steps}\n", f"steps_run {cfg.steps}\n"]
    )  # same DONE summary


def test_missing_cifar10_names_the_folder_and_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        data.cifar10(tmp_path)
    msg = str(e.value)
    assert (
        str(tmp_path / "cifar-10-batches-py") in msg
        and "cifar-10-python.tar.gz" in msg
        and "GROKPROBE_DATA" in msg
    )


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    store.write_metrics(target, [(0, 1, "train", "acc", 0.5)])
    import os

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        store.write_metrics(target, [(0, 1, "train", "acc", 0.9)] * 10)
    monkeypatch.undo()
    assert store.Metrics.read(target).rows == [(0, 1, "train", "acc", 0.5)]  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]  # no temp file left behind


def test_killed_classifier_run_resumes_and_matches_uninterrupted(results, capsys):
    """The epoch loop of notebooks 02-04 (digits CNN) resumes bitwise after SIGKILL as well."""
    kw = dict(task="digits", arch="mlp", seeds=[1, 2], epochs=6, checkpoint_every=1, device="cpu")
    reference = train.run(config.resolve("anti_flat", kw, "smoke"), root=results / "ref", progress=False)
    root = results / "killed"
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from grokprobe import config, train\n"
        f"train.run(config.resolve('anti_flat', {kw!r}, 'smoke'), root={str(root)!r}, progress=False)\n"
    )
    folder = root / "anti_flat" / config.config_hash(reference.config)
    kill_after_first_checkpoint(script, folder)
    assert not store.is_done(folder)
    capsys.readouterr()
    resumed = train.run(config.resolve("anti_flat", kw, "smoke"), root=root, progress=True)
    assert "resuming" in capsys.readouterr().out  # and says where from (epoch loops have no 'step')
    assert resumed.summary["epochs_run"] < 12  # it resumed instead of starting over
    assert resumed.metrics.rows == reference.metrics.rows
