"""The anti-flatness regulariser R, the Frobenius cap and the unplug schedule (SPEC §3.2), against
independent references: an explicit loop for R, autograd's gradcheck in float64, and the SPEC's
closed-form description of the schedule."""

import functools
import math

import pytest
import torch
from torch import nn

from grokprobe import config, regularizers, train
from grokprobe.regularizers import Unplug, anti_flat_penalty, frobenius_cap, penalty_term


def reference_R(phi, z, W, tau=2.0, normalize=True):
    """R = ||W||_F^2 * mean_i sum_c p_ic (1 - p_ic) ||phi_i||^2, p = softmax(z / tau), written as loops."""
    phi, z, W = phi.double().tolist(), z.double().tolist(), W.double().tolist()
    w2 = sum(w * w for row in W for w in row)
    total = 0.0
    for f, zi in zip(phi, z):
        norm = math.sqrt(sum(v * v for v in f))
        f2 = sum(v * v for v in f) / (norm + 1e-8) ** 2 if normalize else sum(v * v for v in f)
        m = max(zi)
        e = [math.exp((v - m) / tau) for v in zi]
        p = [v / sum(e) for v in e]
        total += sum(pc * (1 - pc) for pc in p) * f2
    return w2 * total / len(phi)


@pytest.mark.parametrize("tau, normalize", [(2.0, True), (1.0, False), (0.5, True)])
def test_penalty_matches_the_reference_formula(tau, normalize):
    g = torch.Generator().manual_seed(0)
    phi, z, W = (
        torch.randn(13, 7, generator=g),
        3 * torch.randn(13, 5, generator=g),
        torch.randn(5, 7, generator=g),
    )
    got = anti_flat_penalty(phi, z, W, tau=tau, normalize_features=normalize)
    assert got.dtype == torch.float64 and got.dim() == 0
    assert got.item() == pytest.approx(reference_R(phi, z, W, tau, normalize), rel=1e-12)


def test_penalty_gradcheck_float64():
    g = torch.Generator().manual_seed(1)
    phi = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    W = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    for normalize in (True, False):
        fn = functools.partial(anti_flat_penalty, tau=2.0, normalize_features=normalize)
        assert torch.autograd.gradcheck(fn, (phi, z, W))
    # composed as in training: z = phi W^T + b, so the gradient reaches W twice and phi through z
    b = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w, bb: anti_flat_penalty(f, f @ w.T + bb, w), (phi, W, b))


def test_gradient_through_normalised_features_vanishes_but_reaches_the_backbone_through_the_logits():
    g = torch.Generator().manual_seed(2)
    phi = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(8, 4, generator=g, dtype=torch.float64)
    W = torch.randn(4, 5, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad(anti_flat_penalty(phi, z, W), phi)
    assert grad.abs().max() < 1e-6  # ||phi-hat|| is constant (SPEC §3.2)
    torch.manual_seed(0)
    backbone, head = nn.Linear(3, 5), nn.Linear(5, 4)
    f = torch.relu(backbone(torch.randn(16, 3)))
    term, r = penalty_term(
        "anti_flat", lam=0.5, features=f, logits=head(f), weight=head.weight, labels=torch.zeros(16).long()
    )
    assert term.item() == pytest.approx(-0.5 * r.item())  # loss = CE - lam R: maximises R
    term.backward()
    assert backbone.weight.grad.abs().sum() > 0 and head.weight.grad.abs().sum() > 0


def test_penalty_never_exceeds_cap_squared_times_one_minus_one_over_C():
    """Property: with normalised features and ||W||_F <= cap, R <= cap^2 (1 - 1/C), for any inputs;
    uniform logits reach the bound."""
    g = torch.Generator().manual_seed(3)
    for trial in range(300):
        n, d, c = (int(torch.randint(1, 20, (1,), generator=g)) for _ in range(3))
        c = max(c, 2)
        scale = 10 ** (torch.rand(1, generator=g).item() * 6 - 3)
        phi = torch.randn(n, d, generator=g) * scale
        z = torch.randn(n, c, generator=g) * 10 ** (torch.rand(1, generator=g).item() * 4 - 2)
        W = torch.randn(c, d, generator=g) * 10 ** (torch.rand(1, generator=g).item() * 4 - 1)
        cap = 10 ** (torch.rand(1, generator=g).item() * 3 - 1)
        frobenius_cap(W, cap)
        tau = 0.5 + 3 * torch.rand(1, generator=g).item()
        R = anti_flat_penalty(phi, z, W, tau=tau).item()
        assert R <= cap**2 * (1 - 1 / c) * (1 + 1e-6), (trial, R, cap, c)
    W = torch.randn(10, 6, generator=g)
    W *= 30.0 / W.norm()  # on the cap's sphere
    R = anti_flat_penalty(torch.randn(4, 6, generator=g), torch.zeros(4, 10), W).item()
    assert R == pytest.approx(900 * 0.9, rel=1e-5)


def test_frobenius_cap_rescales_in_place_only_above_the_bound():
    W = torch.full((3, 4), 2.0)  # ||W||_F = 2 * sqrt(12)
    before = W.norm().item()
    assert frobenius_cap(W, 1.0).item() == pytest.approx(before)
    assert W.norm().item() == pytest.approx(1.0) and torch.allclose(W, torch.full((3, 4), 1 / math.sqrt(12)))
    small = torch.randn(3, 4) * 0.01
    kept = small.clone()
    frobenius_cap(small, 1.0)
    assert torch.equal(small, kept)
    p = nn.Linear(4, 3).weight  # a parameter: in place under no_grad, no autograd error
    frobenius_cap(p, 1e-3)
    assert p.norm().item() == pytest.approx(1e-3, rel=1e-5) and p.requires_grad


def test_unplug_schedule_at_the_boundary():
    u = Unplug(at=10, total=20, bump=10.0, wd_after=2e-4, eta_min=1e-4)
    assert u.active(9) and not u.active(10)
    assert u.lr_wd(9, 0.01, 0.0) == (0.01, 0.0)
    lr, wd = u.lr_wd(10, 0.01, 0.0)
    assert lr == pytest.approx(0.1) and wd == 2e-4  # the bump: lr x 10 -> 0.1 as in E3
    assert u.lr_wd(19, 0.01, 0.0)[0] == pytest.approx(1e-4)  # cosine reaches eta_min on the last epoch
    t_max = 20 - 10 - 1  # CosineAnnealingLR(T_max = epochs - cancel - 1), stepped once per epoch
    for k in range(t_max + 1):
        want = 1e-4 + (0.1 - 1e-4) * (1 + math.cos(math.pi * k / t_max)) / 2
        assert u.lr_wd(10 + k, 0.01, 0.0)[0] == pytest.approx(want)
    lrs = [u.lr_wd(e, 0.01, 0.0)[0] for e in range(10, 20)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    never = Unplug(at=0, total=20)
    assert all(never.active(e) and never.lr_wd(e, 0.01, 0.0) == (0.01, 0.0) for e in range(20))
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.01)
    u.apply(opt, 10, 0.01, 0.0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and opt.param_groups[0]["weight_decay"] == 2e-4
    with pytest.raises(ValueError, match="before the last epoch"):
        Unplug(at=20, total=20)


def test_unplug_matches_torch_cosine_annealing():
    """The closed form equals what the authors ran: a lr bump, then torch's CosineAnnealingLR."""
    u = Unplug(at=5, total=17, bump=3.0, wd_after=0.0, eta_min=1e-3)
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.02 * 3.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=17 - 5 - 1, eta_min=1e-3)
    for epoch in range(5, 17):
        assert u.lr_wd(epoch, 0.02, 0.0)[0] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def test_classifier_loop_unplugs_keeps_the_cap_and_logs_both_flatness_views(results):
    cfg = config.resolve(
        "anti_flat",
        dict(seeds=[1], epochs=6, unplug_at=3, lam=1.0, cap=2.0, device="cpu", checkpoint_every=100),
        "smoke",
    )
    m = train.run(cfg, root=results, progress=False).metrics
    epochs, on = m.series("penalty_on", "train", 1)
    assert on.tolist() == [1, 1, 1, 1, 0, 0, 0]  # epoch k is logged after training epoch k - 1
    _, bp = m.series("batch_penalty", "train", 1)
    assert (bp[:3] > 0).all() and (bp[3:] == 0).all()
    _, w = m.series("w_norm", "train", 1)
    assert (w[1:] <= 2.0 + 1e-6).all()  # the cap holds before and after the unplug
    assert w.max() == pytest.approx(2.0, rel=1e-4)  # and it binds at this lambda
    _, R = m.series("penalty_R", "train", 1)
    _, kappa = m.series("kappa", "train", 1)
    assert (R <= 4.0 * 0.9 + 1e-9).all() and not torch.allclose(torch.tensor(R), torch.tensor(kappa))


def test_penalty_term_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="unknown penalty"):
        regularizers.penalty_term("sharpen", lam=1.0, features=None, logits=None, weight=None, labels=None)
