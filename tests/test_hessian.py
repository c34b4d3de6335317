"""grokprobe.hessian against exact per-seed Hessians of a tiny seed-batched GrokTransformer.

The model has 976 parameters per seed (d_model 8, one layer, a 27-token vocabulary: enough for p = 5),
small enough for a dense float64 Hessian per seed from torch.autograd.functional.hessian. It is trained
briefly first so that, as near a minimum, the top eigenvalue dominates the spectrum in magnitude. The
untrained model is the opposite case for seed index 1: its most negative eigenvalue (-2.05) outweighs
the top one (+1.95), so the largest-magnitude and the algebraically largest eigenvalues differ.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from grokprobe import hessian
from grokprobe.data import modular_arithmetic
from grokprobe.models import GrokTransformer, GrokTransformerConfig

DATA = modular_arithmetic(5, "+", 0.6, 0)
TINY = GrokTransformerConfig(vocab_size=27, d_model=8, n_layers=1, n_heads=2, d_ff=16)


class TrainLoss(nn.Module):
    """The training loss of grokking.train on the whole train split: sum over seeds of the mean CE at
    positions 4 and 5, via forward_prefixed. A module, so functional_call can swap one seed's weights."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self):
        S, split = self.model.n_seeds, DATA.train
        logits, _ = self.model.forward_prefixed(
            DATA.prefixes, split.prefix_index.expand(S, -1), split.suffix.expand(S, -1, -1)
        )
        tgt = split.targets.expand(S, -1, -1)
        per_seed = F.cross_entropy(logits.flatten(0, 2), tgt.flatten(), reduction="none").view(S, -1).mean(1)
        return per_seed.sum()


def exact_hessian(loss, s):
    """Dense Hessian of seed s's block, over its parameters flattened in model.parameters() order."""
    names, params = zip(*loss.named_parameters())
    sizes = [p[s].numel() for p in params]

    def f(theta):
        full = {
            n: torch.cat([p[:s].detach(), part.view(1, *p.shape[1:]), p[s + 1 :].detach()])
            for n, p, part in zip(names, params, theta.split(sizes))
        }
        with sdpa_kernel([SDPBackend.MATH]):
            return torch.func.functional_call(loss, full, ())

    theta = torch.cat([p[s].detach().flatten() for p in params])
    return torch.autograd.functional.hessian(f, theta, vectorize=True)


def seed_flat(tensors, s):
    return torch.cat([t[s].flatten() for t in tensors])


def adam_steps(loss, n, lr=3e-3):
    opt = torch.optim.Adam(loss.parameters(), lr=lr)
    for _ in range(n):
        opt.zero_grad()
        loss().backward()
        opt.step()


@pytest.fixture(scope="module")
def case():
    torch.manual_seed(0)
    loss = TrainLoss(GrokTransformer(seeds=(1, 2), config=TINY).double())
    adam_steps(loss, 100)
    H = [exact_hessian(loss, s) for s in range(2)]
    return loss, H


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_hvp_equals_exact_hessian_times_v(case):
    loss, H = case
    params = list(loss.parameters())
    v = [torch.randn(p.shape, generator=gen(1), dtype=p.dtype) for p in params]
    hv = hessian.hvp(loss, params, v)
    assert [h.shape for h in hv] == [p.shape for p in params]
    for s in range(2):
        torch.testing.assert_close(seed_flat(hv, s), H[s] @ seed_flat(v, s), rtol=1e-9, atol=1e-10)


def test_hutchinson_within_four_standard_errors_and_stderr_is_calibrated(case):
    loss, H = case
    probes = 2000
    trace, se = hessian.hutchinson_trace(
        loss, list(loss.parameters()), n_seeds=2, probes=probes, generator=gen(2)
    )
    assert trace.shape == se.shape == (2,) and trace.dtype == se.dtype == torch.float64
    for s in range(2):
        h = H[s]
        # Rademacher probes: Var(v^T H v) = 2 sum_{i != j} H_ij^2
        true_se = math.sqrt(2.0 * (h.pow(2).sum() - h.diagonal().pow(2).sum()).item() / probes)
        assert abs(trace[s].item() - h.trace().item()) < 4 * true_se
        assert 0.5 < se[s].item() / true_se < 2.0


def test_hutchinson_single_probe_has_nan_stderr(case):
    loss, _ = case
    trace, se = hessian.hutchinson_trace(loss, list(loss.parameters()), n_seeds=2, probes=1, generator=gen())
    assert torch.isfinite(trace).all() and torch.isnan(se).all()


def test_top_eigenvalue_matches_eigvalsh_and_warm_start_needs_fewer_iterations(case):
    loss, H = case
    params = list(loss.parameters())
    top, vecs, used = hessian.top_eigenvalue(loss, params, n_seeds=2, iters=500, generator=gen(3), tol=1e-9)
    assert top.shape == used.shape == (2,) and top.dtype == torch.float64
    for s in range(2):
        ev, u = torch.linalg.eigh(H[s])
        assert ev[-1] > ev[0].abs()  # the case the estimate is meant for: positive curvature dominates
        torch.testing.assert_close(top[s], ev[-1], rtol=1e-6, atol=0)
        v = seed_flat(vecs, s)
        assert abs(v.norm().item() - 1.0) < 1e-12 and abs((v @ u[:, -1]).item()) > 0.999
    assert (used < 500).all()

    # consecutive logging steps: a few more training steps, then cold vs warm start
    nxt = copy.deepcopy(loss)
    adam_steps(nxt, 5)
    params = list(nxt.parameters())
    cold, _, n_cold = hessian.top_eigenvalue(nxt, params, n_seeds=2, iters=500, generator=gen(3), tol=1e-6)
    warm, _, n_warm = hessian.top_eigenvalue(nxt, params, n_seeds=2, iters=500, v0=vecs, tol=1e-6)
    assert (n_warm < n_cold).all(), (n_warm, n_cold)
    torch.testing.assert_close(warm, cold, rtol=1e-4, atol=0)
    for s in range(2):
        torch.testing.assert_close(
            warm[s], torch.linalg.eigvalsh(exact_hessian(nxt, s))[-1], rtol=1e-3, atol=0
        )


def test_seed_zero_is_unaffected_by_seed_one(case):
    loss, _ = case
    other = copy.deepcopy(loss)
    with torch.no_grad():
        for p in other.parameters():
            p[1] += 0.1 * torch.randn(p[1].shape, generator=gen(4), dtype=p.dtype)
    v = [torch.randn(p.shape, generator=gen(5), dtype=p.dtype) for p in loss.parameters()]
    res = []
    for m in (loss, other):
        params = list(m.parameters())
        hv = hessian.hvp(m, params, v)
        tr, se = hessian.hutchinson_trace(m, params, n_seeds=2, probes=20, generator=gen(6))
        top, vecs, used = hessian.top_eigenvalue(m, params, n_seeds=2, iters=300, generator=gen(7), tol=1e-7)
        res.append((seed_flat(hv, 0), tr[0], se[0], top[0], seed_flat(vecs, 0), used[0]))
    for a, b in zip(*res):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # ...while seed 1's own results do move
    tr1 = [
        hessian.hutchinson_trace(m, list(m.parameters()), n_seeds=2, probes=5, generator=gen(6))[0][1]
        for m in (loss, other)
    ]
    assert abs(tr1[0] - tr1[1]) > 1e-3


def test_curvature_on_float32_model_under_no_grad(case):
    loss, H = case
    m32 = copy.deepcopy(loss).float()
    with torch.no_grad():  # as at a logging step of grokking.train
        out = hessian.curvature(m32.model, m32, probes=400, iters=300, generator=gen(8), tol=1e-7)
    assert set(out) == {"hess_trace", "hess_trace_se", "hess_top", "hess_iters", "vectors"}
    assert isinstance(out["hess_iters"], int) and 2 <= out["hess_iters"] <= 300
    for k in ("hess_trace", "hess_trace_se", "hess_top"):
        assert out[k].shape == (2,) and out[k].dtype == torch.float64
    assert [v.shape for v in out["vectors"]] == [p.shape for p in m32.parameters()]
    for s in range(2):
        torch.testing.assert_close(out["hess_top"][s], torch.linalg.eigvalsh(H[s])[-1], rtol=1e-3, atol=0)
        assert abs(out["hess_trace"][s] - H[s].trace()) < 4 * out["hess_trace_se"][s] + 1e-3


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    loss = TrainLoss(GrokTransformer(seeds=(1, 2), config=TINY).double())
    return loss, [torch.linalg.eigh(exact_hessian(loss, s)) for s in range(2)]


def test_algebraic_top_where_a_negative_eigenvalue_dominates(untrained):
    loss, eigh = untrained
    (ev0, _), (ev1, u1) = eigh
    assert ev0[-1] > -ev0[0] and -ev1[0] > ev1[-1]  # seed 0: positive dominates; seed 1: negative does
    params = list(loss.parameters())
    kw = dict(n_seeds=2, iters=500, tol=1e-8)
    mag, _, n_mag = hessian.top_eigenvalue(loss, params, generator=gen(3), largest="magnitude", **kw)
    torch.testing.assert_close(mag, torch.stack([ev0[-1], ev1[0]]), rtol=1e-4, atol=0)
    top, vecs, used = hessian.top_eigenvalue(loss, params, generator=gen(3), **kw)
    torch.testing.assert_close(top, torch.stack([ev0[-1], ev1[-1]]), rtol=1e-3, atol=0)
    v = seed_flat(vecs, 1)
    assert abs(v.norm().item() - 1.0) < 1e-12 and abs((v @ u1[:, -1]).item()) > 0.99
    # seed 0 stops after phase 1, seed 1's count includes its shifted phase
    assert used[0] == n_mag[0] and used[1] > n_mag[1]
    # warm start from the returned (top) vectors
    warm, _, n_warm = hessian.top_eigenvalue(loss, params, v0=vecs, **kw)
    assert (n_warm < used).all(), (n_warm, used)
    torch.testing.assert_close(warm, top, rtol=1e-5, atol=0)

    # seed 1 (which runs phase 2) is unaffected by a change to seed 0 (which does not)
    other = copy.deepcopy(loss)
    with torch.no_grad():
        for p in other.parameters():
            p[0] += 0.1 * torch.randn(p[0].shape, generator=gen(4), dtype=p.dtype)
    top_o, vecs_o, used_o = hessian.top_eigenvalue(other, list(other.parameters()), generator=gen(3), **kw)
    torch.testing.assert_close(top_o[1], top[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(seed_flat(vecs_o, 1), seed_flat(vecs, 1), rtol=1e-12, atol=1e-14)
    assert used_o[1] == used[1]

    # curvature() logs the algebraic top, also in float32 under no_grad
    m32 = copy.deepcopy(loss).float()
    with torch.no_grad():
        out = hessian.curvature(m32.model, m32, probes=2, iters=400, generator=gen(8), tol=1e-6)
    torch.testing.assert_close(out["hess_top"], torch.stack([ev0[-1], ev1[-1]]), rtol=1e-3, atol=0)
    assert out["hess_iters"] > int(n_mag.max())


def test_quadratic_known_answers_and_a_parameter_the_loss_is_linear_in():
    # loss = sum_s 1/2 x_s^T diag(a_s) x_s + c . y_s: H is diag(a_s) on x and zero on y.
    a = torch.tensor([[3.0, -1.0, 0.5], [0.25, 2.0, -4.0]], dtype=torch.float64)
    c = torch.tensor([1.0, -2.0], dtype=torch.float64)
    x = torch.randn(2, 3, generator=gen(9), dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 2, generator=gen(10), dtype=torch.float64, requires_grad=True)
    z = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)  # not used by the loss at all

    def loss_fn():
        return 0.5 * (a * x * x).sum() + (y * c).sum()

    params = [x, y, z]
    hv = hessian.hvp(loss_fn, params, [torch.ones_like(p) for p in params])
    torch.testing.assert_close(hv[0], a)
    assert not hv[1].any() and not hv[2].any()
    # Rademacher Hutchinson is exact on a diagonal Hessian: every probe gives tr exactly
    tr, se = hessian.hutchinson_trace(loss_fn, params, n_seeds=2, probes=5, generator=gen())
    torch.testing.assert_close(tr, a.sum(1), rtol=0, atol=1e-14)
    assert (se == 0).all()
    # largest MAGNITUDE: 3 for seed 0, -4 (negative) for seed 1
    mag, _, n_mag = hessian.top_eigenvalue(
        loss_fn, params, n_seeds=2, iters=200, generator=gen(), tol=1e-12, largest="magnitude"
    )
    torch.testing.assert_close(mag, torch.tensor([3.0, -4.0], dtype=torch.float64), rtol=1e-9, atol=0)
    # algebraically largest (the default): 3 and 2; only seed 1 runs the shifted second phase
    top, vecs, used = hessian.top_eigenvalue(
        loss_fn, params, n_seeds=2, iters=200, generator=gen(), tol=1e-12
    )
    torch.testing.assert_close(top, torch.tensor([3.0, 2.0], dtype=torch.float64), rtol=1e-9, atol=0)
    assert used[0] == n_mag[0] and used[1] > n_mag[1]
    assert abs(vecs[0][0, 0].item()) > 1 - 1e-9 and abs(vecs[0][1, 1].item()) > 1 - 1e-9


def test_algebraic_recovers_when_phase_one_stalls_above_the_bottom():
    # Eigenvalues 1, -0.5, -3. Started next to the -0.5 eigenvector, phase 1 stalls there ("converged":
    # the Rayleigh quotient barely moves) instead of reaching -3. Shifted by -0.5 the spectrum is
    # 1.5, 0, -2.5, so phase 2 converges to -3, below its shift; the retry shifted by -3 finds 1.
    a = torch.tensor([[1.0, -0.5, -3.0]], dtype=torch.float64)
    x = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)

    def loss_fn():
        return 0.5 * (a * x * x).sum()

    v0 = [torch.tensor([[1e-8, 1.0, 1e-8]], dtype=torch.float64)]
    kw = dict(n_seeds=1, iters=300, v0=v0, tol=1e-10)
    mag, _, n_mag = hessian.top_eigenvalue(loss_fn, [x], largest="magnitude", **kw)
    assert abs(mag.item() + 0.5) < 1e-9 and n_mag.item() == 2  # the stall: not -3
    top, vecs, used = hessian.top_eigenvalue(loss_fn, [x], **kw)
    torch.testing.assert_close(top, torch.tensor([1.0], dtype=torch.float64), rtol=1e-9, atol=0)
    assert abs(vecs[0][0, 0].item()) > 1 - 1e-9


def test_bad_inputs_raise():
    x = torch.zeros(2, 3, requires_grad=True)
    y = torch.zeros(3, 3, requires_grad=True)

    def loss_fn():
        return (x * x).sum() + (y * y).sum()

    with pytest.raises(ValueError, match="leading seed dimension"):
        hessian.hutchinson_trace(loss_fn, [x, y], n_seeds=2, probes=3, generator=gen())
    with pytest.raises(ValueError, match="probes"):
        hessian.hutchinson_trace(loss_fn, [x], n_seeds=2, probes=0, generator=gen())
    with pytest.raises(ValueError, match="v0"):
        hessian.top_eigenvalue(loss_fn, [x], n_seeds=2, iters=3, v0=[torch.ones(2, 4)])
    with pytest.raises(ValueError, match="iters"):
        hessian.top_eigenvalue(loss_fn, [x], n_seeds=2, iters=0)
    with pytest.raises(ValueError, match="largest"):
        hessian.top_eigenvalue(loss_fn, [x], n_seeds=2, iters=3, largest="smallest")
