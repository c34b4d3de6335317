"""grokprobe.metrics against independent, naive float64 references (loops, numpy, autograd Hessians)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from grokprobe import metrics

DT = torch.float64


def rand_case(n=7, c=4, d=3, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(n, d, generator=g, dtype=DT) * scale
    w = torch.randn(c, d, generator=g, dtype=DT)
    b = torch.randn(c, generator=g, dtype=DT)
    return phi, phi @ w.T + b, w


def labelled(n_per, classes, d, seed=0, spread=1.0):
    """Features with per-class offsets, labels drawn from ``classes`` (shuffled, unbalanced if n_per varies)."""
    g = torch.Generator().manual_seed(seed)
    n_per = [n_per] * len(classes) if isinstance(n_per, int) else n_per
    labels = torch.cat([torch.full((k,), c, dtype=torch.int64) for c, k in zip(classes, n_per)])
    centres = torch.randn(len(classes), d, generator=g, dtype=DT) * 3.0
    idx = torch.repeat_interleave(torch.arange(len(classes)), torch.tensor(n_per))
    phi = centres[idx] + spread * torch.randn(len(labels), d, generator=g, dtype=DT)
    perm = torch.randperm(len(labels), generator=g)
    return phi[perm], labels[perm]


def etf_means(c, d, scale=2.0, seed=0):
    """Class means on a centred simplex ETF in R^d (d >= c), plus a global offset."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(d, c, generator=g, dtype=DT))
    etf = math.sqrt(c / (c - 1)) * (torch.eye(c, dtype=DT) - 1.0 / c)
    offset = 0.3 * scale * torch.randn(d, generator=g, dtype=DT) / math.sqrt(d)
    return scale * etf @ u.T + offset


# ----------------------------------------------------------------------------- naive references


def ref_softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    return [v / sum(e) for v in e]


def ref_class_stats(phi, labels):
    """Per-class loops: {class: (mean (d,), V_mean, count)}."""
    phi, labels = phi.detach().numpy(), labels.tolist()
    out = {}
    for c in sorted(set(labels)):
        rows = [phi[i] for i in range(len(labels)) if labels[i] == c]
        mu = sum(rows) / len(rows)
        v = sum(float(((r - mu) ** 2).sum()) for r in rows) / len(rows)
        out[c] = (mu, v, len(rows))
    return out


def ref_ncc(phi, labels, paper=False):
    st = ref_class_stats(phi, labels)
    vals = []
    for a in st:
        for b in st:
            if a != b:
                (ma, va, na), (mb, vb, nb) = st[a], st[b]
                if paper:
                    va, vb = va * na, vb * nb
                vals.append((va + vb) / (2 * float(((ma - mb) ** 2).sum())))
    return sum(vals) if paper else sum(vals) / len(vals)


def ce_hessian(phi, w):
    """Full autograd Hessian (C, d, C, d) of the mean CE loss w.r.t. W, z = W phi, no bias."""
    y = torch.zeros(len(phi), dtype=torch.int64)  # the CE Hessian does not depend on the labels
    return torch.autograd.functional.hessian(lambda w_: F.cross_entropy(phi @ w_.T, y), w)


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_matches_loop():
    phi, z, _ = rand_case(n=50, c=5, seed=1)
    y = torch.randint(0, 5, (50,), generator=torch.Generator().manual_seed(2))
    ref = sum(int(max(range(5), key=lambda k: z[i, k].item()) == y[i].item()) for i in range(50)) / 50
    acc = metrics.accuracy(z, y)
    assert acc.dim() == 0 and 0 < acc.item() < 1
    assert acc.item() == pytest.approx(ref, abs=1e-15)


# ----------------------------------------------------------------------------- relative flatness


@pytest.mark.parametrize("tau", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("normalize", [False, True])
def test_relative_flatness_matches_loop(tau, normalize):
    phi, z, w = rand_case(n=9, c=5, d=4, seed=3, scale=2.0)
    wn = sum(w[s, k].item() ** 2 for s in range(5) for k in range(4))
    total = 0.0
    for i in range(9):
        p = ref_softmax([v / tau for v in z[i].tolist()])
        nrm = math.sqrt(sum(v * v for v in phi[i].tolist()))
        f = [v / (nrm + 1e-8) for v in phi[i].tolist()] if normalize else phi[i].tolist()
        total += sum(pc * (1 - pc) for pc in p) * sum(v * v for v in f)
    got = metrics.relative_flatness(phi, z, w, tau=tau, normalize_features=normalize)
    assert got.dim() == 0 and got.dtype == DT
    assert got.item() == pytest.approx(wn * total / 9, rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hessian_trace_equals_autograd_trace(seed):
    phi, _, w = rand_case(n=6, c=4, d=3, seed=seed)
    z = phi @ w.T
    h = ce_hessian(phi, w).reshape(12, 12)
    tr = metrics.hessian_trace_wrt_weight(phi, z)
    assert tr.item() == pytest.approx(torch.trace(h).item(), rel=1e-12)
    rf = metrics.relative_flatness(phi, z, w)
    assert rf.item() == pytest.approx((w**2).sum().item() * torch.trace(h).item(), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_relative_flatness_exact_equals_autograd(seed):
    phi, _, w = rand_case(n=6, c=4, d=3, seed=seed)
    h = ce_hessian(phi, w)  # (C, d, C, d)
    kappa = 0.0
    for s in range(4):
        for t in range(4):
            tr_block = sum(h[s, k, t, k].item() for k in range(3))
            kappa += torch.dot(w[s], w[t]).item() * tr_block
    assert metrics.relative_flatness_exact(phi, phi @ w.T, w).item() == pytest.approx(kappa, rel=1e-12)


def test_exact_is_below_bound():  # Lemma A.2
    for seed in range(8):
        phi, z, w = rand_case(n=20, c=3 + seed, d=5, seed=seed, scale=0.5 + seed)
        exact, bound = metrics.relative_flatness_exact(phi, z, w), metrics.relative_flatness(phi, z, w)
        assert 0 < exact.item() <= bound.item()
    # Equal rows of W: every direction in class space costs nothing, so kappa_exact = 0 < bound.
    w_eq = w[:1].expand_as(w).clone()
    assert metrics.relative_flatness_exact(phi, z, w_eq).abs().item() < 1e-10
    assert metrics.relative_flatness(phi, z, w_eq).item() > 1e-3


def test_tau_and_normalized_features():
    phi, z, w = rand_case(n=30, c=6, d=5, seed=4, scale=10.0)
    wn = (w**2).sum()
    assert metrics.relative_flatness(phi, z, w, tau=2.0).item() == pytest.approx(
        metrics.relative_flatness(phi, z / 2, w).item(), rel=1e-12
    )
    # With phi normalised, ||phi||^2 = 1 up to the 1e-8 guard: kappa = ||W||^2 mean(1 - ||p||^2).
    p = torch.softmax(z / 2, -1)
    expected = wn * (1 - (p**2).sum(-1)).mean()
    got = metrics.relative_flatness(phi, z, w, tau=2.0, normalize_features=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-8)
    assert got.item() != pytest.approx(metrics.relative_flatness(phi, z, w, tau=2.0).item(), rel=1e-2)
    # U(p) <= 1 - 1/C, reached as tau -> infinity (uniform p).
    cap = wn.item() * (1 - 1 / 6)
    for tau in [0.5, 1.0, 2.0, 10.0]:
        assert metrics.relative_flatness(phi, z, w, tau=tau, normalize_features=True).item() <= cap
    assert metrics.relative_flatness(phi, z, w, tau=1e9, normalize_features=True).item() == pytest.approx(
        cap, rel=1e-6
    )


def test_relative_flatness_gradients_flow():
    phi, z, w = (t.clone().requires_grad_() for t in rand_case(n=5, c=3, d=2, seed=5))
    assert torch.autograd.gradcheck(
        lambda a, b, c: metrics.relative_flatness(a, b, c, tau=2.0, normalize_features=True), (phi, z, w)
    )
    assert torch.autograd.gradcheck(metrics.relative_flatness, (phi, z, w))
    assert torch.autograd.gradcheck(metrics.relative_flatness_exact, (phi, z, w))
    # float32 inputs: gradients reach all three in their own dtype.
    phi32, z32, w32 = (t.detach().float().requires_grad_() for t in (phi, z, w))
    metrics.relative_flatness(phi32, z32, w32).backward()
    for t in (phi32, z32, w32):
        assert t.grad is not None and t.grad.dtype == torch.float32 and t.grad.abs().sum() > 0


def test_relative_flatness_grok_code_matches_loop():
    g = torch.Generator().manual_seed(6)
    n, v, d = 5, 11, 4
    f_eq, f_c = torch.randn(n, d, generator=g, dtype=DT), torch.randn(n, d, generator=g, dtype=DT)
    z_eq, z_c = torch.randn(n, v, generator=g, dtype=DT), torch.randn(n, v, generator=g, dtype=DT)
    w = torch.randn(v, d, generator=g, dtype=DT)
    total = 0.0
    for i in range(n):
        p = ref_softmax([z_eq[i, k].item() * z_c[i, k].item() for k in range(v)])
        phi = f_eq[i].tolist() + f_c[i].tolist()
        total += sum(pk * (1 - pk) for pk in p) * sum(x * x for x in phi)
    ref = (w**2).sum().item() * total / n
    got = metrics.relative_flatness_grok_code(f_eq, f_c, z_eq, z_c, w)
    assert got.dim() == 0 and got.item() == pytest.approx(ref, rel=1e-12)


# ----------------------------------------------------------------------------- NCC


def test_class_means_matches_loop():
    phi, y = labelled([3, 5, 2], [7, 2, 40], d=3, seed=7)
    classes, means, counts = metrics.class_means(phi, y)
    ref = ref_class_stats(phi, y)
    assert classes.tolist() == [2, 7, 40] and means.dtype == DT
    for k, c in enumerate(classes.tolist()):
        np.testing.assert_allclose(means[k].numpy(), ref[c][0], rtol=1e-13)
        assert counts[k].item() == ref[c][2]


def test_ncc_matches_loop_and_invariances():
    phi, y = labelled([4, 6, 3, 5], [0, 1, 2, 3], d=5, seed=8)
    got = metrics.ncc(phi, y)
    assert got.dim() == 0 and got.item() == pytest.approx(ref_ncc(phi, y), rel=1e-12)
    shift = torch.randn(5, dtype=DT, generator=torch.Generator().manual_seed(9)) * 10
    assert metrics.ncc(3.7 * phi, y).item() == pytest.approx(got.item(), rel=1e-12)
    assert metrics.ncc(phi + shift, y).item() == pytest.approx(got.item(), rel=1e-10)
    # Tighter clusters give a smaller NCC.
    phi_t, y_t = labelled([4, 6, 3, 5], [0, 1, 2, 3], d=5, seed=8, spread=0.1)
    assert metrics.ncc(phi_t, y_t).item() < 0.1 * got.item()


def test_ncc_only_present_classes_count():
    present = [3, 17, 500, 999]  # a 1000-label range, four present
    phi, y = labelled([5, 3, 4, 6], present, d=4, seed=10)
    compact = torch.searchsorted(torch.tensor(present), y)
    got = metrics.ncc(phi, y)
    assert got.item() == pytest.approx(ref_ncc(phi, y), rel=1e-12)
    assert got.item() == pytest.approx(metrics.ncc(phi, compact).item(), rel=1e-14)
    assert metrics.ncc_paper(phi, y).item() == pytest.approx(ref_ncc(phi, y, paper=True), rel=1e-12)


def test_ncc_needs_two_classes():
    phi = torch.randn(5, 3, dtype=DT)
    with pytest.raises(ValueError):
        metrics.ncc(phi, torch.full((5,), 4))
    with pytest.raises(ValueError):
        metrics.ncc_paper(phi, torch.full((5,), 4))


def test_ncc_gradcheck():
    phi, y = labelled(3, [0, 1, 2], d=3, seed=11)
    phi.requires_grad_()
    assert torch.autograd.gradcheck(lambda f: metrics.ncc(f, y), (phi,))
    assert torch.autograd.gradcheck(lambda f: metrics.ncc_paper(f, y), (phi,))


def test_ncc_paper_matches_loop_and_scales_with_pairs_and_size():
    phi, y = labelled([4, 6, 3], [1, 5, 9], d=4, seed=12)
    assert metrics.ncc_paper(phi, y).item() == pytest.approx(ref_ncc(phi, y, paper=True), rel=1e-12)
    # Balanced: paper = K (K - 1) n * code (SPEC D2).
    k, n = 5, 6
    phi, y = labelled(n, list(range(k)), d=4, seed=13)
    assert metrics.ncc_paper(phi, y).item() == pytest.approx(
        k * (k - 1) * n * metrics.ncc(phi, y).item(), rel=1e-12
    )


def test_class_mean_stats_matches_loops():
    phi, y = labelled([4, 2, 5, 3], [2, 4, 6, 8], d=3, seed=14)
    st = ref_class_stats(phi, y)
    cs = sorted(st)
    pairs = [(a, b) for i, a in enumerate(cs) for b in cs[i + 1 :]]
    dist = sum(math.sqrt(float(((st[a][0] - st[b][0]) ** 2).sum())) for a, b in pairs) / len(pairs)
    var = sum(st[a][1] + st[b][1] for a, b in pairs) / len(pairs)
    got = metrics.class_mean_stats(phi, y)
    assert got["mean_distance"].item() == pytest.approx(dist, rel=1e-12)
    assert got["mean_variance"].item() == pytest.approx(var, rel=1e-12)
    assert got["mean_variance"].item() == pytest.approx(2 * np.mean([st[c][1] for c in cs]), rel=1e-12)


# ----------------------------------------------------------------------------- NC1-NC4, angles


def np_pinv(a, rtol):
    u, s, vt = np.linalg.svd(a)
    inv = np.array([1 / x if x > rtol * s[0] else 0.0 for x in s])
    return (vt.T * inv) @ u.T


def test_nc1_matches_numpy_loop():
    phi, y = labelled([5, 8, 4], [0, 3, 6], d=6, seed=15)  # d > C: Sigma_B is rank deficient
    x, lab = phi.numpy(), y.tolist()
    st = ref_class_stats(phi, y)
    mu_g = x.mean(0)
    sw = sum(np.outer(x[i] - st[lab[i]][0], x[i] - st[lab[i]][0]) for i in range(len(lab))) / len(lab)
    sb = sum(np.outer(st[c][0] - mu_g, st[c][0] - mu_g) for c in st) / len(st)
    ref = np.trace(sw @ np_pinv(sb, 1e-6)) / len(st)
    assert metrics.nc1(phi, y).item() == pytest.approx(ref, rel=1e-9)


def test_nc1_pinv_cuts_numerically_null_directions():
    # Class means differ along e3 only by 1e-5 (Sigma_B eigenvalue ~1e-11 of the largest), while the
    # within-class noise there is O(1): a pinv without a cut inverts that direction and NC1 explodes.
    n, g = 6, torch.Generator().manual_seed(23)
    centres = torch.tensor([[0.0, 0, 0, 0], [3, 0, 0, 0], [0, 3, 0, 0], [3, 3, 1e-5, 0]], dtype=DT)
    y = torch.arange(4).repeat_interleave(n)
    noise = torch.randn(4 * n, 4, generator=g, dtype=DT).reshape(4, n, 4)
    noise = (noise - noise.mean(1, keepdim=True)).reshape(4 * n, 4)  # class means stay exactly `centres`
    flat = centres.clone()
    flat[3, 2] = 0.0
    got = metrics.nc1(centres[y] + noise, y)
    assert got.item() == pytest.approx(metrics.nc1(flat[y] + noise, y).item(), rel=1e-6)
    assert got.item() < 10
    assert metrics.nc1(centres[y] + noise, y, rtol=1e-14).item() > 1e6


def test_nc2_matches_numpy():
    phi, y = labelled([5, 8, 4, 6], [0, 3, 6, 7], d=5, seed=16)
    st = ref_class_stats(phi, y)
    mu_g = phi.numpy().mean(0)
    m = np.stack([(st[c][0] - mu_g) / np.linalg.norm(st[c][0] - mu_g) for c in sorted(st)])
    g = m @ m.T
    t = np.eye(4) - 1 / 4
    ref = np.linalg.norm(g / np.linalg.norm(g) - t / np.linalg.norm(t))
    assert metrics.nc2(phi, y).item() == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("c,d", [(3, 4), (6, 8)])
def test_nc_vanish_on_exact_collapse_and_not_with_noise(c, d):
    n, lam = 5, 0.7
    means = etf_means(c, d, seed=c)
    y = torch.arange(c).repeat_interleave(n)
    phi = means[y]
    w = lam * (means - means.mean(0))
    z = phi @ w.T
    assert metrics.nc1(phi, y).abs().item() < 1e-12
    assert metrics.nc2(phi, y).item() < 1e-7
    assert metrics.nc3(phi, y, w).item() < 1e-12
    assert metrics.nc4(phi, y, z).item() == 0.0

    g = torch.Generator().manual_seed(17)
    phi_n = phi + 1.5 * torch.randn(phi.shape, generator=g, dtype=DT)
    w_n = w + 1.5 * torch.randn(w.shape, generator=g, dtype=DT)
    assert metrics.nc1(phi_n, y).item() > 1e-2
    assert metrics.nc2(phi_n, y).item() > 1e-2
    assert metrics.nc3(phi_n, y, w_n).item() > 1e-2
    assert metrics.nc4(phi_n, y, phi_n @ w_n.T).item() > 0


def test_nc3_nc4_use_rows_of_present_classes():
    c_all, present, d = 10, [1, 4, 8], 5
    means = etf_means(3, d, seed=18)
    y = torch.tensor(present).repeat_interleave(4)
    phi = means[torch.arange(3).repeat_interleave(4)]
    w = torch.randn(c_all, d, dtype=DT, generator=torch.Generator().manual_seed(19)) * 5
    w[present] = 2.0 * (means - means.mean(0))
    assert metrics.nc3(phi, y, w).item() < 1e-12
    assert metrics.nc4(phi, y, phi @ w.T).item() == 0.0  # absent rows (large logits) are ignored
    assert metrics.accuracy(phi @ w.T, y).item() < 1.0  # ...which the unrestricted argmax does not do


def test_nc4_matches_loop():
    phi, y = labelled([6, 5, 7], [2, 5, 7], d=4, seed=20, spread=2.5)
    logits = torch.randn(len(y), 9, dtype=DT, generator=torch.Generator().manual_seed(21))
    st = ref_class_stats(phi, y)
    cs = sorted(st)
    x = phi.numpy()
    disagree = 0
    for i in range(len(y)):
        nearest = min(cs, key=lambda c: float(((x[i] - st[c][0]) ** 2).sum()))
        net = max(cs, key=lambda c: logits[i, c].item())
        disagree += nearest != net
    got = metrics.nc4(phi, y, logits)
    assert 0 < got.item() < 1 and got.item() == pytest.approx(disagree / len(y), abs=1e-15)


@pytest.mark.parametrize("c", [3, 10])
def test_class_mean_angles_on_simplex(c):
    means = etf_means(c, c + 2, seed=c)
    y = torch.arange(c).repeat_interleave(3)
    ang = metrics.class_mean_angles(means[y], y)
    off = ~torch.eye(c, dtype=torch.bool)
    assert ang.shape == (c, c) and torch.all(ang.diagonal() == 0)
    np.testing.assert_allclose(ang[off].numpy(), metrics.simplex_etf_angle(c), atol=1e-6)


def test_class_mean_angles_matches_loop_and_simplex_values():
    phi, y = labelled([4, 6, 3, 5], [0, 1, 2, 3], d=5, seed=22)
    st = ref_class_stats(phi, y)
    mu_g = phi.numpy().mean(0)
    ang = metrics.class_mean_angles(phi, y)
    for a in range(4):
        for b in range(4):
            if a != b:
                u, v = st[a][0] - mu_g, st[b][0] - mu_g
                ref = math.degrees(math.acos(float(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v))))
                assert ang[a, b].item() == pytest.approx(ref, rel=1e-10)
    assert metrics.simplex_etf_angle(2) == pytest.approx(180.0)
    assert metrics.simplex_etf_angle(3) == pytest.approx(120.0)
    assert metrics.simplex_etf_angle(10) == pytest.approx(96.379, abs=1e-3)
