import numpy as np

from grokprobe import analysis, claims, store

STEPS = np.unique(np.round(np.geomspace(1, 10_000, 80)).astype(int))


def _sigmoid(t, mid, width=0.15):
    return 1 / (1 + np.exp(-(np.log10(t) - np.log10(mid)) / width))


def _metrics(kappa_drop_at, ncc_drop_at, seeds=(1, 2)):
    """Synthetic grokking curves: memorise at ~100 steps, generalise at ~2000 steps."""
    rows = []
    for seed in seeds:
        tr = _sigmoid(STEPS, 100, 0.1)
        va = 0.02 + 0.97 * _sigmoid(STEPS, 2000, 0.08)
        # a 100-fold drop, sigmoidal in log space (the statistic works on log kappa and log NCC)
        kappa = 1e4 * np.exp(-4.6 * _sigmoid(STEPS, kappa_drop_at, 0.08))
        ncc = 40 * np.exp(-4.6 * _sigmoid(STEPS, ncc_drop_at, 0.1))
        for name, split, v in (
            ("acc", "train", tr),
            ("acc", "val", va),
            ("kappa", "train", kappa),
            ("ncc", "train", ncc),
        ):
            rows += [(int(s), seed, split, name, float(x)) for s, x in zip(STEPS, v)]
    return store.Metrics(rows)


def test_generalization_window():
    m = _metrics(2000, 60)
    steps, tr = m.series("acc", "train", 1)
    _, va = m.series("acc", "val", 1)
    w = analysis.generalization_window(steps, tr, va)
    assert 150 <= w["t_mem"] <= 400
    assert w["t_mem"] < w["t_g10"] < w["t_g50"] < w["t_g90"]
    assert 1000 <= w["t_g50"] <= 2500


def test_c1_holds_when_kappa_drops_with_generalization_and_ncc_with_memorization():
    res = claims.c1_flatness_tracks_generalization(_metrics(kappa_drop_at=2000, ncc_drop_at=60))
    assert res["verdict"] == "reproduced"
    row = res["per_seed"][0]
    assert row["S_kappa"] > 0.8 and row["S_ncc"] < 0.1 and row["M_ncc"] > 0.5
    assert abs(row["lag_kappa"]) < 0.1 and row["lag_ncc"] < -1


def test_c1_fails_when_the_roles_are_swapped():
    res = claims.c1_flatness_tracks_generalization(_metrics(kappa_drop_at=60, ncc_drop_at=2000))
    assert res["verdict"] == "not reproduced"
    assert not any(r["holds"] for r in res["per_seed"])


def test_c1_not_evaluable_without_memorization():
    rows = [
        (int(s), 1, sp, m, 0.1)
        for s in STEPS
        for sp, m in (("train", "acc"), ("val", "acc"), ("train", "kappa"), ("train", "ncc"))
    ]
    res = claims.c1_flatness_tracks_generalization(store.Metrics(rows))
    assert res["verdict"] == "not reproduced" and res["per_seed"][0]["evaluable"] is False


def test_running_median_removes_a_single_spike():
    v = np.ones(20)
    v[7] = 100.0
    assert analysis.running_median(v, 5).max() == 1.0


def test_claims_are_merged_into_one_file(tmp_path):
    path = tmp_path / "claims.json"
    claims.record({"claim": "C1", "statement": "s", "verdict": "reproduced"}, profile="quick", path=path)
    claims.record({"claim": "C1", "statement": "s", "verdict": "not reproduced"}, profile="paper", path=path)
    assert set(__import__("json").loads(path.read_text())) == {"C1/quick", "C1/paper"}


def test_only_a_profiles_default_run_records_a_claim(tmp_path):
    path = tmp_path / "claims.json"
    claim = {"claim": "C1", "statement": "s", "verdict": "reproduced"}
    assert claims.record(claim, profile="quick", path=path)["verdict"] == "reproduced"
    side = {**claim, "verdict": "not reproduced"}
    assert claims.record(side, profile="quick", path=path, overrides={"precision": "bfloat16"}) is None
    assert claims.record(side, profile="smoke", path=path) is None
    stored = __import__("json").loads(path.read_text())
    assert set(stored) == {"C1/quick"} and stored["C1/quick"]["verdict"] == "reproduced"
