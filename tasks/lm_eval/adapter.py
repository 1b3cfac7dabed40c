"""The harness's trained language models as an ``lm_eval.api.model.LM``, so lm-eval's tasks score
them the way they score any other model.

Text is split the way WikiText was, then looked up in the ``lm`` run's vocabulary: words (unknown
ones become ``<unk>``), or a subword lm's BPE pieces (``tasks/lm_eval/tokenizer.py``).

Every request is scored after ``<eos>``, the token that precedes every line in training.
"""
from __future__ import annotations

import torch
from lm_eval.api.model import LM

from tasks.lm import continuation_scores, token_scores
from tasks.lm_eval.tokenizer import Tokenizer, tokenizer_for, wikitext_tokens  # noqa: F401 (re-exported)


class HarnessLM(LM):
    """A trained ``lm`` model (any backbone) for lm-eval: batched ``loglikelihood`` and
    ``loglikelihood_rolling``; it does not generate."""

    def __init__(self, model, vocab: list[str], device="cpu", batch_size: int = 64, extra: dict | None = None):
        """``extra``: what the ``lm`` run exports beside its vocabulary (``Upstream.extra``: a
        subword lm's BPE model)."""
        super().__init__()
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer_for(vocab, extra or {})
        self.batch_size = batch_size

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        return self.tokenizer.split(context, continuation)

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self.split(*r.args) for r in requests]
        return self._score(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        return [lp for lp, _ in self._score([([], self.tokenizer.ids(r.args[0])) for r in requests])]

    def generate_until(self, requests):
        raise NotImplementedError("harness language models are scored, not sampled: use loglikelihood tasks")

    def _token_scores(self, inputs, targets, mask) -> tuple[torch.Tensor, torch.Tensor]:
        return token_scores(self.model, inputs, targets, mask)

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        return continuation_scores(self.model, pairs, self.tokenizer.eos, self.batch_size)
