"""grokprobe.theory: Lemma A.1, Lemma A.2 and Proposition 5.3 (SPEC §6) against independent computations."""

import math

import numpy as np
import pytest
import torch

from grokprobe import metrics, theory

DT = torch.float64


def kappa_loops(hessian, weight):
    """sum_{s,s'} <w_s, w_s'> sum_a H[(s,a),(s',a)] with explicit loops (reference for kappa_from_hessian)."""
    k, d = weight.shape
    h = hessian.reshape(k * d, k * d)
    total = 0.0
    for s in range(k):
        for t in range(k):
            tr = sum(float(h[s * d + a, t * d + a]) for a in range(d))
            total += float(weight[s] @ weight[t]) * tr
    return total


# ----------------------------------------------------------------------------- Lemma A.2


@pytest.mark.parametrize("seed", range(6))
def test_lemma_a2_on_random_psd_hessians(seed):
    g = torch.Generator().manual_seed(seed)
    k, d = 2 + seed % 4, 1 + seed % 3
    a = torch.randn(k * d, 1 + seed, generator=g, dtype=DT)  # rank-deficient for small seeds
    hessian = a @ a.T
    w = torch.randn(k, d, generator=g, dtype=DT) * (1 + seed)
    kappa = float(theory.kappa_from_hessian(hessian, w))
    assert kappa == pytest.approx(kappa_loops(hessian, w), rel=1e-12)
    assert -1e-12 <= kappa <= float(w.pow(2).sum() * torch.trace(hessian)) * (1 + 1e-12)


def test_lemma_a2_needs_a_psd_hessian():
    """Tr H_{ss'} = [[0, 1], [1, 0]] is not PSD: kappa = 2 ||w||^2 > 0 = ||W||^2 Tr H."""
    hessian = torch.zeros(2, 1, 2, 1, dtype=DT)
    hessian[0, 0, 1, 0] = hessian[1, 0, 0, 0] = 1.0
    w = torch.ones(2, 1, dtype=DT)
    assert float(theory.kappa_from_hessian(hessian, w)) == pytest.approx(2.0)
    assert float(w.pow(2).sum() * hessian.reshape(2, 2).trace()) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_autograd_hessian_kappa_matches_closed_form_on_random_softmax_ce(seed):
    g = torch.Generator().manual_seed(seed)
    n, k, d = 9, 4, 3
    phi = torch.randn(n, d, generator=g, dtype=DT)
    w, b = torch.randn(k, d, generator=g, dtype=DT), torch.randn(k, generator=g, dtype=DT)
    y = torch.randint(k, (n,), generator=g)
    z = phi @ w.T + b
    kh = float(theory.kappa_autograd_hessian(phi, y, w, b))
    assert kh == pytest.approx(float(metrics.relative_flatness_exact(phi, z, w)), rel=1e-10)
    assert kh <= float(metrics.relative_flatness(phi, z, w))  # Lemma A.2: the CE Hessian is PSD


# ----------------------------------------------------------------------------- the geometries

CASES = [  # (k, d, M, lam, offset): d = k - 1 (tightest) and d > k; offset 0 satisfies Remark 5.2
    (2, 1, 1.0, 0.5, 0.0),
    (3, 2, 2.0, 1.3, 0.0),
    (5, 9, 0.7, 3.0, 0.0),
    (4, 6, 1.5, 0.2, 1.5),
    (10, 9, 1.0, 2.0, 0.4),
]


@pytest.mark.parametrize("k,d,M,lam,offset", CASES)
def test_geometry_is_an_exact_collapse(k, d, M, lam, offset):
    g = theory.collapse_geometry(k=k, d=d, M=M, lam=lam, offset=offset, n_per_class=3, seed=k)
    v = g.means - g.global_mean
    assert g.features.shape == (3 * k, d) and g.weight.shape == (k, d) and g.bias.shape == (k,)
    assert torch.allclose(g.features.mean(0), g.global_mean, atol=1e-12)
    assert float(g.global_mean.norm()) == pytest.approx(offset, abs=1e-12)
    gram = v @ v.T  # NC2: ||mu_c - mu_g|| = M, cross products -M^2 / (k - 1)
    want = torch.full((k, k), -(M**2) / (k - 1), dtype=DT).fill_diagonal_(M**2)
    assert torch.allclose(gram, want, atol=1e-12)
    assert torch.allclose(g.weight, lam * v, atol=1e-12)  # NC3
    assert torch.equal(g.features, g.means[g.labels])  # NC1
    phi, y = g.features, g.labels
    assert float(metrics.nc1(phi, y)) < 1e-20
    assert float(metrics.nc2(phi, y)) < 1e-12
    assert float(metrics.nc3(phi, y, g.weight)) < 1e-20
    assert float(metrics.nc4(phi, y, g.logits)) == 0.0
    assert float(metrics.ncc(phi, y)) < 1e-20


def test_partial_collapse_breaks_only_nc1():
    g = theory.collapse_geometry(k=4, d=6, M=2.0, lam=1.0, n_per_class=20, sigma=0.3, seed=1)
    phi, y = g.features, g.labels
    _, means, _ = metrics.class_means(phi, y)
    assert torch.allclose(means, g.means, atol=1e-12)
    noise = phi - g.means[y]
    assert float(noise.pow(2).sum(-1).mean()) == pytest.approx((0.3 * 2.0) ** 2, rel=0.3)
    assert float(metrics.nc1(phi, y)) > 1e-3
    assert float(metrics.nc2(phi, y)) < 1e-12 and float(metrics.nc3(phi, y, g.weight)) < 1e-20
    assert float(metrics.nc4(phi, y, g.logits)) == 0.0  # equal-norm means: argmax logit = nearest mean
    # same draws for every lam: features do not depend on lam, and the noise pattern scales with sigma
    g2 = theory.collapse_geometry(k=4, d=6, M=2.0, lam=7.0, n_per_class=20, sigma=0.6, seed=1)
    assert torch.allclose(g2.features - g2.means[y], 2 * noise, atol=1e-12)


@pytest.mark.parametrize("k,d,M,lam,offset", CASES)
def test_lemma_a1_constant_logit_offset(k, d, M, lam, offset):
    g = theory.collapse_geometry(k=k, d=d, M=M, lam=lam, offset=offset, n_per_class=2, seed=0)
    v = g.means - g.global_mean
    const = lam * v @ g.global_mean + g.bias  # lam (mu_j - mu_g)^T mu_g + b_j
    assert torch.allclose(const, torch.full_like(const, float(const[0])), atol=1e-12)
    # consequence: for x in class c the logits are lam M^2 + d (j = c), -lam M^2/(k - 1) + d (j != c)
    want = torch.full((k, k), -lam * M**2 / (k - 1), dtype=DT).fill_diagonal_(lam * M**2) + const[0]
    assert torch.allclose(g.logits, want[g.labels], atol=1e-10)


def test_lemma_a1_is_forced_by_nc4_near_the_centre():
    """The proof's probe points h = mu_g + (eps/M)(mu_c - mu_g): NC4 holds there for the Lemma A.1 biases
    at every eps, and fails for small eps as soon as the constant is broken."""
    k, M, lam = 5, 1.5, 2.0
    g = theory.collapse_geometry(k=k, d=6, M=M, lam=lam, offset=0.8, n_per_class=1, seed=3)
    v = g.means - g.global_mean
    bad_bias = g.bias + torch.tensor([0.0, 0.1, -0.05, 0.02, 0.0], dtype=DT)
    for eps in (1e-4, 1e-2, 1.0):
        h = g.global_mean + eps / M * v  # row c probes class c
        nearest = torch.cdist(h, g.means).argmin(-1)
        assert torch.equal(nearest, torch.arange(k))
        assert torch.equal((h @ g.weight.T + g.bias).argmax(-1), nearest)
        if eps < 1e-2:
            assert not torch.equal((h @ g.weight.T + bad_bias).argmax(-1), nearest)


def test_etf_needs_d_at_least_k_minus_1():
    with pytest.raises(ValueError):
        theory.collapse_geometry(k=5, d=3, M=1.0, lam=1.0)


# ----------------------------------------------------------------------------- Proposition 5.3


@pytest.mark.parametrize("k,M,lam", [(2, 1.0, 0.3), (3, 2.0, 0.8), (10, 1.0, 4.0), (7, 0.5, 30.0)])
def test_bound_formula_against_an_independent_computation(k, M, lam):
    z = torch.full((k,), -lam * M**2 / (k - 1), dtype=DT)
    z[0] = lam * M**2
    p = torch.softmax(z, 0)
    trace = float((p * (1 - p)).sum()) * M**2  # Tr H(x_c) with ||phi||^2 = M^2
    w2 = lam**2 * k * M**2  # ||W||_F^2 under NC2 + NC3
    middle = theory.prop53_bound(k=k, M=M, lam=lam, form="middle")
    final = theory.prop53_bound(k=k, M=M, lam=lam)
    asym = theory.prop53_bound(k=k, M=M, lam=lam, form="asymptotic")
    assert middle == pytest.approx(w2 * trace, rel=1e-9)
    e = math.exp(-lam * M**2 * k / (k - 1))
    assert final == pytest.approx(lam**2 * k**3 * M**4 * e / (1 + (k - 1) * e) ** 2, rel=1e-12)
    assert asym == pytest.approx(lam**2 * k**3 * M**4 * e, rel=1e-12)
    assert middle <= final <= asym
    assert theory.prop53_bound(k=k, M=M, lam=lam, R=2 * M) == pytest.approx(4 * final, rel=1e-12)


def test_bound_by_hand_for_two_classes():
    # k = 2, M = 1, lam = 1: delta = 2, e = e^-2, middle = 4 e/(1+e)^2, final = 8 e/(1+e)^2
    e = math.exp(-2.0)
    assert theory.prop53_bound(k=2, M=1.0, lam=1.0, form="middle") == pytest.approx(4 * e / (1 + e) ** 2)
    assert theory.prop53_bound(k=2, M=1.0, lam=1.0) == pytest.approx(8 * e / (1 + e) ** 2)
    lams = np.array([0.5, 1.0])
    assert theory.prop53_bound(k=2, M=1.0, lam=lams).shape == (2,)
    with pytest.raises(ValueError):
        theory.prop53_bound(k=2, M=1.0, lam=1.0, form="tight")


@pytest.mark.parametrize("k,M", [(2, 1.0), (3, 1.5), (6, 0.8)])
def test_kappa_on_exact_collapse_against_the_bound(k, M):
    for lam in (0.05, 0.7, 3.0):
        g = theory.collapse_geometry(k=k, d=k + 2, M=M, lam=lam, n_per_class=2, seed=1)
        kappa = float(metrics.relative_flatness(g.features, g.logits, g.weight))
        exact = float(metrics.relative_flatness_exact(g.features, g.logits, g.weight))
        hess = float(theory.kappa_autograd_hessian(g.features, g.labels, g.weight, g.bias))
        assert kappa == pytest.approx(theory.prop53_bound(k=k, M=M, lam=lam, form="middle"), rel=1e-9)
        assert exact == pytest.approx(kappa / (k - 1), rel=1e-9)
        assert hess == pytest.approx(exact, rel=1e-9)
        assert kappa <= theory.prop53_bound(k=k, M=M, lam=lam)


def test_offset_violates_the_m_bound_but_not_the_r_bound():
    """||mu_g|| = M breaks Remark 5.2 (||phi|| up to 2M): at small lam ||W||^2 Tr H exceeds the bound
    written with M (ratio -> 2(k-1)/k), while the bound with R = max ||phi|| holds."""
    k, M, lam = 5, 1.0, 0.01
    g = theory.collapse_geometry(k=k, d=k + 1, M=M, lam=lam, offset=M, n_per_class=1, seed=0)
    kappa = float(metrics.relative_flatness(g.features, g.logits, g.weight))
    assert kappa / theory.prop53_bound(k=k, M=M, lam=lam) > 1.5
    assert kappa <= theory.prop53_bound(k=k, M=M, lam=lam, R=g.radius)
    assert M < g.radius <= 2 * M


def test_decay_rate_recovers_a_known_exponent():
    lams = np.geomspace(0.01, 20, 60)
    kappas = 3.0 * lams**2 * np.exp(-1.7 * lams)
    fit = theory.decay_rate(lams, kappas)
    assert fit["rate"] == pytest.approx(1.7, rel=1e-9)
    assert fit["rate_raw"] < 0.95 * 1.7  # the lam^2 prefactor biases the raw slope low
    assert fit["lam_lo"] >= 3.5 * 2 / 1.7 * 0.9 and fit["n"] >= 3
    assert math.isnan(theory.decay_rate(lams[:5], kappas[:5])["rate"])


def test_sweep_and_claim_c4():
    lams = np.geomspace(0.01, 30, 40).tolist()
    rows = theory.sweep(ks=[2, 4], Ms=[1.0, 2.0], lams=lams, hessian_every=4)
    rows += theory.sweep(ks=[4], Ms=[1.0], lams=lams, sigmas=[0.3], n_per_class=6)
    assert all(r["gap_min"] <= 25.0 for r in rows)
    assert any(not math.isnan(r["kappa_hessian"]) for r in rows)
    c4 = theory.c4_neural_collapse_leads_to_flatness(rows)
    assert c4["verdict"] == "reproduced", c4["why"]
    assert c4["worst_bound_ratio"]["kappa"] < 1 and c4["worst_bound_ratio"]["kappa_exact"] < 1
    assert all(r["rel_err"] < 0.05 and r["rel_err_raw"] > 0.05 for r in c4["rates"])
    assert c4["ncc_spread"] == 0.0
    assert c4["hessian_vs_exact_max_rel_diff"] < 1e-4
    # negative controls: a kappa above the bound, or a wrong decay, must flip the verdict
    bad = [dict(r, kappa_exact=3 * r["kappa_exact"]) for r in rows]
    assert theory.c4_neural_collapse_leads_to_flatness(bad)["verdict"] == "not reproduced"
    slow = [dict(r, kappa=r["kappa"] * math.exp(0.2 * r["delta"] * r["lam"])) for r in rows]
    out = theory.c4_neural_collapse_leads_to_flatness(slow)
    assert out["verdict"] == "not reproduced" and any("rate" in w for w in out["why"])


def test_grid_profiles():
    g = theory.grid("smoke")
    assert len(g["lams"]) == theory.PROFILE_GRIDS["smoke"]["n_lams"] and g["sigmas"][0] == 0.0
    g = theory.grid("quick", ks=[4], Ms=[3], n_lams=7, lam_max=5.0)
    assert g["ks"] == [4] and g["Ms"] == [3.0] and len(g["lams"]) == 7 and g["lams"][-1] == pytest.approx(5.0)
