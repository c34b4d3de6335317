"""paper_scale checkpoints and resumes like the other training loops: a SIGKILLed ImageNet-100 ViT run
continues from its checkpoint to metrics bitwise equal to an uninterrupted run on the CPU, and an
unreadable or foreign checkpoint is reported and the run starts over. Tiny fake ImageFolder (4 images)
and the tiny Hugging Face files of tests/test_architectures.py."""

import os
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch
from test_architectures import _image_folder, _tiny_local_files

from grokprobe import config, paper_scale, store

ARCH = "vit_tiny_patch16_224"
# the unplug (lr bump, cosine, penalty off) at epoch 2: after the first checkpoint, so a resume crosses it
PARAMS = dict(epochs=5, unplug_at=2, batch_size=2, seeds=[1], device="cpu", checkpoint_every=2)


class Crash(Exception):
    """Stands in for a process dying right after a checkpoint was written."""


def _cfg(arch=ARCH, **kw):
    return paper_scale.resolve(arch, "unplug", params={**PARAMS, **kw})


def _run(cfg, root, data_dir, progress=False):
    (o,) = paper_scale.run_one(
        cfg, condition="unplug", root=root, data_dir=data_dir, num_workers=0, progress=progress
    )
    return o


def _folder(cfg, root):
    return store.run_dir(cfg.experiment, config.config_hash(cfg), root)


def _crash_after_first_checkpoint(monkeypatch):
    save = store.save_torch

    def save_then_crash(path, obj):
        save(path, obj)
        raise Crash

    monkeypatch.setattr(store, "save_torch", save_then_crash)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    _image_folder(d / "imagenet100")
    return d


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory):
    """The uninterrupted run (one thread, as the killed subprocess)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        o = _run(_cfg(), tmp_path_factory.mktemp("ref"), data_dir)
    finally:
        torch.set_num_threads(before)
    assert o.summary["epochs_run"] == PARAMS["epochs"] and not (o.path / paper_scale.CHECKPOINT).exists()
    return o


def test_checkpoint_every_is_validated_and_outside_the_hash():
    assert config.config_hash(_cfg(checkpoint_every=1)) == config.config_hash(_cfg(checkpoint_every=3))
    assert paper_scale.resolve("tinybert", "reg").checkpoint_every == 10
    assert paper_scale.resolve(ARCH, "reg").checkpoint_every == 1
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="checkpoint_every"):
            _cfg(checkpoint_every=bad)


def test_killed_vit_run_resumes_and_matches_uninterrupted(reference, data_dir, tmp_path, capsys):
    root, cfg = tmp_path / "killed", _cfg()
    folder = _folder(cfg, root)
    # the child stalls right after its first checkpoint (epoch 2) so the kill cannot miss the window
    script = (
        "import time, torch; torch.set_num_threads(1)\n"
        "from grokprobe import paper_scale, store\n"
        "save = store.save_torch\n"
        "def save_then_stall(path, obj):\n"
        "    save(path, obj)\n"
        "    time.sleep(300)\n"
        "store.save_torch = save_then_stall\n"
        f"cfg = paper_scale.resolve({ARCH!r}, 'unplug', params={PARAMS!r})\n"
        f"paper_scale.run_one(cfg, condition='unplug', root={str(root)!r}, data_dir={str(data_dir)!r},"
        " num_workers=0, progress=False)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    try:
        deadline = time.time() + 120
        while not (folder / paper_scale.CHECKPOINT).exists():
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not store.is_done(folder)
    logged = store.Metrics.read(folder / "metrics.csv").rows  # what the store held at the kill
    assert max(r[0] for r in logged) == 2 and logged == reference.metrics.rows[: len(logged)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a good checkpoint resumes silently
        resumed = _run(cfg, root, data_dir, progress=True)
    assert f"resuming {folder.name} from seed 1 epoch 2" in capsys.readouterr().out
    assert resumed.summary["epochs_run"] == 3  # epochs 3-5 only: it resumed instead of starting over
    assert resumed.metrics.rows == reference.metrics.rows  # bitwise, across the unplug
    assert store.is_done(folder) and not (folder / paper_scale.CHECKPOINT).exists()
    assert store.Metrics.read(folder / "metrics.csv").rows == reference.metrics.rows
    again = _run(cfg, root, data_dir)  # now read from the store
    assert (
        again.summary["seconds"] == resumed.summary["seconds"]
        and again.metrics.rows == reference.metrics.rows
    )


@pytest.mark.parametrize("damage", ["truncated", "garbage", "foreign"])
def test_unreadable_checkpoint_is_reported_and_training_starts_over(
    reference, data_dir, tmp_path, monkeypatch, damage
):
    root, cfg = tmp_path / "r", _cfg()
    folder, ckpt = _folder(cfg, root), _folder(cfg, root) / paper_scale.CHECKPOINT
    if damage == "truncated":  # a real checkpoint, cut short (a disk filled up, a bad copy)
        _crash_after_first_checkpoint(monkeypatch)
        with pytest.raises(Crash):
            _run(cfg, root, data_dir)
        monkeypatch.undo()
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    else:
        folder.mkdir(parents=True)
        if damage == "garbage":
            ckpt.write_bytes(os.urandom(1000))
        else:  # loadable, but another loop's state (grokking's keys)
            torch.save({"step": 3, "model": {}, "rows": []}, ckpt)
    why = {"truncated": "unreadable checkpoint", "garbage": "unreadable checkpoint", "foreign": "not a paper"}
    with pytest.warns(UserWarning, match=why[damage]) as w:
        o = _run(cfg, root, data_dir)
    (msg,) = [str(x.message) for x in w if "starting from epoch 0" in str(x.message)]
    assert str(ckpt) in msg
    assert o.summary["epochs_run"] == PARAMS["epochs"]  # started over
    assert o.metrics.rows == reference.metrics.rows and o.status == "ok"
    assert store.is_done(folder) and not ckpt.exists()


@pytest.mark.parametrize("arch", ["tinybert"])
def test_hf_sst5_run_resumes_bitwise_after_a_crash(tmp_path, monkeypatch, arch):
    """The SST-5 path (collate, Hugging Face weights) through the same checkpoint, in-process."""
    _tiny_local_files(tmp_path, arch)
    cfg = _cfg(arch, batch_size=4, checkpoint_every=1)
    ref = _run(cfg, tmp_path / "ref", tmp_path)
    root = tmp_path / "crashed"
    _crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(Crash):
        _run(cfg, root, tmp_path)
    monkeypatch.undo()
    resumed = _run(cfg, root, tmp_path)
    assert resumed.summary["epochs_run"] == PARAMS["epochs"] - 1
    assert resumed.metrics.rows == ref.metrics.rows


def test_a_damaged_finished_run_is_reported_and_trained_again(reference, data_dir, tmp_path):
    """Finished runs go through the same store life cycle as train.run's: a truncated metrics.csv
    under a DONE marker is never read back as a result, it is reported and retrained."""
    root, cfg = tmp_path / "r", _cfg()
    first = _run(cfg, root, data_dir)
    csv = first.path / "metrics.csv"
    csv.write_text(csv.read_text()[: len(csv.read_text()) // 2])
    with pytest.warns(UserWarning, match="stored run is damaged, training again"):
        again = _run(cfg, root, data_dir)
    assert again.summary["epochs_run"] == PARAMS["epochs"]
    assert again.metrics.rows == reference.metrics.rows and store.is_done(again.path)
    assert _run(cfg, root, data_dir).summary == again.summary  # now simply read back


def test_a_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path, monkeypatch):
    """Same config (same folder), but the data folder gained a class: the checkpoint's classifier
    has the old shape. Say so, with what to do, instead of torch's size-mismatch dump."""
    data = tmp_path / "data"
    _image_folder(data / "imagenet100")
    root, cfg = tmp_path / "r", _cfg()
    _crash_after_first_checkpoint(monkeypatch)
    with pytest.raises(Crash):
        _run(cfg, root, data)
    monkeypatch.undo()
    for split in ("train_data", "val_data"):  # a third class appears
        (data / "imagenet100" / split / "n01").rename(data / "imagenet100" / split / "n03")
        new_class = data / "imagenet100" / split / "n01"
        new_class.mkdir()
        for f in (data / "imagenet100" / split / "n02").iterdir():
            (new_class / f.name).write_bytes(f.read_bytes())
    with pytest.raises(store.StoreError, match=r"does not fit the model.*recompute=True"):
        _run(cfg, root, data)
    assert (_folder(cfg, root) / paper_scale.CHECKPOINT).exists()  # nothing was thrown away
