"""Where and how a run executes: device choice, determinism, thread count."""

from __future__ import annotations

import contextlib
import os

import torch


class NonFiniteLoss(FloatingPointError):
    """Training produced a non-finite loss (or weights); `rows` holds the metrics logged before."""

    def __init__(self, step: int, seeds, rows=(), unit: str = "step"):
        self.step, self.seeds, self.rows = step, list(seeds), list(rows)
        super().__init__(
            f"non-finite training loss at {unit} {step} (seeds {self.seeds}); "
            "metrics up to the last logged point are kept, the run is marked FAILED"
        )


def configure_threads() -> None:
    """GROKPROBE_THREADS=n caps torch's CPU threads: with several processes on two cores, spin-waiting
    OpenMP threads can make small models 10-20x slower than one thread each."""
    n = os.environ.get("GROKPROBE_THREADS")
    if n:
        torch.set_num_threads(int(n))


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for, but torch sees no CUDA device; use 'cpu' or 'auto'")
    return torch.device(name)


@contextlib.contextmanager
def determinism(enabled: bool):
    """Bitwise-repeatable kernels inside the block (cuBLAS needs its workspace setting first)."""
    before = torch.are_deterministic_algorithms_enabled()
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def log_steps(total: int, n: int) -> list[int]:
    """Step 0, about n log-spaced steps in [1, total], and the last step: dense enough to resolve
    memorisation (tens to hundreds of steps) and the late transition (thousands) alike."""
    import numpy as np

    pts = np.unique(np.round(np.geomspace(1, total, max(n, 2))).astype(int))
    return sorted({0, total, *(int(p) for p in pts if 1 <= p <= total)})


def peak_memory_mb(device) -> float:
    """Peak memory of this process: allocated GPU memory on CUDA, resident set size on the CPU."""
    if torch.device(device).type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB
