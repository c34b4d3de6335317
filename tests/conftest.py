import pytest
import torch

# A grokking config that trains in about a second (smoke profile + these overrides).
TINY_GROKKING = dict(
    p=11,
    train_frac=0.6,
    seeds=[1, 2],
    steps=40,
    lr=3e-3,
    d_model=16,
    n_heads=2,
    d_ff=32,
    batch_size=16,
    log_points=8,
    checkpoint_every=10,
    device="cpu",
)


@pytest.fixture(autouse=True)
def _small_threads():
    # Two pytest-xdist workers share two cores: one thread each avoids oversubscription.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def results(tmp_path):
    """A private results root, so tests never touch results/ or each other."""
    return tmp_path / "results"


def kill_after_first_checkpoint(script: str, folder, timeout: float = 120.0) -> None:
    """Run `script` in a new Python process and SIGKILL its process group as soon as
    folder/checkpoint.pt exists (the run must not have finished by then)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + timeout
    while not (folder / "checkpoint.pt").exists():
        assert proc.poll() is None, "the run finished before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
