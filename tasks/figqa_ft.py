"""Fig-QA fine-tuned: each backbone's ``lm`` model trained further to choose between two endings.

An item is a figurative start phrase and two endings. The model's score for an ending is
log P(ending | <eos> start phrase), summed over the ending's words, exactly as the zero-shot
``figqa`` task scores it through lm-eval; training minimises the cross-entropy of the two scores
against the right ending, so the whole language model (embeddings, backbone, softmax) is tuned.

The checkpoint is chosen on ``valid``, pairs held out of the training file (a tenth of its pair
ids, both items of a pair on the same side); accuracy is reported on ``dev``, Fig-QA's dev split
(its test labels are hidden), which nothing here trains or selects on.
"""
from __future__ import annotations

import csv
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import pydantic
import torch
import torch.nn.functional as F
from torch import nn

from harness.core.batching import pad_shifted
from harness.core.train_config import TrainConfig
from harness.core.data import find_dataset
from harness.core.registry import TASKS
from harness.core.metrics import Metric, MetricSpec, specs
from tasks.base import Batch, FineTunedTask, TaskOptions, Upstream, shuffled_batches
from tasks.lm_eval.tokenizer import tokenizer_for

COLUMNS = ("startphrase", "ending1", "ending2", "labels", "qid")


@dataclass(frozen=True)
class Item:
    start: str
    endings: tuple[str, str]
    label: int
    qid: str


@functools.lru_cache(maxsize=8)
def load_figqa(path: Path) -> tuple[Item, ...]:
    """Rows of a Fig-QA CSV file; a malformed row names the file and line."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}:1: missing columns {', '.join(missing)}")
        items = []
        for row in reader:
            if row["labels"] not in ("0", "1"):
                raise ValueError(f"{path}:{reader.line_num}: labels must be 0 or 1, got {row['labels']!r}")
            items.append(Item(row["startphrase"], (row["ending1"], row["ending2"]), int(row["labels"]),
                              row["qid"]))
    return tuple(items)


def held_out(qid: str, fraction: float) -> bool:
    """Whether pair ``qid`` belongs to the validation slice (a fixed hash, not the run seed)."""
    digest = int(hashlib.sha256(qid.encode()).hexdigest()[:8], 16)
    return digest / 2**32 < fraction


class FigQAFTOptions(TaskOptions):
    #: the training file: train_s (200 items), train (1,458) or train_xl (8,016)
    train_file: Literal["train_s", "train", "train_xl"] = "train_xl"
    #: fraction of the training file's pairs held out to choose the checkpoint
    valid_fraction: float = pydantic.Field(default=0.1, gt=0, lt=1)
    #: items per evaluation batch
    eval_batch_size: int = pydantic.Field(default=128, ge=1)


@TASKS.register("figqa_ft")
class FigQAFineTuned(FineTunedTask):
    """Fig-QA fine-tuned from each backbone's lm model: cross-entropy over the two endings' scores."""

    Options = FigQAFTOptions
    version = "1"
    dataset = "figqa"
    upstream = "lm"
    budgets = {
        # seq_len caps an item's length in words (start phrase and ending); none is longer than 64
        "smoke": dict(steps=300, batch_size=32, seq_len=64, lr=1e-3, warmup_steps=30, eval_every=50),
        "study": dict(steps=1000, batch_size=32, seq_len=64, lr=3e-4, warmup_steps=100, eval_every=100),
        "full": dict(steps=3000, batch_size=32, seq_len=64, lr=3e-4, warmup_steps=200, eval_every=250),
    }
    metric_specs = specs(
        MetricSpec("accuracy", "higher", "score", "fraction",
                   "share of items whose right ending scores higher (a tie picks the first ending)"),
        MetricSpec("loss", "lower", "score", "nats/item",
                   "cross-entropy of the two endings' scores against the right one"),
        MetricSpec("ties", None, "info", "fraction",
                   "share of items whose two endings score the same: their words differ only where both "
                   "read as <unk>, so ties follow from the data and the lm vocabulary, the same for every "
                   "backbone; not a ranking"),
        MetricSpec("items", None, "info", "items", "items scored"),
    )
    table_metrics = (("dev", "accuracy"), ("valid", "accuracy"))
    dev_metric = "accuracy"
    dev_split = "valid"
    final_splits = ("valid", "dev")

    def __init__(self, options: FigQAFTOptions, data_dir, pretrained: Upstream | None = None):
        super().__init__(options, data_dir, pretrained)
        folder = find_dataset(self.dataset, [f"{options.train_file}.csv", "dev.csv"], data_dir).resolve()
        rows = load_figqa(folder / f"{options.train_file}.csv")
        self.items = {
            "train": [r for r in rows if not held_out(r.qid, options.valid_fraction)],
            "valid": [r for r in rows if held_out(r.qid, options.valid_fraction)],
            "dev": list(load_figqa(folder / "dev.csv")),
        }
        self.encoded: dict[str, list] | None = None
        self.unk_rate = None
        if pretrained is not None:  # the lm model's vocabulary tokenises the items
            tokenizer = tokenizer_for(pretrained.vocab, pretrained.extra)
            self.encoded = {split: [(tuple(tokenizer.split(r.start, " " + e) for e in r.endings), r.label)
                                    for r in items] for split, items in self.items.items()}
            self.eos = tokenizer.eos
            self.unk_rate = tokenizer.unknown_rate

    def fine_tune_model(self, upstream: Upstream) -> nn.Module:
        """The ``lm`` model itself is what is tuned."""
        return upstream.model

    def info(self) -> dict:
        sizes = {split: len(items) for split, items in self.items.items()}
        return {"items": sizes, "unk_rate": self.unk_rate}

    def _encoded(self, split: str) -> list:
        self._pretrained()  # the items are tokenised with the upstream model's vocabulary
        return self.encoded[split]

    def _batch(self, items: list, max_len: int) -> Batch:
        """Both endings of every item as rows 2i, 2i+1: inputs, targets, mask, and ``scored``,
        the positions whose targets are the ending's words."""
        rows = [[self.eos, *context, *ending][-(max_len + 1):] for endings, _ in items
                for context, ending in endings]
        ending_lengths = torch.tensor([len(ending) for endings, _ in items for _, ending in endings])
        inputs, targets, mask = pad_shifted(rows)
        first = (mask.sum(1) - ending_lengths).clamp(min=0)  # the ending's first target position
        scored = mask & (torch.arange(mask.shape[1]) >= first[:, None])
        return {"inputs": inputs, "targets": targets, "mask": mask, "scored": scored,
                "labels": torch.tensor([label for _, label in items])}

    def scores(self, model, batch: Batch) -> torch.Tensor:
        """(items, 2): each ending's summed log-probability."""
        lp = model.token_logprobs(batch["inputs"], batch["targets"], batch["mask"])
        return (lp.float() * batch["scored"]).sum(1).view(-1, 2)

    def train_batches(self, train: TrainConfig, generator: torch.Generator) -> Iterator[Batch]:
        for items in shuffled_batches(self._encoded("train"), train.batch_size, generator, "figqa_ft"):
            yield self._batch(items, train.seq_len)

    def loss(self, model, batch: Batch) -> torch.Tensor:
        return F.cross_entropy(self.scores(model, batch), batch["labels"])

    def batch_tokens(self, batch: Batch) -> int:
        return int(batch["mask"].sum())

    @torch.no_grad()
    def evaluate(self, model, split, train, max_tokens, lengths=True) -> list[Metric]:
        items = self._encoded(split)
        device = next(model.parameters()).device
        right = ties = 0
        loss = 0.0
        for i in range(0, len(items), self.options.eval_batch_size):
            batch = {k: v.to(device) for k, v in
                     self._batch(items[i:i + self.options.eval_batch_size], train.seq_len).items()}
            s = self.scores(model, batch)
            loss += F.cross_entropy(s, batch["labels"], reduction="sum").item()
            # on a tie the first ending is chosen, as lm-eval's zero-shot figqa does
            right += int(((s[:, 1] > s[:, 0]).long() == batch["labels"]).sum())
            ties += int((s[:, 0] == s[:, 1]).sum())
        n = len(items)
        return [Metric(split, "accuracy", right / n), Metric(split, "loss", loss / n),
                Metric(split, "ties", ties / n), Metric(split, "items", n)]
