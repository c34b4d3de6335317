"""Collapse control (notebook 03): the NCC penalty against a loop reference, the Fig 3 angle summary
and NC1-NC4 through classify.evaluate on exactly collapsed features, lambda choice, claim C2, and
the diverged-run bookkeeping."""

import math
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

from grokprobe import (
    analysis,
    classify,
    collapse,
    collapse_tables,
    config,
    paths,
    plots_collapse,
    regularizers,
    store,
    train,
)
from grokprobe.data import ImageData
from grokprobe.metrics import ANGLE_QUANTILES, simplex_etf_angle

matplotlib.use("Agg")
DT = torch.float64


def batch(n=40, c=5, d=6, seed=0, missing=()):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, c, (n,), generator=g)
    for m in missing:
        labels[labels == m] = (m + 1) % c
    centres = 2 * torch.randn(c, d, generator=g, dtype=DT)
    return centres[labels] + torch.randn(n, d, generator=g, dtype=DT), labels


def loop_ncc(phi, labels):
    """Mean over ordered pairs of present classes of (V_c + V_c') / (2 ||mu_c - mu_c'||^2), V a mean."""
    x, y = phi.detach().numpy(), labels.tolist()
    stats = {}
    for c in sorted(set(y)):
        rows = np.array([x[i] for i in range(len(y)) if y[i] == c])
        mu = rows.mean(0)
        stats[c] = (mu, ((rows - mu) ** 2).sum(1).mean())
    vals = [
        (stats[a][1] + stats[b][1]) / (2 * ((stats[a][0] - stats[b][0]) ** 2).sum())
        for a in stats
        for b in stats
        if a != b
    ]
    return sum(vals) / len(vals)


def etf(c, d, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, c, generator=g, dtype=DT))
    return scale * math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=DT) - 1.0 / c) @ u.T


# ----------------------------------------------------------------------------- the penalty


@pytest.mark.parametrize("missing", [(), (2,), (0, 3)])
def test_penalty_is_batch_ncc_over_present_classes(missing):
    phi, y = batch(missing=missing, seed=len(missing))
    assert regularizers.collapse_penalty(phi, y).item() == pytest.approx(loop_ncc(phi, y), rel=1e-12)


def test_penalty_signs_prevent_minus_encourage_plus():
    phi, y = batch()
    kw = dict(lam=0.3, features=phi, logits=None, weight=None, labels=y)
    ncc = loop_ncc(phi, y)
    for kind, sign in (("collapse_prevent", -1), ("collapse_encourage", 1)):
        term, raw = regularizers.penalty_term(kind, **kw)
        assert raw.item() == pytest.approx(ncc, rel=1e-12)
        assert term.item() == pytest.approx(sign * 0.3 * ncc, rel=1e-12)


def test_penalty_gradcheck():
    phi, y = batch(n=12, c=3, d=3)
    phi.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f: regularizers.collapse_penalty(f, y), (phi,))


def test_a_gradient_step_moves_batch_ncc_the_intended_way():
    phi, y = batch()
    before = loop_ncc(phi, y)
    for kind, up in (("collapse_prevent", True), ("collapse_encourage", False)):
        f = phi.clone().requires_grad_(True)
        term, _ = regularizers.penalty_term(kind, lam=1.0, features=f, logits=None, weight=None, labels=y)
        term.backward()
        after = loop_ncc(f.detach() - 1e-3 * f.grad, y)
        assert (after > before) if up else (after < before)


# ----------------------------------------------------------------------------- evaluate on exact collapse


class Collapsed(nn.Module):
    """phi(x) = the ETF mean of x's class (x is a one-hot label), W = lam (mu_c - mu_G): NC1-NC4 hold."""

    def __init__(self, means, lam=2.0):
        super().__init__()
        self.means = means.float()
        self.classifier = nn.Linear(means.shape[1], means.shape[0])
        with torch.no_grad():
            self.classifier.weight.copy_(lam * self.means)  # the ETF is centred: mu_G = 0
            self.classifier.bias.zero_()

    def forward(self, x):
        phi = x @ self.means
        return self.classifier(phi), phi


@pytest.mark.parametrize("c", [3, 10])
def test_evaluate_on_exact_collapse_gives_etf_angles_and_vanishing_nc(c):
    y = torch.arange(c).repeat(4)
    x = torch.eye(c)[y]
    data = ImageData("etf", x, y, x, y, c)
    cfg = SimpleNamespace(eval_batch=64, tau=2.0, normalize_features=True)
    rows = classify.evaluate(Collapsed(etf(c, c + 3)), data, cfg, epoch=0, seed=0, penalty_on=False)
    got = {m: v for _, _, split, m, v in rows if split == "train"}
    for q in ANGLE_QUANTILES:
        assert got[q] == pytest.approx(simplex_etf_angle(c), abs=1e-3)
    assert got["angle_dev"] == pytest.approx(0, abs=1e-3)
    for name in ("ncc", "nc1", "nc2", "nc3", "nc4"):
        assert abs(got[name]) < 1e-5, name
    assert got["acc"] == 1.0


# ----------------------------------------------------------------------------- configs and data


def test_condition_configs_per_task():
    cfgs = collapse.condition_configs(task="digits", profile="smoke", seeds=[1, 2], lams={"prevent": 0.5})
    assert list(cfgs) == ["baseline", "prevent", "encourage"]
    assert [c.seeds for c in cfgs["prevent"]] == [(1,), (2,)]  # classifiers: one run per seed
    assert cfgs["baseline"][0].penalty == "none" and cfgs["baseline"][0].lam == 0
    assert (cfgs["prevent"][0].penalty, cfgs["prevent"][0].lam) == ("collapse_prevent", 0.5)
    assert cfgs["encourage"][0].lam == collapse.LAMBDAS["digits"]["encourage"]
    grok = collapse.condition_configs(task="grokking", profile="smoke", direction="encourage")
    assert list(grok) == ["baseline", "encourage"] and len(grok["encourage"]) == 1  # seeds batched
    assert grok["encourage"][0].penalty == "collapse_encourage"
    aug = collapse.make_config(task="cifar10_aug", profile="paper", condition="prevent", lam=1e-3)
    assert (aug.arch, aug.augment, aug.epochs, aug.lr, aug.batch_size) == (
        "resnet18_cifar",
        True,
        250,
        0.01,
        64,
    )
    with pytest.raises(ValueError, match="direction"):
        collapse.directions("sideways")
    with pytest.raises(ValueError, match="task"):
        collapse.make_config(task="mnist", profile="quick", condition="baseline")


def test_cifar_without_data_fails_before_training_saying_how_to_get_it(monkeypatch, tmp_path):
    monkeypatch.setattr(paths, "DATA", tmp_path)
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        collapse.require_data("cifar10")
    collapse.require_data("digits")  # bundled: nothing to check


# ----------------------------------------------------------------------------- outcomes, claim C2


def fake_outcome(condition, lam, finals: dict, seeds=(1, 2, 3), diverged=None, epochs=10):
    """An Outcome whose last TAIL logged values are `finals` (per metric: a value or one per seed)."""
    rows = []
    for i, s in enumerate(seeds):
        for (split, name), v in finals.items():
            v = v[i] if isinstance(v, list) else v
            rows += [(e, s, split, name, v) for e in range(epochs)]
    return collapse.Outcome(condition, lam, store.Metrics(rows), diverged=diverged or {})


def finals(acc, ncc):
    return {("val", "acc"): acc, ("train", "acc"): 1.0, ("train", "ncc"): ncc, ("train", "kappa"): 1.0}


def test_final_is_the_mean_over_the_last_tenth_of_training():
    epochs = store.Metrics([(e, 1, "val", "acc", float(e)) for e in range(41)])
    assert collapse.final(epochs, "acc", "val", 1) == 38.0  # epochs 36..40
    log_steps = [0, 1, 10, 100, 1000, 3475, 4000]
    grok = store.Metrics([(t, 7, "val", "acc", float(t)) for t in log_steps])
    assert collapse.final(grok, "acc", "val", 7) == 4000.0  # 3475 is before the last 10%
    np.testing.assert_array_equal(collapse.final(grok, "acc", "val"), [4000.0])


def test_c2_holds_when_ncc_moves_and_accuracy_stays():
    out = {
        "baseline": fake_outcome("baseline", 0, finals([0.97, 0.98, 0.975], 0.2)),
        "prevent": fake_outcome("prevent", 0.1, finals([0.96, 0.97, 0.96], [0.5, 0.9, 0.45])),
        "encourage": fake_outcome("encourage", 1.0, finals(0.98, 0.08)),
    }
    r = collapse_tables.c2_collapse_not_necessary(out, profile="quick")
    assert r["verdict"] == "reproduced" and r["claim"] == "C2"
    pd = {d["direction"]: d for d in r["per_direction"]}
    assert pd["prevent"]["ncc_ratio"] == pytest.approx((0.5 + 0.9 + 0.45) / 3 / 0.2)
    assert pd["prevent"]["delta_acc"] == pytest.approx(100 * (0.9633333 - 0.975), abs=1e-4)
    assert len(r["per_seed"]) == 9
    # the paper profile's tolerance is 2 points: a 2.5-point drop is a finding there
    out["prevent"] = fake_outcome("prevent", 0.1, finals(0.95, 0.6))
    assert collapse_tables.c2_collapse_not_necessary(out, profile="quick")["verdict"] == "reproduced"
    r = collapse_tables.c2_collapse_not_necessary(out, profile="paper", task="cifar10")
    assert r["verdict"] == "not reproduced" and r["claim"] == "C2/cifar10"
    assert "accuracy changed" in r["summary"]


def test_c2_is_inconclusive_when_ncc_does_not_move_or_a_seed_diverges():
    base = fake_outcome("baseline", 0, finals(0.97, 0.2))
    weak = {"baseline": base, "encourage": fake_outcome("encourage", 1e-3, finals(0.97, 0.15))}
    r = collapse_tables.c2_collapse_not_necessary(weak, profile="quick")
    assert r["verdict"] == "inconclusive" and r["per_direction"][0]["outcome"] == "NCC did not move"
    bad = {"baseline": base, "prevent": fake_outcome("prevent", 1.0, finals(0.9, 2.0), (1, 2), {3: 4})}
    r = collapse_tables.c2_collapse_not_necessary(bad, profile="quick")
    assert r["verdict"] == "inconclusive" and r["per_direction"][0]["diverged"] == [3]
    row = next(x for x in r["per_seed"] if x["seed"] == 3 and x["condition"] == "prevent")
    assert (row["condition"], row["diverged_at"], row["val_acc"]) == ("prevent", 4, None)
    assert analysis.format_table(r["per_seed"]) and analysis.format_table(r["per_direction"])
    # a seed that no longer fits its training set: the penalty broke training, not generalization
    unfit = {("val", "acc"): [0.97, 0.0, 0.96], ("train", "acc"): [1.0, 0.0, 0.99], ("train", "ncc"): 3.0}
    unfit[("train", "kappa")] = 1.0
    r = collapse_tables.c2_collapse_not_necessary(
        {"baseline": base, "prevent": fake_outcome("prevent", 1e-3, unfit)}, profile="quick"
    )
    assert r["verdict"] == "inconclusive" and r["per_direction"][0]["outcome"] == "training failed"
    assert r["per_direction"][0]["unfit_seeds"] == [2]


def sweep_row(direction, lam, ratio=None, train=100.0, status="ok", at=None):
    return {
        "direction": direction,
        "lam": lam,
        "status": status,
        "diverged_at": at,
        "train_acc": train,
        "ncc_ratio": ratio,
        "base_train_acc": 100.0,
    }


def test_choose_lambda_takes_the_smallest_stable_lambda_that_moves_ncc_2x():
    rows = [
        sweep_row("prevent", 1e-3, 1.0),
        sweep_row("prevent", 1e-2, 1.5),
        sweep_row("prevent", 0.03, 2.4, train=99.0),
        sweep_row("prevent", 0.1, None, status="diverged", at=3),
        sweep_row("encourage", 0.1, 0.8),
        sweep_row("encourage", 1.0, 0.45),
        sweep_row("encourage", 3.0, 0.3),
    ]
    p = collapse_tables.choose_lambda(rows, direction="prevent")
    assert p["lam"] == 0.03 and "diverged at 3" in p["why"]
    assert collapse_tables.choose_lambda(rows, direction="encourage")["lam"] == 1.0
    rows[2]["train_acc"] = 90.0  # NCC moved, but the model no longer fits the training set
    p = collapse_tables.choose_lambda(rows, direction="prevent")
    assert p["lam"] is None and "x1.50 at lam=0.01" in p["why"]
    picks = collapse_tables.chosen_lams(task="digits", sweep_rows=rows)
    assert (
        picks["prevent"]["lam"] == collapse.LAMBDAS["digits"]["prevent"] and picks["encourage"]["lam"] == 1.0
    )
    assert (
        collapse_tables.chosen_lams(task="cifar10", sweep_rows=rows)["encourage"]["lam"] == 1e-3
    )  # the paper's
    assert collapse_tables.chosen_lams(task="digits", lam=0.2, direction="prevent") == {
        "prevent": {"lam": 0.2, "why": "set by the lam parameter"}
    }


# ----------------------------------------------------------------------------- real runs (tiny)


def tiny(condition, lam=0.0, **kw):
    params = {"epochs": 2, "device": "cpu", **kw}
    return collapse.make_config(
        task="digits", profile="smoke", condition=condition, lam=lam, seeds=[1], params=params
    )


def test_a_diverged_run_is_recorded_and_read_back_not_retrained(results, monkeypatch):
    o = collapse.Runner(root=results)([tiny("prevent", 1e6, lr=10.0)], condition="prevent")
    assert o.metrics is None and 1 in o.diverged and o.partial is not None
    monkeypatch.setitem(train.TRAINERS, "collapse", lambda *a, **k: pytest.fail("retrained a diverged run"))
    again = collapse.Runner(root=results)([tiny("prevent", 1e6, lr=10.0)], condition="prevent")
    assert again.diverged == o.diverged and again.partial.rows == o.partial.rows


def test_conditions_sweep_claim_and_figures_end_to_end(results, monkeypatch):
    trained = []
    real = train.TRAINERS["collapse"]
    monkeypatch.setitem(train.TRAINERS, "collapse", lambda cfg, **k: trained.append(cfg) or real(cfg, **k))
    cfgs = {c: [tiny(c, lam)] for c, lam in (("baseline", 0), ("prevent", 0.05), ("encourage", 1.0))}
    runner = collapse.Runner(root=results, recompute=True)
    out = collapse.run_conditions(cfgs, runner)
    names = {m for _, m in out["baseline"].metrics.names}
    assert set(ANGLE_QUANTILES) | {"ncc", "nc1", "nc4", "mean_distance", "batch_loss"} <= names
    rows = collapse_tables.summary_rows(out)
    assert [r["condition"] for r in rows] == ["baseline", "prevent", "encourage"]
    assert rows[0]["ncc/baseline"] == pytest.approx(1.0)
    sweep = collapse.run_sweep(
        task="digits",
        profile="smoke",
        lams=[0.05, 1e5],
        seed=1,
        baseline=out["baseline"],
        direction="prevent",
        params={"epochs": 2, "device": "cpu"},
        runner=runner,
    )
    assert [r["status"] for r in sweep] == ["ok", "diverged"]
    # the same config as the prevent condition: reused, not retrained even under recompute
    assert sweep[0]["outcome"].paths == out["prevent"].paths
    assert len(trained) == 4 and trained[-1].lam == 1e5
    c2 = collapse_tables.c2_collapse_not_necessary(out, profile="smoke")
    assert c2["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    for fig in (
        plots_collapse.accuracy_flatness_ncc(out),
        plots_collapse.geometry(out),
        plots_collapse.angles(out, num_classes=10),
        plots_collapse.losses(out),
        plots_collapse.lambda_sweep(sweep, baseline=out["baseline"], chosen={"prevent": {"lam": 0.05}}),
    ):
        assert fig.axes
    assert config.config_hash(cfgs["prevent"][0]) in str(out["prevent"].paths[0])
