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

    def _heads(self, x):  # (S, N, T, D) -> q, k, v each (S, N, T, H, dk)
        S, N, T, D = x.shape
        qkv = torch.matmul(x.reshape(S, N * T, D), self.qkv).view(S, N, T, 3, self.n_heads, D // self.n_heads)
        return qkv.unbind(3)

    def forward_prefixed(self, x_pre, x_suf, index, queries=None, need_prefix=True):
        """Attention over [shared prefix; own suffix] without recomputing the prefix for every row.

        x_pre (S, U, L, D): the U distinct prefixes; x_suf (S, B, Ts, D): each row's suffix;
        index (S, B): which prefix each row has. Causality makes a prefix position's output
        independent of what follows, so it is computed once per distinct prefix (for the E1 task:
        once per value of a, instead of once per equation). Returns the prefix output (or None)
        and the suffix output at `queries` (suffix positions; None = all).
        """
        S, U, L, D = x_pre.shape
        B, Ts = x_suf.shape[1], x_suf.shape[2]
        qp, kp, vp = self._heads(x_pre)
        qs, ks, vs = self._heads(x_suf)
        out_pre = None
        if need_prefix:
            y = F.scaled_dot_product_attention(
                *(t.transpose(2, 3).flatten(0, 1) for t in (qp, kp, vp)), is_causal=True
            )
            out_pre = torch.matmul(y.transpose(1, 2).reshape(S, U * L, D), self.out).view(S, U, L, D)
        seed = torch.arange(S, device=index.device)[:, None]
        k = torch.cat([kp[seed, index], ks], 2)  # (S, B, L + Ts, H, dk)
        v = torch.cat([vp[seed, index], vs], 2)
        q = qs if queries is None else qs[:, :, queries]
        qpos = (
            torch.arange(Ts, device=x_suf.device)
            if queries is None
            else torch.as_tensor(queries, device=x_suf.device)
        )
        mask = torch.arange(L + Ts, device=x_suf.device)[None, :] <= (L + qpos)[:, None]  # (P, L + Ts)
        y = F.scaled_dot_product_attention(
            *(t.transpose(2, 3).flatten(0, 1) for t in (q, k, v)), attn_mask=mask
        )
        P = y.shape[2]
        out_suf = torch.matmul(y.transpose(1, 2).reshape(S, B * P, D), self.out).view(S, B, P, D)
        return out_pre, out_suf


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

    def forward_prefixed(self, x_pre, x_suf, index, queries=None, need_prefix=True):
        a_pre, a_suf = self.attn.forward_prefixed(x_pre, x_suf, index, queries, need_prefix)
        if need_prefix:
            h = self.ln1(x_pre + a_pre)
            x_pre = self.ln2(h + self.ff(h))
        residual = x_suf if queries is None else x_suf[:, :, queries]
        h = self.ln1(residual + a_suf)
        return (x_pre if need_prefix else None), self.ln2(h + self.ff(h))


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

    def forward_prefixed(self, prefix_tokens, index, suffix_tokens, positions=(4, 5)):
        """forward() for rows that share a prefix: prefix_tokens (U, L) are the distinct prefixes,
        index (S, B) picks one per row, suffix_tokens (S, B, Ts) follow it; `positions` are absolute.
        Same result as forward(cat(prefix, suffix)) up to float rounding, with the prefix positions
        computed once per distinct prefix (E1: 97 instead of 512 rows for 3 of the 6 positions)."""
        S = self.n_seeds
        U, L = prefix_tokens.shape
        Ts = suffix_tokens.shape[2]
        seed = torch.arange(S, device=index.device)[:, None, None]
        x_pre = self.embed[seed, prefix_tokens.expand(S, U, L)] + self.pos[:L]  # (S, U, L, D)
        x_suf = self.embed[seed, suffix_tokens] + self.pos[L : L + Ts]  # (S, B, Ts, D)
        for blk in self.blocks[:-1]:
            x_pre, x_suf = blk.forward_prefixed(x_pre, x_suf, index)
        queries = [p - L for p in positions]
        if min(queries) < 0:
            raise ValueError(f"positions {list(positions)} must lie in the suffix (>= {L})")
        _, phi = self.blocks[-1].forward_prefixed(x_pre, x_suf, index, queries, need_prefix=False)
        logits = torch.einsum("sbpd,svd->sbpv", phi, self.unembed)  # (S, B, P, V)
        return logits, phi

    def copy_state(self, s: int) -> dict:
        """The parameters of copy s alone, as plain tensors (for comparisons and export)."""
        return {k: v[s].detach().clone() for k, v in self.state_dict().items()}
