"""Subject–verb number agreement at a controlled distance, with attractors (Linzen et al. 2016).

Sentences come from a small English grammar: a subject noun phrase, then modifiers (prepositional
phrases, object and subject relative clauses) whose nouns may be *attractors* (nouns of the other
number), then adverbs, up to the verb. The model reads the prefix up to the verb and says whether
the verb must be singular or plural. ``distance`` is the verb's position minus the subject noun's;
attractors are always the intervening nouns nearest to the verb, so a model that copies the
number of the nearest noun is right exactly when there are no attractors.
"""
from __future__ import annotations

import random

import pydantic

from harness.core.train_config import TrainConfig
from harness.core.metrics import MetricSpec, specs
from harness.core.registry import TASKS
from tasks.classification import PAD, ClassificationOptions, ClassificationTask, Example

NOUNS = [("dog", "dogs"), ("cat", "cats"), ("author", "authors"), ("pilot", "pilots"),
         ("doctor", "doctors"), ("farmer", "farmers"), ("teacher", "teachers"), ("senator", "senators"),
         ("child", "children"), ("woman", "women"), ("man", "men"), ("mouse", "mice"),
         ("student", "students"), ("driver", "drivers"), ("painter", "painters"), ("judge", "judges"),
         ("minister", "ministers"), ("guard", "guards"), ("nurse", "nurses"), ("officer", "officers"),
         ("singer", "singers"), ("dancer", "dancers"), ("lawyer", "lawyers"), ("baker", "bakers"),
         ("horse", "horses"), ("bird", "birds"), ("friend", "friends"), ("neighbour", "neighbours"),
         ("captain", "captains"), ("manager", "managers"), ("engineer", "engineers"), ("poet", "poets")]
#: present tense: (singular, plural)
VERBS = [("runs", "run"), ("smiles", "smile"), ("laughs", "laugh"), ("sleeps", "sleep"),
         ("waits", "wait"), ("is", "are"), ("has", "have"), ("was", "were"), ("likes", "like"),
         ("knows", "know"), ("sees", "see"), ("admires", "admire"), ("hates", "hate"),
         ("meets", "meet"), ("helps", "help"), ("watches", "watch")]
TRANSITIVE = [v for v in VERBS if v[0] in ("likes", "knows", "sees", "admires", "hates", "meets", "helps", "watches")]
#: past tense carries no number, so subject relative clauses give nothing away
PAST = ["saw", "met", "helped", "liked", "knew", "admired", "hated", "watched"]
PREPOSITIONS = ["near", "behind", "with", "beside", "of", "from", "for", "above"]
ADJECTIVES = ["old", "young", "tall", "small", "happy", "quiet", "famous", "angry", "clever", "kind"]
ADVERBS = ["often", "really", "never", "always", "quietly", "usually", "rarely", "still"]

SINGULAR, PLURAL = 0, 1


def modifier_length(kind: str) -> int:
    return 3 if kind == "pp" else 4


class AgreementOptions(ClassificationOptions):
    #: noun lemmas used (vocabulary size control), at most len(NOUNS)
    n_nouns: int = pydantic.Field(default=len(NOUNS), ge=2, le=len(NOUNS))
    #: attractors in training and test examples
    max_train_attractors: int = pydantic.Field(default=1, ge=0)
    max_test_attractors: int = pydantic.Field(default=4, ge=0)
    #: test distances run up to this multiple of the training distance (train.seq_len)
    test_distance_multiple: int = pydantic.Field(default=8, ge=1)
    n_test_per_cell: int = pydantic.Field(default=50, ge=1)
    #: share of sentences that open with a fronted prepositional phrase before the subject
    fronted_rate: float = pydantic.Field(default=0.5, ge=0.0, le=1.0)


class Grammar:
    def __init__(self, n_nouns: int, fronted_rate: float = 0.5):
        self.nouns = NOUNS[:n_nouns]
        self.fronted_rate = fronted_rate
        self.number = {form: num for pair in self.nouns for num, form in enumerate(pair)}
        words = [w for pair in self.nouns for w in pair] + [w for pair in VERBS for w in pair] + \
            PAST + PREPOSITIONS + ADJECTIVES + ADVERBS + ["the", "that", ","]
        self.vocab = [PAD] + sorted(set(words))

    @staticmethod
    def feasible(distance: int, attractors: int) -> bool:
        """Each attractor sits in a modifier of at least 3 tokens between subject and verb."""
        return distance >= 1 and 3 * attractors <= distance - 1

    def sentence(self, distance: int, attractors: int, rng: random.Random) -> tuple[list[str], int]:
        """(prefix up to the verb, subject number) with exactly this distance and attractor count."""
        if not self.feasible(distance, attractors):
            raise ValueError(f"no sentence has distance {distance} with {attractors} attractors")
        number = rng.choice((SINGULAR, PLURAL))
        room = distance - 1  # tokens between the subject noun and the verb
        n_mods = rng.randint(attractors, min(room // 3, attractors + 2))
        kinds = [rng.choice(("pp", "orc", "src")) for _ in range(n_mods)]
        for i in range(n_mods):  # prepositional phrases are shortest: use them until it fits
            if sum(map(modifier_length, kinds)) <= room:
                break
            kinds[i] = "pp"
        # non-attractors first, so the attractors are the nouns nearest the verb
        numbers = [number] * (n_mods - attractors) + [1 - number] * attractors
        filler = room - sum(map(modifier_length, kinds))
        slots = [rng.randrange(n_mods + 1) for _ in range(filler)]  # slot n_mods: adverbs before the verb

        def noun(num):
            return rng.choice(self.nouns)[num]

        words = []
        if rng.random() < self.fronted_rate:
            words += [rng.choice(PREPOSITIONS), "the", noun(rng.choice((SINGULAR, PLURAL))), ","]
        words += ["the", *rng.sample(ADJECTIVES, rng.randint(0, 1)), noun(number)]
        for i, (kind, num) in enumerate(zip(kinds, numbers)):
            adjectives = [rng.choice(ADJECTIVES) for _ in range(slots.count(i))]
            if kind == "pp":
                words += [rng.choice(PREPOSITIONS), "the", *adjectives, noun(num)]
            elif kind == "orc":  # the clause's own verb agrees with the intervening noun
                words += ["that", "the", *adjectives, noun(num), rng.choice(TRANSITIVE)[num]]
            else:
                words += ["that", rng.choice(PAST), "the", *adjectives, noun(num)]
        words += [rng.choice(ADVERBS) for _ in range(slots.count(n_mods))]
        return words, number


@TASKS.register("agreement")
class Agreement(ClassificationTask):
    """Subject–verb number agreement across controlled distance and attractors (synthetic grammar)."""

    Options = AgreementOptions
    version = "2"
    n_classes = 2
    metric_specs = {**ClassificationTask.metric_specs, **specs(
        MetricSpec("accuracy_attractors_*", "higher", "score", "fraction",
                   "accuracy on sentences with this many attractors, overall or at the stored distance"))}
    budgets = {
        # seq_len is the largest subject–verb distance seen in training
        "smoke": dict(steps=600, batch_size=64, seq_len=8, lr=3e-3, warmup_steps=50, eval_every=200),
        "full": dict(steps=10000, batch_size=128, seq_len=8, lr=1e-3, warmup_steps=500, eval_every=1000),
    }

    def __init__(self, options: AgreementOptions, data_dir):
        super().__init__(options, data_dir)
        self.grammar = Grammar(options.n_nouns, options.fronted_rate)
        self.vocab = self.grammar.vocab
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def cells(self, split: str, train: TrainConfig) -> list[tuple[int, int]]:
        if split == "test":
            top, attractors = train.seq_len * self.options.test_distance_multiple, self.options.max_test_attractors
        else:
            top, attractors = train.seq_len, self.options.max_train_attractors
        return [(d, k) for d in range(1, top + 1) for k in range(attractors + 1)
                if self.grammar.feasible(d, k)]

    def example(self, distance: int, attractors: int, rng: random.Random) -> Example:
        words, number = self.grammar.sentence(distance, attractors, rng)
        return Example(tuple(self.index[w] for w in words), number, distance, f"attractors_{attractors}")

    def generate(self, split, rng, train):
        cells = self.cells(split, train)
        if split == "test":
            return [self.example(d, k, rng) for d, k in cells for _ in range(self.options.n_test_per_cell)]
        n = self.options.n_train if split == "train" else self.options.n_valid
        return [self.example(*rng.choice(cells), rng) for _ in range(n)]
