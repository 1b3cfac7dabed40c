"""Named-entity recognition: CoNLL-2003 English (or your own CoNLL files), entity-level F1.

Every backbone gets the same token representation: a word embedding learned from scratch (words
of the training split seen at least ``min_word_count`` times, lower-cased), a character CNN over
the word as written, and a word-shape embedding (capitalisation, digits, punctuation), projected to
the backbone's width. The backbone runs bidirectionally where it can (``--set bidirectional=false``
measures the causal variant); a linear layer scores the BIO tags, trained with per-token
cross-entropy (no CRF). Entity precision/recall/F1 come from seqeval (conlleval's chunking), micro
and per type, and F1 per sentence-length bucket. Tagging throughput is timed on the split scored.

Tags are converted to BIO on reading: CoNLL-2003 is IOB1 (``B-`` only between two adjacent entities
of one type). ``scheme=auto`` detects IOB1 from an ``I-`` tag that starts an entity.

Some multilingual exports (WikiANN/PAN-X) write every token as ``xx:word``: a language prefix shared
by every token of a file is stripped, with one line saying so (``keep_prefix=true`` keeps it).
"""
from __future__ import annotations

import functools
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.batching import pad
from harness.core.train_config import TrainConfig
from harness.core.data import ContentCache, DataError, decode_text, find_dataset, text_lines
from harness.core.buckets import by_length
from harness.core.measure import Stopwatch
from harness.core.registry import TASKS
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import Batch, TrainedTask, TaskOptions, shuffled_batches, user_file

CONLL_FILES = {"train": "eng.train.gz", "dev": "eng.testa.gz", "test": "eng.testb.gz"}
TAG = re.compile(r"^(O|[BI]-\S+)$")
#: a language prefix as multilingual exports write it (``en:``, ``zh-yue:``), before a token
LANGUAGE_PREFIX = re.compile(r"^([a-z][a-z-]{1,15}:)(?=.)")
#: sentence-length buckets (tokens): a bucket holds lengths up to its edge, above the previous one
LENGTH_EDGES = (5, 10, 20, 30, 40, 60, 1000)
PAD, UNK = "<pad>", "<unk>"
SHAPES = ("lower", "title", "upper", "mixed", "digits", "has_digit", "punct", "other")
MAX_WORD_CHARS = 20


@dataclass(frozen=True)
class Sentence:
    words: tuple[str, ...]
    tags: tuple[str, ...]
    #: the second column where a file has three or more (CoNLL-2003: part of speech), else ()
    pos: tuple[str, ...] = ()


#: parsed CoNLL files by path and content: a file edited in place is read again
_CONLL = ContentCache(16)
#: files whose stripped prefix this process has announced
_ANNOUNCED: set[tuple[str, str]] = set()


def read_conll(path: Path) -> tuple[tuple[Sentence, ...], tuple[int, ...]]:
    """Sentences of a CoNLL file, plain or gzipped (token in the first column, tag in the last;
    whitespace-only lines end sentences; ``-DOCSTART-`` lines are skipped), and the line each
    sentence starts on. Anything unreadable is a ``DataError`` naming the file and line."""
    return _CONLL.get(path, _parse_conll)


def _parse_conll(path: Path, data: bytes) -> tuple[tuple[Sentence, ...], tuple[int, ...]]:
    sentences, starts = [], []
    words: list[str] = []
    tags: list[str] = []
    pos: list[str] = []
    for n, line in enumerate(text_lines(decode_text(path, data)), 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(Sentence(tuple(words), tuple(tags), _column(pos, words)))
            words, tags, pos = [], [], []
            continue
        if len(fields) < 2:
            raise DataError(path, f"expected a token and a tag, got {line.strip()!r}", n)
        if not TAG.match(fields[-1]):
            raise DataError(path, f"tag {fields[-1]!r} is not O, B-TYPE or I-TYPE", n)
        if not words:
            starts.append(n)
        words.append(fields[0])
        tags.append(fields[-1])
        if len(fields) >= 3:
            pos.append(fields[1])
    if words:
        sentences.append(Sentence(tuple(words), tuple(tags), _column(pos, words)))
    if not sentences:
        raise DataError(path, "no sentences")
    return tuple(sentences), tuple(starts)


def _column(values: list[str], words: list[str]) -> tuple[str, ...]:
    """A middle column's values when every token of the sentence has one, else ()."""
    return tuple(values) if len(values) == len(words) else ()


def shared_prefix(sentences) -> str | None:
    """The language prefix (``en:``) every token of ``sentences`` starts with, if there is one."""
    first = LANGUAGE_PREFIX.match(sentences[0].words[0]) if sentences and sentences[0].words else None
    if first is None:
        return None
    prefix = first.group(1)
    ok = all(w.startswith(prefix) and len(w) > len(prefix) for s in sentences for w in s.words)
    return prefix if ok else None


def strip_prefix(sentences, prefix: str) -> tuple[Sentence, ...]:
    return tuple(Sentence(tuple(w[len(prefix):] for w in s.words), s.tags, s.pos) for s in sentences)


def starts_entity_with_i(tags) -> bool:
    """An ``I-`` tag right after ``O``, the start, or another type: IOB1's way, never BIO's."""
    prev = "O"
    for tag in tags:
        if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]):
            return True
        prev = tag
    return False


def iob1_to_bio(tags) -> tuple[str, ...]:
    """IOB1 → BIO: an ``I-`` that starts an entity becomes ``B-``."""
    out, prev = [], "O"
    for tag in tags:
        out.append(f"B-{tag[2:]}" if tag.startswith("I-") and (prev == "O" or prev[2:] != tag[2:]) else tag)
        prev = tag
    return tuple(out)


@functools.lru_cache(maxsize=1 << 17)
def shape(word: str) -> int:
    if word.isdigit():
        kind = "digits"
    elif any(c.isdigit() for c in word):
        kind = "has_digit"
    elif not any(c.isalnum() for c in word):
        kind = "punct"
    elif word.islower():
        kind = "lower"
    elif word.isupper():
        kind = "upper"
    elif word[0].isupper() and word[1:].islower():
        kind = "title"
    elif word.isalpha():
        kind = "mixed"
    else:
        kind = "other"
    return SHAPES.index(kind)


def entity_types(*tag_lists) -> list[str]:
    """The entity types of BIO tag sequences (O, B-X and I-X, as ``read_conll`` checks), sorted:
    the names of seqeval's per-type scores. Such a tag starts or continues an entity of its type
    wherever it stands, so seqeval reads the types off each distinct tag alone."""
    from seqeval.metrics.sequence_labeling import get_entities

    tags = sorted({tag for tags in tag_lists for sentence in tags for tag in sentence})
    return sorted({kind for kind, _, _ in get_entities([[tag] for tag in tags])})


class NEROptions(TaskOptions):
    #: your own CoNLL files (token first, tag last); all three, or none for CoNLL-2003
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    #: tagging scheme of the files: detected, or declared
    scheme: Literal["auto", "iob1", "bio"] = "auto"
    #: True: keep a language prefix (``en:``) that every token of a file shares; unset (the
    #: default): strip it. Unset stays out of the run id, so ids from before the option hold.
    keep_prefix: bool | None = None
    added_later = ("keep_prefix",)
    #: training words seen fewer times than this read as <unk> (the characters still count)
    min_word_count: int = pydantic.Field(default=2, ge=1)
    #: probability of replacing a training word with <unk>, so <unk> is learned
    word_dropout: float = pydantic.Field(default=0.05, ge=0, lt=1)
    dropout: float = pydantic.Field(default=0.2, ge=0, lt=1)
    char_dim: int = pydantic.Field(default=16, ge=1)
    char_filters: int = pydantic.Field(default=32, ge=1)
    shape_dim: int = pydantic.Field(default=8, ge=1)
    #: sentences per evaluation batch
    eval_batch_size: int = pydantic.Field(default=128, ge=1)

    @pydantic.model_validator(mode="after")
    def _all_or_none(self):
        given = [self.train, self.dev, self.test]
        if any(given) and not all(given):
            raise ValueError("give all three of train, dev and test files, or none (CoNLL-2003)")
        return self

    @pydantic.field_validator("keep_prefix")
    @classmethod
    def _false_is_the_default(cls, v):
        return True if v else None  # keep_prefix=false is the default: the same run, the same id


class Tagger(nn.Module):
    """Word + character CNN + shape features → backbone → tag scores."""

    def __init__(self, backbone: nn.Module, n_words: int, n_chars: int, n_tags: int, options: NEROptions):
        super().__init__()
        d = backbone.d_model
        self.words = nn.Embedding(n_words, d, padding_idx=0)
        self.chars = nn.Embedding(n_chars, options.char_dim, padding_idx=0)
        self.char_conv = nn.Conv1d(options.char_dim, options.char_filters, kernel_size=3, padding=1)
        self.shapes = nn.Embedding(len(SHAPES), options.shape_dim)
        self.project = nn.Linear(d + options.char_filters + options.shape_dim, d)
        self.backbone = backbone
        self.dropout = nn.Dropout(options.dropout)
        self.head = nn.Linear(d, n_tags)

    def forward(self, words, chars, shapes, mask) -> torch.Tensor:
        B, T, C = chars.shape
        c = self.char_conv(self.chars(chars.view(B * T, C)).transpose(1, 2))  # (B·T, filters, C)
        c = c.masked_fill((chars.view(B * T, 1, C) == 0), float("-inf")).amax(2)
        c = torch.where(torch.isfinite(c), c, torch.zeros_like(c)).view(B, T, -1)  # padding words
        x = torch.cat([self.words(words), c, self.shapes(shapes)], -1)
        h = self.backbone(self.dropout(self.project(self.dropout(x))), mask)
        return self.head(self.dropout(h))


@TASKS.register("ner")
class NER(TrainedTask):
    """Named entities, CoNLL-2003 English (or your CoNLL files): seqeval entity F1, micro and per type."""

    Options = NEROptions
    version = "1"
    dataset = "conll2003"
    input_files = ("train", "dev", "test")
    arch_defaults = {"bidirectional": True}
    budgets = {
        # seq_len caps a training sentence (CoNLL-2003's longest has 124 tokens); evaluation takes all
        "smoke": dict(steps=400, batch_size=32, seq_len=128, lr=3e-3, warmup_steps=40, eval_every=100),
        "full": dict(steps=10000, batch_size=32, seq_len=128, lr=1e-3, warmup_steps=500, eval_every=500),
    }
    #: tokens_per_s (tagging on an evaluated split) is the engine's spec: higher is better
    metric_specs = specs(
        MetricSpec("precision", "higher", "score", "fraction", "seqeval entity precision, micro-averaged"),
        MetricSpec("recall", "higher", "score", "fraction", "seqeval entity recall, micro-averaged"),
        MetricSpec("f1", "higher", "score", "fraction", "seqeval entity F1, micro-averaged"),
        MetricSpec("f1_*", "higher", "score", "fraction", "seqeval F1 of one entity type (f1_PER, f1_LOC, ...)"),
        MetricSpec("f1_by_length", "higher", "per_length", "fraction",
                   "entity F1 of the sentences with up to the stored number of tokens "
                   "(and more than the previous bucket's)"),
        MetricSpec("sentences_by_length", None, "info", "sentences", "sentences in the length bucket"),
        MetricSpec("sentences_per_s", "higher", "efficiency", "sentences/s", "sentences tagged per second"),
    )
    table_metrics = (("test", "f1"), ("dev", "f1"), ("test", "precision"), ("test", "recall"),
                     ("test", "sentences_per_s"))
    length_metric = "f1_by_length"
    dev_metric = "f1"
    dev_split = "dev"
    final_splits = ("dev", "test")

    def __init__(self, options: NEROptions, data_dir):
        super().__init__(options, data_dir)
        if options.train:
            paths = {split: user_file("ner", split, getattr(options, split)) for split in ("train", "dev", "test")}
        else:
            folder = find_dataset(self.dataset, list(CONLL_FILES.values()), data_dir).resolve()
            paths = {split: folder / name for split, name in CONLL_FILES.items()}
        self.paths = paths
        self.sentences = {split: read_conll(path.resolve())[0] for split, path in paths.items()}
        self.prefixes = {}
        if not options.keep_prefix:
            for split, path in paths.items():
                prefix = shared_prefix(self.sentences[split])
                if prefix:
                    self.prefixes[split] = prefix
                    self.sentences[split] = strip_prefix(self.sentences[split], prefix)
                    if (str(path), prefix) not in _ANNOUNCED:
                        _ANNOUNCED.add((str(path), prefix))
                        print(f"ner: every token of {path} starts with {prefix!r}: stripped "
                              "(--set keep_prefix=true keeps it)", file=sys.stderr, flush=True)
        every = [s.tags for split in self.sentences.values() for s in split]
        self.scheme = options.scheme if options.scheme != "auto" else (
            "iob1" if any(starts_entity_with_i(t) for t in every) else "bio")
        if self.scheme == "bio":
            for split, path in paths.items():
                for sentence, line in zip(*read_conll(path.resolve())):
                    if starts_entity_with_i(sentence.tags):
                        raise DataError(path, "an I- tag starts an entity, which BIO does not allow "
                                        "(declare scheme=iob1, or fix the file)", line)
        else:
            self.sentences = {split: tuple(Sentence(s.words, iob1_to_bio(s.tags), s.pos) for s in sents)
                              for split, sents in self.sentences.items()}
        train = self.sentences["train"]
        counts = Counter(w.lower() for s in train for w in s.words)
        self.words = [PAD, UNK] + sorted(w for w, n in counts.items() if n >= options.min_word_count)
        self.word_index = {w: i for i, w in enumerate(self.words)}
        chars = sorted({c for s in train for w in s.words for c in w})
        self.char_index = {c: i for i, c in enumerate([PAD, UNK, *chars])}
        types = sorted({t[2:] for s in train for t in s.tags if t != "O"})
        self.tags = ["O"] + [f"{p}-{t}" for t in types for p in "BI"]
        self.tag_index = {t: i for i, t in enumerate(self.tags)}

    @functools.cached_property
    def encoded(self) -> dict[str, list]:
        """Each split's sentences as ids, on first use (checking the files does not need them)."""
        return {split: [self._encode(s) for s in sents] for split, sents in self.sentences.items()}

    def info(self) -> dict:
        return {"scheme_read": self.scheme, "files": {k: str(v) for k, v in self.paths.items()},
                **({"prefix_stripped": self.prefixes} if self.prefixes else {}),
                "sentences": {k: len(v) for k, v in self.sentences.items()}, "tags": self.tags,
                "vocabulary": len(self.words)}

    def _encode(self, sentence: Sentence):
        unk = self.word_index[UNK]
        words = torch.tensor([self.word_index.get(w.lower(), unk) for w in sentence.words])
        chars = [[self.char_index.get(c, 1) for c in w[:MAX_WORD_CHARS]] for w in sentence.words]
        shapes = torch.tensor([shape(w) for w in sentence.words])
        tags = torch.tensor([self.tag_index.get(t, -100) for t in sentence.tags])  # unseen type: ignored
        return words, chars, shapes, tags

    def build_model(self, backbone: nn.Module) -> Tagger:
        return Tagger(backbone, len(self.words), len(self.char_index), len(self.tags), self.options)

    def _batch(self, items, max_len: int | None = None) -> Batch:
        items = [tuple(x[:max_len] for x in item) for item in items] if max_len else items
        words, mask = pad([item[0] for item in items])
        shapes, _ = pad([item[2] for item in items])
        tags, _ = pad([item[3] for item in items], -100)
        # every word's characters, padded, in the rows of the (sentence, word) positions of the mask
        spelled, _ = pad([word for item in items for word in item[1]])
        chars = torch.zeros(*mask.shape, spelled.shape[1], dtype=torch.long)
        chars[mask] = spelled
        return {"words": words, "chars": chars, "shapes": shapes, "tags": tags, "mask": mask}

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        for items in shuffled_batches(self.encoded["train"], train.batch_size, generator, "ner"):
            batch = self._batch(items, train.seq_len)
            if self.options.word_dropout:
                drop = torch.rand(batch["words"].shape, generator=generator) < self.options.word_dropout
                batch["words"] = batch["words"].masked_fill(drop & batch["mask"], self.word_index[UNK])
            yield batch

    def logits(self, model: Tagger, batch: Batch) -> torch.Tensor:
        return model(batch["words"], batch["chars"], batch["shapes"], batch["mask"])

    def loss(self, model: Tagger, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.logits(model, batch).flatten(0, 1).float(), batch["tags"].flatten())

    def batch_tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())

    @torch.no_grad()
    def predict(self, model: Tagger, split: str) -> tuple[list[list[str]], float]:
        """BIO tags for every sentence of ``split``, and the seconds the tagging took."""
        items = self.encoded[split]
        device = next(model.parameters()).device
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))  # little padding
        out: list[list[str] | None] = [None] * len(items)
        size = self.options.eval_batch_size
        batches = [self._batch([items[i] for i in order[k:k + size]]) for k in range(0, len(order), size)]
        watch = Stopwatch(device)
        watch.start()
        predicted = []
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            predicted.append(self.logits(model, batch).argmax(-1).cpu())
        watch.stop()
        seconds = watch.elapsed
        for k, tags in zip(range(0, len(order), size), predicted):
            for row, i in enumerate(order[k:k + size]):
                out[i] = [self.tags[t] for t in tags[row, :len(items[i][0])].tolist()]
        return out, seconds

    def evaluate(self, model, split, train, max_tokens, lengths=True) -> list[Metric]:
        from seqeval.metrics import f1_score
        from seqeval.metrics.sequence_labeling import precision_recall_fscore_support

        predicted, seconds = self.predict(model, split)
        gold = [list(s.tags) for s in self.sentences[split]]
        # seqeval's micro and per-type scores, without the macro and weighted averages of its
        # classification_report (each of which chunks every sentence again)
        precision, recall, f1, _ = precision_recall_fscore_support(gold, predicted, average="micro", zero_division=0)
        per_type = precision_recall_fscore_support(gold, predicted, average=None, zero_division=0)[2]
        tokens = sum(len(g) for g in gold)
        metrics = [Metric(split, "precision", precision), Metric(split, "recall", recall), Metric(split, "f1", f1),
                   Metric(split, "sentences_per_s", len(gold) / seconds),
                   Metric(split, "tokens_per_s", tokens / seconds)]
        metrics += [Metric(split, f"f1_{kind}", score)
                    for kind, score in zip(entity_types(gold, predicted), per_type, strict=True)]
        if lengths:
            metrics += by_length(split, "f1_by_length", [len(g) for g in gold], LENGTH_EDGES,
                                 lambda chosen: f1_score([gold[i] for i in chosen], [predicted[i] for i in chosen],
                                                         zero_division=0))
        return metrics
