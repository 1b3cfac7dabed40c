"""Subject–verb number agreement at a controlled distance, with attractors (Linzen et al. 2016).

Sentences come from a small English grammar: a subject noun phrase, then modifiers (prepositional
phrases, object and subject relative clauses) whose nouns may be *attractors* (nouns of the other
number), then adverbs, up to the verb. The model reads the prefix up to the verb and says whether
the verb must be singular or plural. ``distance`` is the verb's position minus the subject noun's;
attractors are always the intervening nouns nearest to the verb, so a model that copies the
number of the nearest noun is right exactly when there are no attractors.

``grammar=nested`` nests the modifiers instead (``NestedGrammar``): prepositional phrases, relative
clauses and clauses under "says"/"thinks" attach to any noun before them, the subject or one inside
another modifier, and every clause has its own verb agreeing with its own subject. As in Linzen et
al., the verb to predict may be any of them: the main verb, or an embedded clause's verb, whose
subject may be any noun of the prefix, so the label takes a parse of the prefix to find.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import pydantic

from harness.core.train_config import TrainConfig
from harness.core.metrics import MetricSpec, specs
from harness.core.registry import TASKS
from tasks.base import Upstream
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
#: the nested grammar's own words: verbs that take a clause, present (singular, plural) and past
SAY = [("says", "say"), ("thinks", "think"), ("believes", "believe"), ("hopes", "hope")]
PAST_SAY = ["said", "thought", "believed", "hoped"]
INTRANSITIVE = [v for v in VERBS if v[0] in ("runs", "smiles", "laughs", "sleeps", "waits")]

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
    #: unset or "flat": modifiers side by side after the subject (``Grammar``); "nested": modifiers
    #: inside modifiers (``NestedGrammar``). Unset stays out of the run id, so ids from before hold.
    grammar: Literal["flat", "nested"] | None = None
    added_later = ("grammar",)

    @pydantic.field_validator("grammar")
    @classmethod
    def _flat_is_the_default(cls, v):
        return None if v == "flat" else v  # grammar=flat is the default: the same run, the same id


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


#: nested modifiers: (nouns inside, verbs after a noun, shortest length in tokens)
NESTED = {"pp": (1, 0, 3),       # near the N
          "src": (1, 0, 4),      # that sees the N
          "orc": (1, 1, 4),      # that the N see
          "say_src": (1, 1, 5),  # that says [that] the N run
          "say_orc": (2, 2, 7)}  # that the N says [that] the N see
#: how the clause whose verb is the target opens, when that verb is not the main verb (the N is the
#: clause's subject, the verb agreeing with it comes next)
OPENERS = {"orc": "that the N",                  # object relative, or a says-clause's own verb
           "say_src": "that says [that] the N",  # complement of a subject relative's verb
           "say_orc": "that the N says [that] the N",  # complement of an object relative's verb
           "main_say": "says [that] the N"}      # complement of the main verb, after the main subject
#: steps down from a noun into a modifier of it, to the noun the next step starts from
DESCENTS = ("pp", "src", "orc", "say_src", "say_orc")


@dataclass(eq=False)
class Noun:
    number: int = SINGULAR
    adjectives: int = 0
    modifiers: list[Modifier] = field(default_factory=list)
    #: the subject of a clause whose verb comes after the prefix: relatives on it take the past
    open: bool = False

    def surface(self):
        """This noun and every noun inside its modifiers, in sentence order."""
        yield self
        for modifier in self.modifiers:
            for noun in modifier.nouns:
                yield from noun.surface()


@dataclass(eq=False)
class Modifier:
    kind: str
    nouns: list[Noun]
    #: adverbs before each verb that follows a noun of the modifier (the clause verbs)
    adverbs: list[int]
    #: "that" after "says" (say_src, say_orc)
    that: bool = False


class NestedGrammar(Grammar):
    """Modifiers nest, and the verb to predict may be any agreeing verb of the sentence.

    The *target* verb is the main verb in a third of the examples and, in the other two thirds
    (``embedded_share``), the verb of an embedded clause: an object relative's ("the dogs near the
    cat that the man ___"), a complement clause's under "says" ("the dog that said that the men ___",
    "the dog says that the men ___") or under an object relative's "says" ("the dog that the cats say
    that the man ___"). The label is the number of *that* verb's subject, which may be any noun of
    the prefix: which one it is depends on the parse. Every verb in the prefix agrees with its own
    subject; relatives on a subject whose verb is still to come (the target's subject, and the
    subjects of the clauses that are open around it) take the past tense, which has no number, so
    nothing between the target's subject and the target gives its number away.

    ``distance`` is the target verb's position minus its subject's, and the attractors are the
    nouns strictly between the two (at any depth, in any role) of the other number than that
    subject; verbs do not count. The material before the target's subject (``context``: the main
    subject, complete modifiers, the steps down to the clause, the clause's opening) counts for
    neither, so ``feasible`` is the flat grammar's for main and embedded targets alike, and every
    cell it admits is made exactly, with either kind of target. Between the subject and the target,
    modifiers attach to the subject or to a noun inside an earlier modifier, uniformly; when there
    are attractors, the intervening noun nearest the verb is one, the others are drawn among the
    intervening nouns.

    Cells stay ``attractors_k``; the kind of target (``draw``'s third value: "main" or an
    ``OPENERS`` key) is not part of the cell."""

    #: share of examples whose target is an embedded clause's verb, not the main verb
    embedded_share = 2 / 3

    def __init__(self, n_nouns: int, fronted_rate: float = 0.5):
        super().__init__(n_nouns, fronted_rate)
        self.vocab = [PAD] + sorted({*self.vocab[1:], *(w for pair in SAY for w in pair), *PAST_SAY})

    def sentence(self, distance: int, attractors: int, rng: random.Random) -> tuple[list[str], int]:
        words, number, _ = self.draw(distance, attractors, rng)
        return words, number

    def draw(self, distance: int, attractors: int, rng: random.Random,
             target: str | None = None) -> tuple[list[str], int, str]:
        """(prefix up to the target verb, its subject's number, the kind of target): "main", or the
        ``OPENERS`` kind of the clause whose verb it is. ``target`` forces the kind."""
        if not self.feasible(distance, attractors):
            raise ValueError(f"no sentence has distance {distance} with {attractors} attractors")
        if target is not None and target != "main" and target not in OPENERS:
            raise ValueError(f"no target {target!r}: main or one of {', '.join(OPENERS)}")
        room = distance - 1
        subject = Noun(rng.choice((SINGULAR, PLURAL)), rng.randint(0, 1), open=True)
        nouns, modifiers, used = [subject], [], 0
        # intervening nouns, more as the room grows
        left = rng.randint(max(attractors, room // 8), min(room // 3, max(attractors + 2, room // 5)))
        while left:  # leave room for the nouns still to come as prepositional phrases
            kind = rng.choice([k for k, (n, _, size) in NESTED.items()
                               if n <= left and used + size + 3 * (left - n) <= room])
            n, verbs, size = NESTED[kind]
            modifier = Modifier(kind, [Noun() for _ in range(n)], [0] * verbs)
            rng.choice(nouns).modifiers.append(modifier)
            nouns += modifier.nouns
            modifiers.append(modifier)
            left, used = left - n, used + size
        # the tokens still missing: "that" after "says", adjectives before intervening nouns,
        # adverbs before the clause verbs and the target verb
        target_adverbs = [0]
        slots = [*nouns[1:], *((m.adverbs, i) for m in modifiers for i in range(len(m.adverbs))), (target_adverbs, 0)]
        says = [m for m in modifiers if m.kind.startswith("say")]
        for _ in range(room - used):
            if says and rng.random() < 0.2:
                says.pop(rng.randrange(len(says))).that = True
                continue
            slot = rng.choice(slots)
            if isinstance(slot, Noun):
                slot.adjectives += 1
            else:
                slot[0][slot[1]] += 1
        intervening = list(subject.surface())[1:]
        flipped = rng.sample(intervening[:-1], attractors - 1) + intervening[-1:] if attractors else []
        for noun in intervening:
            noun.number = 1 - subject.number if noun in flipped else subject.number

        words = []
        if rng.random() < self.fronted_rate:
            fronted = rng.choice(self.nouns)[rng.choice((SINGULAR, PLURAL))]
            words += [rng.choice(PREPOSITIONS), "the", fronted, ","]
        if target is None:
            target = "main" if rng.random() >= self.embedded_share else rng.choice(list(OPENERS))
        if target != "main":
            words += self.context(target, rng)
        words += self.phrase(subject, rng)
        words += self.adverbs(target_adverbs[0], rng)
        return words, subject.number, target

    def context(self, opener: str, rng: random.Random) -> list[str]:
        """The words before an embedded target's subject: the main subject, up to two steps down
        into modifiers (``DESCENTS``, each to a noun inside the step), then the opening of the
        target's clause (``OPENERS[opener]``, without its subject). Each noun on the way may first
        get complete modifiers of its own; every noun's number is drawn apart from the target's."""
        steps = [rng.choice(DESCENTS + (("main_say",) if i == 0 else ())) for i in range(rng.randint(0, 2))]
        if opener == "main_say":
            steps = []  # the main verb takes the clause: straight after the main subject
        steps.append(opener)
        head = self.noun(rng, open=steps[0] != "main_say")  # the main subject: open until its verb
        words = self.head(head, rng)
        for i, step in enumerate(steps):
            self.decorate(head, rng.choice((0, 0, 0, 1, 2)), rng)
            words += self.modifiers(head, rng)
            new = self.noun(rng, open=step not in ("pp", "src"))
            if step == "pp":
                words += [rng.choice(PREPOSITIONS)]
            elif step == "src":
                words += ["that", self.verb(TRANSITIVE, PAST, head, rng)]
            elif step == "orc":
                words += ["that"]
            elif step == "say_src":
                words += ["that", self.verb(SAY, PAST_SAY, head, rng), *self.that(rng)]
            elif step == "say_orc":
                first = self.noun(rng)
                self.decorate(first, rng.choice((0, 0, 0, 1)), rng)
                words += ["that", *self.phrase(first, rng), *self.adverbs(rng.random() < 0.2, rng),
                          self.verb(SAY, PAST_SAY, first, rng), *self.that(rng)]
            else:  # main_say
                words += [*self.adverbs(rng.random() < 0.2, rng), self.verb(SAY, PAST_SAY, head, rng),
                          *self.that(rng)]
            if i < len(steps) - 1:
                words += self.head(new, rng)
                head = new
        return words

    def noun(self, rng: random.Random, open: bool = False) -> Noun:
        return Noun(rng.choice((SINGULAR, PLURAL)), rng.randint(0, 1), open=open)

    def decorate(self, noun: Noun, n: int, rng: random.Random) -> None:
        """Give ``noun`` complete modifiers holding ``n`` nouns, each modifier on it or on a noun
        inside an earlier one."""
        nouns = [noun]
        while n:
            kind = rng.choice([k for k, (m, _, _) in NESTED.items() if m <= n])
            m, verbs, _ = NESTED[kind]
            modifier = Modifier(kind, [self.noun(rng) for _ in range(m)],
                                [int(rng.random() < 0.2) for _ in range(verbs)], rng.random() < 0.5)
            rng.choice(nouns).modifiers.append(modifier)
            nouns += modifier.nouns
            n -= m

    def verb(self, forms, past, agrees_with: Noun, rng: random.Random) -> str:
        """A verb agreeing with ``agrees_with``; past, without number, if its verb is still to come."""
        return rng.choice(past) if agrees_with.open else rng.choice(forms)[agrees_with.number]

    @staticmethod
    def adverbs(k: int, rng: random.Random) -> list[str]:
        return [rng.choice(ADVERBS) for _ in range(k)]

    @staticmethod
    def that(rng: random.Random) -> list[str]:
        return ["that"] * (rng.random() < 0.5)

    def head(self, noun: Noun, rng: random.Random) -> list[str]:
        adjectives = [rng.choice(ADJECTIVES) for _ in range(noun.adjectives)]
        return ["the", *adjectives, rng.choice(self.nouns)[noun.number]]

    def phrase(self, noun: Noun, rng: random.Random) -> list[str]:
        """``noun``'s noun phrase: determiner, adjectives, noun, its modifiers."""
        return self.head(noun, rng) + self.modifiers(noun, rng)

    def modifiers(self, noun: Noun, rng: random.Random) -> list[str]:
        words = []
        for m in noun.modifiers:
            inner, that = [self.phrase(n, rng) for n in m.nouns], ["that"] * m.that
            if m.kind == "pp":
                words += [rng.choice(PREPOSITIONS), *inner[0]]
            elif m.kind == "src":
                words += ["that", self.verb(TRANSITIVE, PAST, noun, rng), *inner[0]]
            elif m.kind == "orc":
                words += ["that", *inner[0], *self.adverbs(m.adverbs[0], rng),
                          self.verb(TRANSITIVE, PAST, m.nouns[0], rng)]
            elif m.kind == "say_src":
                words += ["that", self.verb(SAY, PAST_SAY, noun, rng), *that, *inner[0],
                          *self.adverbs(m.adverbs[0], rng), self.verb(INTRANSITIVE, PAST, m.nouns[0], rng)]
            else:
                words += ["that", *inner[0], *self.adverbs(m.adverbs[0], rng),
                          self.verb(SAY, PAST_SAY, m.nouns[0], rng), *that, *inner[1],
                          *self.adverbs(m.adverbs[1], rng), self.verb(TRANSITIVE, PAST, m.nouns[1], rng)]
        return words


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
        grammar = NestedGrammar if options.grammar == "nested" else Grammar
        self.grammar = grammar(options.n_nouns, options.fronted_rate)
        self.vocab = self.grammar.vocab
        self.index = {w: i for i, w in enumerate(self.vocab)}

    def as_upstream(self, model) -> Upstream:
        """The trained classifier, its vocabulary, and the grammar that reproduces its sentences."""
        return Upstream(model=model, vocab=tuple(self.vocab), extra={"grammar": self.grammar})

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
