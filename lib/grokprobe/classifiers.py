"""Image classifiers for E2/E3 and their CPU stand-ins. Every model returns (logits, phi) with phi
the input of its final linear layer `classifier`, so logits == phi @ W.T + b exactly."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """The CPU stand-in for ResNet-18 on digits (SPEC §7): two conv blocks, a 128-d penultimate layer."""

    def __init__(
        self, *, in_channels: int = 1, num_classes: int = 10, width: int = 32, feature_dim: int = 128
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),  # (B, 2w, 4, 4) for any input size >= 4
            nn.Flatten(),
            nn.Linear(2 * width * 16, feature_dim),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x):
        phi = self.features(x)  # (B, feature_dim)
        return self.classifier(phi), phi


class MLP(nn.Module):
    def __init__(
        self, *, in_features: int = 64, num_classes: int = 10, hidden: int = 256, feature_dim: int = 128
    ):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim), nn.ReLU()
        )
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x):
        phi = self.features(x)
        return self.classifier(phi), phi


class BasicBlock(nn.Module):
    def __init__(self, *, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 with PyTorch default initialisation, as the authors' hand-written class (SPEC D8).

    stem="imagenet": 7x7/2 conv + max-pool (E2, E3); stem="cifar": 3x3/1 conv, no pool (Fig 7)."""

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 3, stem: str = "imagenet", width: int = 64
    ):
        super().__init__()
        if stem == "imagenet":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 7, 2, 3, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(),
                nn.MaxPool2d(3, 2, 1),
            )
        elif stem == "cifar":
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
        else:
            raise ValueError(f"unknown stem {stem!r}; choose imagenet or cifar")
        layers, cin = [], width
        for i, cout in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stride = 1 if i == 0 else 2
            layers += [
                BasicBlock(cin=cin, cout=cout, stride=stride),
                BasicBlock(cin=cout, cout=cout, stride=1),
            ]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)  # phi: the 512-d pooled feature (post-ReLU)

    def forward(self, x):
        phi = F.adaptive_avg_pool2d(self.layers(self.stem(x)), 1).flatten(1)
        return self.classifier(phi), phi


# vit, gpt_rows, vit_tiny_patch16_224: transformers of architectures.py (notebook 04)
ARCHS = ("cnn", "mlp", "resnet18", "resnet18_cifar", "vit", "gpt_rows", "vit_tiny_patch16_224")


def build_classifier(arch: str, *, in_shape, num_classes: int) -> nn.Module:
    c, h, w = in_shape
    if arch in ("vit", "gpt_rows", "vit_tiny_patch16_224"):
        from . import architectures  # lazy: keeps this module free of the transformer code

        return architectures.build(arch, in_shape=in_shape, num_classes=num_classes)
    if arch == "cnn":
        return SmallCNN(in_channels=c, num_classes=num_classes)
    if arch == "mlp":
        return MLP(in_features=c * h * w, num_classes=num_classes)
    if arch == "resnet18":
        return ResNet18(num_classes=num_classes, in_channels=c, stem="imagenet")
    if arch == "resnet18_cifar":
        return ResNet18(num_classes=num_classes, in_channels=c, stem="cifar")
    raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
