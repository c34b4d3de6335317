"""ImageNet-100 as an ImageFolder from a local path (SPEC §4 E4); nothing is downloaded.

Looked for at <data>/imagenet100/{train_data,val_data}/<class>/<image>, the authors' arrangement of
Kaggle "ambityga/imagenet100", with <data> = GROKPROBE_DATA or data/. Images are read with Pillow
(no torchvision needed): Resize 256 (short side), CenterCrop 224, ImageNet normalisation, no
augmentation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import paths

IMAGENET100_FOLDER = "imagenet100"
IMAGENET_SPLITS = {"train": "train_data", "val": "val_data"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


class ImageFolder(torch.utils.data.Dataset):
    """<root>/<class>/<image>: class folders in sorted order are labels 0..K-1. Each image is resized
    so its short side is `resize` (bilinear), centre-cropped to `crop` and normalised with the ImageNet
    mean and std (E4: Resize 256, CenterCrop 224, no augmentation). Items: (3, crop, crop), label."""

    def __init__(self, root, *, resize: int = 256, crop: int = 224):
        self.root, self.resize, self.crop = Path(root), resize, crop
        self.classes = sorted(d.name for d in self.root.iterdir() if d.is_dir())
        self.samples = [
            (f, k)
            for k, c in enumerate(self.classes)
            for f in sorted((self.root / c).iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = self.resize / min(w, h)
            im = im.resize((max(self.crop, round(w * s)), max(self.crop, round(h * s))), Image.BILINEAR)
            w, h = im.size
            left, top = (w - self.crop) // 2, (h - self.crop) // 2
            im = im.crop((left, top, left + self.crop, top + self.crop))
            x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, crop, crop)
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        return (x - mean) / std, label


def imagenet100(data_dir=None, *, resize: int = 256, crop: int = 224) -> dict[str, ImageFolder]:
    """{"train", "val"} ImageFolders of ImageNet-100 from <data>/imagenet100/; nothing is downloaded."""
    folder = Path(data_dir or paths.DATA) / IMAGENET100_FOLDER
    problems = []
    for sub in IMAGENET_SPLITS.values():
        d = folder / sub
        if not d.is_dir():
            problems.append(f"{d} is missing")
        elif not any(c.is_dir() for c in d.iterdir()):
            problems.append(f"{d} has no class folders")
    if problems:
        raise FileNotFoundError(
            f"ImageNet-100 not found: {'; '.join(problems)}. Expected an ImageFolder layout "
            f"{folder}/train_data/<class>/<image> and {folder}/val_data/<class>/<image> (the authors' "
            f"arrangement of Kaggle 'ambityga/imagenet100': merge train.X1..X4 into train_data/ and "
            f"val.X into val_data/), or set GROKPROBE_DATA to the folder that holds {IMAGENET100_FOLDER}/."
        )
    out = {k: ImageFolder(folder / v, resize=resize, crop=crop) for k, v in IMAGENET_SPLITS.items()}
    if out["train"].classes != out["val"].classes:
        raise ValueError(f"{folder}: train_data and val_data have different class folders")
    return out
