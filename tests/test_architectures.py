"""Notebook 04's models: shapes, phi / W identity (phi @ W.T + b equals the logits), causality, the
paper-scale paths (ImageNet-100 ImageFolder, TinyBERT / DistilGPT2 through transformers) on tiny
random-initialised configs and tiny local files, and their errors when something is missing."""

import json

import numpy as np
import pytest
import torch

from grokprobe import (
    anti_flat,
    anti_flat_tables,
    arch_runs,
    architectures,
    config,
    hf,
    imagenet100,
    paper_scale,
)
from grokprobe.classifiers import build_classifier


def _identity(model, *inputs):
    logits, phi = model(*inputs)
    W, b = model.classifier.weight, model.classifier.bias
    torch.testing.assert_close(logits, phi @ W.T + (0 if b is None else b), rtol=1e-5, atol=1e-5)
    return logits, phi


@pytest.mark.parametrize(
    "arch, in_shape, d, bias",
    [
        ("mlp", (1, 8, 8), 128, True),
        ("vit", (1, 8, 8), 64, True),
        ("gpt_rows", (1, 8, 8), 64, False),
        ("vit_tiny_patch16_224", (3, 224, 224), 192, True),
    ],
)
def test_shapes_and_phi_is_the_classifier_input(arch, in_shape, d, bias):
    torch.manual_seed(0)
    m = build_classifier(arch, in_shape=in_shape, num_classes=7).eval()
    x = torch.randn(3, *in_shape)
    logits, phi = _identity(m, x)
    assert logits.shape == (3, 7) and phi.shape == (3, d)
    assert m.classifier.weight.shape == (7, d) and (m.classifier.bias is not None) == bias


def test_vit_phi_is_the_class_token_after_the_final_norm():
    m = build_classifier("vit_tiny_patch16_224", in_shape=(3, 224, 224), num_classes=100).eval()
    assert m.head is m.classifier
    assert architectures.n_params(m) == 5_543_716  # timm's vit_tiny_patch16_224 with 100 classes
    x = torch.randn(2, 3, 224, 224)
    feats = m.forward_features(x)
    assert feats.shape == (2, 197, 192)
    torch.testing.assert_close(m(x)[1], feats[:, 0])
    torch.testing.assert_close(feats.mean(-1), torch.zeros(2, 197), atol=1e-5, rtol=0)  # LayerNorm output


def test_row_transformer_is_causal_and_reads_the_last_row_last():
    torch.manual_seed(0)
    m = build_classifier("gpt_rows", in_shape=(1, 8, 8), num_classes=10).eval()
    x = torch.randn(2, 1, 8, 8)
    x2 = x.clone()
    x2[:, :, 7] += 1.0  # change only the last row
    h1, h2 = m.hidden_states(x), m.hidden_states(x2)
    torch.testing.assert_close(h1[:, :7], h2[:, :7])  # earlier positions cannot see it
    assert not torch.allclose(h1[:, 7], h2[:, 7])
    torch.testing.assert_close(m(x)[1], h1[:, -1])


def test_wrong_input_sizes_are_rejected():
    with pytest.raises(ValueError, match="224x224"):
        build_classifier("vit_tiny_patch16_224", in_shape=(3, 32, 32), num_classes=10)
    m = build_classifier("vit", in_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(ValueError, match="8x8"):
        m(torch.randn(1, 1, 12, 12))


def test_digits_configs_resolve_for_every_stand_in():
    for arch in architectures.DIGITS_ARCHS:
        p = architectures.digits_params(arch, "quick")
        cfg = anti_flat.resolve("digits", "unplug", params=p, profile="quick")
        assert cfg.arch == arch and cfg.penalty == "anti_flat" and cfg.unplug_at == cfg.epochs // 2
        assert architectures.digits_params(arch, "paper") == p  # paper keeps the CPU stand-in
    with pytest.raises(ValueError, match="not a digits stand-in"):
        architectures.digits_params("resnet18", "quick")
    assert set(architectures.ARCHS) <= set(config.ARCHS)


# ---------------------------------------------------------------------------------- ImageNet-100


def _image_folder(root, sizes=((300, 260), (224, 240))):
    from PIL import Image

    rng = np.random.RandomState(0)
    for split in ("train_data", "val_data"):
        for c in ("n01", "n02"):
            (root / split / c).mkdir(parents=True)
            for i, (w, h) in enumerate(sizes):
                Image.fromarray(rng.randint(0, 255, (h, w, 3), dtype=np.uint8)).save(
                    root / split / c / f"{i}.png"
                )


def test_imagenet100_missing_folder_names_what_and_where(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        imagenet100.imagenet100(tmp_path)
    msg = str(e.value)
    assert (
        str(tmp_path / "imagenet100" / "train_data") in msg and "val_data" in msg and "GROKPROBE_DATA" in msg
    )


def test_imagenet100_image_folder_resize_crop_normalise(tmp_path):
    _image_folder(tmp_path / "imagenet100")
    ds = imagenet100.imagenet100(tmp_path)
    assert ds["train"].classes == ["n01", "n02"] and len(ds["train"]) == 4 and len(ds["val"]) == 4
    x, y = ds["train"][3]
    assert x.shape == (3, 224, 224) and y == 1 and x.dtype == torch.float32
    assert -2.2 < float(x.min()) and float(x.max()) < 2.7  # ImageNet-normalised [0, 1] pixels


def test_paper_configs_follow_spec_and_exist_only_in_the_paper_profile():
    cfg = paper_scale.resolve("vit_tiny_patch16_224", "unplug")
    assert (cfg.task, cfg.epochs, cfg.batch_size, cfg.lr, cfg.lam, cfg.cap) == (
        "imagenet100",
        300,
        256,
        0.01,
        1e-2,
        150.0,
    )
    assert (cfg.unplug_at, cfg.bump, cfg.wd_after, cfg.eta_min) == (150, 5.0, 2e-4, 1e-4)
    bert, gpt = paper_scale.resolve("tinybert", "reg"), paper_scale.resolve("distilgpt2", "baseline")
    assert (bert.task, bert.batch_size, bert.lam, bert.cap, bert.unplug_at, bert.lr * bert.bump) == (
        "sst5",
        32,
        0.3,
        30.0,
        0,
        pytest.approx(3e-3),
    )
    assert (gpt.penalty, gpt.lam, gpt.batch_size) == ("none", 0.0, 64)
    with pytest.raises(ValueError, match="profile='paper'"):
        paper_scale.resolve("tinybert", "reg", profile="quick")
    with pytest.raises(ValueError, match="unknown parameter"):
        paper_scale.resolve("tinybert", "reg", params={"epochz": 3})


def test_vit_tiny_imagenet100_path_trains_end_to_end(tmp_path):
    _image_folder(tmp_path / "imagenet100")
    params = dict(epochs=2, unplug_at=1, batch_size=4, seeds=[1], device="cpu")
    out = paper_scale.run_conditions(
        "vit_tiny_patch16_224", seeds=[1], params=params, conditions=("unplug",), root=tmp_path / "r",
        data_dir=tmp_path, num_workers=0, log=None,
    )  # fmt: skip
    o = out["unplug"][1]
    assert o.status == "ok"
    assert list(o.series("penalty_on")[1]) == [1.0, 0.0]
    assert len(o.series("acc", "val")[0]) == 3 and np.isfinite(o.series("kappa")[1]).all()
    row = anti_flat_tables.condition_table(out, unplug_at=1)[0]
    assert row["condition"] == "unplug" and row["val_acc"] is not None
    again = paper_scale.run_conditions(
        "vit_tiny_patch16_224", seeds=[1], params=params, conditions=("unplug",), root=tmp_path / "r",
        data_dir=tmp_path, num_workers=0, log=None,
    )  # fmt: skip
    assert (
        again["unplug"][1].summary["seconds"] == o.summary["seconds"]
    )  # reloaded from the store, not trained again


# --------------------------------------------------------------------------- Hugging Face (extra [hf])


def test_missing_extra_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"\[hf\]"):
        hf.require_transformers()


@pytest.mark.parametrize("arch", hf.ARCHS)
def test_hf_tiny_models_phi_is_the_classifier_input(arch):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    m = hf.tiny_model(arch).eval()
    ids = torch.randint(1, 64, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0  # right padding
    ids[0, 6:] = 0
    logits, phi = _identity(m, ids, mask)
    assert logits.shape == (3, 5) and phi.shape == (3, 32)
    torch.testing.assert_close(logits, m.model(input_ids=ids, attention_mask=mask).logits)  # HF's own head
    if arch == "tinybert":  # phi is the pooled output the classifier reads, not the CLS state (SPEC D11)
        cls = m.model.bert(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0]
        assert not torch.allclose(phi, cls)
        assert m.classifier is m.model.classifier
    else:
        assert m.classifier is m.model.score and m.classifier.bias is None


def _tiny_local_files(root, arch):
    tf = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "good bad movie plot great awful fine dull".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", eos_token="[PAD]"
    )
    folder = hf.model_dir(arch, root)
    hf.tiny_model(arch, vocab_size=len(vocab)).model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (root / "sst5").mkdir()
    rng = np.random.RandomState(0)
    for split, n in (("train", 12), ("validation", 6)):
        lines = [json.dumps({"text": " ".join(rng.choice(words, 4)), "label": int(i % 5)}) for i in range(n)]
        (root / "sst5" / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def test_hf_missing_weights_and_data_name_what_and_where(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    with pytest.raises(FileNotFoundError) as e:
        hf.load_pretrained("tinybert", data_dir=tmp_path)
    assert str(hf.model_dir("tinybert", tmp_path)) in str(e.value) and "Hugging Face cache" in str(e.value)
    with pytest.raises(FileNotFoundError, match="SST-5 not found.*train.jsonl"):
        hf.load_sst5(tmp_path)


@pytest.mark.parametrize("arch", hf.ARCHS)
def test_hf_sst5_path_trains_end_to_end_from_local_files(tmp_path, arch):
    _tiny_local_files(tmp_path, arch)
    model, tok = hf.load_pretrained(arch, data_dir=tmp_path)
    ds = hf.sst5_datasets(tok, tmp_path)
    batch, y = ds["train"].collate([ds["train"][i] for i in range(3)])
    _identity(model.eval(), batch["input_ids"], batch["attention_mask"])
    params = dict(epochs=2, unplug_at=1, batch_size=4, device="cpu")
    out = paper_scale.run_conditions(
        arch, seeds=[1], params=params, conditions=("baseline", "unplug"), root=tmp_path / "r",
        data_dir=tmp_path, num_workers=0, log=None,
    )  # fmt: skip
    for by in out.values():  # random labels: accuracy is not the point, finiteness and the cap are
        assert not by[1].diverged and np.isfinite(by[1].series("kappa")[1]).all()
    assert out["unplug"][1].final("w_norm") <= 30.0 + 1e-6  # the cap of Table 1


# ------------------------------------------------------------------------------------- notebook 04


def test_notebook_runs_name_the_claim_per_architecture(tmp_path):
    assert arch_runs.archs_for("quick") == ["mlp", "vit", "gpt_rows"]
    assert arch_runs.archs_for("paper")[3:] == ["vit_tiny_patch16_224", "tinybert", "distilgpt2"]
    out, U, cfg = arch_runs.run_architecture("gpt_rows", profile="smoke", root=tmp_path, log=None)
    assert set(out) == {"baseline", "reg", "unplug"} and cfg.arch == "gpt_rows" and U == cfg.epochs // 2
    res = arch_runs.c3(out, arch="gpt_rows", unplug_at=U)
    assert res["claim"] == "C3/digits/gpt_rows" and res["verdict"] in ("reproduced", "not reproduced")
    (row,) = arch_runs.summary_table({"gpt_rows": (out, U, res)})
    assert row["arch"] == "gpt_rows" and res["verdict"] in row["C3"]


def test_missing_paper_files_are_reported_not_raised(tmp_path):
    why = arch_runs.missing("vit_tiny_patch16_224", tmp_path)
    assert "ImageNet-100 not found" in why and str(tmp_path) in why
    assert "SST-5 not found" in arch_runs.missing("tinybert", tmp_path)
    assert arch_runs.missing("vit", tmp_path) is None
