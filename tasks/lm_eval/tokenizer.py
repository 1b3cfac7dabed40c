"""Raw text → the ``lm`` task's vocabulary: words split the way WikiText-2 was split, and for a
subword lm those words cut into its BPE pieces.

Punctuation is its own token, a clitic keeps its apostrophe (``don't`` → ``don 't``), hyphens and
separators inside numbers become ``@-@``, ``@,@``, ``@.@``. Words outside the vocabulary become
``<unk>``, as in WikiText itself (a subword lm has pieces for every word, and ``<unk>`` only for a
character it never saw); ``Tokenizer.unknown_rate`` says how often that happened.
"""
from __future__ import annotations

import re

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

    def split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Context and continuation ids. The text is tokenised whole, so a word that straddles
        the boundary belongs to the continuation."""
        tokens = self.tokens_of(context + continuation)
        head = self.tokens_of(context)
        k = 0
        while k < min(len(head), len(tokens)) and head[k] == tokens[k]:
            k += 1
        return self.lookup(tokens[:k]), self.lookup(tokens[k:])

    @property
    def unknown_rate(self) -> float:
        return self.unknown / self.tokens if self.tokens else 0.0


class SubwordTokenizer(Tokenizer):
    """WikiText tokens → the pieces of a subword lm's BPE model → vocabulary ids. A word is cut
    the same way wherever it stands, so a context's ids followed by a continuation's are the ids
    of the whole text."""

    def __init__(self, vocab: list[str], bpe, words=frozenset()):
        super().__init__(vocab)
        self.bpe = bpe
        self.words = words  # the training split's words: abbreviations keep their point

    def tokens_of(self, text: str) -> list[str]:
        return wikitext_tokens(text, self.words)

    def lookup(self, tokens: list[str]) -> list[int]:
        return super().lookup(self.bpe.encode(tokens, is_pretokenized=True).tokens if tokens else [])


def tokenizer_for(vocab, extra: dict) -> Tokenizer:
    """The tokenizer of an ``lm`` run's model, from what it exports (``Upstream.vocab``,
    ``Upstream.extra``)."""
    if extra.get("bpe") is not None:
        return SubwordTokenizer(list(vocab), extra["bpe"], extra.get("words", frozenset()))
    return Tokenizer(list(vocab))
