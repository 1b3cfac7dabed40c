"""Encoder–decoder for any backbone: the backbone encodes (bidirectionally where it can), the same
family decodes causally and attends to the encoder's states.

The Transformer decoder uses its own cross-attention in every block. Every other family attends
once, on top of the decoder (Luong et al. 2015's placement, without input feeding, so training
runs the decoder over the whole target in one pass): the decoder state h_t scores each encoder
state m_s, the weights average them into c_t, and tanh(W[h_t; c_t]) predicts the next token. The
score is selectable: ``additive`` vᵀtanh(W₁h + W₂m) (Bahdanau et al. 2015), ``general`` hᵀWm
(bilinear, Luong), ``dot`` hᵀm (Luong), ``scaled_dot`` hᵀm/√d (Vaswani et al. 2017).

Decoding is incremental: ``start`` and ``step`` carry the decoder backbone's state (hidden state,
convolution buffers or key/value cache); encoder states are computed once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import select_state

Score = Literal["additive", "general", "dot", "scaled_dot"]


class Attention(nn.Module):
    def __init__(self, d: int, score: Score):
        super().__init__()
        self.score = score
        if score == "additive":
            self.query = nn.Linear(d, d, bias=False)
            self.key = nn.Linear(d, d)
            self.v = nn.Linear(d, 1, bias=False)
        elif score == "general":
            self.key = nn.Linear(d, d, bias=False)

    def keys(self, states: torch.Tensor) -> torch.Tensor:
        """The encoder states as the score reads them, computed once per source."""
        return self.key(states) if self.score in ("additive", "general") else states

    def forward(self, h: torch.Tensor, states: torch.Tensor, keys: torch.Tensor,
                mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vectors (B, T, d) and attention weights (B, T, S) for decoder states h (B, T, d)."""
        if self.score == "additive":
            scores = self.v(torch.tanh(self.query(h)[:, :, None] + keys[:, None])).squeeze(-1)
        else:
            scores = h @ keys.transpose(1, 2)
            if self.score == "scaled_dot":
                scores = scores / math.sqrt(h.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.float().softmax(-1).to(h.dtype)
        return weights @ states, weights


@dataclass
class Memory:
    """The encoded source: states (B, S, d), padding mask, and what the decoder precomputes from it."""

    states: torch.Tensor
    mask: torch.Tensor | None
    keys: torch.Tensor | None = None  # attention keys (non-Transformer decoders)
    layers: list | None = None  # per-block keys/values (Transformer decoder)

    def repeat(self, k: int) -> "Memory":
        """Each source k times in a row (beam search's B·k rows)."""
        index = torch.arange(self.states.shape[0], device=self.states.device).repeat_interleave(k)
        return Memory(*(select_state(x, index) for x in (self.states, self.mask, self.keys, self.layers)))


class Seq2Seq(nn.Module):
    def __init__(self, encoder: nn.Module, decoder: nn.Module, src_vocab: int, tgt_vocab: int,
                 attention: Score, dropout: float = 0.0):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        d_enc, d = encoder.d_model, decoder.d_model
        self.src_embed = nn.Embedding(src_vocab, d_enc, padding_idx=0)
        self.tgt_embed = nn.Embedding(tgt_vocab, d, padding_idx=0)
        self.bridge = nn.Linear(d_enc, d) if d_enc != d else nn.Identity()
        self.cross = getattr(decoder.options, "cross_attention", False)
        self.attention_kind = "cross-attention (per block)" if self.cross else attention
        if not self.cross:
            self.attention = Attention(d, attention)
            self.combine = nn.Linear(2 * d, d)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(d, tgt_vocab)
        self.out.weight = self.tgt_embed.weight  # tied input and output target embeddings

    def describe(self) -> dict:
        """For the run record: both backbones; non-embedding parameters are everything but the
        embeddings (the output layer is tied to the target embedding)."""
        embeddings = self.src_embed.weight.numel() + self.tgt_embed.weight.numel()
        return {"encoder": self.encoder.describe(), "decoder": self.decoder.describe(),
                "attention": self.attention_kind,
                "params_non_embedding": sum(p.numel() for p in self.parameters()) - embeddings}

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> Memory:
        states = self.bridge(self.encoder(self.dropout(self.src_embed(src)), src_mask))
        if self.cross:
            return Memory(states, src_mask, layers=self.decoder.memory(states, src_mask))
        return Memory(states, src_mask, keys=self.attention.keys(states))

    def _output(self, h: torch.Tensor, memory: Memory, where: torch.Tensor | None = None) -> torch.Tensor:
        if not self.cross:
            context, _ = self.attention(h, memory.states, memory.keys, memory.mask)
            h = torch.tanh(self.combine(torch.cat([h, context], -1)))
        h = self.dropout(h)
        return self.out(h if where is None else h[where])

    def decode_all(self, tokens: torch.Tensor, mask: torch.Tensor | None, memory: Memory,
                   where: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits (B, T, V) for target inputs ``tokens`` (B, T); only those at the
        positions ``where`` (B, T) is true, as (N, V), when it is given."""
        x = self.dropout(self.tgt_embed(tokens))
        h = self.decoder(x, mask, memory.layers) if self.cross else self.decoder(x, mask)
        return self._output(h, memory, where)

    def forward(self, src, src_mask, tgt_in, tgt_mask, where: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced logits; ``where`` keeps only the positions that are scored (the output
        layer, the largest cost, then skips the padding)."""
        return self.decode_all(tgt_in, tgt_mask, self.encode(src, src_mask), where)

    def start(self, memory: Memory):
        """The decoder's state before the first target token."""
        return self.decoder.init_state(memory.states.shape[0], memory.states.device, memory.states.dtype)

    def step(self, tokens: torch.Tensor, state, memory: Memory) -> tuple[torch.Tensor, object]:
        """Log-probabilities (B, V) of the token after ``tokens`` (B,), and the next state."""
        x = self.dropout(self.tgt_embed(tokens))
        if self.cross:
            h, state = self.decoder.step(x, state, memory.layers)
        else:
            h, state = self.decoder.step(x, state)
        return F.log_softmax(self._output(h[:, None], memory)[:, 0].float(), -1), state

    @staticmethod
    def reorder(state, index: torch.Tensor):
        return select_state(state, index)
