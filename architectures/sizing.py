"""Size presets and parameter matching: each backbone solves its width for a target budget."""
from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType

import pydantic
import torch

from harness.core.registry import ARCHITECTURES, suggest

#: a preset's parameter count must land within this fraction of its target
TOLERANCE = 0.05


@dataclass(frozen=True)
class SizePreset:
    n_layers: int
    #: non-embedding parameters (everything in the backbone but position tables)
    target_params: int | None = None
    #: a fixed width instead, the same for every backbone (not parameter matched): the model
    #: dimension axis of Zoology's MQAR figures
    d_model: int | None = None

    def __post_init__(self):
        if (self.target_params is None) == (self.d_model is None):
            raise ValueError("a size preset gives either target_params or d_model")

    def describe(self) -> str:
        if self.d_model is not None:
            return f"width {self.d_model} (not parameter matched), {self.n_layers} layers"
        return f"{self.target_params:>12,d} params, {self.n_layers} layers"


PRESETS = MappingProxyType({
    "tiny": SizePreset(n_layers=2, target_params=500_000),
    "small": SizePreset(n_layers=4, target_params=4_000_000),
    "base": SizePreset(n_layers=8, target_params=25_000_000),
    "large": SizePreset(n_layers=12, target_params=85_000_000),
    **{f"d{d}": SizePreset(n_layers=2, d_model=d) for d in (64, 128, 256, 512)},
})
#: the presets that match parameter counts
MATCHED = tuple(name for name, p in PRESETS.items() if p.target_params is not None)
#: ``d<width>x<layers>``: any fixed width and depth (depth sweeps: ``d128x1`` … ``d128x4``)
WIDTH_BY_DEPTH = re.compile(r"d([1-9][0-9]*)x([1-9][0-9]*)")


def preset(size: str) -> SizePreset:
    """The preset named ``size``: one of ``PRESETS`` or ``d<width>x<layers>``; an unknown name
    answers with the closest ones."""
    if size in PRESETS:
        return PRESETS[size]
    match = WIDTH_BY_DEPTH.fullmatch(size)
    if match:
        return SizePreset(n_layers=int(match[2]), d_model=int(match[1]))
    suggest("size preset", size, [*PRESETS, "d<width>x<layers>"])
    raise AssertionError  # suggest raised


def count_parameters(cls, d_model: int, n_layers: int, options) -> int:
    """Non-embedding parameters of a backbone, built on the meta device (no memory, no time)."""
    with torch.device("meta"):
        return cls(d_model, n_layers, options).num_parameters()


def closest_width(cls, target: int, n_layers: int, options, step: int) -> int:
    """The multiple of ``step`` whose parameter count is closest to ``target`` (counts grow with width)."""
    lo, hi = 1, 1
    while count_parameters(cls, hi * step, n_layers, options) < target:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if count_parameters(cls, mid * step, n_layers, options) < target:
            lo = mid
        else:
            hi = mid
    return min((lo * step, hi * step),
               key=lambda d: abs(count_parameters(cls, d, n_layers, options) - target))


def parse_options(arch: str, options: dict | None):
    """Validate an architecture's options with its own pydantic model (errors name the field)."""
    cls = ARCHITECTURES.get(arch)
    try:
        return cls, cls.Options(**(options or {}))
    except pydantic.ValidationError as err:
        raise ValueError(f"invalid options for architecture {arch!r}:\n{err}") from None


def build_backbone(arch: str, size: str, options: dict | None = None):
    """Build ``arch`` at preset ``size``: its width solved to match the preset's budget, or the
    preset's fixed width."""
    chosen = preset(size)
    cls, opts = parse_options(arch, options)
    if chosen.d_model is not None:
        d_model, step = chosen.d_model, cls.width_step_for(opts)
        if d_model % step:
            raise ValueError(f"size {size}: {arch} with these options needs a width that is a multiple "
                             f"of {step}; {d_model} is not")
    else:
        d_model, opts = cls.sized(chosen.target_params, chosen.n_layers, opts)
    backbone = cls(d_model, chosen.n_layers, opts)
    backbone.preset = size  # a task that builds a second backbone (a decoder) sizes it alike
    return backbone
