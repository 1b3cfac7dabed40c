"""Greedy and beam-search decoding for encoder–decoder models.

A model offers ``encode(src, mask) -> memory`` (with ``memory.repeat(k)``), ``start(memory) ->
state``, ``step(tokens, state, memory) -> (log-probs (B, V), state)``, ``reorder(state, index)`` and,
for decoding without a cache, ``decode_all(tokens, mask, memory) -> logits (B, T, V)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Hypothesis:
    tokens: list[int]  # without the end token
    score: float  # sum of log-probabilities, end token included when it was produced


def max_length(src_mask: torch.Tensor, a: float, b: int) -> int:
    """At most a·(longest source) + b target tokens."""
    return int(a * int(src_mask.sum(1).max()) + b)


@torch.no_grad()
def greedy(model, src, src_mask, bos: int, eos: int, max_len: int, incremental: bool = True) -> list[Hypothesis]:
    """The most probable token at each step until ``eos``. ``incremental=False`` recomputes the
    decoder over the whole prefix at every step instead of carrying its state."""
    memory = model.encode(src, src_mask)
    B = src.shape[0]
    state = model.start(memory) if incremental else None
    tokens = torch.full((B,), bos, dtype=torch.long, device=src.device)
    prefix = tokens[:, None]
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    scores = torch.zeros(B, dtype=torch.float64, device=src.device)
    out = []
    for _ in range(max_len):
        if incremental:
            logp, state = model.step(tokens, state, memory)
        else:
            logp = model.decode_all(prefix, None, memory)[:, -1].float().log_softmax(-1)
        best, tokens = logp.max(-1)
        scores += torch.where(done, 0.0, best.double())
        tokens = tokens.masked_fill(done, eos)
        out.append(tokens)
        prefix = torch.cat([prefix, tokens[:, None]], 1)
        done |= tokens == eos
        if bool(done.all()):
            break
    rows = torch.stack(out, 1).tolist()
    return [Hypothesis(row[:row.index(eos)] if eos in row else row, float(s)) for row, s in zip(rows, scores.tolist())]


@torch.no_grad()
def beam_search(model, src, src_mask, bos: int, eos: int, max_len: int, width: int,
                alpha: float = 1.0) -> list[Hypothesis]:
    """Beam search: ``width`` live hypotheses per source; a hypothesis that ends joins the
    finished ones, and a source is done once ``width`` have finished. The answer is the
    finished hypothesis with the best score / length**alpha (length counts the end token).

    Each step works on all sources at once: of a source's 2·width best candidates (by
    ``topk``, over each beam's 2·width most probable tokens), an ending counts only among the
    first ``width``, and the first ``width`` that do not end are the next beams. Only the endings
    (at most width per source and step) are read back to Python."""
    B, K = src.shape[0], width
    device = src.device
    memory = model.encode(src, src_mask).repeat(K)
    state = model.start(memory)
    tokens = torch.full((B * K,), bos, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)
    scores[:, 0] = 0.0  # all beams start identical: only one may expand
    history = torch.empty(B * K, 0, dtype=torch.long, device=device)
    finished: list[list[tuple[float, Hypothesis]]] = [[] for _ in range(B)]
    ended = torch.zeros(B, dtype=torch.long, device=device)  # finished hypotheses per source
    done = ended >= K
    for t in range(max_len):
        logp, state = model.step(tokens, state, memory)
        V = logp.shape[-1]
        # a beam's score is the same for all its continuations, so the 2·width best candidates
        # of a source are among each beam's 2·width most probable tokens: only those are summed
        # (candidates of equal score may come out in another order than over the whole vocabulary)
        n = min(2 * K, V)
        best, best_token = logp.view(B, K, V).topk(n, dim=2)
        candidates = (scores[:, :, None] + best.double()).view(B, K * n)
        top, index = candidates.topk(min(2 * K, K * n), dim=1)
        beam, token = index // n, best_token.view(B, K * n).gather(1, index)
        live = (top != float("-inf")) & ~done[:, None]
        ends = live & (token == eos)
        ends[:, K:] = False  # an ending counts only among the K best candidates
        goes_on = live & (token != eos)
        slot = goes_on.long().cumsum(1) - 1
        goes_on &= slot < K
        for b, rank in ends.nonzero().tolist():
            score = float(top[b, rank])
            words = history[b * K + int(beam[b, rank])].tolist()
            finished[b].append((score / (t + 1) ** alpha, Hypothesis(words, score)))
        row, rank = goes_on.nonzero(as_tuple=True)
        place = (row, slot[row, rank])
        new_scores = torch.full((B, K), float("-inf"), dtype=torch.float64, device=device)
        new_beam = torch.zeros(B, K, dtype=torch.long, device=device)
        new_token = torch.full((B, K), eos, dtype=torch.long, device=device)
        new_scores[place], new_beam[place], new_token[place] = top[row, rank], beam[row, rank], token[row, rank]
        ended += ends.sum(1)
        done = ended >= K
        if bool(done.all()):
            break
        rows = (torch.arange(B, device=device)[:, None] * K + new_beam).view(-1)
        state = model.reorder(state, rows)
        tokens = new_token.view(-1)
        history = torch.cat([history.index_select(0, rows), tokens[:, None]], 1)
        scores = new_scores
    results = []
    for b in range(B):
        if not done[b]:  # out of length: the live hypotheses compete too
            for k in range(K):
                score = float(scores[b, k])
                if score > float("-inf"):
                    words = history[b * K + k].tolist()
                    finished[b].append((score / max(1, len(words)) ** alpha, Hypothesis(words, score)))
        results.append(max(finished[b], key=lambda f: f[0])[1])
    return results
