"""The harness's trained language models as an ``lm_eval.api.model.LM``, so lm-eval's tasks score
them the way they score any other model.

The ``lm`` task's models are word-level (WikiText-2's vocabulary). Text is split the way WikiText
was: punctuation is its own token, a clitic keeps its apostrophe (``don't`` → ``don 't``), hyphens
and separators inside numbers become ``@-@``, ``@,@``, ``@.@``. Words outside the vocabulary become
``<unk>``, as in WikiText itself; ``Tokenizer.unknown_rate`` says how often that happened.

Every request is scored after ``<eos>``, the token that precedes every line in training.
"""
from __future__ import annotations

import re

import torch
from lm_eval.api.model import LM

from tasks.lm import EOS, UNK

_LEADING = "\"([{"
_TRAILING = ".,;:!?\")]}'"
_INNER = re.compile(r"(?<=[0-9A-Za-z])([-,.])(?=[0-9A-Za-z])")


def wikitext_tokens(text: str, vocab=None) -> list[str]:
    """Split raw text into WikiText-2 tokens; words of ``vocab`` that end in a point (``H.``,
    ``U.S.``) keep it, as abbreviations do in WikiText."""
    tokens = []
    for chunk in text.split():
        head, tail = [], []
        while chunk and chunk[0] in _LEADING:
            head.append(chunk[0])
            chunk = chunk[1:]
        while chunk and chunk[-1] in _TRAILING and not (vocab and chunk[-1] == "." and chunk in vocab):
            cut = 3 if chunk.endswith("...") else 1  # an ellipsis is one token
            tail.insert(0, chunk[-cut:])
            chunk = chunk[:-cut]
        middle = []
        if chunk:
            # hyphens always, commas and points only between digits (WikiText's @-@, @,@, @.@)
            chunk = _INNER.sub(lambda m: f" @{m.group(1)}@ " if m.group(1) == "-" or _digits(m) else m.group(1),
                               chunk)
            for piece in chunk.split():
                # an apostrophe inside a word starts a new token: don't → don 't, it's → it 's
                middle += [p for p in re.split(r"(?<=\w)(?='\w)", piece) if p]
        tokens += head + middle + tail
    return tokens


def _digits(match: re.Match) -> bool:
    s, i = match.string, match.start(1)
    return s[i - 1].isdigit() and s[i + 1].isdigit()


class Tokenizer:
    """WikiText tokens → vocabulary ids, counting how many fell back to ``<unk>``."""

    def __init__(self, vocab: list[str]):
        self.index = {tok: i for i, tok in enumerate(vocab)}
        self.unk = self.index[UNK]
        self.eos = self.index[EOS]
        self.tokens = 0
        self.unknown = 0

    def tokens_of(self, text: str) -> list[str]:
        return wikitext_tokens(text, self.index)

    def ids(self, text: str) -> list[int]:
        return self.lookup(self.tokens_of(text))

    def lookup(self, tokens: list[str]) -> list[int]:
        ids = [self.index.get(tok, self.unk) for tok in tokens]
        self.tokens += len(ids)
        self.unknown += sum(i == self.unk for i in ids)
        return ids

    @property
    def unknown_rate(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


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
        """Context and continuation ids. The text is tokenised whole, so a word that straddles
        the boundary belongs to the continuation."""
        tokens = self.tokenizer.tokens_of(context + continuation)
        head = self.tokenizer.tokens_of(context)
        k = 0
        while k < min(len(head), len(tokens)) and head[k] == tokens[k]:
            k += 1
        whole = self.tokenizer.lookup(tokens)
        return whole[:k], whole[k:]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [self.split(*r.args) for r in requests]
        return self._score(pairs)

    def loglikelihood_rolling(self, requests) -> list[float]:
        return [lp for lp, _ in self._score([([], self.tokenizer.ids(r.args[0])) for r in requests])]

    def generate_until(self, requests):
        raise NotImplementedError("harness language models are scored, not sampled: use loglikelihood tasks")

    def _token_scores(self, inputs, targets, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) log-probabilities of the targets, and whether each is the most probable token
        (an adaptive softmax predicts its argmax without the full distribution)."""
        model = self.model
        h, wanted = model.states(inputs, mask)[mask], targets[mask]
        if isinstance(model.head, torch.nn.AdaptiveLogSoftmaxWithLoss):
            lp, best = model.head(h, wanted).output, model.head.predict(h)
        else:
            logits = model.head(h).float()
            lp, best = logits.log_softmax(-1).gather(1, wanted[:, None]).squeeze(1), logits.argmax(-1)
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
            width = max(len(s) for s in sequences) - 1
            inputs = torch.zeros(len(batch), width, dtype=torch.long)
            targets = torch.zeros(len(batch), width, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.bool)
            for row, seq in enumerate(sequences):
                n = len(seq) - 1
                inputs[row, :n] = torch.tensor(seq[:-1])
                targets[row, :n] = torch.tensor(seq[1:])
                mask[row, :n] = True
            inputs, targets, mask = (t.to(self.device_) for t in (inputs, targets, mask))
            scores, greedy = self._token_scores(inputs, targets, mask)
            for row, i in enumerate(batch):
                n, m = int(mask[row].sum()), len(pairs[i][1])
                results[i] = (scores[row, n - m:n].sum().item(), bool(greedy[row, n - m:n].all()))
        return results
