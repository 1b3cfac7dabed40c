"""Language modelling on WikiText-2 (or WikiText-103, or your own corpus), word-level or on BPE
subwords, with perplexity per window length and position and bits per character."""
from __future__ import annotations

import functools
import gzip
import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Iterator, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.batching import pad_shifted
from harness.core.train_config import TrainConfig
from harness.core.data import ContentCache, DataError, decode_text, find_dataset, text_lines
from harness.core.registry import TASKS
from harness.core.buckets import by_length
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import Batch, TaskOptions, TrainedTask, Upstream, user_file

EOS = "<eos>"
UNK = "<unk>"
SPLITS = ("train", "valid", "test")


class Corpus:
    """A tokenised corpus: one id stream per split and a vocabulary sorted by training frequency
    (``max_vocab``: only that many entries, ``<unk>`` among them; rarer words read as ``<unk>``).

    ``chars`` gives, per split, the characters of the text each token stands for (a word and the
    space or newline after it; 0 for a word's later subword pieces), so that bits per character
    compare models whatever their tokenisation; unset, every token is a word (``word_chars``).
    ``unseen``: tokens to give ids although training never produced them (a BPE model's pieces
    that only other text cuts out), after the others."""

    def __init__(self, texts: dict[str, list[list[str]]], max_vocab: int | None = None,
                 chars: dict[str, list[list[int]]] | None = None, unseen: tuple[str, ...] = ()):
        counts = Counter(tok for line in texts["train"] for tok in line)
        counts.setdefault(UNK, 0)
        self.vocab = [tok for tok, _ in counts.most_common()]
        self.vocab += sorted(set(unseen) - set(self.vocab))  # tokens training never produced, last
        if max_vocab is not None and len(self.vocab) > max_vocab:
            kept = [tok for tok in self.vocab if tok != UNK][:max_vocab - 1]
            dropped = sum(counts.values()) - sum(counts[tok] for tok in kept)
            counts = Counter({**{tok: counts[tok] for tok in kept}, UNK: dropped})
            self.vocab = [tok for tok, _ in counts.most_common()]
        self.index = {tok: i for i, tok in enumerate(self.vocab)}
        unk = self.index[UNK]
        self.streams = {
            split: torch.tensor([self.index.get(tok, unk) for line in lines for tok in line],
                                dtype=torch.long)
            for split, lines in texts.items()}
        chars = chars or {split: [word_chars(line) for line in lines] for split, lines in texts.items()}
        self.chars = {split: torch.tensor([n for line in counts for n in line], dtype=torch.long)
                      for split, counts in chars.items()}


def word_chars(line) -> list[int]:
    """Characters per token of a line of words ending in ``<eos>``: each word with the space or
    newline after it; ``<eos>`` stands for the newline of an empty line, else for nothing."""
    return [len(word) + 1 for word in line[:-1]] + [0 if len(line) > 1 else 1]


@functools.lru_cache(maxsize=8)
def train_bpe(lines: tuple[tuple[str, ...], ...], vocab_size: int):
    """A BPE model (Hugging Face ``tokenizers``) of ``vocab_size`` entries learned on lines of
    words ending in ``<eos>`` (deterministic for the same lines). A word's first piece carries
    ``▁``; ``<unk>`` is one token, the corpus's own unknown word and any character never seen."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[UNK], show_progress=False)
    # WikiText's own <unk> is one special token: its letters teach the merges nothing
    tokenizer.train_from_iterator((" ".join(w for w in line[:-1] if w != UNK) for line in lines if len(line) > 1),
                                  trainer)
    return tokenizer


def subword_corpus(texts: dict[str, tuple], vocab_size: int) -> tuple[Corpus, object]:
    """The corpus cut into the pieces of a BPE model learned on its training split, and the
    model. Its vocabulary is the pieces seen in training, by frequency, as a word corpus's."""
    bpe = train_bpe(texts["train"], vocab_size)
    pieces, chars = {}, {}
    for split, lines in texts.items():
        encoded = bpe.encode_batch([list(line[:-1]) for line in lines], is_pretokenized=True)
        pieces[split] = [[*e.tokens, EOS] for e in encoded]
        chars[split] = [[len(line[w]) + 1 if w != previous else 0
                         for w, previous in zip(e.word_ids, [None, *e.word_ids])] + [0 if len(line) > 1 else 1]
                        for e, line in zip(encoded, lines)]
    return Corpus(pieces, chars=chars, unseen=tuple(bpe.get_vocab())), bpe


@functools.lru_cache(maxsize=4)
def training_words(lines: tuple[tuple[str, ...], ...]) -> frozenset[str]:
    return frozenset(w for line in lines for w in line)


@functools.lru_cache(maxsize=2)
def read_wikitext(folder: Path) -> dict[str, tuple[tuple[str, ...], ...]]:
    """WikiText-2 (or -103, laid out alike) as PyTorch's word_language_model reads it: whitespace
    tokens, <eos> per line."""
    texts = {}
    for split in SPLITS:
        with gzip.open(folder / f"{split}.txt.gz", "rt", encoding="utf-8") as f:
            texts[split] = tuple(tuple(line.split()) + (EOS,) for line in f)
    return texts


@functools.lru_cache(maxsize=4)
def load_wikitext2(folder: Path, max_vocab: int | None = None) -> Corpus:
    """WikiText-2 (or -103) as words."""
    return Corpus(read_wikitext(folder), max_vocab)


@functools.lru_cache(maxsize=4)
def load_wikitext2_subwords(folder: Path, bpe_vocab: int) -> tuple[Corpus, object]:
    """WikiText-2 (or -103) as the pieces of a BPE model of ``bpe_vocab`` entries learned on its
    training split, and the model."""
    return subword_corpus(read_wikitext(folder), bpe_vocab)


def _parse_lines(path: Path, data: bytes) -> tuple[tuple[str, ...], ...]:
    lines = tuple(tuple(line.split()) + (EOS,) for line in text_lines(decode_text(path, data)))
    if not any(len(line) > 1 for line in lines):
        raise DataError(path, "holds no words")
    return lines


_TEXT_FILES = ContentCache(6)


def read_corpus_file(path: Path) -> tuple[tuple[str, ...], ...]:
    """A text file of your own (plain, or gzipped when its name ends in .gz), read as WikiText
    is: whitespace-separated tokens, ``<eos>`` at the end of every line (empty lines included)."""
    return _TEXT_FILES.get(path, _parse_lines)


class LMOptions(TaskOptions):
    #: "adaptive": adaptive softmax over the frequency-sorted vocabulary (a full one where the
    #: vocabulary is no larger than the first cutoff); "full": plain softmax
    softmax: Literal["adaptive", "full"] = "adaptive"
    cutoffs: tuple[int, ...] = (2000, 10000)
    #: dropout on embeddings and on the backbone's output
    dropout: float = pydantic.Field(default=0.0, ge=0.0, lt=1.0)
    #: your own corpus: text files (or .gz), whitespace-tokenised, one <eos> per line; all three,
    #: or none for the built-in corpus
    train: str | None = None
    valid: str | None = None
    test: str | None = None
    #: the built-in corpus: WikiText-2 (unset) or "wikitext103", read from the data folder
    #: (wikitext103/{train,valid,test}.txt.gz, laid out as wikitext2/; not fetched)
    corpus: Literal["wikitext103"] | None = None
    #: keep only the most frequent words (this many entries, <unk> included); unset: all
    max_vocab: int | None = pydantic.Field(default=None, ge=2)
    #: True: the output layer's weights are the input embedding's (Press & Wolf 2017; needs
    #: softmax=full); unset: separate
    tie_embeddings: bool | None = None
    #: a subword lm: a BPE vocabulary of this many entries, learned on the training split; unset:
    #: words
    bpe_vocab: int | None = pydantic.Field(default=None, ge=64)
    added_later = ("train", "valid", "test", "corpus", "max_vocab", "tie_embeddings", "bpe_vocab")
    #: evaluation windows, as multiples of the training length L (length extrapolation)
    eval_length_multiples: tuple[int, ...] = (1, 2, 4)
    #: tokens per evaluation batch
    eval_batch_tokens: int = pydantic.Field(default=16384, ge=1)

    @pydantic.field_validator("eval_length_multiples")
    @classmethod
    def _starts_at_one(cls, v):
        if not v or sorted(v) != list(v) or v[0] != 1:
            raise ValueError("must be increasing and start at 1 (the training length)")
        return v

    @pydantic.field_validator("corpus", mode="before")
    @classmethod
    def _wikitext2_is_the_default(cls, v):
        return None if v == "wikitext2" else v

    @pydantic.model_validator(mode="after")
    def _consistent(self):
        given = [split for split in SPLITS if getattr(self, split)]
        if given and len(given) < len(SPLITS):
            missing = ", ".join(f"{s}=FILE" for s in SPLITS if s not in given)
            raise ValueError(f"your own corpus needs all three files: --set {missing} as well")
        if given and self.corpus:
            raise ValueError(f"corpus={self.corpus} and your own files (train=...) exclude each other")
        if self.bpe_vocab and self.max_vocab:
            raise ValueError("max_vocab caps a word vocabulary; a subword lm's size is bpe_vocab")
        if self.tie_embeddings and self.softmax != "full":
            raise ValueError("tie_embeddings=true needs softmax=full (an adaptive softmax has no "
                             "vocabulary-sized output matrix to share)")
        return self


class LanguageModel(nn.Module):
    """Embedding, backbone, output layer (an adaptive or a full softmax): the ``lm`` task's model,
    which the zero-shot and fine-tuned tasks score, and the model ``harness bench`` times."""

    def __init__(self, backbone: nn.Module, vocab_size: int, options: LMOptions):
        super().__init__()
        d = backbone.d_model
        self.embed = nn.Embedding(vocab_size, d)
        self.backbone = backbone
        self.dropout = nn.Dropout(options.dropout)
        cutoffs = [c for c in options.cutoffs if c < vocab_size - 1]
        if options.softmax == "adaptive" and cutoffs:
            self.head = nn.AdaptiveLogSoftmaxWithLoss(d, vocab_size, cutoffs, div_value=4.0)
        else:
            self.head = nn.Linear(d, vocab_size)
            if options.tie_embeddings:
                self.head.weight = self.embed.weight

    def states(self, inputs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.dropout(self.backbone(self.dropout(self.embed(inputs)), mask))

    # The output layer, adaptive or full, is read only here: by the four methods below.

    @property
    def adaptive(self) -> bool:
        return isinstance(self.head, nn.AdaptiveLogSoftmaxWithLoss)

    def _adaptive(self, method, h: torch.Tensor, *args):
        """``method`` of the adaptive softmax on ``h``, in the softmax's own dtype and outside
        autocast: torch's implementation mixes its input's dtype with its layers' outputs, which
        fails under bf16 autocast (index_copy_ between dtypes)."""
        h = h.to(self.head.head.weight.dtype)
        if h.device.type == "meta":  # FLOP counting: no autocast there
            return method(h, *args)
        with torch.autocast(h.device.type, enabled=False):
            return method(h, *args)

    def target_logprobs(self, h: torch.Tensor, targets: torch.Tensor,
                        greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """For states ``h`` (N, d): log p(targets[i] | h[i]) (N,), and with ``greedy`` whether
        each target is the most probable token of its row (N,), else None."""
        if not self.adaptive:
            logits = self.head(h).float()
            lp = F.log_softmax(logits, dim=-1).gather(1, targets[:, None]).squeeze(1)
            return lp, logits.argmax(-1) == targets if greedy else None
        head = self.head
        lp = self._adaptive(head, h, targets).output
        if not greedy:
            return lp, None
        # The argmax needs the whole distribution only where the target is not already beaten by
        # a word of the head's shortlist (the margin covers float32 rounding between the two
        # computations; with weights in lower precision every row is checked).
        open_rows = torch.ones_like(targets, dtype=torch.bool)
        if lp.dtype == torch.float32:
            best_listed = F.log_softmax(self._adaptive(head.head, h), dim=1)[:, :head.shortlist_size].max(1).values
            open_rows = lp >= best_listed - 1e-4
        is_best = torch.zeros_like(targets, dtype=torch.bool)
        if bool(open_rows.any()):
            is_best[open_rows] = self._adaptive(head.predict, h[open_rows]) == targets[open_rows]
        return lp, is_best

    def distribution(self, h: torch.Tensor) -> torch.Tensor:
        """The next token's log-probabilities (..., V) for states ``h`` (..., d)."""
        if self.adaptive:
            return self._adaptive(self.head.log_prob, h.reshape(-1, h.shape[-1])).view(*h.shape[:-1], -1)
        return F.log_softmax(self.head(h).float(), dim=-1)

    def predict(self, h: torch.Tensor) -> torch.Tensor:
        """The most probable next token (...) for states ``h`` (..., d)."""
        if self.adaptive:
            return self._adaptive(self.head.predict, h.reshape(-1, h.shape[-1])).view(h.shape[:-1])
        return self.head(h).argmax(-1)

    def forward(self, inputs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B, T, V) whose softmax is the next-token distribution (so cross-entropy reads
        them): a full softmax's logits, an adaptive one's log-probabilities (it has no logits)."""
        h = self.states(inputs, mask)
        if self.adaptive:
            return self.distribution(h)
        return self.head(h)

    def token_logprobs(self, inputs: torch.Tensor, targets: torch.Tensor,
                       mask: torch.Tensor) -> torch.Tensor:
        """log p(targets[b, t] | inputs[b, :t+1]) as (B, T); 0 where ``mask`` is False."""
        lp, _ = self.target_logprobs(self.states(inputs, mask)[mask], targets[mask])
        out = torch.zeros(targets.shape, dtype=lp.dtype, device=lp.device)
        out[mask] = lp
        return out

    def next_token_logprobs(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, V) log-probabilities of the token after each sequence's last real token."""
        h = self.states(inputs, mask)
        return self.distribution(h[torch.arange(len(h), device=h.device), mask.sum(1) - 1])

    def log_probs(self, inputs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The full next-token distribution, (B, T, V) log-probabilities."""
        return self.distribution(self.states(inputs, mask))


def token_scores(model: LanguageModel, inputs, targets, mask) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) log-probabilities of the targets, and whether each is the most probable token."""
    h, wanted = model.states(inputs, mask)[mask], targets[mask]
    lp, is_best = model.target_logprobs(h, wanted, greedy=True)
    scores = torch.zeros(targets.shape, device=h.device)
    greedy = torch.ones(targets.shape, dtype=torch.bool, device=h.device)
    scores[mask], greedy[mask] = lp.float(), is_best
    return scores, greedy


@torch.no_grad()
def continuation_scores(model: LanguageModel, pairs: list[tuple[list[int], list[int]]], eos: int,
                        batch_size: int = 64) -> list[tuple[float, bool]]:
    """For (context ids, continuation ids) pairs, each read after ``eos``: the sum of the
    continuation's log-probabilities, and whether greedy decoding gives it; in batches of
    similar length."""
    device = next(model.parameters()).device
    results: list[tuple[float, bool] | None] = [None] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        sequences = [[eos, *pairs[i][0], *pairs[i][1]] for i in batch]
        inputs, targets, mask = (t.to(device) for t in pad_shifted(sequences))
        scores, greedy = token_scores(model, inputs, targets, mask)
        for row, i in enumerate(batch):
            n, m = int(mask[row].sum()), len(pairs[i][1])
            results[i] = (scores[row, n - m:n].sum().item(), bool(greedy[row, n - m:n].all()))
    return results


def windows(stream: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut a stream into non-overlapping windows so that every token after the first is predicted
    exactly once; the last window is padded. Returns (inputs, targets, mask), each (N, length)."""
    n_pred = len(stream) - 1
    n_rows = math.ceil(n_pred / length)
    inputs = torch.zeros(n_rows * length, dtype=torch.long)
    targets = torch.zeros(n_rows * length, dtype=torch.long)
    inputs[:n_pred] = stream[:-1]
    targets[:n_pred] = stream[1:]
    mask = torch.arange(n_rows * length) < n_pred
    return inputs.view(n_rows, length), targets.view(n_rows, length), mask.view(n_rows, length)


@TASKS.register("lm")
class WikiText2LM(TrainedTask):
    """Next-word prediction on WikiText-2 (``corpus=wikitext103``, or ``train=``/``valid=``/``test=``
    files of your own); perplexity on valid and test. With ``bpe_vocab`` the tokens are BPE
    subwords: its perplexity is per subword, a different unit, so its task label is
    ``lm/bpe<N>`` and its numbers never share a column with a word lm's; bits per character
    (``bpc``) compare the two.

    Scored on non-overlapping windows of L, 2L, 4L tokens (L = training length), every token
    predicted once per window length; ``ppl_by_position`` splits the longest windows' tokens by
    position, so a model trained on L shows how it fares at positions it never saw.
    """

    Options = LMOptions
    version = "1"
    dataset = "wikitext2"
    budgets = {
        "smoke": dict(steps=400, batch_size=32, seq_len=64, lr=6e-3, warmup_steps=40,
                      eval_every=100, dev_eval_tokens=8192, final_eval_tokens=32768),
        # about an hour on 2 CPU cores at --size small (LSTM 4.5K, Transformer 3.2K train tokens/s):
        # 14.3M tokens, about 7 epochs of WikiText-2's 2.09M words; whole splits scored at the end
        "study": dict(steps=3500, batch_size=32, seq_len=128, lr=3e-3, warmup_steps=200, eval_every=250,
                      dev_eval_tokens=65536),
        "full": dict(steps=20000, batch_size=32, seq_len=256, lr=1e-3, warmup_steps=1000,
                     eval_every=1000),
    }
    metric_specs = specs(
        MetricSpec("ppl", "lower", "score", "perplexity",
                   "exp of the mean negative log-likelihood per token, on windows of the stored length"),
        MetricSpec("loss", "lower", "score", "nats/token",
                   "mean negative log-likelihood per token, on windows of the stored length"),
        MetricSpec("bpc", "lower", "score", "bits/char",
                   "bits per character of the text (each word with the space or newline after it), on "
                   "windows of the stored length: comparable across word and subword tokenisations, "
                   "where both read the same share of it as <unk> (unk_rate)"),
        MetricSpec("unk_rate", None, "info", "fraction",
                   "share of the scored tokens that are <unk> (a <unk> stands for the whole word's "
                   "characters in bpc): the corpus and vocabulary, the same for every backbone"),
        MetricSpec("ppl_by_position", "lower", "per_length", "perplexity",
                   "perplexity of the tokens of the longest windows at positions up to the stored one "
                   "(and past the previous bucket)"),
    )
    table_metrics = (("test", "ppl"), ("valid", "ppl"), ("test", "bpc"))
    table_at_train_length = True
    length_metric = "ppl"
    dev_metric = "ppl"
    dev_split = "valid"
    cuts_splits = True
    final_splits = ("valid", "test")

    input_files = SPLITS

    def __init__(self, options: LMOptions, data_dir):
        super().__init__(options, data_dir)
        #: the BPE model of a subword lm (None: words), and the words of its training split
        self.bpe, self.words = None, frozenset()
        if options.train:
            paths = {split: user_file("lm", split, getattr(options, split)) for split in SPLITS}
            texts = {split: read_corpus_file(path.resolve()) for split, path in paths.items()}
            if options.bpe_vocab:
                self.corpus, self.bpe = subword_corpus(texts, options.bpe_vocab)
                self.words = training_words(texts["train"])
            else:
                self.corpus = Corpus(texts, options.max_vocab)
            self.corpus_name = "your own"
        else:
            self.corpus_name = options.corpus or self.dataset
            folder = find_dataset(self.corpus_name, [f"{s}.txt.gz" for s in SPLITS], data_dir).resolve()
            if options.bpe_vocab:
                self.corpus, self.bpe = load_wikitext2_subwords(folder, options.bpe_vocab)
                self.words = training_words(read_wikitext(folder)["train"])
            else:
                self.corpus = load_wikitext2(folder, options.max_vocab)

    label_options = ("bpe_vocab",)

    @classmethod
    def label_parts(cls, options: dict) -> tuple[str, ...]:
        return (f"bpe{options['bpe_vocab']}",) if options.get("bpe_vocab") else ()

    def info(self) -> dict:
        bpe = {"bpe_sha256": hashlib.sha256(self.bpe.to_str().encode()).hexdigest()} if self.bpe else {}
        return {"corpus": self.corpus_name, "tokenizer": f"bpe{self.options.bpe_vocab}" if self.bpe else "word", **bpe,
                "vocab_size": len(self.corpus.vocab),
                "tokens": {split: len(stream) for split, stream in self.corpus.streams.items()},
                "chars": {split: int(chars.sum()) for split, chars in self.corpus.chars.items()}}

    @classmethod
    def check_arch_options(cls, arch_options: dict) -> None:
        if arch_options.get("bidirectional"):
            raise ValueError("task 'lm' needs a causal backbone: set bidirectional=false")

    def build_model(self, backbone: nn.Module) -> LanguageModel:
        return LanguageModel(backbone, len(self.corpus.vocab), self.options)

    def as_upstream(self, model: nn.Module) -> Upstream:
        if self.bpe is None:
            return Upstream(model=model, vocab=tuple(self.corpus.vocab))
        return Upstream(model=model, vocab=tuple(self.corpus.vocab), extra={"bpe": self.bpe, "words": self.words})

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        stream, L, B = self.corpus.streams["train"], train.seq_len, train.batch_size
        n = (len(stream) - 1) // L
        if n < B:
            raise ValueError(f"the training split has {n} windows of {L} tokens, fewer than a batch")
        offsets = torch.arange(L + 1)
        while True:
            order = torch.randperm(n, generator=generator)
            for i in range(0, n - B + 1, B):
                yield {"tokens": stream[order[i:i + B, None] * L + offsets]}

    def loss(self, model: LanguageModel, batch: Batch) -> torch.Tensor:
        tokens = batch["tokens"]
        mask = torch.ones_like(tokens[:, 1:], dtype=torch.bool)
        return -model.token_logprobs(tokens[:, :-1], tokens[:, 1:], mask).mean()

    def batch_tokens(self, batch: Batch) -> int:
        return batch["tokens"][:, 1:].numel()

    @torch.no_grad()
    def evaluate(self, model, split, train, max_tokens, lengths=True):
        stream, chars = self.corpus.streams[split], self.corpus.chars[split]
        if max_tokens is not None:
            stream, chars = stream[: max_tokens + 1], chars[: max_tokens + 1]
        predicted_chars = int(chars[1:].sum())  # every window length predicts each token once
        metrics = [Metric(split, "unk_rate", float((stream[1:] == self.corpus.index[UNK]).double().mean()))]
        device = next(model.parameters()).device
        L = train.seq_len
        multiples = self.options.eval_length_multiples if lengths else (1,)
        for m in multiples:
            W = L * m
            nll_by_pos = torch.zeros(W, dtype=torch.float64)
            count_by_pos = torch.zeros(W, dtype=torch.float64)
            inputs, targets, mask = windows(stream, W)
            rows = max(1, self.options.eval_batch_tokens // W)
            for i in range(0, len(inputs), rows):
                x, y, k = (t[i:i + rows].to(device) for t in (inputs, targets, mask))
                lp = model.token_logprobs(x, y, k)
                nll_by_pos -= lp.double().sum(0).cpu()
                count_by_pos += k.double().sum(0).cpu()
            loss = float(nll_by_pos.sum() / count_by_pos.sum())
            metrics += [Metric(split, "loss", loss, W), Metric(split, "ppl", math.exp(loss), W),
                        Metric(split, "bpc", float(nll_by_pos.sum()) / math.log(2) / max(1, predicted_chars), W)]
            if m == multiples[-1] and len(multiples) > 1:
                # the token at index i is at position i + 1; a bucket's indices are contiguous
                def ppl(chosen: list[int], nll=nll_by_pos, count=count_by_pos) -> float:
                    span = slice(chosen[0], chosen[-1] + 1)
                    return math.exp(float(nll[span].sum() / count[span].sum()))

                metrics += by_length(split, "ppl_by_position", range(1, W + 1), [L * k for k in multiples],
                                     ppl, count=None)
        return metrics
