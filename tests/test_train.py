import pytest
import torch
from conftest import TINY_GROKKING, kill_after_first_checkpoint

from grokprobe import config, store, train
from grokprobe.runtime import NonFiniteLoss

TINY = TINY_GROKKING


def tiny(**kw):
    return config.resolve("grokking", {**TINY, **kw}, "smoke")


def test_loss_falls_and_every_metric_is_logged(results):
    run = train.run(tiny(steps=150), root=results, progress=False)
    steps, loss = run.metrics.series("loss", "train")
    assert steps[0] == 0 and steps[-1] == 150
    assert (loss[:, -1] < 0.7 * loss[:, 0]).all()
    names = {m for _, m in run.metrics.names}
    assert {
        "acc",
        "loss",
        "kappa",
        "kappa_exact",
        "kappa_code",
        "ncc",
        "nc1",
        "nc2",
        "nc3",
        "nc4",
        "w_norm",
    } <= names
    assert (results / "grokking" / config.config_hash(run.config) / "DONE").exists()


def test_same_seed_same_metrics_on_cpu(results):
    a = train.run(tiny(), root=results / "a", progress=False)
    b = train.run(tiny(), root=results / "b", progress=False)
    assert a.metrics.rows == b.metrics.rows


def test_batched_seeds_match_separate_runs(results):
    both = train.run(tiny(), root=results, progress=False)
    for seed in (1, 2):
        alone = train.run(tiny(seeds=[seed]), root=results, progress=False)
        for split, metric in (("train", "loss"), ("val", "acc"), ("train", "kappa"), ("train", "ncc")):
            _, v1 = both.metrics.series(metric, split, seed)
            _, v2 = alone.metrics.series(metric, split, seed)
            torch.testing.assert_close(torch.tensor(v1), torch.tensor(v2), rtol=1e-4, atol=1e-5)


def test_a_stored_run_is_reloaded_not_retrained(results, monkeypatch):
    first = train.run(tiny(), root=results, progress=False)
    monkeypatch.setitem(train.TRAINERS, "grokking", lambda *a, **k: pytest.fail("retrained a stored run"))
    again = train.run(tiny(), root=results, progress=False)
    assert again.metrics.rows == first.metrics.rows


def test_a_damaged_run_is_detected_and_recomputed(results):
    first = train.run(tiny(), root=results, progress=False)
    csv = first.path / "metrics.csv"
    csv.write_text(csv.read_text()[: len(csv.read_text()) // 2])  # truncated, as by a full disk
    with pytest.raises(store.StoreError):
        train.load(tiny(), root=results)
    with pytest.warns(UserWarning, match="damaged"):
        again = train.run(tiny(), root=results, progress=False)
    assert again.metrics.rows == first.metrics.rows


def test_non_finite_loss_stops_with_the_step_and_keeps_metrics(results):
    cfg = tiny(lr=1e12, steps=60, warmup_steps=0)
    with pytest.raises(NonFiniteLoss, match="step") as e:
        train.run(cfg, root=results, progress=False)
    folder = results / "grokking" / config.config_hash(cfg)
    assert (folder / "FAILED").exists() and not (folder / "DONE").exists()
    kept = store.Metrics.read(folder / "metrics.csv")
    assert kept.rows and max(r[0] for r in kept.rows) < e.value.step


def test_killed_run_resumes_and_matches_uninterrupted(results, tmp_path):
    kw = dict(steps=400, log_points=40, checkpoint_every=50)
    reference = train.run(tiny(**kw), root=results / "ref", progress=False)
    root = results / "killed"
    script = (
        f"import torch; torch.set_num_threads(1)\n"
        f"from grokprobe import config, train\n"
        f"cfg = config.resolve('grokking', {{**{TINY!r}, **{kw!r}}}, 'smoke')\n"
        f"train.run(cfg, root={str(root)!r}, progress=False)\n"
    )
    folder = root / "grokking" / config.config_hash(reference.config)
    kill_after_first_checkpoint(script, folder)
    assert not (folder / "DONE").exists()
    state = store.load_torch(folder / "checkpoint.pt")
    assert 0 < state["step"] < 400
    resumed = train.run(tiny(**kw), root=root, progress=False)
    assert resumed.summary["steps_run"] < 400  # it really resumed
    assert resumed.metrics.rows == reference.metrics.rows  # bitwise on CPU


def test_unreadable_checkpoint_restarts_from_zero(results):
    cfg = tiny()
    folder = results / "grokking" / config.config_hash(cfg)
    folder.mkdir(parents=True)
    (folder / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="unreadable checkpoint"):
        run = train.run(cfg, root=results, progress=False)
    assert run.summary["steps_run"] == cfg.steps
