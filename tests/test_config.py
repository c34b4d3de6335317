import pytest

import grokprobe
from grokprobe import config


def test_profiles_and_overrides():
    paper = config.resolve("grokking", {}, "paper")
    assert (paper.lr, paper.train_frac, paper.steps, paper.seeds) == (1e-4, 0.5, 100_000, (1, 42, 15213))
    quick = config.resolve("grokking", {"seed": 3, "lr": 2e-3}, "quick")
    assert quick.seeds == (3,) and quick.lr == 2e-3
    assert config.overrides(quick, "quick") == {"seeds": [3], "lr": 2e-3}
    assert config.resolve("grokking", {"lr": None}, "quick").lr == config.resolve("grokking", {}, "quick").lr


@pytest.mark.parametrize(
    "params, error, words",
    [
        ({"lr": -1.0}, ValueError, "lr must be > 0"),
        ({"train_frac": 1.2}, ValueError, "(0, 1)"),
        ({"op": "%"}, ValueError, "x^2+y^2"),
        ({"op": "/", "p": 12}, ValueError, "prime"),
        ({"sede": 3}, ValueError, "valid: "),
        ({"steps": 1.5}, TypeError, "steps must be of type int"),
        ({"seeds": [1, 1]}, ValueError, "distinct"),
        ({"d_model": 30, "n_heads": 4}, ValueError, "divisible"),
        ({"device": "gpu"}, ValueError, "auto, cpu, cuda"),
    ],
)
def test_impossible_values_are_rejected_before_training(params, error, words):
    with pytest.raises(error, match=None) as e:
        config.resolve("grokking", params, "quick")
    assert words in str(e.value)


def test_unknown_profile_and_experiment():
    with pytest.raises(ValueError, match="smoke, quick, paper"):
        config.resolve("grokking", {}, "fast")
    with pytest.raises(ValueError, match="grokking"):
        config.resolve("grok", {}, "quick")


def test_hash_covers_what_is_computed_and_the_version(monkeypatch):
    a = config.resolve("grokking", {}, "quick")
    assert config.config_hash(a) == config.config_hash(config.resolve("grokking", {}, "quick"))
    assert config.config_hash(a) != config.config_hash(config.resolve("grokking", {"lr": 2e-3}, "quick"))
    assert config.config_hash(a) == config.config_hash(config.resolve("grokking", {"device": "cpu"}, "quick"))
    before = config.config_hash(a)
    monkeypatch.setattr(config, "__version__", grokprobe.__version__ + ".dev")
    assert config.config_hash(a) != before
