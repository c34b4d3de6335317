"""Models. GrokTransformer is the paper's E1 decoder (SPEC §4 E1), written with a leading *seed*
dimension on every weight, so S independently initialised copies train as one batched computation.

Each copy is initialised from its own generator seeded with its seed, drawing in a fixed order, so
copy s of a batched model equals a model built for seed s alone (tests check this). Gradients do
not mix across copies because the training loss is a *sum* of per-copy losses and AdamW is
element-wise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GrokTransformerConfig:
    vocab_size: int = 239  # EOS, "=", 20 operator slots, 97 numbers, 120 S5 slots (SPEC §4 E1)
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4  # d_key = d_model / n_heads = 32
    d_ff: int = 512  # 4 * d_model, ReLU
    max_len: int = 50  # sinusoidal table length, as the authors' max_context_len


def _uniform_(t: torch.Tensor, fan_in: int, g: torch.Generator) -> torch.Tensor:
    # PyTorch's default nn.Linear init, kaiming_uniform(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    bound = 1.0 / math.sqrt(fan_in)
    return t.uniform_(-bound, bound, generator=g)


def sinusoidal_positions(max_len: int, d: int) -> torch.Tensor:
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(max_len, d)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)
    return table


class SeedLayerNorm(nn.Module):
    """LayerNorm with a separate affine weight and bias per seed."""

    def __init__(self, *, n_seeds: int, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_seeds, d))
        self.bias = nn.Parameter(torch.zeros(n_seeds, d))

    def forward(self, x):  # x: (S, B, T, D)
        x = F.layer_norm(x, x.shape[-1:])
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class SeedAttention(nn.Module):
    """Causal multi-head self-attention, bias-free projections, one weight set per seed."""

    def __init__(self, *, n_seeds: int, d: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Parameter(torch.empty(n_seeds, d, 3 * d))  # stored (in, out) for x @ W
        self.out = nn.Parameter(torch.empty(n_seeds, d, d))

    def forward(self, x, queries=None):  # x: (S, B, T, D); queries: positions whose output is needed
        S, B, T, D = x.shape
        H = self.n_heads
        qkv = torch.matmul(x.reshape(S, B * T, D), self.qkv)  # (S, B*T, 3D)
        q, k, v = qkv.view(S * B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (S*B, H, T, dk)
        if queries is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (S*B, H, T, dk)
        else:
            # Only some outputs are used (the last block feeds the loss positions alone): attend
            # from those queries with the causal mask written out, since is_causal assumes q = k.
            q = q[:, :, queries]
            mask = (
                torch.arange(T, device=x.device)[None, :]
                <= torch.as_tensor(queries, device=x.device)[:, None]
            )
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (S*B, H, P, dk)
        P = y.shape[2]
        y = y.transpose(1, 2).reshape(S, B * P, D)
        return torch.matmul(y, self.out).view(S, B, P, D)


class SeedFeedForward(nn.Module):
    def __init__(self, *, n_seeds: int, d: int, d_ff: int):
        super().__init__()
        self.up = nn.Parameter(torch.empty(n_seeds, d, d_ff))
        self.down = nn.Parameter(torch.empty(n_seeds, d_ff, d))

    def forward(self, x):  # x: (S, B, T, D)
        S, B, T, D = x.shape
        h = F.relu(torch.matmul(x.reshape(S, B * T, D), self.up))  # (S, B*T, F)
        return torch.matmul(h, self.down).view(S, B, T, D)


class Block(nn.Module):
    """Post-LN decoder block, as the authors': x <- LN(x + MHA(x)); x <- LN(x + FFN(x))."""

    def __init__(self, *, n_seeds: int, d: int, n_heads: int, d_ff: int):
        super().__init__()
        self.attn = SeedAttention(n_seeds=n_seeds, d=d, n_heads=n_heads)
        self.ln1 = SeedLayerNorm(n_seeds=n_seeds, d=d)
        self.ff = SeedFeedForward(n_seeds=n_seeds, d=d, d_ff=d_ff)
        self.ln2 = SeedLayerNorm(n_seeds=n_seeds, d=d)

    def forward(self, x, queries=None):
        residual = x if queries is None else x[:, :, queries]
        x = self.ln1(residual + self.attn(x, queries))
        return self.ln2(x + self.ff(x))


class GrokTransformer(nn.Module):
    """The E1 decoder for S seeds at once.

    forward(tokens (S, B, T), positions) -> logits (S, B, P, V), phi (S, B, P, D): the output layer
    is applied only at the requested positions (the loss uses positions 4 "=" and 5 "c"); phi is the
    last block's output there (it already includes the block's final LayerNorm), the input of the
    untied, bias-free output layer `unembed` whose weight per seed is `unembed[s]` (V, D).
    """

    def __init__(self, *, seeds, config: GrokTransformerConfig = GrokTransformerConfig()):
        super().__init__()
        self.seeds = tuple(int(s) for s in seeds)
        self.config = c = config
        S = len(self.seeds)
        if c.d_model % c.n_heads:
            raise ValueError(f"d_model={c.d_model} must be divisible by n_heads={c.n_heads}")
        self.embed = nn.Parameter(torch.empty(S, c.vocab_size, c.d_model))
        self.register_buffer("pos", sinusoidal_positions(c.max_len, c.d_model), persistent=False)
        self.blocks = nn.ModuleList(
            Block(n_seeds=S, d=c.d_model, n_heads=c.n_heads, d_ff=c.d_ff) for _ in range(c.n_layers)
        )
        self.unembed = nn.Parameter(torch.empty(S, c.vocab_size, c.d_model))  # nn.Linear layout (out, in)
        for s, seed in enumerate(self.seeds):
            self._init_copy(s, torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def _init_copy(self, s: int, g: torch.Generator) -> None:
        c = self.config
        self.embed[s].normal_(generator=g)  # nn.Embedding default N(0, 1)
        for blk in self.blocks:
            _uniform_(blk.attn.qkv[s], c.d_model, g)
            _uniform_(blk.attn.out[s], c.d_model, g)
            _uniform_(blk.ff.up[s], c.d_model, g)
            _uniform_(blk.ff.down[s], c.d_ff, g)
        _uniform_(self.unembed[s], c.d_model, g)

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    def output_weight(self) -> torch.Tensor:  # (S, V, D): W of every flatness measure
        return self.unembed

    def forward(self, tokens: torch.Tensor, positions=(4, 5)):
        S, B, T = tokens.shape
        seed_idx = torch.arange(S, device=tokens.device)[:, None, None]
        x = self.embed[seed_idx, tokens] + self.pos[:T]  # (S, B, T, D)
        positions = list(positions)
        for blk in self.blocks[:-1]:
            x = blk(x)
        # Nothing downstream reads the last block at other positions: skip their queries and FFN.
        phi = self.blocks[-1](x, positions)  # (S, B, P, D)
        logits = torch.einsum("sbpd,svd->sbpv", phi, self.unembed)  # (S, B, P, V)
        return logits, phi

    def copy_state(self, s: int) -> dict:
        """The parameters of copy s alone, as plain tensors (for comparisons and export)."""
        return {k: v[s].detach().clone() for k, v in self.state_dict().items()}
