"""Pretrained Hugging Face causal language models as references for the zero-shot suites
(``--arch hf:<model name or local path>``): loaded with ``transformers``, scored through lm-eval's
own ``hf`` model (``HFLM``) exactly as lm-eval scores them anywhere else, never trained here.

Needs the ``eval`` extra (lm-eval with its ``hf`` backend: transformers and accelerate). Without a
network only a local path, or a model already in the Hugging Face cache, can be loaded.
"""
from __future__ import annotations

import torch
from torch import nn

from tasks.base import Upstream


class ReferenceLM(nn.Module):
    """A pretrained model and its tokenizer, in the place of a zero-shot run's upstream model."""

    def __init__(self, name: str, model, tokenizer):
        super().__init__()
        self.name = name
        self.hf = model
        self.tokenizer = tokenizer

    def describe(self) -> dict:
        """What the run's info records of it; its embeddings (token and position) and an output
        layer not tied to the input embedding are left out of the non-embedding count."""
        total = sum(p.numel() for p in self.hf.parameters())
        embeddings = {id(m.weight): m.weight.numel() for m in self.hf.modules() if isinstance(m, nn.Embedding)}
        output = self.hf.get_output_embeddings()
        if output is not None:
            embeddings[id(output.weight)] = output.weight.numel()
        embedding = sum(embeddings.values())
        config = self.hf.config
        return {"reference": self.name, "model_type": getattr(config, "model_type", None),
                "d_model": getattr(config, "hidden_size", None),
                "n_layers": getattr(config, "num_hidden_layers", None),
                "params_non_embedding": total - embedding, "causal": True}


def load_reference(name: str, device: torch.device) -> Upstream:
    """The model ``name`` (a Hugging Face model id or a local folder) and its tokenizer, in eval
    mode on ``device``, as the upstream a reference run scores."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForCausalLM.from_pretrained(name).to(device).eval()
    return Upstream(model=ReferenceLM(name, model, tokenizer), extra={"reference": name})


def is_reference(upstream: Upstream) -> bool:
    return isinstance(upstream.model, ReferenceLM)


def lm_eval_model(upstream: Upstream, batch_size: int):
    """lm-eval's own ``hf`` model around a reference, its batch size fixed (lm-eval's "auto"
    would make scores depend on free memory)."""
    from lm_eval.models.huggingface import HFLM

    reference: ReferenceLM = upstream.model
    device = next(reference.hf.parameters()).device
    return HFLM(pretrained=reference.hf, tokenizer=reference.tokenizer, batch_size=batch_size,
                device=str(device))


def continuation_logprobs(upstream: Upstream, pairs: list[tuple[str, str]], batch_size: int) -> list[float]:
    """log P(continuation | context) by lm-eval's ``hf`` model, for (context, continuation) texts."""
    from lm_eval.api.instance import Instance

    model = lm_eval_model(upstream, batch_size)
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    return [lp for lp, _ in model.loglikelihood(requests, disable_tqdm=True)]
