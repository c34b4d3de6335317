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
