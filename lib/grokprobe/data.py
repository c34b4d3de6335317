"""Data: modular arithmetic (generated), digits (bundled with scikit-learn), CIFAR-10 from a local folder.

Modular arithmetic follows SPEC §4 E1: every equation ``EOS a op b = c EOS`` over Z_p, one fixed
shuffle of the equation list (``split_seed``, independent of the training seed), the first
round(train_frac * N) equations for training and the rest for validation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# Token layout of the authors' vocabulary (SPEC §4 E1): EOS, "=", 20 operator slots, the numbers,
# then 120 slots for S5 permutations. We keep the S5 slots (unused) so the output layer has the
# paper's width (239 for p = 97): the flatness bound sums p(1 - p) over the whole vocabulary.
EOS, EQ = 0, 1
N_OPERATOR_SLOTS = 20
N_PERMUTATION_SLOTS = 120
NUMBER_OFFSET = 2 + N_OPERATOR_SLOTS


def _inverses(p: int) -> np.ndarray:
    """b^-1 mod p for every b (b^(p-2) by Fermat, p prime); entry 0 is unused."""
    return np.array([pow(b, p - 2, p) if b else 0 for b in range(p)], dtype=np.int64)


OPERATORS = {
    "+": lambda a, b, p: (a + b) % p,
    "-": lambda a, b, p: (a - b) % p,
    "*": lambda a, b, p: (a * b) % p,
    "/": lambda a, b, p: (a * _inverses(p)[b]) % p,
    "x^2+y^2": lambda a, b, p: (a * a + b * b) % p,
    "x^2+xy+y^2": lambda a, b, p: (a * a + a * b + b * b) % p,
    "x^3+xy": lambda a, b, p: (a * a * a + a * b) % p,
}
OPERATOR_TOKEN = {op: 2 + i for i, op in enumerate(sorted(OPERATORS))}


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % k for k in range(2, math.isqrt(n) + 1))


def vocab_size(p: int) -> int:
    return NUMBER_OFFSET + p + N_PERMUTATION_SLOTS


@dataclass
class Split:
    a: torch.Tensor  # (N,) int64
    b: torch.Tensor  # (N,) int64
    answer: torch.Tensor  # (N,) int64, c = a op b mod p
    tokens: torch.Tensor  # (N, 7) int64: EOS a op b = c EOS

    def __len__(self) -> int:
        return len(self.answer)

    @property
    def inputs(self) -> torch.Tensor:  # (N, 6): next-token prediction input
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:  # (N, 2): what positions 4 ("=") and 5 (c) must predict
        return self.tokens[:, 5:7]

    def to(self, device) -> Split:
        return Split(*(t.to(device) for t in (self.a, self.b, self.answer, self.tokens)))


@dataclass
class ModularArithmetic:
    p: int
    op: str
    train: Split
    val: Split

    @property
    def vocab_size(self) -> int:
        return vocab_size(self.p)

    def answer_token(self, answer: torch.Tensor) -> torch.Tensor:
        return answer + NUMBER_OFFSET


def modular_arithmetic(
    p: int = 97, op: str = "+", train_frac: float = 0.5, split_seed: int = 0
) -> ModularArithmetic:
    """All equations ``a op b = c (mod p)``, split once by ``split_seed`` into train and validation."""
    if op not in OPERATORS:
        raise ValueError(f"unknown operator {op!r}; valid operators: {', '.join(OPERATORS)}")
    if not isinstance(p, int) or p < 2:
        raise ValueError(f"p must be an integer >= 2, got {p!r}")
    if op == "/" and not is_prime(p):
        raise ValueError(f"division needs a prime modulus (inverses must exist); p = {p} is not prime")
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must lie in the open interval (0, 1), got {train_frac!r}")

    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if op == "/":
        a, b = a[b != 0], b[b != 0]
    c = OPERATORS[op](a.astype(np.int64), b.astype(np.int64), p)
    order = np.random.RandomState(split_seed).permutation(len(a))
    n_train = round(train_frac * len(a))  # Python rounds half to even: 4704.5 -> 4704 as in the paper
    if n_train < 1 or n_train >= len(a):
        raise ValueError(f"train_frac={train_frac} leaves an empty split for {len(a)} equations")

    def split(idx: np.ndarray) -> Split:
        at, bt, ct = (torch.as_tensor(x[idx], dtype=torch.long) for x in (a, b, c))
        n = len(idx)
        tokens = torch.stack(
            [
                torch.full((n,), EOS),
                at + NUMBER_OFFSET,
                torch.full((n,), OPERATOR_TOKEN[op]),
                bt + NUMBER_OFFSET,
                torch.full((n,), EQ),
                ct + NUMBER_OFFSET,
                torch.full((n,), EOS),
            ],
            dim=1,
        )
        return Split(at, bt, ct, tokens)

    return ModularArithmetic(p, op, split(order[:n_train]), split(order[n_train:]))
