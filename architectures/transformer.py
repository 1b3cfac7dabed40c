"""Pre-LayerNorm Transformer on scaled_dot_product_attention, with five position schemes."""
from __future__ import annotations

import math
from typing import Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import Backbone, BackboneOptions
from architectures.sizing import closest_width, count_parameters
from harness.core.registry import ARCHITECTURES

Position = Literal["none", "sinusoidal", "learned", "rope", "alibi"]


class TransformerOptions(BackboneOptions):
    position: Position = "rope"
    n_heads: int = pydantic.Field(default=4, ge=1)
    #: feed-forward width; None means 4 × d_model (size presets set it to match the budget)
    d_ff: int | None = pydantic.Field(default=None, ge=1)
    #: length of the learned position table (only for position=learned)
    max_positions: int = pydantic.Field(default=4096, ge=1)
    rope_base: float = 10000.0
    #: every block also attends to an encoder's states: set by ``mt`` for its decoder; left out of
    #: run configs (and run ids), which describe the encoder
    cross_attention: bool = pydantic.Field(default=False, exclude=True)


def sinusoidal_table(length: int, d: int, device, dtype, start: int = 0) -> torch.Tensor:
    """Rows for positions ``start … start + length - 1``."""
    pos = torch.arange(start, start + length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    table = torch.zeros(length, d, device=device)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table.to(dtype)


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Press et al. (2022): a geometric sequence; non-powers of two interleave the next power."""
    def power_of_two(n):
        start = 2 ** (-8 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        return torch.tensor(power_of_two(n_heads))
    lower = 2 ** math.floor(math.log2(n_heads))
    extra = power_of_two(2 * lower)[0::2][: n_heads - lower]
    return torch.tensor(power_of_two(lower) + extra)


def rope_tables(start: int, T: int, head_dim: int, base: float, x: torch.Tensor):
    """RoPE's (cos, sin), ``(T, head_dim)``, for positions ``start … start + T − 1``, in ``x``'s
    device and dtype."""
    half = head_dim // 2
    inv = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)
    positions = torch.arange(start, start + T, device=x.device, dtype=torch.float32)
    angles = torch.outer(positions, inv)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos().to(x.dtype), angles.sin().to(x.dtype)


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, d: int, options: TransformerOptions):
        super().__init__()
        self.n_heads = options.n_heads
        self.head_dim = d // options.n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.dropout = options.dropout

    def forward(self, x, attn_mask, is_causal, rope, past=None):
        """Attention output and this call's keys/values (after ``past``, the cached ones)."""
        B, T, d = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if rope is not None:
            q, k = rotate(q, *rope), rotate(k, *rope)
        if past is not None:
            k, v = torch.cat((past[0], k), 2), torch.cat((past[1], v), 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, d)), (k, v)


class CrossAttention(nn.Module):
    """Queries from the decoder, keys and values from the encoder's states (no positions: the
    encoder has placed them)."""

    def __init__(self, d: int, options: TransformerOptions):
        super().__init__()
        self.n_heads = options.n_heads
        self.head_dim = d // options.n_heads
        self.q = nn.Linear(d, d)
        self.kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.dropout = options.dropout

    def memory(self, states: torch.Tensor, mask: torch.Tensor | None):
        """Keys, values and key mask of the encoder's states, computed once per sequence."""
        B, S, d = states.shape
        k, v = self.kv(states).view(B, S, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return k, v, None if mask is None else mask[:, None, None, :]

    def forward(self, x, memory):
        B, T, d = x.shape
        k, v, mask = memory
        q = self.q(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    def __init__(self, d: int, d_ff: int, options: TransformerOptions):
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = Attention(d, options)
        if options.cross_attention:
            self.norm_cross = nn.LayerNorm(d)
            self.cross = CrossAttention(d, options)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, d_ff), nn.GELU(), nn.Linear(d_ff, d))
        self.dropout = nn.Dropout(options.dropout)

    def forward(self, x, attn_mask, is_causal, rope, past=None, memory=None):
        y, kv = self.attn(self.norm1(x), attn_mask, is_causal, rope, past)
        x = x + self.dropout(y)
        if memory is not None:
            x = x + self.dropout(self.cross(self.norm_cross(x), memory))
        return x + self.dropout(self.mlp(self.norm2(x))), kv


@ARCHITECTURES.register("transformer")
class Transformer(Backbone):
    Options = TransformerOptions
    uses_sdpa = True
    test_options = tuple({"position": p} for p in ("none", "sinusoidal", "learned", "rope", "alibi"))

    def __init__(self, d_model: int, n_layers: int, options: TransformerOptions):
        super().__init__(d_model, n_layers, options)
        if d_model % options.n_heads or (d_model // options.n_heads) % 2:
            raise ValueError(f"d_model={d_model} must split into {options.n_heads} heads of even size")
        self.d_ff = options.d_ff or 4 * d_model
        self.blocks = nn.ModuleList(Block(d_model, self.d_ff, options) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.input_dropout = nn.Dropout(options.dropout)
        if options.position == "learned":
            self.position_table = nn.Embedding(options.max_positions, d_model)
        if options.position == "alibi":
            self.register_buffer("slopes", alibi_slopes(options.n_heads), persistent=False)

    @classmethod
    def width_step_for(cls, options: TransformerOptions) -> int:
        return 2 * options.n_heads

    @classmethod
    def sized(cls, target: int, n_layers: int, options: TransformerOptions):
        """Width in steps of 2·heads with d_ff = 4·width, then d_ff tuned to the exact budget."""
        d = closest_width(cls, target, n_layers, options, step=cls.width_step_for(options))
        base = count_parameters(cls, d, n_layers, options.model_copy(update={"d_ff": 4 * d}))
        per_unit = count_parameters(cls, d, n_layers, options.model_copy(update={"d_ff": 4 * d + 1})) - base
        d_ff = max(1, 4 * d + round((target - base) / per_unit))
        return d, options.model_copy(update={"d_ff": d_ff})

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, memory=None) -> torch.Tensor:
        """With ``cross_attention``, ``memory`` is ``self.memory(encoder_states, encoder_mask)``."""
        return self._run(x, mask, memory)[0]

    def memory(self, states: torch.Tensor, mask: torch.Tensor | None) -> list:
        """Each block's keys and values of an encoder's states, for ``forward``/``step``."""
        if not self.options.cross_attention:
            raise ValueError("this Transformer has no cross-attention (cross_attention=false)")
        return [block.cross.memory(states, mask) for block in self.blocks]

    def _layer_memory(self, memory):
        if self.options.cross_attention and memory is None:
            raise ValueError("a Transformer with cross_attention needs the encoder's memory")
        return memory if memory is not None else [None] * len(self.blocks)

    def _run(self, x: torch.Tensor, mask: torch.Tensor | None, memory=None):
        x, rope = self._positions(x, 0)
        attn_mask, is_causal = self._mask(mask, x.shape[1], x.device, x.dtype)
        cache = []
        for block, mem in zip(self.blocks, self._layer_memory(memory)):
            x, kv = block(x, attn_mask, is_causal, rope, memory=mem)
            cache.append(kv)
        return self.norm(x), cache

    # Incremental state: {"t": next position, "kv": [(keys, values) per layer, (B, H, t, d_head)]}
    def init_state(self, batch_size: int, device, dtype):
        self.require_causal()
        empty = torch.zeros(batch_size, self.options.n_heads, 0, self.d_model // self.options.n_heads,
                            device=device, dtype=dtype)
        return {"t": 0, "kv": [(empty, empty) for _ in self.blocks]}

    def step(self, x: torch.Tensor, state, memory=None):
        t = state["t"]
        x, rope = self._positions(x.unsqueeze(1), t)
        bias = None
        if self.options.position == "alibi":  # the new query sees keys 0 … t
            distance = torch.arange(t, -1, -1, device=x.device, dtype=torch.float32)
            bias = (-self.slopes.view(1, -1, 1, 1) * distance).to(x.dtype)
        cache = []
        for block, past, mem in zip(self.blocks, state["kv"], self._layer_memory(memory)):
            x, kv = block(x, bias, False, rope, past, mem)
            cache.append(kv)
        return self.norm(x)[:, 0], {"t": t + 1, "kv": cache}

    def prefill(self, x: torch.Tensor, memory=None):
        self.require_causal()
        y, cache = self._run(x, None, memory)
        return y, {"t": x.shape[1], "kv": cache}

    def _positions(self, x: torch.Tensor, start: int):
        """Inputs with absolute positions added (sinusoidal, learned), plus RoPE's (cos, sin)
        for positions ``start …`` (or None), and input dropout applied."""
        T, d = x.shape[1], x.shape[2]
        position = self.options.position
        if position == "sinusoidal":
            x = x + sinusoidal_table(T, d, x.device, x.dtype, start)
        elif position == "learned":
            if start + T > self.options.max_positions:
                raise ValueError(f"sequence length {start + T} exceeds the learned position table "
                                 f"(max_positions={self.options.max_positions})")
            x = x + self.position_table.weight[start:start + T]
        rope = self._rope(start, T, x) if position == "rope" else None
        return self.input_dropout(x), rope

    def _rope(self, start, T, x):
        return rope_tables(start, T, self.d_model // self.options.n_heads, self.options.rope_base, x)

    def _mask(self, mask: torch.Tensor | None, T: int, device, dtype):
        """(attn_mask, is_causal) for SDPA; the fused causal path when nothing else is needed."""
        padded = mask is not None and not bool(mask.all())
        alibi = self.options.position == "alibi"
        if not padded and not alibi:
            return None, self.causal
        idx = torch.arange(T, device=device)
        # (B or 1, 1, 1, T): keys that are real tokens
        allowed = mask[:, None, None, :] if padded else torch.ones(1, 1, 1, T, dtype=torch.bool, device=device)
        if self.causal:
            allowed = allowed & (idx[None, :] <= idx[:, None])
        if not alibi:
            return allowed, False
        distance = (idx[:, None] - idx[None, :]).abs().to(torch.float32)
        bias = -self.slopes.view(1, -1, 1, 1) * distance  # (1, H, T, T)
        bias = bias.masked_fill(~allowed, float("-inf"))
        return bias.to(dtype), False

    def state_size_per_token(self) -> None:
        return None  # the KV cache grows with the sequence
