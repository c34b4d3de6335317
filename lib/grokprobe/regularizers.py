"""The paper's regularizers (SPEC §3) and the training-time tools that go with them.

loss = CE - lam * anti_flat_penalty(...)      pushes towards sharp minima (SPEC §3.2)
loss = CE - lam * collapse_penalty(...)       prevents neural collapse (SPEC §3.1)
loss = CE + lam * collapse_penalty(...)       encourages it (our addition, SPEC D1)
"""

from __future__ import annotations

import math

import torch

from . import metrics


def anti_flat_penalty(features, logits, weight, *, tau: float = 2.0, normalize_features: bool = True):
    """R of SPEC §3.2: ||W||_F^2 * mean_i sum_c p_ic(1 - p_ic) ||phi_i||^2 with p = softmax(z / tau)
    and phi normalised to unit length. Gradients reach W directly and the backbone through the
    logits (through phi-hat they vanish: its norm is constant)."""
    return metrics.relative_flatness(features, logits, weight, tau=tau, normalize_features=normalize_features)


def collapse_penalty(features, labels):
    """NCC of the batch over the classes present (SPEC §3.1), differentiable through the class
    means and variances; callers pick the sign."""
    return metrics.ncc(features, labels)


PENALTIES = ("none", "anti_flat", "collapse_prevent", "collapse_encourage")


def penalty_term(
    kind: str, *, lam: float, features, logits, weight, labels, tau=2.0, normalize_features=True
):
    """(signed term added to CE, raw penalty value) for one batch."""
    if kind == "anti_flat":
        r = anti_flat_penalty(features, logits, weight, tau=tau, normalize_features=normalize_features)
        return -lam * r, r
    if kind in ("collapse_prevent", "collapse_encourage"):
        r = collapse_penalty(features, labels)
        return (-lam if kind == "collapse_prevent" else lam) * r, r
    raise ValueError(f"unknown penalty {kind!r}; choose one of {', '.join(PENALTIES)}")


@torch.no_grad()
def frobenius_cap(weight: torch.Tensor, max_norm: float) -> torch.Tensor:
    """If ||W||_F > max_norm, rescale W in place onto the sphere of radius max_norm (after every
    optimizer step, final layer only: SPEC §3.2). Returns the norm before capping."""
    norm = weight.norm()
    weight.mul_(torch.clamp(max_norm / norm, max=1.0))  # no branch: no host sync
    return norm


class Unplug:
    """The switch-off schedule of SPEC §3.2: from epoch `at` on, the penalty is off, weight decay is
    `wd_after`, the learning rate is multiplied by `bump` and then follows a cosine to `eta_min`
    over the remaining epochs (stepped once per epoch, as the authors' CosineAnnealingLR). The
    Frobenius cap is not touched: it stays on. at <= 0 never unplugs."""

    def __init__(
        self, *, at: int, total: int, bump: float = 10.0, wd_after: float = 2e-4, eta_min: float = 1e-4
    ):
        if at > 0 and at >= total:
            raise ValueError(f"unplug epoch {at} must come before the last epoch {total}")
        self.at, self.total, self.bump, self.wd_after, self.eta_min = at, total, bump, wd_after, eta_min
        self.base_lr = None

    def active(self, epoch: int) -> bool:
        """Whether the penalty is still on in `epoch` (0-based)."""
        return self.at <= 0 or epoch < self.at

    def lr_wd(self, epoch: int, lr: float, wd: float) -> tuple[float, float]:
        """Learning rate and weight decay for `epoch`, given the run's base values."""
        if self.active(epoch):
            return lr, wd
        peak = lr * self.bump
        t_max = max(1, self.total - self.at - 1)
        k = min(epoch - self.at, t_max)
        return self.eta_min + (peak - self.eta_min) * (1 + math.cos(math.pi * k / t_max)) / 2, self.wd_after

    def apply(self, optimizer, epoch: int, lr: float, wd: float) -> None:
        new_lr, new_wd = self.lr_wd(epoch, lr, wd)
        for group in optimizer.param_groups:
            group["lr"], group["weight_decay"] = new_lr, new_wd
