import pytest
import torch


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
