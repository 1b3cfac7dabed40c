"""The harness's trained language models as an ``lm_eval.api.model.LM``, so lm-eval's tasks score
them the way they score any other model.

The ``lm`` task's models are word-level (WikiText-2's vocabulary); text is split the way WikiText
was, and unknown words become ``<unk>`` (``tasks/lm_eval/tokenizer.py``).

Every request is scored after ``<eos>``, the token that precedes every line in training.
"""
from __future__ import annotations

import torch
from lm_eval.api.model import LM

from harness.core.batching import pad_shifted
from tasks.lm_eval.tokenizer import Tokenizer, wikitext_tokens  # noqa: F401 (re-exported)


class HarnessLM(LM):
    """A trained ``lm`` model (any backbone) for lm-eval: batched ``loglikelihood`` and
    ``loglikelihood_rolling``; it does not generate."""

    def __init__(self, model, vocab: list[str], device="cpu", batch_size: int = 64):
        super().__init__()
        self.model = model.to(device).eval()
        self.tokenizer = Tokenizer(vocab)
        self.device_ = torch.device(device)
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
        """(B, T) log-probabilities of the targets, and whether each is the most probable token."""
        h, wanted = self.model.states(inputs, mask)[mask], targets[mask]
        lp, best = self.model.target_logprobs(h, wanted, argmax=True)
        scores = torch.zeros(targets.shape, device=h.device)
        greedy = torch.ones(targets.shape, dtype=torch.bool, device=h.device)
        scores[mask], greedy[mask] = lp.float(), best == wanted
        return scores, greedy

    @torch.no_grad()
    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether greedy decoding gives it) per
        pair, in batches of similar length."""
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            sequences = [[self.tokenizer.eos, *pairs[i][0], *pairs[i][1]] for i in batch]
            inputs, targets, mask = (t.to(self.device_) for t in pad_shifted(sequences))
            scores, greedy = self._token_scores(inputs, targets, mask)
            for row, i in enumerate(batch):
                n, m = int(mask[row].sum()), len(pairs[i][1])
                results[i] = (scores[row, n - m:n].sum().item(), bool(greedy[row, n - m:n].all()))
        return results
