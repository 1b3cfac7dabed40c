"""Stacked dilated 1-D convolutions with pre-LayerNorm residual blocks."""
from __future__ import annotations

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.base import Backbone, BackboneOptions
from harness.core.registry import ARCHITECTURES


class CNNOptions(BackboneOptions):
    kernel_size: int = pydantic.Field(default=3, ge=1)
    #: layer i uses dilation ``dilation_growth ** i`` (1 = no dilation)
    dilation_growth: int = pydantic.Field(default=2, ge=1)


class ConvBlock(nn.Module):
    def __init__(self, d: int, kernel_size: int, dilation: int, causal: bool, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.conv = nn.Conv1d(d, d, kernel_size, dilation=dilation)
        self.proj = nn.Linear(d, d)
        self.dropout = nn.Dropout(dropout)
        #: past inputs a causal output reads besides the current one
        self.context = (kernel_size - 1) * dilation
        self.pad = (self.context, 0) if causal else (self.context // 2, self.context - self.context // 2)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.run(x, mask)[0]

    def run(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its convolution's (normalised) input."""
        # Zeroing padding makes it indistinguishable from the convolution's own zero padding,
        # so real positions never depend on how much padding follows them.
        h = self.norm(x)
        if mask is not None:
            h = h * mask.unsqueeze(-1).to(x.dtype)
        y = self.conv(F.pad(h.transpose(1, 2), self.pad)).transpose(1, 2)
        return x + self.dropout(self.proj(F.gelu(y))), h

    def step(self, x: torch.Tensor, buffer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One causal position; ``buffer`` holds the last ``context`` normalised inputs."""
        window = torch.cat((buffer, self.norm(x).unsqueeze(1)), 1)  # (B, context + 1, d)
        y = F.conv1d(window.transpose(1, 2), self.conv.weight, self.conv.bias,
                     dilation=self.conv.dilation)[..., 0]
        return x + self.dropout(self.proj(F.gelu(y))), window[:, 1:]


@ARCHITECTURES.register("cnn")
class CNN(Backbone):
    Options = CNNOptions

    def __init__(self, d_model: int, n_layers: int, options: CNNOptions):
        super().__init__(d_model, n_layers, options)
        self.dilations = [options.dilation_growth ** i for i in range(n_layers)]
        self.blocks = nn.ModuleList(
            ConvBlock(d_model, options.kernel_size, dil, self.causal, options.dropout)
            for dil in self.dilations)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def init_state(self, batch_size: int, device, dtype):
        self.require_causal()
        return [torch.zeros(batch_size, block.context, self.d_model, device=device, dtype=dtype)
                for block in self.blocks]

    def step(self, x: torch.Tensor, state):
        buffers = []
        for block, buffer in zip(self.blocks, state):
            x, buffer = block.step(x, buffer)
            buffers.append(buffer)
        return self.norm(x), buffers

    def prefill(self, x: torch.Tensor):
        self.require_causal()
        buffers = []
        for block in self.blocks:
            x, h = block.run(x, None)
            # the last `context` inputs, zeros standing in for positions before the prefix
            buffers.append(F.pad(h, (0, 0, block.context, 0))[:, h.shape[1]:])
        return self.norm(x), buffers

    def receptive_field(self) -> int:
        return 1 + (self.options.kernel_size - 1) * sum(self.dilations)

    def state_size_per_token(self) -> int:
        # incremental decoding keeps each layer's last (kernel-1)*dilation inputs
        return sum((self.options.kernel_size - 1) * dil for dil in self.dilations) * self.d_model
