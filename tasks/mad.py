"""MAD: the six synthetic tasks of Mechanistic Architecture Design (Poli et al. 2024, "Mechanistic
Design and Scaling of Hybrid Architectures"; mad-lab, ``mad/data/instances.py`` and
``configs/tasks/*.yml``), one registered task with ``name`` picking one:

- ``in_context_recall``: key–value pairs, keys and values from two halves of the vocabulary, each
  key's value fixed within a sequence and drawn anew for each sequence; at every key seen before,
  name its value (multi-query, as MAD's benchmark runs it). The last pair repeats a key.
- ``fuzzy_recall``: the same with keys and values of 1 … ``k_motif_size`` / ``v_motif_size``
  adjacent tokens (distinct within a motif); held-out keys are always ``k_motif_size`` long, and the
  sequence is filled to its length from the left with a fill token.
- ``noisy_recall``: in-context recall in which a ``frac_noise`` share of the pairs is replaced by
  two tokens of a separate noise vocabulary.
- ``selective_copying``: ``num_tokens_to_copy`` tokens scattered among blanks (every blank falls in
  the gap before one of them, as mad-lab's generator places them), a copy token, then as many
  blanks: at each of those, name the next token to copy, in order.
- ``compression``: random tokens then a compression token; a head decodes the backbone's state at
  the compression token, with each position's sinusoidal encoding, through an MLP (MAD's
  autoencoder) into the token at that position (every position scored, the compression token's
  too, as mad-lab does).
- ``memorization``: (key, insert token) pairs; at each insert token, name the key's value under a
  key → value mapping fixed for the task (by ``data_seed``) and shared by every split, so held-out
  sequences repeat training keys.

The three recall tasks train on next-token prediction at every position and are scored on the
values of keys seen before; the other three train and are scored on the same positions. Each
split is drawn from the same distribution (valid and test as mad-lab's test set); ``n_test_per_cell``
is MAD's number of test examples (1,280). Tokens keep mad-lab's layout (keys, then values, then
noise; the special tokens last), shifted by one for the padding id 0.

Each option left unset takes its task's published baseline (``BASELINES``); ``setting`` names a
published setting at once (``noisy_recall/frac_noise=0.4``: the name, and one option changed from
the baseline, as MAD varies one factor at a time; see ``published_settings``). Options a task does
not use stay None.
"""
from __future__ import annotations

import random
import typing
from typing import Literal

import pydantic
import torch
from torch import nn

from architectures.transformer import sinusoidal_table
from harness.core.registry import TASKS, UnknownName
from harness.core.train_config import TrainConfig
from tasks.token_targets import IGNORE, PAD, Tagged, TokenTargetOptions, TokenTargetTask

Name = Literal["in_context_recall", "fuzzy_recall", "noisy_recall", "selective_copying", "compression",
               "memorization"]
NAMES: tuple[str, ...] = typing.get_args(Name)

#: each task's baseline setting (mad-lab configs/tasks/*.yml; MADConfig's defaults for the rest)
BASELINES: dict[str, dict] = {
    "in_context_recall": dict(vocab_size=16, length=128, n_train=12800, frac_noise=0.0, noise_vocab_size=0),
    "fuzzy_recall": dict(vocab_size=16, length=128, n_train=12800, k_motif_size=3, v_motif_size=3,
                         frac_noise=0.0, noise_vocab_size=0),
    "noisy_recall": dict(vocab_size=32, length=128, n_train=12800, frac_noise=0.2, noise_vocab_size=16),
    "selective_copying": dict(vocab_size=16, length=256, n_train=12800, num_tokens_to_copy=16),
    "compression": dict(vocab_size=16, length=32, n_train=12800),
    "memorization": dict(vocab_size=256, length=32, n_train=256),
}
_TRAIN_SIZES = (6400, 3200, 1600, 800)
#: the published changes: each value replaces its option's baseline, one at a time
CHANGES: dict[str, dict[str, tuple]] = {
    "in_context_recall": dict(vocab_size=(32, 64, 128), length=(256, 512, 1024), n_train=_TRAIN_SIZES),
    "fuzzy_recall": dict(vocab_size=(32, 64, 128), length=(256, 512, 1024), n_train=_TRAIN_SIZES),
    # vocabularies of 32, 64 and 128 plus the 16 noise tokens
    "noisy_recall": dict(vocab_size=(48, 80, 144), length=(256, 512, 1024), n_train=_TRAIN_SIZES,
                         frac_noise=(0.4, 0.6, 0.8)),
    "selective_copying": dict(vocab_size=(32, 64, 128), length=(512, 1024), n_train=_TRAIN_SIZES,
                              num_tokens_to_copy=(32, 64, 96)),
    "compression": dict(vocab_size=(32, 64, 128), length=(64, 128, 256), n_train=_TRAIN_SIZES),
    "memorization": dict(vocab_size=(512, 1024, 2048, 4096, 8192)),
}
#: options whose unset value is the task's baseline (None where the task does not use them)
SETTING_OPTIONS = ("vocab_size", "length", "n_train", "frac_noise", "noise_vocab_size", "k_motif_size",
                   "v_motif_size", "num_tokens_to_copy")
RECALL = ("in_context_recall", "fuzzy_recall", "noisy_recall")


def _published() -> dict[str, tuple[str, dict]]:
    """Setting → (name, the option it changes → value), each task's baseline first."""
    out = {}
    for name in NAMES:
        out[name] = (name, {})
        for option, values in CHANGES[name].items():
            out.update({f"{name}/{option}={value}": (name, {option: value}) for value in values})
    return out


PUBLISHED = _published()


def published_settings() -> list[str]:
    """Every published setting as a ``setting`` value: each task's baseline (its name), then each
    change (``name/option=value``), in mad-lab's order."""
    return list(PUBLISHED)


def parse_setting(setting: str) -> tuple[str, dict]:
    """``noisy_recall/frac_noise=0.4`` → ("noisy_recall", {"frac_noise": 0.4}); only published
    settings are accepted."""
    if setting not in PUBLISHED:
        known = [s for s in PUBLISHED if s.partition("/")[0] == setting.partition("/")[0]] or list(PUBLISHED)
        raise ValueError(str(UnknownName("MAD setting", setting, known)))
    return PUBLISHED[setting]


class MADOptions(TokenTargetOptions):
    name: Name = "in_context_recall"
    #: a published setting (``published_settings``), which sets ``name`` and one option; a
    #: shorthand only, left out of the stored options, so the run is the one its options name
    setting: str | None = pydantic.Field(default=None, exclude=True)
    #: MAD's vocabulary, its special and noise tokens included
    vocab_size: int | None = pydantic.Field(default=None, ge=2)
    #: MAD's seq_len (the recall tasks read one token less: the last token is only predicted)
    length: int | None = pydantic.Field(default=None, ge=2)
    n_train: int | None = pydantic.Field(default=None, ge=1)
    n_valid: int = pydantic.Field(default=1280, ge=1)
    #: held-out test examples (MAD: 1,280)
    n_test_per_cell: int = pydantic.Field(default=1280, ge=1)
    #: recall: share of pairs replaced by noise, and the noise tokens (the last of the vocabulary)
    frac_noise: float | None = pydantic.Field(default=None, ge=0, lt=1)
    noise_vocab_size: int | None = pydantic.Field(default=None, ge=0)
    #: fuzzy recall: the longest key and value, in tokens
    k_motif_size: int | None = pydantic.Field(default=None, ge=1)
    v_motif_size: int | None = pydantic.Field(default=None, ge=1)
    #: selective copying: tokens to copy
    num_tokens_to_copy: int | None = pydantic.Field(default=None, ge=1)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _published_defaults(cls, data):
        """Apply ``setting``, then fill every unset option of the task with its baseline."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        setting = data.pop("setting", None)
        if setting is not None:
            # the name comes from the setting (a sweep's name axis collapses onto it)
            data["name"], change = parse_setting(str(setting))
            for option, value in change.items():
                if data.get(option) is not None and data[option] != value:
                    raise ValueError(f"setting {setting} sets {option}={value}, but {option}={data[option]} "
                                     "is given too")
                data[option] = value
        for option, value in BASELINES.get(data.get("name", "in_context_recall"), {}).items():
            if data.get(option) is None:
                data[option] = value
        return data

    @pydantic.model_validator(mode="after")
    def _setting_fits(self):
        name, used = self.name, BASELINES[self.name]
        unused = [o for o in SETTING_OPTIONS if o not in used and getattr(self, o) is not None]
        if unused:
            raise ValueError(f"mad/{name} takes no {', '.join(unused)} (its setting: {', '.join(used)})")
        V, L = self.vocab_size, self.length
        if name in RECALL:
            if self.frac_noise > 0 and self.noise_vocab_size < 1:
                raise ValueError(f"mad/{name}: frac_noise {self.frac_noise} needs noise_vocab_size ≥ 1")
            keys, values = split_half(V - self.noise_vocab_size - (name == "fuzzy_recall"))
            k, v = (self.k_motif_size, self.v_motif_size) if name == "fuzzy_recall" else (1, 1)
            if keys < k or values < v:
                raise ValueError(f"mad/{name}: vocab_size {V} leaves {keys} key and {values} value tokens, "
                                 f"too few for keys of {k} and values of {v} distinct tokens")
            if name == "fuzzy_recall" and L < 4 * (k + v):
                raise ValueError(f"mad/fuzzy_recall: length {L} is shorter than 4 × (k_motif_size + v_motif_size)")
            if name != "fuzzy_recall" and (L % 2 or L < 4):
                raise ValueError(f"mad/{name}: length {L} must be even and at least 4 (pairs of two tokens)")
        elif name == "selective_copying":
            if V < 3 or L <= 2 * self.num_tokens_to_copy + 1:
                raise ValueError(f"mad/selective_copying: needs vocab_size ≥ 3 and length > 2 × "
                                 f"num_tokens_to_copy + 1 (got {V}, {L}, {self.num_tokens_to_copy})")
        elif name == "memorization" and (V < 3 or L % 2):
            raise ValueError(f"mad/memorization: needs vocab_size ≥ 3 and an even length (got {V}, {L})")
        return self


def split_half(n: int) -> tuple[int, int]:
    """Tokens 0 … n−1 shared as mad-lab does: the first ⌊n/2⌋ keys, the rest values."""
    return n // 2, n - n // 2


def symbol_names(options: MADOptions) -> list[str]:
    """The name of each of MAD's token ids 0 … vocab_size−1, by its role in the task."""
    name, V = options.name, options.vocab_size
    if name in RECALL:
        special = ["<fill>"] if name == "fuzzy_recall" else []
        noise = options.noise_vocab_size
        keys, values = split_half(V - noise - len(special))
        return ([f"k{i}" for i in range(keys)] + [f"v{i}" for i in range(values)]
                + [f"n{i}" for i in range(noise)] + special)
    if name == "memorization":
        keys, values = split_half(V - 1)
        return [f"k{i}" for i in range(keys)] + [f"v{i}" for i in range(values)] + ["<insert>"]
    special = ["<blank>", "<copy>"] if name == "selective_copying" else ["<compress>"]
    return [f"t{i}" for i in range(V - len(special))] + special


# Answer functions: the rule each task's targets follow, written from the symbols alone (not from
# the generators' bookkeeping); tests check every generated example against them.

def recall_answers(symbols: list[str]) -> dict[int, str]:
    """In-context and noisy recall: position → the value that followed the first occurrence of
    the key there, for every key that occurred before."""
    answers, first = {}, {}
    for pos, s in enumerate(symbols):
        if s.startswith("k"):
            if s in first:
                answers[pos] = symbols[first[s] + 1]
            else:
                first[s] = pos
    return answers


def fuzzy_recall_answers(symbols: list[str]) -> dict[int, str]:
    """Fuzzy recall: a run of key tokens and the run of value tokens after it form a pair; where a
    key run repeats an earlier one, its last token and every value token but the last are scored
    with the next token of the earlier value."""
    runs, pos = [], 0  # (kind, start, tokens) of each maximal run of key or value tokens
    while pos < len(symbols):
        kind = symbols[pos][0]
        end = pos
        while end < len(symbols) and symbols[end][0] == kind:
            end += 1
        if kind in "kv":
            runs.append((kind, pos, tuple(symbols[pos:end])))
        pos = end
    answers, values = {}, {}
    for (kind, start, key), (next_kind, _, value) in zip(runs, runs[1:] + [("", 0, ())]):
        if kind != "k":
            continue
        if key in values:
            last = start + len(key) - 1
            for i, token in enumerate(values[key]):
                answers[last + i] = token
        else:
            values[key] = value if next_kind == "v" else ()
    return answers


def selective_copy_answers(symbols: list[str]) -> dict[int, str]:
    """Selective copying: the tokens before the copy token, blanks left out, in order, at the
    positions after it."""
    copy = symbols.index("<copy>")
    data = [s for s in symbols[:copy] if s != "<blank>"]
    return {copy + 1 + i: s for i, s in enumerate(data)}


def compression_answers(symbols: list[str]) -> dict[int, str]:
    """Compression: every position names its own token."""
    return dict(enumerate(symbols))


def memorization_answers(symbols: list[str], facts: dict[str, str]) -> dict[int, str]:
    """Memorization: at each insert token, the value ``facts`` gives the key before it."""
    return {pos: facts[symbols[pos - 1]] for pos, s in enumerate(symbols) if s == "<insert>"}


class CompressionModel(nn.Module):
    """MAD's autoencoder head: the backbone's state at the last real token (the compression token),
    plus the sinusoidal encoding of each position, through a two-layer MLP to the logits of the
    token at that position."""

    def __init__(self, backbone: nn.Module, vocab_size: int, n_outputs: int):
        super().__init__()
        d = backbone.d_model
        self.embed = nn.Embedding(vocab_size, d, padding_idx=0)
        self.backbone = backbone
        self.decoder = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(),
                                     nn.LayerNorm(d), nn.Linear(d, d), nn.GELU())
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, n_outputs))

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """Logits at every position, or (``where``) at those positions only, in row-major order,
        as ``PositionClassifier`` gives them."""
        states = self.backbone(self.embed(tokens), mask)
        code = states[torch.arange(len(states), device=states.device), mask.sum(1) - 1]  # (B, d)
        positions = sinusoidal_table(tokens.shape[1], code.shape[-1], code.device, code.dtype)
        if where is None:
            return self.head(self.decoder(code[:, None, :] + positions[None]))
        rows, cols = where.nonzero(as_tuple=True)
        return self.head(self.decoder(code[rows] + positions[cols]))


@TASKS.register("mad")
class MAD(TokenTargetTask):
    """MAD's six synthetic tasks (Poli et al. 2024): three kinds of recall, copying, compression, memory."""

    Options = MADOptions
    version = "1"
    #: six runs a backbone, minutes each on a CPU at the smoke budget; ``--tasks mad`` runs them
    in_all = False
    sweep_axes = {"name": NAMES}
    budgets = {
        # train.seq_len only states the longest sequence the budget is meant for: each setting's
        # `length` makes its sequences
        "smoke": dict(steps=200, batch_size=32, seq_len=256, lr=1e-3, weight_decay=0.0, warmup_steps=20,
                      eval_every=100),
        # mad-lab: batch 128, 200 epochs (20,000 steps at the baseline's 12,800 examples), AdamW
        # (β2 0.999) with lr 5e-4 and weight decay 0 unless swept, cosine decay (to 1e-6) and no warm-up
        "full": dict(steps=20000, batch_size=128, seq_len=1024, lr=5e-4, weight_decay=0.0, beta2=0.999,
                     warmup_steps=0, min_lr_ratio=0.0, eval_every=500),
    }

    def __init__(self, options: MADOptions, data_dir):
        super().__init__(options, data_dir)
        self.symbols = symbol_names(options)
        self.vocab = [PAD] + self.symbols
        self.n_outputs = len(self.vocab)
        self.ids = {s: i + 1 for i, s in enumerate(self.symbols)}
        #: the symbols of each role: k(eys), v(alues), n(oise), t(okens to copy or compress)
        self.role = {r: [s for s in self.symbols if s.startswith(r)] for r in "kvnt"}
        if options.name == "memorization":
            self.facts = self._facts()

    @property
    def held_out_unseen(self) -> bool:
        # memorisation is tested on the training keys by design
        return self.options.name != "memorization"

    def build_model(self, backbone: nn.Module) -> nn.Module:
        if self.options.name == "compression":
            return CompressionModel(backbone, len(self.vocab), self.n_outputs)
        return super().build_model(backbone)

    def _facts(self) -> dict[str, str]:
        """Memorization's key → value mapping: every key, each to its own value, fixed by data_seed."""
        draw = random.Random(self.options.data_seed * 1000 + 3)  # splits draw from offsets 0, 1, 2
        keys, values = list(self.role["k"]), list(self.role["v"])
        draw.shuffle(keys)
        draw.shuffle(values)
        return dict(zip(keys, values))

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Tagged]:
        o = self.options
        count = {"train": o.n_train, "valid": o.n_valid, "test": o.n_test_per_cell}[split]
        make = {"in_context_recall": self._recall, "noisy_recall": self._recall, "fuzzy_recall": self._fuzzy,
                "selective_copying": self._selective_copy, "compression": self._compression,
                "memorization": self._memorization}[o.name]
        return [make(rng, split == "train") for _ in range(count)]

    def _tagged(self, symbols: list[str], answers: list[str | None]) -> Tagged:
        return Tagged(tuple(self.ids[s] for s in symbols),
                      tuple(IGNORE if a is None else self.ids[a] for a in answers), self.options.length)

    def _shifted(self, sequence: list[str], answers: list[str | None], training: bool) -> Tagged:
        """A recall example read as next-token prediction: the input is the sequence less its last
        token; training predicts every next token, evaluation only the answers."""
        return self._tagged(sequence[:-1], sequence[1:] if training else answers[1:])

    def _recall(self, rng: random.Random, training: bool) -> Tagged:
        o = self.options
        keys, values, noise = self.role["k"], self.role["v"], self.role["n"]
        pairs = o.length // 2
        kept = rng.randrange(pairs - 1)  # never noise, so the last pair has a key to repeat
        value_of: dict[str, str] = {}
        sequence, answers = [], []
        for i in range(pairs - 1):
            if o.frac_noise > 0 and i != kept and rng.random() < o.frac_noise:
                sequence += [rng.choice(noise), rng.choice(noise)]
                answers += [None, None]
                continue
            key = rng.choice(keys)
            seen = key in value_of
            value = value_of.setdefault(key, rng.choice(values))
            sequence += [key, value]
            answers += [None, value if seen else None]
        key = rng.choice(list(value_of))
        sequence += [key, value_of[key]]
        answers += [None, value_of[key]]
        return self._shifted(sequence, answers, training)

    def _fuzzy(self, rng: random.Random, training: bool) -> Tagged:
        o = self.options
        K, W = o.k_motif_size, o.v_motif_size
        keys, values, noise = self.role["k"], self.role["v"], self.role["n"]
        key_sizes = range(1, K + 1) if training else [K]  # held out: always the longest keys
        value_sizes = range(1, W + 1)
        probe_key = tuple(rng.sample(keys, rng.choice(key_sizes)))
        probe_value = tuple(rng.sample(values, rng.choice(value_sizes)))
        probe = len(probe_key) + len(probe_value)
        limit = o.length - probe - (K + W)  # pairs are added while the sequence is shorter
        # where the probe pair goes: early enough that it always does (mad-lab draws from up to
        # length − 2·probe and can run out of sequence first, then scoring a value never shown)
        probe_at = rng.randrange(limit - (K + W) + 1)
        value_of: dict[tuple, tuple] = {}
        sequence, answers = [], []
        while len(sequence) < limit:
            key_size, value_size = rng.choice(key_sizes), rng.choice(value_sizes)
            if probe_key not in value_of and len(sequence) >= probe_at:
                key, value = probe_key, probe_value
            elif o.frac_noise > 0 and rng.random() < o.frac_noise:
                sequence += [rng.choice(noise) for _ in range(key_size + value_size)]
                answers += [None] * (key_size + value_size)
                continue
            else:
                key = tuple(rng.sample(keys, key_size))
                value = probe_value if key == probe_key else tuple(rng.sample(values, value_size))
            seen = key in value_of
            value = value_of.setdefault(key, value)
            sequence += [*key, *value]
            answers += [None] * len(key) + (list(value) if seen else [None] * len(value))
        sequence += [*probe_key, *probe_value]
        answers += [None] * len(probe_key) + list(probe_value)
        fill = o.length + 1 - len(sequence)
        return self._shifted(["<fill>"] * fill + sequence, [None] * fill + answers, training)

    def _selective_copy(self, rng: random.Random, training: bool) -> Tagged:
        o = self.options
        n = o.num_tokens_to_copy
        data = [rng.choice(self.role["t"]) for _ in range(n)]
        before = [0] * n  # blanks in the gap before each token to copy
        for _ in range(o.length - 2 * n - 1):
            before[rng.randrange(n)] += 1
        symbols = [s for gap, token in zip(before, data) for s in ["<blank>"] * gap + [token]]
        symbols += ["<copy>"] + ["<blank>"] * n
        return self._tagged(symbols, [None] * (o.length - n) + data)

    def _compression(self, rng: random.Random, training: bool) -> Tagged:
        symbols = [rng.choice(self.role["t"]) for _ in range(self.options.length - 1)] + ["<compress>"]
        return self._tagged(symbols, symbols)

    def _memorization(self, rng: random.Random, training: bool) -> Tagged:
        keys = list(self.facts)
        symbols, answers = [], []
        for _ in range(self.options.length // 2):
            key = rng.choice(keys)
            symbols += [key, "<insert>"]
            answers += [None, self.facts[key]]
        return self._tagged(symbols, answers)
