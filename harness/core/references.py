"""Reference models: pretrained Hugging Face causal language models that the zero-shot suites
score beside the harness's own backbones. One is named where a backbone is, as
``hf:<model name or local path>`` (``--arch lstm,hf:gpt2``); it is not parameter-matched and not
trained here, so its runs have no upstream, one seed and the size ``pretrained``."""
from __future__ import annotations

PREFIX = "hf:"
#: the size a reference run records (it has no preset)
SIZE = "pretrained"


def reference_model(arch: str) -> str | None:
    """The model an ``hf:`` name stands for; None when ``arch`` names a backbone."""
    return arch[len(PREFIX):] if arch.startswith(PREFIX) else None


def is_reference(arch: str) -> bool:
    return arch.startswith(PREFIX)
