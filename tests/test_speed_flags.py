"""The training step's speed knobs (issue 7): bfloat16 autocast and torch.compile. Both are off by
default; on, they must train the same model up to their rounding, keep metrics in float32, and
name different result folders than the float32 eager run, whose folder they must not move."""

import shutil

import pytest
from conftest import TINY_GROKKING

from grokprobe import config, grokking


def _cfg(**kw):
    return config.resolve("grokking", {**TINY_GROKKING, **kw}, "smoke")


def _train(**kw):
    rows, _ = grokking.train(_cfg(**kw), progress=False)
    return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


def test_defaults_keep_the_hash_of_runs_stored_before_the_knobs_existed():
    base = _cfg()
    assert "precision" not in config.hashed_dict(base) and "torch_compile" not in config.hashed_dict(base)
    hashes = {config.config_hash(c) for c in (base, _cfg(precision="bfloat16"), _cfg(torch_compile=True))}
    assert len(hashes) == 3
    assert config.hashed_dict(_cfg(precision="bfloat16"))["precision"] == "bfloat16"


def test_unknown_precision_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match=r"precision.*float32.*bfloat16"):
        _cfg(precision="float16")
    with pytest.raises(TypeError, match="torch_compile"):
        _cfg(torch_compile="yes")


def test_bfloat16_trains_close_to_float32_but_not_identically():
    ref, low = _train(), _train(precision="bfloat16")
    assert ref.keys() == low.keys()
    loss = [k for k in ref if k[2] == "train" and k[3] == "loss" and k[0] > 0]
    assert any(ref[k] != low[k] for k in loss)  # autocast really ran
    for k in loss:
        assert low[k] == pytest.approx(ref[k], rel=0.01, abs=0.005)
    # the logged metrics themselves are float32 computations of the (bf16-trained) weights
    assert all(isinstance(v, float) for v in low.values())


@pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("clang++")),
    reason="torch.compile's CPU backend builds C++ kernels and no C++ compiler is installed",
)
def test_compiled_step_matches_eager():
    ref, comp = _train(), _train(torch_compile=True)
    assert ref.keys() == comp.keys()
    for k in ref:
        if k[3] in ("loss", "acc"):
            assert comp[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-5), k


def test_compile_without_a_cpp_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(grokking.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match=r"torch_compile=True on the CPU needs a C\+\+ compiler"):
        grokking.train(_cfg(torch_compile=True), progress=False)
