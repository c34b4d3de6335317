"""Transformer classifiers for notebook 04 (SPEC §4 E4, E5, §7 "E4 and E5 stand-ins").

Every model returns (logits, phi) with phi the true input of its final linear layer `classifier`,
so logits == phi @ classifier.weight.T + classifier.bias exactly (SPEC D11: the authors' BERT code
measured a different vector than the one its classifier reads).

    ViT                 timm-shaped vision transformer: patch embedding, class token, learned position
                        embedding, pre-norm blocks, final LayerNorm; phi = class token after that norm
                        (E4: `forward_features(x)[:, 0]`, W = `head.weight`). `vit` is the digits stand-in
                        (8x8 image, 4x4 patches), `vit_tiny_patch16_224` the paper's model, from scratch.
    CausalRowClassifier GPT-shaped causal transformer reading an image row by row (one token per row);
                        phi = the last position's hidden state after the final LayerNorm, read by a
                        bias-free `classifier`, as DistilGPT2's `score` (E5).

`DIGITS_PARAMS` holds each architecture's settings for the digits stand-in (config fields on top of
the anti_flat experiment's profile); `build` makes a model for classifiers.build_classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Architectures of this module (classifiers.build_classifier imports it lazily for these names).
ARCHS = ("vit", "gpt_rows", "vit_tiny_patch16_224")
# The digits stand-ins of notebook 04 (mlp lives in classifiers.py).
DIGITS_ARCHS = ("mlp", "vit", "gpt_rows")


def _init_linear(m: nn.Module) -> None:
    """timm's ViT init: truncated normal (std 0.02) for linear weights, zero biases, unit LayerNorm."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)); GELU MLP, no dropout."""

    def __init__(self, *, dim: int, heads: int, mlp_ratio: float = 4.0, causal: bool = False, eps=1e-6):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} must be divisible by heads={heads}")
        self.heads, self.causal = heads, causal
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):  # x: (B, T, dim)
        B, T, D = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, heads, T, D/heads)
        x = x + self.proj(a.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Vision transformer with a class token; phi = class token after the final norm (SPEC E4).

    image_size, patch_size: square input and patches (image_size divisible by patch_size);
    dim, depth, heads, mlp_ratio: the encoder. `head` is an alias of `classifier` (timm's name)."""

    def __init__(
        self,
        *,
        image_size: int = 224,
        patch_size: int = 16,
        in_channels: int = 3,
        num_classes: int = 100,
        dim: int = 192,
        depth: int = 12,
        heads: int = 3,
        mlp_ratio: float = 4.0,
    ):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} must be divisible by patch_size={patch_size}")
        self.image_size = image_size
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + n_patches, dim))
        self.blocks = nn.Sequential(*[Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.classifier = nn.Linear(dim, num_classes)
        self.apply(_init_linear)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    @property
    def head(self) -> nn.Linear:
        return self.classifier

    def forward_features(self, x):  # x: (B, C, H, W) -> (B, 1 + n_patches, dim), after the final norm
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"expected {self.image_size}x{self.image_size} images, got {tuple(x.shape[-2:])}"
            )
        t = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, n_patches, dim)
        t = torch.cat([self.cls_token.expand(len(t), -1, -1), t], dim=1) + self.pos_embed
        return self.norm(self.blocks(t))

    def forward(self, x):
        phi = self.forward_features(x)[:, 0]  # (B, dim): the class token
        return self.classifier(phi), phi


class CausalRowClassifier(nn.Module):
    """A causal (GPT-shaped) transformer that reads an image one row per token, top to bottom.

    Token t is the t-th pixel row (all channels), linearly embedded, plus a learned position; the
    blocks are causal, so the last position is the only one that has seen the whole image, and
    phi = its hidden state after the final LayerNorm (as GPT2ForSequenceClassification reads the last
    non-pad token). `classifier` has no bias, as GPT-2's `score`."""

    def __init__(
        self,
        *,
        rows: int = 8,
        row_features: int = 8,
        num_classes: int = 10,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 2.0,
    ):
        super().__init__()
        self.rows, self.row_features = rows, row_features
        self.embed = nn.Linear(row_features, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, rows, dim))
        self.blocks = nn.Sequential(
            *[Block(dim=dim, heads=heads, mlp_ratio=mlp_ratio, causal=True, eps=1e-5) for _ in range(depth)]
        )
        self.ln_f = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes, bias=False)
        self.apply(_init_linear)
        nn.init.normal_(self.pos_embed, std=0.02)

    def hidden_states(self, x):  # x: (B, C, H, W) -> (B, H, dim), after the final norm
        tokens = x.permute(0, 2, 1, 3).flatten(2)  # (B, H, C*W): one token per row
        if tokens.shape[1:] != (self.rows, self.row_features):
            raise ValueError(
                f"expected {self.rows} rows of {self.row_features} values, got {tuple(tokens.shape[1:])}"
            )
        return self.ln_f(self.blocks(self.embed(tokens) + self.pos_embed))

    def forward(self, x):
        phi = self.hidden_states(x)[:, -1]  # (B, dim): the last row's position
        return self.classifier(phi), phi


def build(arch: str, *, in_shape, num_classes: int) -> nn.Module:
    """The model `arch` for images of shape in_shape = (C, H, W) and `num_classes` classes."""
    c, h, w = in_shape
    if arch == "vit":  # digits stand-in: 8x8 -> 4 patches of 4x4 (2x2 patches train far slower with SGD)
        if h != w or h % 4:
            raise ValueError(f"vit needs square images with a side divisible by 4, got {h}x{w}")
        patch = 4 if h <= 32 else h // 8
        return ViT(
            image_size=h, patch_size=patch, in_channels=c, num_classes=num_classes, dim=64, depth=2, heads=4,
            mlp_ratio=2.0,
        )  # fmt: skip
    if arch == "gpt_rows":
        return CausalRowClassifier(rows=h, row_features=c * w, num_classes=num_classes)
    if arch == "vit_tiny_patch16_224":  # timm's vit_tiny_patch16_224: 192-d, 12 blocks, 3 heads (E4)
        if (h, w) != (224, 224):
            raise ValueError(f"vit_tiny_patch16_224 needs 224x224 images, got {h}x{w}")
        return ViT(image_size=224, patch_size=16, in_channels=c, num_classes=num_classes)
    raise ValueError(f"unknown architecture {arch!r}; this module builds {', '.join(ARCHS)}")


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Settings of each digits stand-in, per profile, on top of the anti_flat experiment's profile
# (config.PROFILE_OVERRIDES["anti_flat"]: 30 epochs in quick, SGD momentum 0.9, batch 64, tau 2, phi
# normalised inside R, unplug halfway with wd 2e-4 and a cosine to 1e-4). The MLP keeps notebook 02's
# CNN setting (lr 0.01, lam 0.1, cap 30, bump x10). The transformers learn slowly at lr 0.01 (a ViT
# on 2x2 patches barely at all), so lr 0.03 and a bump of x3. Their window is narrow (measured on
# digits, seeds 1, 42, 15213): with cap 15-30 nearly every lam in 0.02..1 ends in a collapse to chance
# under REG (R runs away as ||W|| grows), cap 10 stays trainable. Within it the largest kappa under
# REG comes from lam 0.3 for the ViT; the row transformer collapses at lam 0.3 in 2 of 3 seeds, and
# lam 0.1 gives it a consistent (if small) delay.
DIGITS_PARAMS: dict[str, dict[str, dict]] = {
    "mlp": {"smoke": {}, "quick": dict(lr=0.01, lam=0.1, cap=30.0, bump=10.0)},
    "vit": {
        "smoke": dict(lr=0.03, bump=3.0, lam=0.3, cap=10.0),
        "quick": dict(lr=0.03, bump=3.0, lam=0.3, cap=10.0),
    },
    "gpt_rows": {
        "smoke": dict(lr=0.03, bump=3.0, lam=0.1, cap=10.0),
        "quick": dict(lr=0.03, bump=3.0, lam=0.1, cap=10.0),
    },
}


def digits_params(arch: str, profile: str) -> dict:
    """Config fields of `arch` on digits under `profile` (paper keeps the quick stand-in settings)."""
    if arch not in DIGITS_PARAMS:
        raise ValueError(f"{arch!r} is not a digits stand-in; choose one of {', '.join(DIGITS_PARAMS)}")
    p = DIGITS_PARAMS[arch]
    return {"arch": arch, **p.get("quick" if profile == "paper" else profile, {})}
