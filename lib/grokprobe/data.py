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

    @property
    def suffix(self) -> torch.Tensor:  # (N, 3): b = c, the part after the shared prefix "EOS a op"
        return self.tokens[:, 3:6]

    @property
    def prefix_index(self) -> torch.Tensor:  # (N,): row of ModularArithmetic.prefixes this row starts with
        return self.a

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

    @property
    def prefixes(self) -> torch.Tensor:
        """(p, 3): every distinct prefix "EOS a op"; a causal model's output there depends on a alone."""
        a = torch.arange(self.p)
        return torch.stack(
            [torch.full_like(a, EOS), a + NUMBER_OFFSET, torch.full_like(a, OPERATOR_TOKEN[self.op])], 1
        )


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


# ----------------------------------------------------------------------------- image classification


@dataclass
class ImageData:
    """Images as float tensors (N, C, H, W) and int64 labels, already normalised."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int

    def to(self, device) -> ImageData:
        return ImageData(
            self.name,
            *(t.to(device) for t in (self.x_train, self.y_train, self.x_val, self.y_val)),
            self.num_classes,
        )


def digits(val_frac: float = 0.25, split_seed: int = 0) -> ImageData:
    """scikit-learn's bundled 8x8 digits (1,797 images, 10 classes): the CPU stand-in for CIFAR-10.
    Pixels 0..16 are scaled to [-1, 1], as Normalize(0.5, 0.5) does for CIFAR (SPEC §4 E2)."""
    from sklearn.datasets import load_digits

    if not 0.0 < val_frac < 1.0:
        raise ValueError(f"val_frac must lie in (0, 1), got {val_frac}")
    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # (N, 1, 8, 8)
    y = torch.as_tensor(d.target, dtype=torch.long)
    order = torch.as_tensor(np.random.RandomState(split_seed).permutation(len(y)))
    n_val = round(val_frac * len(y))
    val, train = order[:n_val], order[n_val:]
    return ImageData("digits", x[train], y[train], x[val], y[val], 10)


CIFAR10_FOLDER = "cifar-10-batches-py"


def cifar10(root=None, *, normalize: str = "half") -> ImageData:
    """CIFAR-10 from the official python version, unpacked under `root` (default: data/).

    normalize="half" is Normalize(0.5, 0.5) of E2/E3; "cifar" the per-channel statistics of the
    augmentation runs (Fig 7). Nothing is downloaded: a missing folder is an error saying how to
    get it.
    """
    import pickle
    from pathlib import Path

    from . import paths

    folder = Path(root or paths.DATA) / CIFAR10_FOLDER
    files = [folder / f"data_batch_{i}" for i in range(1, 6)] + [folder / "test_batch"]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 not found: looked for {folder} (missing {', '.join(missing)}). Expected the python "
            f"version of CIFAR-10 unpacked there: download cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html and run `tar xzf cifar-10-python.tar.gz -C {folder.parent}` "
            f"(or set GROKPROBE_DATA to the folder that holds {CIFAR10_FOLDER}/)."
        )

    def load(paths_):
        xs, ys = [], []
        for p in paths_:
            try:
                with open(p, "rb") as f:
                    batch = pickle.load(f, encoding="bytes")
                xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
            except (KeyError, ValueError, pickle.UnpicklingError, EOFError) as e:
                raise ValueError(f"{p} is not a CIFAR-10 python batch file: {type(e).__name__}: {e}") from e
        x = torch.as_tensor(np.concatenate(xs), dtype=torch.float32) / 255.0
        if normalize == "half":
            x = (x - 0.5) / 0.5
        else:
            mean = torch.tensor([0.4914, 0.4822, 0.4465])[:, None, None]
            std = torch.tensor([0.2023, 0.1994, 0.2010])[:, None, None]
            x = (x - mean) / std
        return x, torch.as_tensor(np.concatenate(ys))

    x_tr, y_tr = load(files[:5])
    x_va, y_va = load(files[5:])
    return ImageData("cifar10", x_tr, y_tr, x_va, y_va, 10)


def image_data(task: str, *, split_seed: int = 0, data_dir=None, normalize: str = "half") -> ImageData:
    if task == "digits":
        return digits(split_seed=split_seed)
    if task == "cifar10":
        return cifar10(data_dir, normalize=normalize)
    raise ValueError(f"unknown image task {task!r}; choose digits or cifar10")
