"""The Hugging Face paths of E5 (SPEC §4 E5, Table 1, D10-D12): TinyBERT and DistilGPT2 on SST-5.

Optional: needs the extra [hf] (`pip install -e ".[hf]"`, transformers >= 4.40). Nothing is ever
downloaded: weights, tokenizer and data are read from local folders only, and anything missing is an
error naming what is missing and every place it was looked for.

    weights     <data>/hf/<model id>/ (a `save_pretrained` folder), else the Hugging Face cache
                (`from_pretrained(model id, local_files_only=True)`); <data> = GROKPROBE_DATA or data/
    SST-5       <data>/sst5/{train,validation}.jsonl, the files of the hub dataset SetFit/sst5
                (one JSON object per line with "text" and "label" 0..4)

`SequenceClassifier` wraps either model so that forward(input_ids, attention_mask) returns
(logits, phi), phi the classifier's true input and `classifier` its final nn.Linear:

    tinybert    phi = dropout(pooler_output) = tanh(dense(CLS)) (dropout 0): what BertForSequence-
                Classification's `classifier` reads. The authors' code measured the raw CLS hidden
                state instead (SPEC D11), which is not the classifier's input.
    distilgpt2  phi = last hidden state (after ln_f) at the last non-pad token (index attention_mask
                sum - 1, right padding, pad = EOS); `classifier` is GPT-2's bias-free `score`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from . import paths

MODEL_IDS = {"tinybert": "huawei-noah/TinyBERT_General_4L_312D", "distilgpt2": "distilgpt2"}
ARCHS = tuple(MODEL_IDS)
SST5_FOLDER = "sst5"
SST5_SPLITS = ("train", "validation")
SST5_CLASSES = 5
MAX_LENGTH = 128  # truncation, as the authors' tokenisation (SPEC E5)


def require_transformers():
    """The transformers module, or an ImportError that says how to install the extra."""
    try:
        import transformers
    except ImportError as e:
        raise ImportError(
            "the TinyBERT / DistilGPT2 paths (SPEC E5) need the optional extra [hf]: "
            'pip install -e ".[hf]"  (installs transformers>=4.40; weights are read from local folders only)'
        ) from e
    return transformers


def kind_of(model) -> str:
    """'bert' or 'gpt2' from a transformers model's config."""
    t = getattr(model.config, "model_type", "")
    if t in ("bert", "gpt2"):
        return t
    raise ValueError(f"unsupported model type {t!r}: only BERT- and GPT-2-shaped models are wrapped")


class SequenceClassifier(nn.Module):
    """forward(input_ids (B, T), attention_mask (B, T)) -> logits (B, C), phi (B, d), with
    logits == phi @ classifier.weight.T (+ classifier.bias) exactly; `model` is the wrapped HF model."""

    def __init__(self, *, model):
        super().__init__()
        self.model, self.kind = model, kind_of(model)
        self.classifier = model.classifier if self.kind == "bert" else model.score

    def forward(self, input_ids, attention_mask):
        if self.kind == "bert":
            out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask)
            phi = self.model.dropout(out.pooler_output)  # (B, hidden): the classifier's input (D11)
        else:
            h = self.model.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            last = attention_mask.long().sum(1) - 1  # (B,): last non-pad token under right padding
            phi = h[torch.arange(len(h), device=h.device), last]  # (B, n_embd)
        return self.classifier(phi), phi


NO_DROPOUT = {
    "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0),
    "gpt2": dict(embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0, summary_first_dropout=0.0),
}


def model_dir(arch: str, data_dir=None) -> Path:
    """Where a save_pretrained folder of `arch` is looked for first: <data>/hf/<model id>."""
    return Path(data_dir or paths.DATA) / "hf" / MODEL_IDS[arch]


def load_pretrained(arch: str, *, num_labels: int = SST5_CLASSES, data_dir=None):
    """(SequenceClassifier, tokenizer) from local files only, dropouts off (SPEC E5)."""
    if arch not in MODEL_IDS:
        raise ValueError(f"unknown HF architecture {arch!r}; choose one of {', '.join(MODEL_IDS)}")
    tf = require_transformers()
    folder, model_id = model_dir(arch, data_dir), MODEL_IDS[arch]
    sources = [str(folder)] if folder.is_dir() else []
    sources.append(model_id)  # the Hugging Face cache (HF_HOME), offline
    cls = tf.BertForSequenceClassification if arch == "tinybert" else tf.GPT2ForSequenceClassification
    errors = []
    for src in sources:
        try:
            tok = tf.AutoTokenizer.from_pretrained(src, local_files_only=True)
            extra = NO_DROPOUT["bert" if arch == "tinybert" else "gpt2"]
            if arch == "distilgpt2":
                tok.pad_token, tok.padding_side = tok.eos_token, "right"
                extra = {**extra, "pad_token_id": tok.eos_token_id}
            model = cls.from_pretrained(src, num_labels=num_labels, local_files_only=True, **extra)
            return SequenceClassifier(model=model), tok
        except (OSError, ValueError) as e:
            errors.append(f"{src}: {type(e).__name__}: {str(e).splitlines()[0]}")
    raise FileNotFoundError(
        f"{arch} weights not found locally (nothing is downloaded). Looked for a save_pretrained folder "
        f"at {folder} and for {model_id!r} in the Hugging Face cache (HF_HOME). Put the model there, e.g. on "
        f"a machine with network: `AutoModel.from_pretrained({model_id!r}).save_pretrained('{folder}')` and "
        f"the same for AutoTokenizer, then copy the folder over. Errors: " + " | ".join(errors)
    )


def tiny_model(arch: str, *, num_labels: int = SST5_CLASSES, vocab_size: int = 64, pad_token_id: int = 0):
    """A random-initialised, tiny model of `arch`'s family (tests; no download): 2 layers, 32-d."""
    tf = require_transformers()
    if arch == "tinybert":
        cfg = tf.BertConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=MAX_LENGTH,
            num_labels=num_labels,
            pad_token_id=pad_token_id,
            **NO_DROPOUT["bert"],
        )
        return SequenceClassifier(model=tf.BertForSequenceClassification(cfg))
    if arch == "distilgpt2":
        cfg = tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=MAX_LENGTH,
            num_labels=num_labels,
            pad_token_id=pad_token_id,
            eos_token_id=pad_token_id,
            bos_token_id=pad_token_id,
            **NO_DROPOUT["gpt2"],
        )
        return SequenceClassifier(model=tf.GPT2ForSequenceClassification(cfg))
    raise ValueError(f"unknown HF architecture {arch!r}; choose one of {', '.join(MODEL_IDS)}")


# ------------------------------------------------------------------------------------------ SST-5


def sst5_dir(data_dir=None) -> Path:
    return Path(data_dir or paths.DATA) / SST5_FOLDER


def load_sst5(data_dir=None) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (texts, labels)} for train and validation from <data>/sst5/<split>.jsonl."""
    folder = sst5_dir(data_dir)
    files = {s: folder / f"{s}.jsonl" for s in SST5_SPLITS}
    missing = [f.name for f in files.values() if not f.exists()]
    if missing:
        raise FileNotFoundError(
            f"SST-5 not found: looked for {folder} (missing {', '.join(missing)}). Expected the files of the "
            f"Hugging Face dataset SetFit/sst5 (train.jsonl, validation.jsonl: one JSON object per line with "
            f'"text" and "label" 0..4) there, or set GROKPROBE_DATA to the folder that holds {SST5_FOLDER}/.'
        )
    out = {}
    for split, f in files.items():
        texts, labels = [], []
        for i, line in enumerate(f.read_text().splitlines()):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                text, label = str(rec["text"]), int(rec["label"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{f}:{i + 1}: not an SST-5 record ({type(e).__name__}: {e})") from e
            if not 0 <= label < SST5_CLASSES:
                raise ValueError(f"{f}:{i + 1}: label {label} outside 0..{SST5_CLASSES - 1}")
            texts.append(text)
            labels.append(label)
        out[split] = (texts, labels)
    return out


class TokenizedSplit(torch.utils.data.Dataset):
    """Token ids (truncated to MAX_LENGTH) and labels; `collate` pads each batch (dynamic padding)."""

    def __init__(self, texts, labels, tokenizer, *, max_length: int = MAX_LENGTH):
        enc = tokenizer(list(texts), truncation=True, max_length=max_length)
        self.ids = [list(x) for x in enc["input_ids"]]
        self.labels = list(labels)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.ids[i], self.labels[i]

    def collate(self, batch):
        """-> {"input_ids": (B, T), "attention_mask": (B, T)}, labels (B,), right padding."""
        T = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), T), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), T), dtype=torch.long)
        for i, (x, _) in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask}, torch.tensor([y for _, y in batch])


def sst5_datasets(tokenizer, data_dir=None) -> dict[str, TokenizedSplit]:
    return {s: TokenizedSplit(*v, tokenizer) for s, v in load_sst5(data_dir).items()}
