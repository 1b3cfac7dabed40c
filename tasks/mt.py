"""Machine translation: Multi30k task 1 (English→German by default), or your own parallel files.

Text is cut into subwords by a byte-pair-encoding model (Hugging Face ``tokenizers``) learned on
the training split only: one vocabulary shared by both languages by default (``vocab=shared``; the
two languages share most of their script, and names and numbers copy across), or one per side
(``vocab=separate``). Words are marked with a leading ``▁`` (Metaspace), so decoding restores the
text exactly and BLEU/chrF are computed by sacrebleu on detokenised text against the raw references,
with sacrebleu's signatures stored in the run's info.

The model is ``tasks/seq2seq.py``'s encoder–decoder around the run's backbone. Training uses teacher
forcing; the checkpoint is chosen by greedy BLEU on (up to ``dev_sentences`` of) the validation
split; the final numbers decode with beam search (``beam``, length-normalised by ``alpha``).
"""
from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Iterator, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from architectures.sizing import build_backbone
from harness.core.batching import pad, pad_shifted
from harness.core.train_config import TrainConfig
from harness.core.data import ContentCache, DataError, decode_text, find_dataset, text_lines
from tasks.decoding import beam_search, greedy, max_length
from harness.core.buckets import by_length
from harness.core.measure import Stopwatch
from harness.core.registry import TASKS
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import Batch, TrainedTask, TaskOptions, shuffled_batches, user_file
from tasks.seq2seq import Score, Seq2Seq

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = range(4)
MULTI30K_TESTS = ("test_2016_flickr", "test_2017_flickr", "test_2017_mscoco", "test_2018_flickr")
#: source-length buckets (words): a bucket holds lengths up to its edge, above the previous one
LENGTH_EDGES = (8, 12, 16, 20, 30, 1000)


#: the lines of text files by path and content: a file edited in place is read again
_LINES = ContentCache(32)


def read_lines(path: Path) -> tuple[str, ...]:
    """The lines of a text file (gzip or plain); anything unreadable, or an empty line, is a
    ``DataError`` naming the file (and line)."""
    return _LINES.get(path, _parse_lines)


def _parse_lines(path: Path, data: bytes) -> tuple[str, ...]:
    lines = text_lines(decode_text(path, data))
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise DataError(path, "empty line (every line is one sentence)", n)
    return tuple(lines)


def read_parallel(src: Path, tgt: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Line-aligned source and target sentences."""
    a, b = read_lines(src), read_lines(tgt)
    if len(a) != len(b):
        raise DataError(tgt, f"misaligned parallel files: {src} has {len(a)} lines but {tgt} has {len(b)}")
    return a, b


@functools.lru_cache(maxsize=8)
def train_bpe(lines: tuple[str, ...], vocab_size: int):
    """A BPE tokenizer learned on ``lines`` (deterministic for the same lines)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIALS[UNK]))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


class MTOptions(TaskOptions):
    src: str = "en"
    tgt: str = "de"
    #: Multi30k test sets scored at the end (test_2016_flickr is reported as ``test``)
    test_sets: tuple[str, ...] = ("test_2016_flickr",)
    #: your own parallel files (all six, or none for Multi30k)
    train_src: str | None = None
    train_tgt: str | None = None
    valid_src: str | None = None
    valid_tgt: str | None = None
    test_src: str | None = None
    test_tgt: str | None = None
    vocab: Literal["shared", "separate"] = "shared"
    vocab_size: int = pydantic.Field(default=8000, ge=len(SPECIALS) + 1)
    #: attention score of non-Transformer decoders (the Transformer uses its own cross-attention)
    attention: Score = "general"
    dropout: float = pydantic.Field(default=0.1, ge=0, lt=1)
    #: train only on pairs whose source has at most this many words (test on longer ones)
    train_max_src_words: int | None = pydantic.Field(default=None, ge=1)
    beam: int = pydantic.Field(default=5, ge=1)
    #: length normalisation: a hypothesis scores log P / length**alpha
    alpha: float = pydantic.Field(default=1.0, ge=0)
    #: at most max_len_a · (source tokens) + max_len_b target tokens are generated
    max_len_a: float = pydantic.Field(default=1.5, ge=0)
    max_len_b: int = pydantic.Field(default=10, ge=1)
    #: validation sentences decoded (greedily) at each evaluation during training
    dev_sentences: int = pydantic.Field(default=500, ge=1)
    eval_batch_size: int = pydantic.Field(default=100, ge=1)

    @pydantic.field_validator("test_sets")
    @classmethod
    def _known_tests(cls, v):
        from harness.core.registry import UnknownName

        for name in v:
            if name not in MULTI30K_TESTS:
                raise ValueError(str(UnknownName("Multi30k test set", name, MULTI30K_TESTS)))
        return v

    @pydantic.model_validator(mode="after")
    def _all_or_none(self):
        given = [self.train_src, self.train_tgt, self.valid_src, self.valid_tgt, self.test_src, self.test_tgt]
        if any(given) and not all(given):
            raise ValueError("give all six of train_src/train_tgt, valid_src/valid_tgt, test_src/test_tgt, "
                             "or none (Multi30k)")
        return self


@TASKS.register("mt")
class MT(TrainedTask):
    """Translation, Multi30k en→de (or your parallel files): BLEU and chrF by sacrebleu, beam search."""

    Options = MTOptions
    version = "1"
    dataset = "multi30k"
    input_files = ("train_src", "train_tgt", "valid_src", "valid_tgt", "test_src", "test_tgt")
    arch_defaults = {"bidirectional": True}  # the encoder's; the decoder is always causal
    backbones = 2  # the encoder and its causal twin, the decoder
    budgets = {
        # seq_len caps a training sentence in subword tokens; decoding is capped by max_len_a/b.
        # smoke is sized with the README's main command in mind (target: 10 minutes on 2 CPU cores)
        "smoke": dict(steps=400, batch_size=32, seq_len=64, lr=2e-3, warmup_steps=40, eval_every=200),
        "full": dict(steps=30000, batch_size=128, seq_len=128, lr=5e-4, warmup_steps=2000, eval_every=2000),
    }
    metric_specs = specs(
        MetricSpec("bleu", "higher", "score", "BLEU",
                   "sacrebleu corpus BLEU (0-100) on detokenised text, beam search"),
        MetricSpec("chrf", "higher", "score", "chrF", "sacrebleu corpus chrF (0-100), beam search"),
        MetricSpec("loss", "lower", "score", "nats/token", "teacher-forced cross-entropy per target token"),
        MetricSpec("sentences_per_s", "higher", "efficiency", "sentences/s",
                   "sentences translated per second of decoding"),
        MetricSpec("ms_per_token", "lower", "efficiency", "ms/token",
                   "milliseconds of decoding per generated token (the end token included)"),
        MetricSpec("bleu_by_length", "higher", "per_length", "BLEU",
                   "BLEU of the sentences whose source has up to the stored number of words "
                   "(and more than the previous bucket's)"),
        MetricSpec("sentences_by_length", None, "info", "sentences", "sentences in the source-length bucket"),
    )
    table_metrics = (("test", "bleu"), ("test", "chrf"), ("valid", "bleu"), ("test", "sentences_per_s"),
                     ("test", "ms_per_token"))
    length_metric = "bleu_by_length"
    dev_metric = "bleu"
    dev_split = "valid"

    def __init__(self, options: MTOptions, data_dir):
        super().__init__(options, data_dir)
        if options.train_src:
            paths = {"train": (options.train_src, options.train_tgt), "valid": (options.valid_src, options.valid_tgt),
                     "test": (options.test_src, options.test_tgt)}
            paths = {k: (user_file("mt", f"{k}_src", a), user_file("mt", f"{k}_tgt", b)) for k, (a, b) in paths.items()}
        else:
            s, t = options.src, options.tgt
            names = {"train": "train", "valid": "val",
                     **{("test" if n == "test_2016_flickr" else n): n for n in options.test_sets}}
            folder = find_dataset(self.dataset, [f"raw/{n}.{x}.gz" for n in names.values() for x in (s, t)],
                                  data_dir).resolve() / "raw"
            paths = {k: (folder / f"{n}.{s}.gz", folder / f"{n}.{t}.gz") for k, n in names.items()}
        self.paths = paths
        self.text = {split: read_parallel(a.resolve(), b.resolve()) for split, (a, b) in paths.items()}
        self.final_splits = ("valid", *(k for k in paths if k not in ("train", "valid")))
        self.train_kept = None  # indices of the training pairs used; None: all
        if options.train_max_src_words:
            self.train_kept = [i for i, s in enumerate(self.text["train"][0])
                               if len(s.split()) <= options.train_max_src_words]
            if not self.train_kept:
                raise ValueError(f"mt: no training pair has at most {options.train_max_src_words} source words")

    # the tokenisers and the ids are made on first use: checking the files does not need them
    @functools.cached_property
    def _tokenizers(self):
        src_train, tgt_train = self.text["train"]
        if self.options.vocab == "shared":
            shared = train_bpe(src_train + tgt_train, self.options.vocab_size)
            return shared, shared
        return train_bpe(src_train, self.options.vocab_size), train_bpe(tgt_train, self.options.vocab_size)

    @property
    def src_tok(self):
        return self._tokenizers[0]

    @property
    def tgt_tok(self):
        return self._tokenizers[1]

    @functools.cached_property
    def encoded(self) -> dict[str, list[tuple[list[int], list[int]]]]:
        encoded = {split: self._encode(*pair) for split, pair in self.text.items()}
        if self.train_kept is not None:
            encoded["train"] = [encoded["train"][i] for i in self.train_kept]
        return encoded

    def _encode(self, src: tuple[str, ...], tgt: tuple[str, ...]) -> list[tuple[list[int], list[int]]]:
        a = [e.ids for e in self.src_tok.encode_batch(list(src))]
        b = [e.ids for e in self.tgt_tok.encode_batch(list(tgt))]
        return list(zip(a, b))

    def info(self) -> dict:
        vocab = hashlib.sha256(self.src_tok.to_str().encode() + self.tgt_tok.to_str().encode()).hexdigest()[:16]
        return {"files": {k: [str(p) for p in v] for k, v in self.paths.items()},
                "sentences": {k: len(v[0]) for k, v in self.text.items()},
                "train_pairs_used": len(self.encoded["train"]),
                "vocab_sizes": [self.src_tok.get_vocab_size(), self.tgt_tok.get_vocab_size()],
                "tokenizer_sha256": vocab, **self.signatures()}

    def signatures(self) -> dict[str, str]:
        """sacrebleu's signatures of the scores this task reports, and the decoding mode."""
        from sacrebleu.metrics import BLEU, CHRF

        bleu, chrf = BLEU(), CHRF()
        for metric in (bleu, chrf):  # a signature names the number of references: one, as evaluate scores
            metric.corpus_score(["x"], [["x"]])
        return {"bleu_signature": str(bleu.get_signature()), "chrf_signature": str(chrf.get_signature()),
                "decoding": f"beam {self.options.beam}, alpha {self.options.alpha}" if self.options.beam > 1
                else "greedy"}

    def build_model(self, backbone: nn.Module) -> Seq2Seq:
        """The backbone encodes; a causal twin of it (same family, size and options) decodes."""
        from harness.core.registry import ARCHITECTURES

        if backbone.preset is None:
            raise ValueError("mt sizes its decoder by the encoder's preset: build the encoder with build_backbone")
        arch = backbone.registered_name
        options = backbone.options.model_dump()
        options["bidirectional"] = False
        if "cross_attention" in ARCHITECTURES.get(arch).Options.model_fields:
            options["cross_attention"] = True
            options["d_ff"] = None  # solved again for the decoder's budget
        decoder = build_backbone(arch, backbone.preset, options)
        return Seq2Seq(backbone, decoder, self.src_tok.get_vocab_size(), self.tgt_tok.get_vocab_size(),
                       self.options.attention, self.options.dropout)

    def _batch(self, pairs, max_len: int | None = None) -> Batch:
        src = [s[:max_len] for s, _ in pairs]
        tgt = [[BOS, *t, EOS][:None if max_len is None else max_len + 1] for _, t in pairs]
        batch = {}
        batch["src"], batch["src_mask"] = pad(src, PAD)
        # a target may be empty: its start token is still read
        batch["tgt_in"], batch["tgt_out"], batch["tgt_mask"] = pad_shifted(tgt, PAD)
        return batch

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        for pairs in shuffled_batches(self.encoded["train"], train.batch_size, generator, "mt"):
            yield self._batch(pairs, train.seq_len)

    def loss(self, model: Seq2Seq, batch: Batch) -> torch.Tensor:
        scored = batch["tgt_out"] != PAD
        logits = model(batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"], scored)
        return F.cross_entropy(logits.float(), batch["tgt_out"][scored])

    def batch_tokens(self, batch: Batch) -> int:
        """Target tokens predicted (the end token included)."""
        return int((batch["tgt_out"] != PAD).sum())

    def translate(self, model: Seq2Seq, split: str, limit: int | None = None, width: int = 1):
        """Detokenised translations of ``split`` (its first ``limit`` sentences), the seconds the
        decoding took, and the tokens generated."""
        pairs = self.encoded[split][:limit]
        device = next(model.parameters()).device
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]))
        size = self.options.eval_batch_size
        out: list[str | None] = [None] * len(pairs)
        generated = 0
        watch = Stopwatch(device)  # decoding only, between device synchronisations
        for k in range(0, len(order), size):
            rows = order[k:k + size]
            batch = self._batch([pairs[i] for i in rows])
            src, mask = batch["src"].to(device), batch["src_mask"].to(device)
            limit_len = max_length(mask, self.options.max_len_a, self.options.max_len_b)
            watch.start()
            if width == 1:
                hyps = greedy(model, src, mask, BOS, EOS, limit_len)
            else:
                hyps = beam_search(model, src, mask, BOS, EOS, limit_len, width, self.options.alpha)
            watch.stop()
            for i, hyp in zip(rows, hyps):
                out[i] = self.tgt_tok.decode(hyp.tokens)
                generated += len(hyp.tokens) + 1
        return out, watch.elapsed, generated

    @torch.no_grad()
    def evaluate(self, model, split, train, max_tokens, lengths=True) -> list[Metric]:
        from sacrebleu.metrics import BLEU, CHRF

        final = lengths  # the training loop's evaluations ask for no length view
        limit = None if final else self.options.dev_sentences
        hyps, seconds, generated = self.translate(model, split, limit, self.options.beam if final else 1)
        src_text, refs = (x[:len(hyps)] for x in self.text[split])
        bleu, chrf = BLEU(), CHRF()
        metrics = [Metric(split, "bleu", bleu.corpus_score(hyps, [refs]).score),
                   Metric(split, "chrf", chrf.corpus_score(hyps, [refs]).score),
                   Metric(split, "sentences_per_s", len(hyps) / seconds),
                   Metric(split, "ms_per_token", 1000 * seconds / generated)]
        if final:
            metrics.append(Metric(split, "loss", self._loss(model, split)))
            metrics += by_length(split, "bleu_by_length", [len(s.split()) for s in src_text], LENGTH_EDGES,
                                 lambda chosen: BLEU().corpus_score([hyps[i] for i in chosen],
                                                                    [[refs[i] for i in chosen]]).score)
        return metrics

    def _loss(self, model, split: str) -> float:
        """Teacher-forced cross-entropy per target token."""
        pairs = self.encoded[split]
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for k in range(0, len(pairs), self.options.eval_batch_size):
            batch = {key: v.to(device) for key, v in self._batch(pairs[k:k + self.options.eval_batch_size]).items()}
            scored = batch["tgt_out"] != PAD
            logits = model(batch["src"], batch["src_mask"], batch["tgt_in"], batch["tgt_mask"], scored)
            total += F.cross_entropy(logits.float(), batch["tgt_out"][scored], reduction="sum").item()
            count += int(scored.sum())
        return total / count
