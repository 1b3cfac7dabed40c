"""Elman RNN, LSTM and GRU: stacked, optionally bidirectional, on PyTorch's fused kernels."""
from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from architectures.base import Backbone, BackboneOptions
from harness.core.registry import ARCHITECTURES


class _Recurrent(Backbone):
    cell: type[nn.RNNBase]
    #: state vectors per layer and direction (LSTM carries h and c)
    states_per_layer = 1
    width_step = 2  # bidirectional mode splits the width between the two directions

    def __init__(self, d_model: int, n_layers: int, options: BackboneOptions):
        super().__init__(d_model, n_layers, options)
        if options.bidirectional and d_model % 2:
            raise ValueError("a bidirectional recurrent backbone needs an even width")
        self.hidden = d_model // 2 if options.bidirectional else d_model
        self.rnn = self.cell(d_model, self.hidden, num_layers=n_layers, batch_first=True,
                             dropout=options.dropout if n_layers > 1 else 0.0,
                             bidirectional=options.bidirectional)
        self.dropout = nn.Dropout(options.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        # Causal mode with right padding needs no packing: padding comes after every real
        # token, so it cannot reach them. Backward directions must not read padding first.
        if self.options.bidirectional and mask is not None and not bool(mask.all()):
            lengths = mask.sum(1).clamp(min=1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        else:
            out, _ = self.rnn(x)
        return self.dropout(out)

    def layer_states(self, x: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """The stack run one layer at a time, each a one-layer module holding that layer's weights."""
        outputs = []
        for layer in range(self.n_layers):
            one = self.cell(x.shape[-1], self.hidden, num_layers=1, batch_first=True,
                            bidirectional=self.options.bidirectional).to(x.device, x.dtype)
            weights = {name.replace(f"_l{layer}", "_l0"): p for name, p in self.rnn.named_parameters()
                       if re.search(rf"_l{layer}(_reverse)?$", name)}
            one.load_state_dict(weights)
            if self.options.bidirectional and mask is not None and not bool(mask.all()):
                lengths = mask.sum(1).clamp(min=1).cpu()
                out, _ = one(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
                x, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            else:
                x, _ = one(x)
            outputs.append(x)
        return outputs

    # Incremental state: (B, layers, hidden) per state vector; nn.RNNBase wants (layers, B, hidden).
    def init_state(self, batch_size: int, device, dtype):
        self.require_causal()
        zeros = torch.zeros(batch_size, self.n_layers, self.hidden, device=device, dtype=dtype)
        return (zeros, zeros.clone()) if self.states_per_layer == 2 else zeros

    def step(self, x: torch.Tensor, state):
        out, state = self.rnn(x.unsqueeze(1), _swap_batch(state))
        return self.dropout(out[:, 0]), _swap_batch(state)

    def prefill(self, x: torch.Tensor):
        self.require_causal()
        out, state = self.rnn(x)
        return self.dropout(out), _swap_batch(state)

    def state_size_per_token(self) -> int:
        directions = 2 if self.options.bidirectional else 1
        return self.states_per_layer * self.hidden * self.n_layers * directions


def _swap_batch(state):
    """(B, layers, hidden) <-> (layers, B, hidden), for one state tensor or LSTM's (h, c)."""
    if isinstance(state, tuple):
        return tuple(s.transpose(0, 1).contiguous() for s in state)
    return state.transpose(0, 1).contiguous()


@ARCHITECTURES.register("rnn")
class ElmanRNN(_Recurrent):
    """Elman network with tanh units (nn.RNN's default non-linearity)."""

    cell = nn.RNN


@ARCHITECTURES.register("lstm")
class LSTM(_Recurrent):
    cell = nn.LSTM
    states_per_layer = 2


@ARCHITECTURES.register("gru")
class GRU(_Recurrent):
    cell = nn.GRU
