"""grokprobe.representativeness against a naive double loop and answers worked out by hand."""

import math

import pytest
import torch

from grokprobe.representativeness import representativeness

DT = torch.float64


def rand_case(n=7, m=5, d=3, c=4, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x_tr = scale * torch.randn(n, d, generator=g, dtype=DT)
    z_tr = torch.randn(n, c, generator=g, dtype=DT)
    x_te = scale * torch.randn(m, d, generator=g, dtype=DT)
    z_te = torch.randn(m, c, generator=g, dtype=DT)
    y_te = torch.randint(0, c, (m,), generator=g)
    return x_tr, z_tr, x_te, z_te, y_te


def ref_ce(row, label):
    """-log softmax(row)[label], with math on Python floats."""
    top = max(row)
    return -(row[label] - top - math.log(sum(math.exp(v - top) for v in row)))


def ref_rep(x_tr, z_tr, x_te, z_te, y_te, h, mode):
    x_tr, z_tr, x_te, z_te, y_te = (t.tolist() for t in (x_tr, z_tr, x_te, z_te, y_te))
    terms = []
    for xj, zj, yj in zip(x_te, z_te, y_te):
        dists = [math.sqrt(sum((a - b) ** 2 for a, b in zip(xj, xi))) for xi in x_tr]
        losses = [ref_ce(zi, yj) for zi in z_tr]
        if mode == "normalized":
            k = [math.exp(-(dd**2) / (2 * h * h)) for dd in dists]
            pred = sum(ki * li for ki, li in zip(k, losses)) / sum(k)
        else:
            k = [math.exp(-dd / (2 * h * h)) for dd in dists]
            pred = sum(ki * li for ki, li in zip(k, losses)) / len(x_tr)
        terms.append(ref_ce(zj, yj) - pred)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("mode", ["normalized", "petzka"])
@pytest.mark.parametrize("h", [0.7, 1.0, 3.0])
def test_matches_a_double_loop(mode, h):
    case = rand_case()
    got = representativeness(*case, bandwidth=h, mode=mode)
    assert got.dtype == DT and got.dim() == 0
    assert abs(got.item() - ref_rep(*case, h, mode)) < 1e-10


def test_far_points_do_not_underflow_the_normalised_weights():
    # every kernel value exp(-d^2 / 2) underflows to 0 here; the softmax form still weights the nearest
    x_tr, z_tr, x_te, z_te, y_te = rand_case(scale=100.0)
    got = representativeness(x_tr, z_tr, x_te, z_te, y_te)
    assert torch.isfinite(got)
    nearest = torch.cdist(x_te, x_tr).argmin(1)
    lsm_tr, lsm_te = torch.log_softmax(z_tr, -1), torch.log_softmax(z_te, -1)
    expect = (lsm_tr[nearest, y_te] - lsm_te[torch.arange(len(y_te)), y_te]).mean()
    assert abs(got.item() - expect.item()) < 1e-10


def test_test_set_equal_to_train_set_and_tiny_bandwidth_gives_zero():
    x, z, _, _, _ = rand_case(n=12)
    y = torch.randint(0, 4, (12,), generator=torch.Generator().manual_seed(1))
    assert torch.pdist(x).min() > 0.1  # well separated against h = 1e-4
    assert abs(representativeness(x, z, x, z, y, bandwidth=1e-4).item()) < 1e-8


def test_huge_bandwidth_gives_the_unweighted_average():
    x_tr, z_tr, x_te, z_te, y_te = rand_case()
    train_loss = -torch.log_softmax(z_tr, -1)  # (N, C)
    test_loss = -torch.log_softmax(z_te, -1)[torch.arange(len(y_te)), y_te]
    expect = test_loss.mean() - train_loss[:, y_te].mean(0).mean()
    got = representativeness(x_tr, z_tr, x_te, z_te, y_te, bandwidth=1e6)
    assert abs(got.item() - expect.item()) < 1e-9


def test_one_dimensional_two_clusters_by_hand():
    # train: A, B at x = 0 with losses [log 2, log 2] and [log 4/3, log 4]; C at x = 10 with [log 4, log 4/3]
    x_tr = torch.tensor([[0.0], [0.0], [10.0]], dtype=DT)
    z_tr = torch.tensor([[0.0, 0.0], [math.log(3), 0.0], [0.0, math.log(3)]], dtype=DT)
    # held out, all with logits 0 (loss log 2): x = 0 label 0, x = 10 label 1, x = 5 (equidistant) label 0
    x_te = torch.tensor([[0.0], [10.0], [5.0]], dtype=DT)
    z_te = torch.zeros(3, 2, dtype=DT)
    y_te = torch.tensor([0, 1, 0])
    # h = 1: the other cluster's weight is exp(-50) ~ 2e-22, below double precision next to 1
    l2, l43, l4 = math.log(2), math.log(4 / 3), math.log(4)
    terms = [l2 - (l2 + l43) / 2, l2 - l43, l2 - (l2 + l43 + l4) / 3]
    assert terms == pytest.approx([math.log(1.5) / 2, math.log(1.5), math.log(0.75) / 3], rel=1e-14)
    got = representativeness(x_tr, z_tr, x_te, z_te, y_te, bandwidth=1.0)
    assert abs(got.item() - sum(terms) / 3) < 1e-14
    # petzka: k = exp(-|x - x_i| / 2), averaged over N = 3 without normalising
    e10, e5 = math.exp(-10.0 / 2), math.exp(-5.0 / 2)  # distance 10 to the other cluster, 5 from x = 5
    petzka = [
        l2 - (l2 + l43 + e10 * l4) / 3,
        l2 - (e10 * l2 + e10 * l4 + l43) / 3,
        l2 - e5 * (l2 + l43 + l4) / 3,
    ]
    got = representativeness(x_tr, z_tr, x_te, z_te, y_te, bandwidth=1.0, mode="petzka")
    assert abs(got.item() - sum(petzka) / 3) < 1e-14


@pytest.mark.parametrize("mode", ["normalized", "petzka"])
def test_invariant_to_permuting_training_rows_and_to_chunk_size(mode):
    x_tr, z_tr, x_te, z_te, y_te = rand_case(n=40, m=23, d=5, c=6, seed=3)
    base = representativeness(x_tr, z_tr, x_te, z_te, y_te, mode=mode)
    perm = torch.randperm(40, generator=torch.Generator().manual_seed(4))
    permuted = representativeness(x_tr[perm], z_tr[perm], x_te, z_te, y_te, mode=mode)
    assert abs(permuted.item() - base.item()) < 1e-12
    for chunk in (1, 4, 23, 1000):
        assert (
            abs(representativeness(x_tr, z_tr, x_te, z_te, y_te, chunk=chunk, mode=mode).item() - base.item())
            < 1e-12
        )


def test_float32_inputs_and_int32_labels_are_accepted():
    case = rand_case()
    got = representativeness(*(t.float() for t in case[:4]), case[4].int())
    assert got.dtype == DT
    assert abs(got.item() - representativeness(*case).item()) < 1e-5


def test_bad_inputs_raise():
    x_tr, z_tr, x_te, z_te, y_te = rand_case()
    ok = (x_tr, z_tr, x_te, z_te, y_te)
    bad = {
        "2-D": (x_tr[0], z_tr, x_te, z_te, y_te),
        "feature widths": (x_tr, z_tr, x_te[:, :2], z_te, y_te),
        "train_logits has": (x_tr, z_tr[:-1], x_te, z_te, y_te),
        "test_logits has": (x_tr, z_tr, x_te, z_te[:-1], y_te),
        "classes": (x_tr, z_tr, x_te, z_te[:, :3], y_te),
        "test_labels must have shape": (x_tr, z_tr, x_te, z_te, y_te[:-1]),
        "integers": (x_tr, z_tr, x_te, z_te, y_te.double()),
        "lie in": (x_tr, z_tr, x_te, z_te, y_te + 4),
        "at least one": (x_tr[:0], z_tr[:0], x_te, z_te, y_te),
    }
    for msg, args in bad.items():
        with pytest.raises(ValueError, match=msg):
            representativeness(*args)
    for h in (0.0, -1.0, float("inf"), float("nan"), "wide"):
        with pytest.raises(ValueError, match="bandwidth"):
            representativeness(*ok, bandwidth=h)
    with pytest.raises(ValueError, match="chunk"):
        representativeness(*ok, chunk=0)
    with pytest.raises(ValueError, match="mode"):
        representativeness(*ok, mode="kde")
