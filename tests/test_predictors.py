"""Notebook 06 machinery: scores on curves with known answers, curvature logging in the E1 loop,
early stopping, and resuming with the power-iteration state."""

import copy

import numpy as np
import pytest
from conftest import TINY_GROKKING

from grokprobe import claims, config, grokking, predictors, store, train

STEPS = np.unique(np.round(np.logspace(0, 4, 80)).astype(int))
STEPS = np.concatenate([[0], STEPS])


def _sigmoid(t, mid, width=0.1):  # a step in log10(t) centred on `mid`
    return 1 / (1 + np.exp(-(np.log10(np.maximum(t, 1)) - np.log10(mid)) / width))


def _rows(seed, *, memorise=True, generalise=True, together=False):
    """Train acc rises at ~100 steps, val acc at ~1000; 'kappa' falls with val acc, 'ncc' with
    train acc, 'w_norm' rises, 'nc4' falls to exactly 0 with val acc, 'hess_top' changes sign."""
    t = STEPS
    tr = _sigmoid(t, 100) if memorise else 0.5 * _sigmoid(t, 100)
    va = _sigmoid(t, 100 if together else 1000) if generalise else 0.05 + 0 * t
    curves = {
        ("train", "acc"): tr,
        ("val", "acc"): va,
        ("train", "kappa"): 1e4 * 100.0 ** (-va),  # log-linear in the accuracies
        ("train", "ncc"): 10 * 100.0 ** (-tr),
        ("train", "w_norm"): 1 + tr,
        ("train", "nc4"): np.where(va > 0.98, 0.0, 1 - va),
        ("train", "hess_top"): 5 - 10 * va,
    }
    return [(int(s), seed, sp, m, float(v[i])) for (sp, m), v in curves.items() for i, s in enumerate(t)]


def _metrics(*seeds_kw):
    rows = []
    for seed, kw in seeds_kw:
        rows += _rows(seed, **kw)
    return store.Metrics(rows)


def test_levels_pick_log_floored_log_or_linear():
    assert predictors.levels([1.0, 10.0])[1] == "log"
    L, scale = predictors.levels([1.0, 0.0])
    assert scale == "log (floored)" and np.isclose(L[1] - L[0], np.log(1e-6))
    assert predictors.levels([1.0, -1.0])[1] == "linear"


def test_steepest_descent_finds_the_middle_of_a_log_step():
    t = STEPS
    level = 3.0 * (1 - _sigmoid(t, 300))  # a log-level falling 3 units around t = 300
    t_desc = predictors.steepest_descent(t, level)
    assert abs(np.log10(t_desc) - np.log10(300)) < 0.1
    assert predictors.steepest_descent(t, np.log(1 + t)) is None  # never falls


def test_scores_on_curves_with_known_answers():
    rows = predictors.score_run(_metrics((1, {}), (2, {})), "toy")
    by = {(r["seed"], r["quantity"]): r for r in rows}
    for seed in (1, 2):
        k, n = by[(seed, "kappa")], by[(seed, "ncc")]
        assert k["S"] > 0.7 and k["M"] < 0.05  # falls with generalisation
        assert n["M"] > 0.9 and n["S"] < 0.05  # falls with memorisation
        assert abs(k["lag"]) < 0.2 and n["lag"] < -0.7  # ncc's steepest fall is a decade early
        assert k["c1"] and not by[(seed, "w_norm")]["c1"]  # w_norm never decreases
        assert by[(seed, "nc4")]["scale"] == "log (floored)" and by[(seed, "nc4")]["c1"]
        assert by[(seed, "hess_top")]["scale"] == "linear" and by[(seed, "hess_top")]["c1"]
    tab = {r["quantity"]: r for r in predictors.table(rows)}
    assert tab["kappa"]["beats_ncc"] == "2/2" and tab["w_norm"]["beats_ncc"] == "0/2"
    assert tab["kappa"]["S_min"] <= tab["kappa"]["S"] <= tab["kappa"]["S_max"]
    H, qs, ts = predictors.heat(rows, "S")
    assert (
        ts == ["toy"] and H.shape == (len(qs), 1) and np.isclose(H[qs.index("kappa"), 0], tab["kappa"]["S"])
    )


def test_c5_names_the_quantities_that_beat_ncc_everywhere_and_flags_unscored_seeds(tmp_path):
    rows = predictors.score_run(_metrics((1, {}), (2, {})), "a") + predictors.score_run(
        _metrics((1, {}), (2, {})), "b"
    )
    c5 = predictors.c5_which_quantity_predicts(rows)
    assert c5["verdict"] == "evaluated" and set(c5["passing"]) == {"kappa", "nc4", "hess_top"}
    assert c5["per_quantity"]["w_norm"] == "0/4"
    rows += predictors.score_run(_metrics((1, {"memorise": False}), (2, {"generalise": False})), "c")
    rows += predictors.score_run(_metrics((3, {"together": True})), "c")
    c5 = predictors.c5_which_quantity_predicts(rows)
    assert c5["verdict"] == "incomplete" and c5["unscored"] == [["c", 1], ["c", 2], ["c", 3]]
    why = {r["seed"]: r["why"] for r in rows if r["task"] == "c"}
    assert why[1].startswith("no memorisation") and why[2].startswith("val acc did not rise")
    assert why[3].startswith("generalised with memorisation")
    rec = claims.record(c5, profile="quick", path=tmp_path / "claims.json")
    assert rec["claim"] == "C5" and rec["passing"] == c5["passing"]


def test_grid_builds_a_validated_config_per_task():
    cfgs = predictors.grid("quick")
    assert len(cfgs) == len(predictors.GRID_OPS) * 2
    cfg = cfgs["x^2+y^2 50%"]
    assert (
        cfg.op == "x^2+y^2" and cfg.train_frac == 0.5 and cfg.curvature_probes > 0 and cfg.representativeness
    )
    assert predictors.grid("quick", ops=["-"], fracs=[0.4], params={"seed": 3})["- 40%"].seeds == (3,)
    with pytest.raises(ValueError, match="op"):
        predictors.grid("quick", ops=["%"])


def tiny(**kw):
    return config.resolve("grokking", {**TINY_GROKKING, **kw}, "smoke")


CURV = dict(curvature_probes=2, curvature_iters=4, curvature_rows=32, representativeness=True)


def test_curvature_and_representativeness_are_logged_at_every_logging_step(results):
    run = train.run(tiny(**CURV), root=results, progress=False)
    steps, acc = run.metrics.series("acc", "train")
    for name, split in (
        ("hess_trace", "train"),
        ("hess_trace_se", "train"),
        ("hess_top", "train"),
        ("rep", "val"),
    ):
        s, v = run.metrics.series(name, split)
        assert np.array_equal(s, steps) and np.isfinite(v).all()
    _, se = run.metrics.series("hess_trace_se", "train")
    assert (se >= 0).all()
    _, wn = run.metrics.series("weight_norm", "train")
    _, wo = run.metrics.series("w_norm", "train")
    assert (wn > wo).all()  # the total norm includes the output layer
    plain = train.run(tiny(), root=results, progress=False)
    _, acc_plain = plain.metrics.series("acc", "train")
    assert np.array_equal(acc, acc_plain)  # measuring curvature does not change training


def test_resume_with_curvature_state_matches_uninterrupted(results):
    cfg = tiny(steps=60, log_points=12, checkpoint_every=20, **CURV)
    ref_rows, _ = grokking.train(cfg, progress=False)
    states = []
    grokking.train(cfg, progress=False, checkpoint=lambda state, rows: states.append(copy.deepcopy(state)))
    assert states and states[0]["curv_v"] is not None
    rows, summary = grokking.train(cfg, progress=False, resume=states[0])
    assert summary["steps_run"] < cfg.steps
    assert rows == ref_rows


def test_early_stop_ends_the_run_at_the_multiple_of_the_grokking_step(results, monkeypatch):
    real = grokking.evaluate

    def fake(model, data, step, *a, **k):  # validation "generalises" from step 10 on
        rows = real(model, data, step, *a, **k)
        return [
            (s, sd, sp, m, 1.0 if (sp == "val" and m == "acc" and s >= 10) else v) for s, sd, sp, m, v in rows
        ]

    monkeypatch.setattr(grokking, "evaluate", fake)
    cfg = tiny(steps=200, log_points=30, early_stop=2.0)
    rows, summary = grokking.train(cfg, progress=False)
    logged = sorted({r[0] for r in rows})
    t_grok = min(s for s in logged if s >= 10)
    assert summary["stopped_at"] == logged[-1] == min(s for s in logged if s >= 2 * t_grok)
    assert summary["steps_run"] == summary["stopped_at"] < 200
    with pytest.raises(ValueError, match="early_stop"):
        tiny(early_stop=0.5)
