"""Neural collapse leads to relative flatness: SPEC §6 (Lemma A.1, Lemma A.2, Proposition 5.3), numerically.

Exact collapse geometries (NC1-NC4 of SPEC §2.3 hold to rounding), Prop 5.3's bound, kappa computed
three ways, a sweep over (k, M, lambda) and claim C4.

Two kappas. Prop 5.3 bounds Petzka's trace measure kappa = sum_{s,s'} <w_s, w_s'> Tr H_{s,s'}
(``metrics.relative_flatness_exact``, and ``kappa_autograd_hessian`` from the full Hessian). Its proof
goes through Lemma A.2, kappa <= ||W||_F^2 Tr H, which is the paper's plotted "relative flatness"
(``metrics.relative_flatness``). Both are compared with the bound. On an exact collapse with
||phi|| = M the Lemma A.2 quantity EQUALS the bound's middle expression, and kappa_exact is exactly
1/(k-1) of it (all rows of W have norm lam M and sum to zero).

Which M. Prop 5.3 uses M twice: ||w||_F^2 = lam^2 k M^2 (NC2 + NC3, exact) and ||phi(x_c)||^2 <= M^2,
from SPEC's Remark 5.2 (||mu_c|| <= M for every class). With balanced classes mean_c ||mu_c||^2 =
||mu_g||^2 + M^2, so Remark 5.2 together with NC2 forces mu_g = 0 (``offset=0``). A centre offset
0 < ||mu_g|| <= M (the "bounded centre" reading) only gives ||phi|| <= R <= 2M; the bound then holds
with R^2 in place of the second M^2 (``prop53_bound(R=...)``) but can fail with M (at small lam, for the
Lemma A.2 quantity; see ``c4_neural_collapse_leads_to_flatness``). ``sigma > 0`` breaks NC1, so no
bound is claimed there.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import metrics

DT = torch.float64


@dataclass
class CollapseGeometry:
    k: int
    d: int
    M: float
    lam: float
    offset: float  # ||mu_g||
    sigma: float  # within-class RMS noise norm, in units of M (0 = exact NC1)
    features: torch.Tensor  # (N, d)
    labels: torch.Tensor  # (N,), n_per_class of each class, class-major
    weight: torch.Tensor  # (k, d) = lam (mu_j - mu_g)
    bias: torch.Tensor  # (k,) = -lam (mu_j - mu_g)^T mu_g  (Lemma A.1 with constant 0)
    logits: torch.Tensor  # (N, k)
    means: torch.Tensor  # (k, d) class means mu_c
    global_mean: torch.Tensor  # (d,) mu_g

    @property
    def delta(self) -> float:
        """Logit gap per unit lam under exact collapse: M^2 + M^2/(k-1) = M^2 k/(k-1)."""
        return self.M**2 * self.k / (self.k - 1)

    @property
    def radius(self) -> float:
        """R = max_i ||phi_i||; R <= M is Remark 5.2 (holds iff offset = 0 and sigma = 0)."""
        return float(self.features.norm(dim=-1).max())


def simplex_etf(k, d, M, *, generator=None):
    """(k, d) rows v_c with ||v_c|| = M, v_c.v_c' = -M^2/(k-1), sum_c v_c = 0, in a random (k-1)-subspace."""
    if k < 2 or d < k - 1:
        raise ValueError(f"need k >= 2 classes and d >= k - 1 dimensions, got k={k}, d={d}")
    centring = torch.eye(k, dtype=DT) - 1.0 / k
    basis, _ = torch.linalg.qr(centring[:, : k - 1])  # orthonormal basis of 1^perp, (k, k-1)
    embed, _ = torch.linalg.qr(torch.randn(d, k - 1, generator=generator, dtype=DT))  # (d, k-1)
    return M * math.sqrt(k / (k - 1)) * basis @ embed.T


def collapse_geometry(*, k, d, M, lam, offset=0.0, n_per_class=4, sigma=0.0, seed=0):
    """Class means on a centred simplex ETF of radius M around mu_g (||mu_g|| = offset, random direction),
    classifier W = lam (mu_j - mu_g) (NC3) and biases b_j = -lam (mu_j - mu_g)^T mu_g, so that
    lam (mu_j - mu_g)^T mu_g + b_j = 0 for all j (Lemma A.1) and NC4 holds for every h.

    sigma > 0 adds within-class Gaussian noise, centred per class (class means, NC2-NC4 stay exact; only
    NC1 breaks) and scaled so the mean squared noise norm is (sigma M)^2. The random draws do not depend on
    lam or sigma, so one seed gives the same features for every lam and one noise pattern scaled by sigma.
    """
    if n_per_class < 2 and sigma > 0:
        raise ValueError("within-class noise needs n_per_class >= 2")
    g = torch.Generator().manual_seed(seed)
    v = simplex_etf(k, d, M, generator=g)
    direction = torch.randn(d, generator=g, dtype=DT)
    mu_g = offset * direction / direction.norm()
    labels = torch.arange(k).repeat_interleave(n_per_class)
    xi = torch.randn(k, n_per_class, d, generator=g, dtype=DT)
    if n_per_class > 1:
        xi = (xi - xi.mean(1, keepdim=True)) * math.sqrt(n_per_class / (n_per_class - 1))
    means = mu_g + v
    features = means[labels] + sigma * M / math.sqrt(d) * xi.reshape(-1, d)
    weight = lam * v
    bias = -weight @ mu_g
    return CollapseGeometry(
        k,
        d,
        float(M),
        float(lam),
        float(offset),
        float(sigma),
        features,
        labels,
        weight,
        bias,
        features @ weight.T + bias,
        means,
        mu_g,
    )


def prop53_bound(*, k, M, lam, R=None, form="final"):
    """Prop 5.3's bound on kappa for exact collapse, with e = exp(-lam delta), delta = M^2 k/(k-1),
    Z = 1 + (k-1) e, ||W||_F^2 = lam^2 k M^2 and ||phi||^2 <= R^2 (R = M: Remark 5.2):

    'middle':     lam^2 k M^2 R^2 (k-1) e (2 + (k-2) e) / Z^2   = ||W||^2 Tr H exactly when ||phi|| = R;
    'final':      lam^2 k^3 M^2 R^2 e / Z^2                     the stated bound (uses 2+(k-2)e <= k, k-1 <= k);
    'asymptotic': lam^2 k^3 M^2 R^2 e                           the "≲" form.
    Vectorised over lam (numpy arrays in, arrays out).
    """
    R = M if R is None else R
    lam = np.asarray(lam, dtype=float)
    e = np.exp(-lam * M * M * k / (k - 1))
    z = 1.0 + (k - 1) * e
    scale = lam**2 * k * M**2 * R**2
    forms = {
        "middle": lambda: scale * (k - 1) * e * (2 + (k - 2) * e) / z**2,
        "final": lambda: scale * k * k * e / z**2,
        "asymptotic": lambda: scale * k * k * e,
    }
    if form not in forms:
        raise ValueError(f"form must be one of {list(forms)}, got {form!r}")
    return forms[form]()


def kappa_from_hessian(hessian, weight):
    """sum_{s,s'} <w_s, w_s'> Tr H_{s,s'} for a Hessian w.r.t. W given as (k, d, k, d) or (k d, k d)."""
    w = weight.double()
    k, d = w.shape
    blocks = hessian.double().reshape(k, d, k, d)
    trace_blocks = torch.einsum("sata->st", blocks)  # Tr H_{s,s'}
    return (w @ w.T * trace_blocks).sum()


def kappa_autograd_hessian(features, labels, weight, bias=None):
    """Petzka's kappa from the full Hessian of the mean CE loss w.r.t. W (torch.autograd), no closed form."""
    phi, y = features.double(), labels
    b = torch.zeros(weight.shape[0], dtype=DT) if bias is None else bias.double()

    def loss(w):
        return torch.nn.functional.cross_entropy(phi @ w.T + b, y)

    hessian = torch.autograd.functional.hessian(loss, weight.double().detach())
    return kappa_from_hessian(hessian, weight)


def sweep(
    *,
    ks,
    Ms,
    lams,
    sigmas=(0.0,),
    offsets=(0.0,),
    d=None,
    n_per_class=4,
    seed=0,
    max_gap=25.0,
    hessian_max_params=150,
    hessian_every=3,
):
    """One row per (k, M, sigma, offset, lam): the kappas, Prop 5.3's bounds, NCC and NC1-NC4.

    offsets are in units of M (||mu_g|| = offset M); d defaults to k + 1. lam is skipped where the
    smallest top-two logit gap exceeds ``max_gap``: 1 - ||p||^2 (and the row variance in kappa_exact)
    then falls below ~e^-25 ~ 1e-11 and float64 cancellation would leave only rounding noise (relative
    error ~1e-16 e^gap). The autograd Hessian (~0.04 s each for k d = 110) is computed only for exact
    geometries with k d <= hessian_max_params, at every ``hessian_every``-th lam (NaN elsewhere).
    """
    rows = []
    for k in ks:
        dk = k + 1 if d is None else d
        for M in Ms:
            for sigma in sigmas:
                for off in offsets:
                    for i, lam in enumerate(lams):
                        g = collapse_geometry(
                            k=k,
                            d=dk,
                            M=M,
                            lam=lam,
                            offset=off * M,
                            n_per_class=n_per_class,
                            sigma=sigma,
                            seed=seed,
                        )
                        top = g.logits.topk(2, dim=-1).values
                        gap = float((top[:, 0] - top[:, 1]).min())
                        if gap > max_gap:
                            continue
                        small = sigma == 0 and off == 0 and k * dk <= hessian_max_params
                        rows.append(_row(g, gap, hessian=small and i % hessian_every == 0))
    return rows


def _row(g, gap, *, hessian):
    phi, y, w, z = g.features, g.labels, g.weight, g.logits
    bound = {
        f"bound_{f}": float(prop53_bound(k=g.k, M=g.M, lam=g.lam, form=f))
        for f in ("middle", "final", "asymptotic")
    }
    return {
        "k": g.k,
        "M": g.M,
        "d": g.d,
        "lam": g.lam,
        "offset": g.offset,
        "sigma": g.sigma,
        "delta": g.delta,
        "R": g.radius,
        "gap_min": gap,
        "kappa": float(metrics.relative_flatness(phi, z, w)),
        "kappa_exact": float(metrics.relative_flatness_exact(phi, z, w)),
        "kappa_hessian": float(kappa_autograd_hessian(phi, y, w, g.bias)) if hessian else math.nan,
        **bound,
        "bound_final_R": float(prop53_bound(k=g.k, M=g.M, lam=g.lam, R=g.radius, form="final")),
        "ncc": float(metrics.ncc(phi, y)),
        "nc1": float(metrics.nc1(phi, y)),
        "nc2": float(metrics.nc2(phi, y)),
        "nc3": float(metrics.nc3(phi, y, w)),
        "nc4": float(metrics.nc4(phi, y, z)),
    }


def decay_rate(lams, kappas, *, power=2.0, tail=3.5):
    """Exponential decay rate of kappa on the large-lam tail, lam >= tail * argmax_lam kappa.

    Prop 5.3: kappa ~ lam^2 e^{-lam delta}, so 'rate' is minus the least-squares slope of
    log kappa - power log lam against lam (power=2 removes the prefactor) and 'rate_raw' that of log kappa
    (which is delta - 2/lam locally, i.e. biased low at finite lam); 'intercept' belongs to 'rate', so the
    fitted line is log kappa = power log lam + intercept - rate lam. NaN when fewer than 3 points remain.
    """
    lams, kappas = np.asarray(lams, float), np.asarray(kappas, float)
    keep = (lams >= tail * lams[np.argmax(kappas)]) & (kappas > 0)
    out = {
        "rate": math.nan,
        "rate_raw": math.nan,
        "n": int(keep.sum()),
        "lam_lo": math.nan,
        "lam_hi": math.nan,
        "intercept": math.nan,
    }
    if keep.sum() >= 3:
        x, y = lams[keep], np.log(kappas[keep])
        slope, intercept = np.polyfit(x, y - power * np.log(x), 1)
        out.update(
            rate=-slope,
            intercept=intercept,
            rate_raw=-np.polyfit(x, y, 1)[0],
            lam_lo=float(x.min()),
            lam_hi=float(x.max()),
        )
    return out


def _groups(rows, *keys):
    out = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def c4_neural_collapse_leads_to_flatness(rows, *, rate_tol=0.05) -> dict:
    """C4 (SPEC §1.4, §6) from ``sweep`` rows. On the geometries that satisfy Assumption 5.1 and Remark 5.2
    (offset 0, sigma 0): (1) kappa_exact and the Lemma A.2 kappa stay <= Prop 5.3's stated bound at every
    grid point; (2) the fitted decay rate of each (the lam^2-corrected slope) is within ``rate_tol`` of
    delta = M^2 k/(k-1) for every (k, M); (3) NCC does not change with lam in any geometry swept.
    Offset and noisy geometries are reported (where the assumptions matter) but do not enter the verdict."""
    exact = [r for r in rows if r["offset"] == 0 and r["sigma"] == 0]
    why = []
    if not exact:
        why.append("no exact-collapse rows")
    ratio = {
        n: max((r[n] / r["bound_final"] for r in exact), default=math.nan) for n in ("kappa", "kappa_exact")
    }
    tight = max((abs(r["kappa"] / r["bound_middle"] - 1) for r in exact), default=math.nan)
    hess = [
        abs(r["kappa_hessian"] / r["kappa_exact"] - 1) for r in exact if not math.isnan(r["kappa_hessian"])
    ]
    if not all(v <= 1.0 for v in ratio.values()):
        why.append("kappa exceeds the bound")
    rates = []
    for (k, M), grp in sorted(_groups(exact, "k", "M").items()):
        delta = grp[0]["delta"]
        for n in ("kappa_exact", "kappa"):
            fit = decay_rate([r["lam"] for r in grp], [r[n] for r in grp])
            err, err_raw = abs(fit["rate"] / delta - 1), abs(fit["rate_raw"] / delta - 1)
            rates.append(
                {
                    "k": k,
                    "M": M,
                    "kappa": n,
                    "predicted": delta,
                    "fitted": fit["rate"],
                    "rel_err": err,
                    "fitted_raw": fit["rate_raw"],
                    "rel_err_raw": err_raw,
                    "n_fit": fit["n"],
                    "lam_fit": [fit["lam_lo"], fit["lam_hi"]],
                }
            )
            if not err <= rate_tol:  # NaN (tail too short) fails too
                why.append(f"rate k={k} M={M} {n}: {fit['rate']:.4g} vs {delta:.4g} (n={fit['n']})")
    ncc_spread, kappa_span = 0.0, 0.0
    for grp in _groups(rows, "k", "M", "sigma", "offset").values():
        v = np.array([r["ncc"] for r in grp])
        ncc_spread = max(ncc_spread, float((v.max() - v.min()) / max(abs(v.mean()), 1e-12)))
        ke = np.array([r["kappa_exact"] for r in grp])
        kappa_span = max(kappa_span, float(np.log10(ke.max() / ke.min())))
    if not ncc_spread <= 1e-9:
        why.append(f"NCC changes with lam (spread {ncc_spread:.3g})")
    offset_rows = [r for r in rows if r["offset"] > 0 and r["sigma"] == 0]
    noisy = [r for r in rows if r["sigma"] > 0]
    return {
        "claim": "C4",
        "statement": "under NC1-NC4 (+ bounded centre) relative flatness is bounded by a quantity decaying "
        "exponentially in the classifier scale lam; NCC does not see lam",
        "criterion": f"exact-collapse geometries: kappa_exact and ||W||^2 Tr H <= Prop 5.3 bound at every grid "
        f"point; fitted rate of log kappa - 2 log lam within {rate_tol:.0%} of M^2 k/(k-1) "
        f"for every (k, M); NCC spread over lam <= 1e-9",
        "verdict": "reproduced" if not why else "not reproduced",
        "why": why,
        "worst_bound_ratio": ratio,
        "lemma_a2_vs_middle_rel_dev": tight,
        "exact_times_k1_vs_lemma_a2_rel_dev": max(
            (abs(r["kappa_exact"] * (r["k"] - 1) / r["kappa"] - 1) for r in exact), default=math.nan
        ),
        "hessian_vs_exact_max_rel_diff": max(hess, default=math.nan),
        "rates": rates,
        "ncc_spread": ncc_spread,
        "kappa_decades_over_lam": kappa_span,
        "n_points": len(exact),
        "offset_worst_ratio_M": max((r["kappa"] / r["bound_final"] for r in offset_rows), default=math.nan),
        "offset_worst_ratio_R": max((r["kappa"] / r["bound_final_R"] for r in offset_rows), default=math.nan),
        "offset_exact_worst_ratio_M": max(
            (r["kappa_exact"] / r["bound_final"] for r in offset_rows), default=math.nan
        ),
        "noisy_worst_ratio": max((r["kappa_exact"] / r["bound_final"] for r in noisy), default=math.nan),
    }


PROFILE_GRIDS = {
    "smoke": dict(ks=[2, 3], Ms=[1.0], n_lams=25, n_sigmas=3),
    "quick": dict(ks=[2, 3, 10], Ms=[1.0, 2.0], n_lams=61, n_sigmas=6),
    "paper": dict(ks=[2, 3, 10, 20], Ms=[1.0, 2.0, 4.0], n_lams=121, n_sigmas=11),
}


def grid(profile, *, ks=None, Ms=None, n_lams=None, lam_min=0.01, lam_max=30.0, sigma_max=0.5):
    """The notebook's grids: the profile's sizes, with any argument that is not None taking precedence."""
    base = PROFILE_GRIDS[profile]
    n = n_lams or base["n_lams"]
    return {
        "ks": list(ks or base["ks"]),
        "Ms": [float(m) for m in (Ms or base["Ms"])],
        "lams": np.geomspace(lam_min, lam_max, n).tolist(),
        "sigmas": np.linspace(0.0, sigma_max, base["n_sigmas"]).round(12).tolist(),
    }
