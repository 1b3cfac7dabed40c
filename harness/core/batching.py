"""Right padding: the one way every task turns a list of variable-length id sequences into a
batch (padding on the right, a mask that is True on tokens), as every backbone reads it."""
from __future__ import annotations

from typing import Sequence

import torch


def pad(sequences: Sequence[Sequence[int] | torch.Tensor], value: int = 0,
        dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both (B, T) with T the longest sequence: ``ids`` holds each sequence from
    the left and ``value`` after it, ``mask`` is True on the sequence's own positions."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    width = int(lengths.max()) if len(sequences) else 0
    if len(sequences) and not any(isinstance(s, torch.Tensor) for s in sequences):
        # plain ids: one conversion of the padded rows (a tensor per row costs more than the copy)
        ids = torch.tensor([[*s, *[value] * (width - len(s))] for s in sequences], dtype=dtype)
    else:
        ids = torch.full((len(sequences), width), value, dtype=dtype)
        for row, seq in enumerate(sequences):
            if len(seq):
                ids[row, :len(seq)] = torch.as_tensor(seq, dtype=dtype)
    return ids, torch.arange(width) < lengths[:, None]


def pad_shifted(sequences: Sequence[Sequence[int]], value: int = 0,
                dtype: torch.dtype = torch.long) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Next-token rows: ``(inputs, targets, mask)``, each (B, T) with T the longest sequence less
    one; row b reads ``s[:-1]`` and predicts ``s[1:]`` of its sequence s, padded with ``value``."""
    inputs, mask = pad([s[:-1] for s in sequences], value, dtype)
    targets, _ = pad([s[1:] for s in sequences], value, dtype)
    return inputs, targets, mask
