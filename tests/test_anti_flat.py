"""Notebook 02's library: the conditions, CIFAR-10 from a local folder, divergence kept as a result,
claim C3 on constructed curves, and the figures."""

import pickle

import matplotlib
import numpy as np
import pytest

from grokprobe import anti_flat as A
from grokprobe import anti_flat_tables as AT
from grokprobe import data, paths, store, train
from grokprobe import plots_anti_flat as PA
from grokprobe.regularizers import Unplug

matplotlib.use("Agg")


# ------------------------------------------------------------------------------------- conditions


def test_conditions_differ_only_in_penalty_and_schedule():
    cfgs = {c: A.resolve("digits", c, profile="quick") for c in A.CONDITIONS}
    half = cfgs["reg"].epochs // 2
    want = {
        "baseline": ("none", 0, False),
        "reg": ("anti_flat", 0, False),
        "unplug": ("anti_flat", half, False),
        "bump_only": ("none", half, False),
        "reg_bump": ("anti_flat", half, True),
    }
    for cond, cfg in cfgs.items():
        assert (cfg.penalty, cfg.unplug_at, cfg.keep_penalty) == want[cond], cond
        assert cfg.task == "digits" and cfg.arch == "cnn"
        assert cfg.cap == cfgs["reg"].cap > 0  # the cap is on in every condition (SPEC D15)
        assert (cfg.lam == 0) == (cfg.penalty == "none")
    assert A.resolve("digits", "unplug", params={"unplug_at": 7}).unplug_at == 7
    assert A.resolve("digits", "unplug", params={"epochs": 10}).unplug_at == 5
    with pytest.raises(ValueError, match="condition"):
        A.resolve("digits", "unplugged")


def test_cifar10_is_the_papers_e3_run_and_only_in_the_paper_profile():
    with pytest.raises(ValueError, match="profile='paper'"):
        A.resolve("cifar10", "unplug", profile="quick")
    cfg = A.resolve("cifar10", "unplug", profile="paper")
    assert (cfg.task, cfg.arch, cfg.epochs, cfg.unplug_at, cfg.batch_size) == (
        "cifar10",
        "resnet18",
        400,
        200,
        64,
    )
    assert (cfg.lam, cfg.tau, cfg.cap, cfg.normalize_features) == (1e-2, 2.0, 50.0, True)
    assert (cfg.lr, cfg.momentum, cfg.weight_decay) == (0.01, 0.9, 0.0)
    u = Unplug(at=cfg.unplug_at, total=cfg.epochs, bump=cfg.bump, wd_after=cfg.wd_after, eta_min=cfg.eta_min)
    assert u.lr_wd(200, cfg.lr, cfg.weight_decay) == pytest.approx((0.1, 2e-4))
    assert u.lr_wd(399, cfg.lr, cfg.weight_decay)[0] == pytest.approx(1e-4)
    assert A.resolve("cifar10", "baseline", profile="paper").cap == 50.0


def test_grokking_conditions_count_steps():
    cfg = A.resolve("grokking", "unplug", profile="smoke")
    assert cfg.experiment == "grokking" and cfg.unplug_at == cfg.steps // 2 and cfg.penalty == "anti_flat"
    assert A.resolve("grokking", "baseline", profile="smoke").cap == cfg.cap
    with pytest.raises(ValueError, match="keep_penalty"):
        A.resolve("grokking", "reg_bump", profile="smoke")


# ---------------------------------------------------------------------------------------- CIFAR-10


def write_fake_cifar10(root, n_train=6, n_test=4):
    """A tiny folder in the official python format: data_batch_1..5 and test_batch, each a pickled
    dict with b'data' (N, 3072) uint8 and b'labels'."""
    folder = root / data.CIFAR10_FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        batch = {
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(rng.integers(0, 10, n)),
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_cifar10_from_a_fake_folder_and_a_clear_error_when_missing(tmp_path):
    root = write_fake_cifar10(tmp_path / "data")
    d = data.cifar10(root)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_val.shape == (4, 3, 32, 32) and d.num_classes == 10
    assert d.x_train.min() >= -1 and d.x_train.max() <= 1 and d.y_train.dtype.is_floating_point is False
    with pytest.raises(FileNotFoundError) as e:
        data.cifar10(tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / data.CIFAR10_FOLDER) in msg
    assert "cs.toronto.edu" in msg and "GROKPROBE_DATA" in msg


def test_cifar10_condition_trains_resnet18_on_the_fake_folder(tmp_path, monkeypatch, results):
    monkeypatch.setattr(paths, "DATA", write_fake_cifar10(tmp_path / "data"))
    cfg = A.resolve(
        "cifar10",
        "unplug",
        params={"epochs": 2, "seeds": [1], "device": "cpu", "lam": 1.0, "cap": 1.0},
        profile="paper",
    )
    (o,) = A.run_one(cfg, condition="unplug", root=results)
    assert o.status != "diverged" and o.series("acc", "val")[0].tolist() == [0, 1, 2]
    assert o.series("penalty_on")[1].tolist() == [1, 1, 0] and max(o.series("w_norm")[1][1:]) <= 1.0 + 1e-6


# ----------------------------------------------------------------------------- runs and divergence


@pytest.fixture(scope="module")
def smoke_outcomes(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("results")
    out = A.run_conditions(
        "digits", params={"epochs": 6, "device": "cpu"}, profile="smoke", root=root, log=None
    )
    return out, root


def test_conditions_share_the_run_up_to_the_unplug_and_part_after(smoke_outcomes):
    out, _ = smoke_outcomes
    (seed,) = out["baseline"]
    on = {c: out[c][seed].series("penalty_on")[1].tolist() for c in A.CONDITIONS}
    assert on["baseline"] == on["bump_only"] == [0] * 7
    assert on["reg"] == on["reg_bump"] == [1] * 7
    assert on["unplug"] == [1, 1, 1, 1, 0, 0, 0]
    for a, b in (("reg", "unplug"), ("reg", "reg_bump"), ("baseline", "bump_only")):
        va, vb = (out[c][seed].series("kappa")[1] for c in (a, b))
        assert np.array_equal(va[:4], vb[:4]) and not np.array_equal(va[4:], vb[4:]), (a, b)
    rows = AT.condition_table(out, unplug_at=3)
    assert {r["condition"] for r in rows} == set(A.CONDITIONS) and all(r["status"] == "ok" for r in rows)


def test_figures_draw_every_condition(smoke_outcomes):
    out, _ = smoke_outcomes
    for fn in (PA.accuracy, PA.losses, PA.flatness):
        fig = fn(out, unplug_at=3, task="digits", **({"cap": 30.0} if fn is PA.flatness else {}))
        labels = {ln.get_label() for ax in fig.axes for ln in ax.get_lines()}
        assert {A.LABELS[c] for c in A.CONDITIONS} <= labels, fn.__name__
        matplotlib.pyplot.close(fig)


def test_a_diverged_sweep_point_is_kept_drawn_and_not_retrained(results, monkeypatch):
    params = {"epochs": 3, "device": "cpu", "lr": 1e6}
    ((_, o),) = A.sweep("digits", "lam", [1.0], seed=1, params=params, profile="smoke", root=results)
    assert o.diverged and o.status.startswith("diverged at") and o.diverged_at is not None
    assert o.series("acc", "val")[0].tolist()  # the metrics up to the divergence are kept
    assert (o.path / "FAILED").exists() and not store.is_done(o.path)
    monkeypatch.setitem(train.TRAINERS, "anti_flat", lambda *a, **k: pytest.fail("retrained a diverged run"))
    ((_, again),) = A.sweep("digits", "lam", [1.0], seed=1, params=params, profile="smoke", root=results)
    assert again.diverged == o.diverged
    ok = A.Outcome("reg", 1, None, o.metrics, o.path)  # the same curve, not diverged, for contrast
    fig = PA.sweep([(0.5, ok), (1.0, o)], kind="lam", unplug_at=1, task="digits")
    assert any("diverged" in t.get_text() for t in fig.axes[3].texts)
    assert "diverged" in AT.sweep_table([(1.0, o)], kind="lam", unplug_at=1)[0]["status"]
    matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------------------------------- claim C3


def fake(cond, val, kappa, *, R=None, seed=1, diverged=None):
    rows = []
    for t, (v, k) in enumerate(zip(val, kappa)):
        rows += [
            (t, seed, "val", "acc", v),
            (t, seed, "train", "acc", min(1.0, v + 0.05)),
            (t, seed, "train", "kappa", k),
        ]
        rows.append((t, seed, "train", "penalty_R", (R or kappa)[t]))
    return A.Outcome(cond, seed, None, store.Metrics(rows), None, diverged=diverged, diverged_at=len(val))


BASE = [0.1, 0.5, 0.9, 0.95, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96, 0.96]
SLOW = [0.1, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.55, 0.55, 0.55]
BACK = SLOW[:5] + [0.6, 0.8, 0.9, 0.95, 0.95, 0.95]
K_BASE, K_HIGH = [10.0] * 11, [10.0] + [500.0] * 10


def c3(**conds):
    out = {
        c: {1: fake(c, *v[:2], R=v[2] if len(v) > 2 else None) if isinstance(v, tuple) else v}
        for c, v in conds.items()
    }
    return AT.c3_anti_flatness_delays_generalization(out, task="digits", unplug_at=5)


def test_c3_reproduced_when_delayed_sharper_and_recovered():
    r = c3(baseline=(BASE, K_BASE), reg=(SLOW, K_HIGH), unplug=(BACK, K_HIGH), bump_only=(BASE, K_BASE))
    assert r["verdict"] == "reproduced" and r["claim"] == "C3/digits"
    row = r["per_seed"][0]
    assert row["t_base"] == 2 and row["t_reg"] is None and row["kappa_ratio"] == pytest.approx(50)
    assert "delayed 1/1" in r["summary"] and "bump without penalty +0.0 points" in r["ablation"]


def test_c3_says_when_the_bump_alone_recovers():
    r = c3(baseline=(BASE, K_BASE), reg=(SLOW, K_HIGH), unplug=(BACK, K_HIGH), reg_bump=(BACK, K_HIGH))
    assert r["verdict"].startswith("reproduced, but the lr bump alone")


@pytest.mark.parametrize(
    "reg, unplug, why",
    [
        ((BASE, K_HIGH), (BASE, K_HIGH), "delayed 0/1"),  # REG generalizes as fast as the baseline
        ((SLOW, K_BASE, [10.0] + [800.0] * 10), (BACK, K_BASE), "kappa >= 10x 0/1"),  # only R is high
        ((SLOW, K_HIGH), (SLOW, K_HIGH), "recovered 0/1"),  # no recovery after unplug
    ],
)
def test_c3_fails_when_a_criterion_fails(reg, unplug, why):
    r = c3(baseline=(BASE, K_BASE), reg=reg, unplug=unplug)
    assert r["verdict"] == "not reproduced" and why in r["summary"]
    if len(reg) == 3:
        assert r["per_seed"][0]["R_ratio"] == pytest.approx(80)  # the paper's comparison would pass


def test_c3_a_diverged_reg_run_is_not_a_delay():
    r = c3(
        baseline=(BASE, K_BASE), reg=fake("reg", SLOW[:3], K_HIGH[:3], diverged="nan"), unplug=(BACK, K_HIGH)
    )
    assert r["verdict"] == "not reproduced" and r["per_seed"][0]["evaluable"] is False
    assert "diverged" in r["per_seed"][0]["why"]


def test_grokking_conditions_train_the_seeds_batched(results):
    out = A.run_conditions(
        "grokking",
        params={"steps": 16, "device": "cpu", "log_points": 4},
        profile="smoke",
        root=results,
        log=None,
    )
    assert set(out) == set(A.CONDITIONS) - {"reg_bump"}
    seeds = list(out["baseline"])
    assert len(seeds) == 2 and all(set(by) == set(seeds) for by in out.values())
    assert out["unplug"][seeds[0]].path == out["unplug"][seeds[1]].path  # one run, both seeds
    x, on = out["unplug"][seeds[0]].series("penalty_on")
    assert on[x < 8].all() and not on[x >= 8].any()
    r = AT.c3_anti_flatness_delays_generalization(out, task="grokking", unplug_at=8)
    assert r["claim"] == "C3/grokking" and r["unit"] == "step" and len(r["per_seed"]) == 2
