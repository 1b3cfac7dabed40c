"""The backbone contract every architecture family implements.

A backbone maps embeddings ``(B, T, d)`` plus a padding mask ``(B, T)`` (True = real token,
padding only on the right; None = no padding) to states ``(B, T, d)``. Task heads own the embeddings and outputs, so
any backbone works with any task.

Causal backbones also decode incrementally: ``prefill`` reads a prefix and returns its state,
``step`` consumes one position and returns the next state (an RNN's hidden state, a CNN's input
buffer, a Transformer's key/value cache). Stepping gives the same outputs as ``forward``.
State tensors keep the batch in dimension 0, so ``select_state`` can reorder beams.
"""
from __future__ import annotations

from typing import Any, ClassVar

import pydantic
import torch
from torch import nn


class BackboneOptions(pydantic.BaseModel):
    """Options shared by every family; families subclass this to add their own."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    bidirectional: bool = False
    dropout: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)

    #: options added after runs were stored: left out of the dump (so of the stored config and the
    #: run id) while they hold their default, so adding one keeps every existing run id; set to
    #: anything else they are dumped, and an absent one reads back as its default
    id_optional: ClassVar[tuple[str, ...]] = ()

    @pydantic.model_serializer(mode="wrap")
    def _leave_out_unset_new_options(self, handler):
        data = handler(self)
        for name in self.id_optional:
            if name in data and getattr(self, name) == type(self).model_fields[name].default:
                del data[name]
        return data


class Backbone(nn.Module):
    """Base class: subclasses set ``Options``, ``supports_bidirectional`` and ``width_step`` (or
    ``width_step_for``, where the step depends on the options)."""

    Options: type[BackboneOptions] = BackboneOptions
    supports_bidirectional: bool = True
    #: widths the family can take are multiples of this
    width_step: int = 1
    #: attention runs through scaled_dot_product_attention (benchmarks choose its backend)
    uses_sdpa: bool = False
    #: the size preset it was built at (set by ``build_backbone``)
    preset: str | None = None
    #: FLOPs per sequence are a polynomial of degree ≤ 2 in its length (nothing is chunked), so
    #: ``harness bench`` may count them at a few short lengths and extend them exactly
    flops_polynomial_in_length: bool = True
    #: option sets the contract tests build it with (each in every direction it supports)
    test_options: tuple[dict, ...] = ({},)

    def __init__(self, d_model: int, n_layers: int, options: BackboneOptions):
        super().__init__()
        if options.bidirectional and not self.supports_bidirectional:
            raise ValueError(f"{type(self).__name__} cannot run bidirectionally")
        self.d_model = d_model
        self.n_layers = n_layers
        self.options = options

    @property
    def causal(self) -> bool:
        return not self.options.bidirectional

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def layer_states(self, x: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Each layer's output ``(B, T, d)``, first layer first; the last is ``forward``'s output
        (after any final norm). Families whose layers are the ``blocks`` ModuleList get this from
        hooks on the blocks; others override it, or give one entry: the output."""
        blocks = getattr(self, "blocks", None)
        if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
            return [self(x, mask)]
        outputs: list[torch.Tensor] = []

        def keep(module, args, output):
            outputs.append(output[0] if isinstance(output, tuple) else output)

        hooks = [block.register_forward_hook(keep) for block in blocks]
        try:
            final = self(x, mask)
        finally:
            for hook in hooks:
                hook.remove()
        if len(outputs) != len(blocks):
            raise RuntimeError(f"{type(self).__name__}: {len(outputs)} block outputs for {len(blocks)} blocks")
        return outputs[:-1] + [final]

    def init_state(self, batch_size: int, device, dtype) -> Any:  # pragma: no cover
        """The state before the first position."""
        raise NotImplementedError

    def step(self, x: torch.Tensor, state) -> tuple[torch.Tensor, Any]:  # pragma: no cover
        """One position: ``x`` is ``(B, d)``; returns its output ``(B, d)`` and the next state."""
        raise NotImplementedError

    def prefill(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Outputs for an unpadded prefix ``(B, T, d)`` and the state after it. Families
        override this with one parallel pass; this fallback steps through the prefix."""
        self.require_causal()
        state = self.init_state(x.shape[0], x.device, x.dtype)
        outputs = []
        for t in range(x.shape[1]):
            y, state = self.step(x[:, t], state)
            outputs.append(y)
        return torch.stack(outputs, 1), state

    def require_causal(self) -> None:
        if not self.causal:
            raise ValueError(f"{type(self).__name__} runs bidirectionally; only causal backbones "
                             "decode incrementally")

    @classmethod
    def sized(cls, target: int, n_layers: int, options: BackboneOptions):
        """(d_model, options) whose non-embedding parameter count is closest to ``target``."""
        from architectures.sizing import closest_width

        return closest_width(cls, target, n_layers, options, step=cls.width_step_for(options)), options

    @classmethod
    def width_step_for(cls, options: BackboneOptions) -> int:
        """The multiple every width of this family with these options is."""
        return cls.width_step

    def num_parameters(self) -> int:
        """Non-embedding parameters: everything except position-embedding tables."""
        return sum(p.numel() for name, p in self.named_parameters() if "position_table" not in name)

    def state_size_per_token(self) -> int | None:
        """Numbers carried from one token to the next at inference (None: grows with length)."""
        return None

    def receptive_field(self) -> int | None:
        """How many input positions one output can see (None: unbounded)."""
        return None

    def describe(self) -> dict:
        return {
            "d_model": self.d_model,
            "n_layers": self.n_layers,
            "params_non_embedding": self.num_parameters(),
            "state_size_per_token": self.state_size_per_token(),
            "receptive_field": self.receptive_field(),
            "causal": self.causal,
        }


def select_state(state, index: torch.Tensor):
    """``state`` with every tensor's batch rows taken at ``index`` (beam search reordering)."""
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, (list, tuple)):
        return type(state)(select_state(s, index) for s in state)
    if isinstance(state, dict):
        return {k: select_state(v, index) for k, v in state.items()}
    return state
