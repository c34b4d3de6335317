"""Relative flatness, neural-collapse clustering (NCC) and the NC1-NC4 conditions.

Definitions follow ../../shared/paper/SPEC.md §2.1-2.3 (Han et al., NeurIPS 2025; Petzka et al. 2021;
Papyan et al. 2020). Shapes: ``features`` (N, d) penultimate features phi, ``logits`` (N, C),
``weight`` (C, d) the final linear layer's weight W, ``labels`` (N,) int64.

Every function casts its inputs to float64 before reducing: NCC divides small variances by small
squared distances and NC1 takes a pseudo-inverse, both of which lose digits quickly in float32.
Scalars come back as 0-dim float64 tensors, and ``ncc`` and the relative-flatness functions stay
differentiable because the regularizers use them as training penalties.
"""

import math

import torch

# ----------------------------------------------------------------------------- helpers


def _softmax(logits, tau=1.0):
    return torch.softmax(logits.double() / tau, dim=-1)


def _trace_per_sample(phi, p):
    """Tr of the per-sample CE Hessian w.r.t. W: sum_c p_c (1 - p_c) ||phi||^2 = (1 - ||p||^2) ||phi||^2."""
    return (1.0 - p.pow(2).sum(-1)) * phi.pow(2).sum(-1)


def _class_stats(features, labels):
    """classes (K,), inverse (N,) index into classes, counts (K,), means (K, d), V (K,) mean sq. deviation."""
    phi = features.double()
    classes, inverse, counts = torch.unique(labels, sorted=True, return_inverse=True, return_counts=True)
    k, n = classes.numel(), counts.to(phi.dtype)
    # index_add (not in-place) scatters by class without a Python loop and keeps the autograd graph.
    means = phi.new_zeros(k, phi.shape[1]).index_add(0, inverse, phi) / n[:, None]
    sq_dev = (phi - means[inverse]).pow(2).sum(-1)
    var = phi.new_zeros(k).index_add(0, inverse, sq_dev) / n
    return classes, inverse, counts, means, var


def _require_two_classes(classes):
    if classes.numel() < 2:
        raise ValueError(f"need at least 2 classes present in labels, got {classes.numel()}")


def _centred_means(features, labels):
    """classes (K,), means - mu_G (K, d), with mu_G the mean of ALL samples (not of the class means)."""
    classes, _, _, means, _ = _class_stats(features, labels)
    _require_two_classes(classes)
    return classes, means - features.double().mean(0)


# ----------------------------------------------------------------------------- accuracy


def accuracy(logits, labels):
    """Fraction of samples whose argmax logit equals the label, in [0, 1]."""
    return (logits.argmax(-1) == labels).double().mean()


# ----------------------------------------------------------------------------- relative flatness


def hessian_trace_wrt_weight(features, logits):
    """Tr H: trace of the Hessian of the mean CE loss w.r.t. W, at logits z = W phi (+ b).

    Tr H = mean_i sum_c p_ic (1 - p_ic) ||phi_i||^2,  p = softmax(logits).
    It depends only on p and phi, so the logits are taken as given.
    """
    return _trace_per_sample(features.double(), _softmax(logits)).mean()


def relative_flatness(features, logits, weight, *, tau=1.0, normalize_features=False):
    """The paper's relative flatness kappa (the upper bound of Lemma A.2, the code's ``sharpness2``).

    kappa = ||W||_F^2 * mean_i sum_c p_ic (1 - p_ic) ||phi_i||^2,   p = softmax(logits / tau).
    With ``normalize_features`` phi_i is replaced by phi_i / (||phi_i|| + 1e-8). tau=2 with normalised
    features is the regulariser's form; tau=1 with raw phi is the canonical metric (SPEC D14).
    The bias is not part of W.
    """
    phi = features.double()
    if normalize_features:
        phi = phi / (phi.norm(dim=-1, keepdim=True) + 1e-8)
    return weight.double().pow(2).sum() * _trace_per_sample(phi, _softmax(logits, tau)).mean()


def relative_flatness_exact(features, logits, weight):
    """Petzka et al.'s trace measure for softmax cross-entropy, exactly (no Lemma A.2 bound).

    kappa_exact = sum_{s,s'} <w_s, w_s'> Tr(H_{s,s'}),  H the Hessian of the mean CE loss w.r.t. W.
    Per sample H_{s,s'} = (delta_ss' p_s - p_s p_s') phi phi^T, which gives the closed form
        kappa_exact = mean_i ||phi_i||^2 (sum_s p_is ||w_s||^2 - ||W^T p_i||^2),   p = softmax(logits),
    i.e. ||phi||^2 times the p-weighted variance of the rows of W. It never exceeds relative_flatness.
    """
    phi, p, w = features.double(), _softmax(logits), weight.double()
    row_var = p @ w.pow(2).sum(-1) - (p @ w).pow(2).sum(-1)
    return (phi.pow(2).sum(-1) * row_var).mean()


def relative_flatness_grok_code(features_eq, features_c, logits_eq, logits_c, weight):
    """Relative flatness as the authors' grokking code computes it (SPEC §2.2, D6), "as in authors' code".

    p = softmax(z_eq * z_c) with * the ELEMENT-WISE product of the logit vectors at the two right-hand-side
    positions, phi = [phi_eq; phi_c] concatenated along features, and
        value = ||W||_F^2 * mean_i sum_v p_iv (1 - p_iv) ||phi_i||^2.
    """
    phi = torch.cat([features_eq.double(), features_c.double()], dim=1)
    p = _softmax(logits_eq.double() * logits_c.double())
    return weight.double().pow(2).sum() * _trace_per_sample(phi, p).mean()


# ----------------------------------------------------------------------------- NCC (CDNV)


def class_means(features, labels):
    """(classes (K,), means (K, d) float64, counts (K,)) over the classes present in ``labels``, sorted."""
    classes, _, counts, means, _ = _class_stats(features, labels)
    return classes, means, counts


def _cdnv_offdiag(numer, means):
    """(numer_c + numer_c') / (2 ||mu_c - mu_c'||^2) for all ordered pairs c != c', as a flat vector."""
    k = means.shape[0]
    offdiag = ~torch.eye(k, dtype=torch.bool, device=means.device)
    i, j = offdiag.nonzero(as_tuple=True)
    # Only the off-diagonal pairs are formed: a 0/0 on the diagonal, even if masked afterwards, would put
    # NaN into the backward pass. Explicit differences (not the Gram trick) keep small distances exact.
    sq_dist = (means[i] - means[j]).pow(2).sum(-1)
    return (numer[i] + numer[j]) / (2.0 * sq_dist)


def ncc(features, labels):
    """NCC as the authors' code computes it (the primary metric; SPEC §2.1 "Code definition").

    V_c = mean over samples of class c of ||phi - mu_c||^2,  CDNV(c, c') = (V_c + V_c') / (2 ||mu_c - mu_c'||^2),
    NCC = mean over ordered pairs c != c' of CDNV(c, c'), over the classes present in ``labels``.
    Invariant to scaling and translation of the features; differentiable through means and variances.
    """
    classes, _, _, means, var = _class_stats(features, labels)
    _require_two_classes(classes)
    return _cdnv_offdiag(var, means).mean()


def ncc_paper(features, labels):
    """NCC as literally written in the paper (Def 3.1), for comparison only (SPEC D2).

    NCC = SUM over ordered pairs c != c' of (V_c + V_c') / (2 ||mu_c - mu_c'||^2) with V_c = SUM over
    samples of class c of ||phi - mu_c||^2. With n samples per class it equals K (K - 1) n * ncc.
    """
    classes, _, counts, means, var = _class_stats(features, labels)
    _require_two_classes(classes)
    return _cdnv_offdiag(var * counts.to(var.dtype), means).sum()


def class_mean_stats(features, labels):
    """The "Cluster(mean distance)" and "Cluster(var)" panels, over unordered pairs c < c' of present classes.

    'mean_distance': mean of ||mu_c - mu_c'||;  'mean_variance': mean of V_c + V_c' (= 2 mean_c V_c),
    V_c the mean squared deviation as in ``ncc``.
    """
    classes, _, _, means, var = _class_stats(features, labels)
    _require_two_classes(classes)
    i, j = torch.triu_indices(len(classes), len(classes), offset=1, device=means.device)
    dist = (means[i] - means[j]).norm(dim=-1)
    return {"mean_distance": dist.mean(), "mean_variance": (var[i] + var[j]).mean()}


# ----------------------------------------------------------------------------- NC1-NC4 (Papyan et al.)


def nc1(features, labels, *, rtol=1e-6):
    """NC1 = tr(Sigma_W Sigma_B^+) / C: within-class spread measured in units of between-class spread.

    Sigma_W = (1/N) sum_i (phi_i - mu_{y_i})(phi_i - mu_{y_i})^T,  Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T,
    mu_G the mean of all samples, C the number of classes present, ^+ the Moore-Penrose pseudo-inverse.

    rtol (relative to the largest eigenvalue of Sigma_B): Sigma_B has rank <= C (C - 1 for balanced
    classes), so pinv must drop its null directions, and they are not always exactly null. Eigenvalues are
    squared spreads: a direction along which the class means differ only at float32-rounding level (std
    ~1e-7 of the largest, eigenvalue ~1e-14) is noise from the network's arithmetic, yet torch's default
    cut (~d * 2e-16) would invert it and let it dominate the trace. 1e-6 (std 1e-3 of the largest) drops
    such directions with a wide margin and keeps any genuine between-class direction.
    """
    classes, inverse, _, means, _ = _class_stats(features, labels)
    _require_two_classes(classes)
    phi = features.double()
    dev = phi - means[inverse]
    centred = means - phi.mean(0)
    sigma_w = dev.T @ dev / phi.shape[0]
    sigma_b = centred.T @ centred / len(classes)
    return torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, rtol=rtol, hermitian=True)) / len(classes)


def nc2(features, labels):
    """NC2: distance of the centred, normalised class means from a simplex ETF (Papyan et al. 2020).

    M = [(mu_c - mu_G) / ||mu_c - mu_G||]_c  (C x d),   T = I - 11^T / C,
    NC2 = || M M^T / ||M M^T||_F  -  T / ||T||_F ||_F.   0 iff the means form an equiangular tight frame.
    """
    classes, centred = _centred_means(features, labels)
    m = centred / centred.norm(dim=-1, keepdim=True)
    gram = m @ m.T
    k = len(classes)
    etf = torch.eye(k, dtype=gram.dtype, device=gram.device) - 1.0 / k
    return (gram / gram.norm() - etf / etf.norm()).norm()


def nc3(features, labels, weight):
    """NC3, self-duality: || W / ||W||_F - Mc / ||Mc||_F ||_F^2.

    Mc (C x d) are the centred class means mu_c - mu_G of the classes present; W is ``weight[classes]``,
    i.e. rows are indexed by class label, so ``weight`` may have more rows (e.g. a whole token vocabulary).
    """
    classes, centred = _centred_means(features, labels)
    w = weight.double()[classes]
    return (w / w.norm() - centred / centred.norm()).pow(2).sum()


def nc4(features, labels, logits):
    """NC4: fraction of samples where the network's argmax disagrees with the nearest-class-centre classifier.

    Both predictions range over the classes present in ``labels`` only: the network's over
    ``logits[:, classes]``, the nearest-centre one over argmin_c ||phi - mu_c||.
    """
    classes, means, _ = class_means(features, labels)
    nearest = torch.cdist(features.double(), means).argmin(-1)
    net = logits[:, classes].argmax(-1)
    return (nearest != net).double().mean()


def class_mean_angles(features, labels):
    """(K, K) angles in degrees between mu_c - mu_G and mu_c' - mu_G; the diagonal is 0 (SPEC §2.1, Fig 3)."""
    _, centred = _centred_means(features, labels)
    m = centred / centred.norm(dim=-1, keepdim=True)
    cos = (m @ m.T).clamp(-1.0, 1.0)
    diag = torch.eye(len(cos), dtype=torch.bool, device=cos.device)
    # arccos has an infinite slope at cos = 1; feeding 0 on the diagonal keeps gradients finite.
    return torch.where(diag, 0.0, torch.rad2deg(torch.arccos(torch.where(diag, 0.0, cos))))


def simplex_etf_angle(num_classes):
    """Angle in degrees between any two vertices of a centred C-simplex ETF: arccos(-1 / (C - 1))."""
    if num_classes < 2:
        raise ValueError(f"a simplex needs at least 2 classes, got {num_classes}")
    return math.degrees(math.acos(-1.0 / (num_classes - 1)))


ANGLE_QUANTILES = {
    "angle_min": 0.0,
    "angle_q25": 0.25,
    "angle_median": 0.5,
    "angle_q75": 0.75,
    "angle_max": 1.0,
}


def angle_quantiles(angles):
    """Quantiles of the pairwise class-mean angles (degrees): the distribution Fig 3 draws against
    the simplex ETF angle, kept per logged epoch because the model itself is not stored."""
    q = torch.quantile(
        angles, torch.tensor(list(ANGLE_QUANTILES.values()), dtype=angles.dtype, device=angles.device)
    )
    return dict(zip(ANGLE_QUANTILES, q))
