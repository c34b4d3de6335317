"""Curvature of the training loss over ALL parameters, from Hessian-vector products (HVPs).

The models here are seed-batched: every parameter has a leading dimension S, one independent copy per
seed, and the training loss is the SUM over seeds of each seed's mean loss. Its Hessian is therefore
block diagonal over seeds, so one HVP with a vector covering every seed's slice returns each seed's own
H_s v_s in that seed's slice. Every function below exploits this and returns per-seed results of shape
(S,) for the price of one HVP per probe or iteration.

HVPs run in the parameters' dtype (float32 in training); the dot products and norms built from them are
accumulated in float64, since they sum ~10^5-10^6 products of mixed sign.

Two practical points the callers rely on:
* Fused attention kernels (flash / memory-efficient scaled_dot_product_attention, on CPU and CUDA) have
  no double backward, so the loss is evaluated under the math SDPA backend. That only changes which
  kernel computes the same function.
* The logging code runs under torch.no_grad(); the graph needed for the double backward is built under
  torch.enable_grad(), so the functions work from inside such a block.
"""

from __future__ import annotations

import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

# ----------------------------------------------------------------------------- helpers


def _check_seeds(params, n_seeds):
    if not params:
        raise ValueError("params is empty: nothing to differentiate")
    bad = [tuple(p.shape) for p in params if p.dim() == 0 or p.shape[0] != n_seeds]
    if bad:
        raise ValueError(f"every parameter needs a leading seed dimension of {n_seeds}; got shapes {bad}")


def _operator(loss_fn, params):
    """v -> H v for the Hessian of loss_fn() at params, reusing one first-order graph for every v.

    The gradient is built once with create_graph=True; each product is then a single backward through
    that graph (retain_graph keeps it for the next one), instead of a fresh forward + double backward.
    """
    with torch.enable_grad(), sdpa_kernel([SDPBackend.MATH]):
        loss = loss_fn()
        grads = torch.autograd.grad(
            loss, params, create_graph=True, allow_unused=True, materialize_grads=True
        )
    # A gradient that does not depend on the parameters (the loss is linear in them) has no graph;
    # its rows of H are zero, and autograd.grad would refuse it as an output.
    live = [i for i, g in enumerate(grads) if g.requires_grad]

    def apply(vecs):
        if len(vecs) != len(params):
            raise ValueError(f"got {len(vecs)} vectors for {len(params)} parameters")
        if not live:
            return [torch.zeros_like(p) for p in params]
        with torch.enable_grad():
            hv = torch.autograd.grad(
                [grads[i] for i in live],
                params,
                grad_outputs=[vecs[i].to(grads[i].dtype) for i in live],
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
        return [h.detach() for h in hv]

    return apply


def _seed_dot(xs, ys):
    """(S,) float64: per seed, sum over all parameters' slices of x * y."""
    return sum((x.double() * y.double()).flatten(1).sum(1) for x, y in zip(xs, ys))


def _bcast(per_seed, x):
    """A (S,) tensor viewed as (S, 1, ..., 1) to broadcast against x's seed slices."""
    return per_seed.view(-1, *([1] * (x.dim() - 1)))


def _seed_scale(xs, factor):
    """Multiply each seed's slice of every tensor by factor[s] (a (S,) tensor), in the tensors' dtype."""
    return [x * _bcast(factor.to(x.dtype), x) for x in xs]


def _seed_where(mask, xs, ys):
    """Per seed: the slices of xs where mask[s], else those of ys."""
    return [torch.where(_bcast(mask, x), x, y) for x, y in zip(xs, ys)]


def _rademacher(params, generator):
    """+-1 entries drawn on the CPU from `generator` (device-independent draws), moved to each param."""
    return [
        (torch.randint(0, 2, p.shape, generator=generator) * 2 - 1).to(device=p.device, dtype=p.dtype)
        for p in params
    ]


# ----------------------------------------------------------------------------- public API


def hvp(loss_fn, params, vecs):
    """H v for H the Hessian of loss_fn() (a scalar) w.r.t. params; vecs is a list shaped like params.

    For a seed-batched model with loss = sum of per-seed losses, the s-th slice of the result is H_s v_s.
    """
    return _operator(loss_fn, params)(vecs)


def _hutchinson(op, params, probes, generator):
    if probes < 1:
        raise ValueError(f"probes must be >= 1, got {probes}")
    est = torch.stack([_seed_dot(v, op(v)) for v in (_rademacher(params, generator) for _ in range(probes))])
    trace = est.mean(0)
    if probes < 2:  # one probe gives no spread to measure
        stderr = torch.full_like(trace, math.nan)
    else:
        stderr = est.std(0, correction=1) / math.sqrt(probes)
    return trace, stderr


def hutchinson_trace(loss_fn, params, *, n_seeds, probes, generator):
    """Per-seed Hutchinson estimate of Tr H_s with Rademacher probes: (trace, stderr), float64, (S,) each.

    trace[s] = mean over probes of v_s . H_s v_s (an unbiased estimate, since E[v v^T] = I);
    stderr[s] = std over probes (unbiased, correction 1) / sqrt(probes), the estimate's standard error.
    With probes=1 there is no spread to measure and stderr is NaN. One HVP per probe covers all seeds.
    The probes are drawn on the CPU from `generator`, so a given generator state yields the same
    estimate on every device (up to the HVP's rounding).
    """
    _check_seeds(params, n_seeds)
    return _hutchinson(_operator(loss_fn, params), params, probes, generator)


def _start(params, v0, generator):
    """The power iteration's starting vectors, each seed's slice scaled to unit norm."""
    if v0 is None:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        v0 = [torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device) for p in params]
    elif len(v0) != len(params) or any(v.shape != p.shape for v, p in zip(v0, params)):
        raise ValueError("v0 must be a list of tensors shaped like params (e.g. a previous call's vectors)")
    v = [t.detach().to(device=p.device, dtype=p.dtype) for t, p in zip(v0, params)]
    return _seed_scale(v, 1.0 / _seed_dot(v, v).sqrt())


def _power(op, v, iters, tol, active, shift=None):
    """Power iteration on H - shift_s I for the seeds in `active`, from unit-norm v.

    Returns (eig, v, used): eig (S,) float64 the Rayleigh quotient of H itself (not of the shifted
    operator; the shift only steers the iteration) at each seed's final vector, NaN for seeds never
    active; v with inactive seeds' slices untouched; used (S,) the HVPs that contributed per seed.
    Convergence: the estimate changed by at most tol * |eig - shift|, i.e. relative to the dominant
    eigenvalue of the operator actually iterated.
    """
    S = active.shape[0]
    eig = torch.full((S,), math.nan, dtype=torch.float64, device=active.device)
    used = torch.zeros(S, dtype=torch.long, device=active.device)
    active = active.clone()
    for _ in range(iters):
        if not bool(active.any()):
            break
        hv = op(v)
        # Rayleigh quotient; dividing by v.v (1 up to the cast to the param dtype) keeps it exact.
        new = _seed_dot(v, hv) / _seed_dot(v, v)
        if shift is not None:
            hv = [h - x * _bcast(shift.to(x.dtype), x) for h, x in zip(hv, v)]
        norm = _seed_dot(hv, hv).sqrt()
        # A seed whose (shifted) H v vanishes keeps its vector rather than dividing by zero.
        nxt = _seed_where(norm > 0, _seed_scale(hv, torch.where(norm > 0, 1.0 / norm, 0.0)), v)
        # Relative change of the estimate; the first iteration (eig NaN) has nothing to compare with.
        scale = new.abs() if shift is None else (new - shift).abs()
        done = (new - eig).abs() <= tol * scale
        # A converged seed is frozen (vector and estimate), so each seed's result depends on its own
        # slice only, not on how long the other seeds take.
        eig = torch.where(active, new, eig)
        v = _seed_where(active, nxt, v)
        used += active.long()
        active = active & ~done
    return eig, v, used


def _top(op, params, n_seeds, iters, v0, generator, tol, largest):
    """top_eigenvalue's work, plus the number of HVPs actually run (phases run all seeds at once)."""
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    if largest not in ("algebraic", "magnitude"):
        raise ValueError(f'largest must be "algebraic" or "magnitude", got {largest!r}')
    start = _start(params, v0, generator)
    every = torch.ones(n_seeds, dtype=torch.bool, device=params[0].device)
    lam1, v, used = _power(op, start, iters, tol, every)
    run = int(used.max())
    if largest == "magnitude":
        return lam1, v, used, run
    # Seeds whose dominant eigenvalue is negative: H - lam1 I is positive semidefinite (up to lam1's
    # error), its dominant eigenvalue lam_max - lam1 belongs to the top of H's spectrum. The shifted
    # iteration restarts from the phase-1 start (for a warm start: the previous top vector) with the
    # phase-1 vector projected out: that vector is (near) a null vector of the shifted operator, and
    # where phase 1 stalled next to an eigenvector (the start was close to one) so would a retry be.
    # Where nothing is left after the projection (start parallel to the phase-1 vector) the start is
    # kept as it is.
    rest = [x - y * _bcast(_seed_dot(start, v).to(y.dtype), y) for x, y in zip(start, v)]
    left = _seed_dot(rest, rest).sqrt()
    restart = _seed_where(left > 0, _seed_scale(rest, torch.where(left > 0, 1.0 / left, 0.0)), start)
    todo = lam1 < 0
    shift = torch.where(todo, lam1, 0.0)
    for _ in range(2):
        if not bool(todo.any()):
            break
        top, v2, used2 = _power(op, _seed_where(todo, restart, v), iters, tol, todo, shift=shift)
        lam1 = torch.where(todo, top, lam1)
        v = v2
        used = used + used2
        run += int(used2.max())
        # A phase 1 stopped short of the bottom (stalled next to another eigenvector, or out of iters)
        # can leave lam1 - lam_min > lam_max - lam1; the shifted iteration then converges to lam_min,
        # below its shift. That estimate is a far better shift: one more pass from it, for those seeds.
        low = todo & (top < shift - tol * shift.abs())
        shift = torch.where(low, top, shift)
        todo = low
    return lam1, v, used, run


def top_eigenvalue(
    loss_fn, params, *, n_seeds, iters, v0=None, generator=None, tol=1e-4, largest="algebraic"
):
    """Per-seed top eigenvalue of the block-diagonal Hessian by power iteration: (eigenvalue, vectors,
    iterations).

    largest="algebraic" (default): the algebraically largest eigenvalue lam_max of each H_s, the top of
    the spectrum, even where a negative eigenvalue is larger in magnitude (early in training). Two
    phases: plain power iteration converges to the eigenvalue lam1 of largest magnitude; for the seeds
    with lam1 >= 0 that is lam_max and they are done. For the seeds with lam1 < 0 a second power
    iteration runs on the shifted H_s - lam1_s I, whose dominant eigenvalue is lam_max - lam1 >= 0
    (per-seed shift), from phase 1's start less its component along phase 1's vector; it returns the Rayleigh quotient of H_s itself at
    the final vector. Its convergence rate is the ratio (lam2 - lam1) / (lam_max - lam1), lam2 the
    second-largest eigenvalue, so a crowded top of the spectrum costs more iterations here.
    largest="magnitude": phase 1 only, i.e. the eigenvalue of largest magnitude with its sign.

    eigenvalue (S,) float64: the Rayleigh quotient v_s . H_s v_s of each seed's unit-norm slice (the norm
    taken over all parameters' slices of that seed).
    vectors: list shaped like params, each seed's slice of unit norm, the eigenvector of the returned
    eigenvalue; pass it back as v0 to warm-start the next call (consecutive logging steps: a few
    iterations then suffice; with "algebraic" it also starts phase 2 near its answer).
    iterations (S,) int64: HVPs that contributed to each seed's estimate, both phases counted (at most
    2 * iters, or 3 * iters after the retry below). The HVPs actually run are the sum over phases of
    the max over seeds.

    Each phase stops when every seed it runs has an estimate that changed by at most tol relative to
    the dominant eigenvalue of the operator it iterates (|lam1| in phase 1, lam_max - lam1 in phase 2;
    at least two iterations), or after `iters` iterations: `iters` bounds each phase separately. A seed
    that converged is frozen while others continue, and phase 2 touches only its own seeds. The relative
    change is not the error: with eigenvalue ratio r of the iterated operator the remaining error is
    about change * r^2 / (1 - r^2), so use a smaller tol when the top of the spectrum is crowded.
    An unconverged phase 1 leaves lam1 above the most negative eigenvalue lam_min; phase 2 still finds
    lam_max while lam_max - lam1 > lam1 - lam_min. Otherwise it converges to lam_min instead, below its
    shift; that is detected and phase 2 is rerun for those seeds with lam_min as the shift (once, again
    with up to `iters` iterations).
    v0=None draws a Gaussian start from `generator` (a fresh generator seeded 0 if None).
    """
    _check_seeds(params, n_seeds)
    eig, v, used, _ = _top(_operator(loss_fn, params), params, n_seeds, iters, v0, generator, tol, largest)
    return eig, v, used


def curvature(model, loss_fn, *, probes, iters, generator, v0=None, tol=1e-4) -> dict:
    """Trace and top eigenvalue of the loss Hessian over every trainable parameter of a seed-batched model.

    loss_fn() must return the training loss as a SUM over seeds of per-seed losses. Returns
    {"hess_trace": (S,), "hess_trace_se": (S,), "hess_top": (S,), "hess_iters": int, "vectors": list},
    with hess_top the algebraically largest eigenvalue (top_eigenvalue with largest="algebraic";
    `iters` bounds each of its phases), hess_iters the number of power-iteration HVPs run over all
    phases (up to 2 * iters; 3 * iters in top_eigenvalue's rare retry) and vectors the top eigenvectors,
    the warm start for the next call's v0. The Hutchinson probes are drawn from `generator` first, then
    (when v0 is None) the power iteration's start. One first-order graph serves both.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no parameter that requires grad")
    n_seeds = params[0].shape[0]
    _check_seeds(params, n_seeds)
    op = _operator(loss_fn, params)
    trace, se = _hutchinson(op, params, probes, generator)
    top, vectors, _, run = _top(op, params, n_seeds, iters, v0, generator, tol, "algebraic")
    return {
        "hess_trace": trace,
        "hess_trace_se": se,
        "hess_top": top,
        "hess_iters": run,
        "vectors": vectors,
    }
