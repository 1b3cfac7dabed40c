"""The agreement generator, checked by independent rules, and the nearest-noun baseline."""
import functools
import hashlib
import random

import pytest
import torch

from harness.core.train_config import TrainConfig
from harness.core.registry import TASKS
from harness.sweep import expand
from tasks.agreement import (ADJECTIVES, ADVERBS, INTRANSITIVE, NOUNS, OPENERS, PAST, PAST_SAY, PREPOSITIONS,
                             SAY, TRANSITIVE, Grammar, NestedGrammar)

NUMBER = {form: number for pair in NOUNS for number, form in enumerate(pair)}
TRAIN = TrainConfig(**TASKS.get("agreement").budgets["smoke"])


@pytest.fixture(scope="module")
def task():
    cls = TASKS.get("agreement")
    return cls(cls.Options(n_train=3000, n_test_per_cell=6), None)


@pytest.fixture(scope="module")
def nested():
    cls = TASKS.get("agreement")
    return cls(cls.Options(n_train=1000, n_test_per_cell=4, grammar="nested"), None)


def words(task, example):
    return [task.vocab[i] for i in example.tokens]


def analyse(prefix):
    """Independent reading of a prefix: subject number, distance to the verb, attractors.
    The subject is the first noun after a fronted phrase's comma, if there is one."""
    start = prefix.index(",") + 1 if "," in prefix else 0
    nouns = [(i, NUMBER[w]) for i, w in enumerate(prefix) if w in NUMBER and i >= start]
    (subject_at, number), rest = nouns[0], nouns[1:]
    distance = len(prefix) - subject_at  # the verb would stand at index len(prefix)
    return number, distance, sum(n != number for _, n in rest), rest


def test_labels_distances_and_attractors_are_exactly_as_generated(task):
    for split in ("train", "valid", "test"):
        for e in task.split(split, TRAIN):
            number, distance, attractors, _ = analyse(words(task, e))
            assert e.label == number
            assert e.length == distance
            assert e.cell == f"attractors_{attractors}"


def test_the_first_noun_is_no_shortcut(task):
    train = task.split("train", TRAIN)
    fronted = [e for e in train if "," in words(task, e)]
    assert 0.4 < len(fronted) / len(train) < 0.6
    first_noun = [NUMBER[next(w for w in words(task, e) if w in NUMBER)] == e.label for e in train]
    assert 0.65 < sum(first_noun) / len(train) < 0.85  # right only when no phrase, or by chance


def test_every_requested_cell_is_produced():
    grammar, rng = Grammar(len(NOUNS)), random.Random(3)
    for distance in range(1, 40):
        for attractors in range(0, 5):
            if not grammar.feasible(distance, attractors):
                with pytest.raises(ValueError, match="no sentence"):
                    grammar.sentence(distance, attractors, rng)
                continue
            for _ in range(5):
                prefix, number = grammar.sentence(distance, attractors, rng)
                assert analyse(prefix)[:3] == (number, distance, attractors)


def test_train_is_short_and_few_attractors_test_is_long_and_unseen(task):
    train, test = task.split("train", TRAIN), task.split("test", TRAIN)
    assert max(e.length for e in train) == TRAIN.seq_len
    assert {e.cell for e in train} == {"attractors_0", "attractors_1"}
    assert max(e.length for e in test) == 8 * TRAIN.seq_len
    assert {e.cell for e in test} == {f"attractors_{k}" for k in range(5)}
    assert not {e.tokens for e in test} & {e.tokens for e in train}
    assert not {e.tokens for e in task.split("valid", TRAIN)} & {e.tokens for e in train}


def test_vocabulary_size_is_controlled():
    cls = TASKS.get("agreement")
    small = cls(cls.Options(n_nouns=3, n_train=200), None)
    used = {w for e in small.split("train", TRAIN) for w in words(small, e) if w in NUMBER}
    assert used <= {w for pair in NOUNS[:3] for w in pair}


class NearestNoun(torch.nn.Module):
    """Answers with the number of the last noun before the verb."""

    def __init__(self, vocab):
        super().__init__()
        self.number = torch.tensor([NUMBER.get(w, -1) for w in vocab])
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens, mask):
        numbers = torch.where(mask, self.number[tokens], -1)
        last = torch.stack([row[row >= 0][-1] for row in numbers])
        return torch.nn.functional.one_hot(last, 2).float()


def test_nearest_noun_baseline_scores_as_the_attractor_counts_predict(task):
    metrics = {(m.name, m.length): m.value for m in task.evaluate(NearestNoun(task.vocab), "test", TRAIN, None)}
    test = task.split("test", TRAIN)
    assert metrics[("accuracy_attractors_0", None)] == 1.0
    for k in range(1, 5):
        assert metrics[(f"accuracy_attractors_{k}", None)] == 0.0
    assert metrics[("accuracy", None)] == pytest.approx(sum(e.cell == "attractors_0" for e in test) / len(test))
    # per distance: the share of attractor-free sentences at that distance
    for d in (1, 4, 20, 64):
        at = [e for e in test if e.length == d]
        assert metrics[("accuracy", d)] == pytest.approx(sum(e.cell == "attractors_0" for e in at) / len(at))


def forms(pairs):
    return {form: number for pair in pairs for number, form in enumerate(pair)}


def parse(prefix):
    """A recursive-descent reading of a prefix of either grammar, written apart from the generators:
    (number, distance, attractors, depth, subject) for the verb that comes next, the *target*.

    The prefix ends right before the verb of the innermost clause still open: the main clause, an
    object relative ("that the N …"), a complement clause ("says [that] the N …", "that the N says
    [that] the N …") — the one whose subject the parse finds. Every attachment is tried (a modifier
    may belong to any noun before it) and every verb in the prefix must agree with its own subject;
    relatives on a subject whose verb is not in the prefix are in the past tense. A prefix no reading
    takes to a verb, or whose readings disagree on the subject, raises. ``subject`` is the index of
    the target's subject noun, ``number`` its number, ``distance`` the target's index (len(prefix))
    minus it, ``attractors`` the nouns after it of the other number. Depth is the least nesting any
    reading gives the subject's own modifiers: its own at depth 1, a complement clause one deeper
    than its relative clause."""
    t, transitive, intransitive, say = list(prefix), forms(TRANSITIVE), forms(INTRANSITIVE), forms(SAY)

    def at(i, words):
        return i < len(t) and t[i] in words

    def merge(into, key, depth):
        into[key] = min(depth, into.get(key, depth))

    def head(i):  # "the" ADJ* N: the noun's position
        if not at(i, {"the"}):
            return None
        i += 1
        while at(i, ADJECTIVES):
            i += 1
        return i if at(i, NUMBER) else None

    def verb(i, present, past, subject, pending):  # past (no number) on a subject whose verb is pending
        return at(i, past) if pending else at(i, present) and present[t[i]] == NUMBER[t[subject]]

    def complement(i):  # [that] the start of a complement clause
        return i + 1 if at(i, {"that"}) else i

    def to_the_end(j):  # only adverbs left: the target verb would be next
        return all(w in ADVERBS for w in t[j:])

    # complete constituents, each {end: depth}

    @functools.cache
    def noun_phrase(i):  # not a pending subject
        h = head(i)
        return {} if h is None else modifiers(h + 1, h, False)

    @functools.cache
    def modifiers(i, h, pending):  # any modifiers of the noun at h from i on
        out = {i: 0}
        for j, d in modifier(i, h, pending).items():
            for k, e in modifiers(j, h, pending).items():
                merge(out, k, max(d, e))
        return out

    def clause(i, present):  # NP ADV* V, the verb agreeing with the NP's noun
        out, h = {}, head(i)
        for j, d in ({} if h is None else noun_phrase(i)).items():
            while at(j, ADVERBS):
                j += 1
            if verb(j, present, (), h, False):
                merge(out, j + 1, d)
        return out

    @functools.cache
    def modifier(i, h, pending):  # one modifier of the noun at h
        out = {}
        if at(i, PREPOSITIONS):
            for j, d in noun_phrase(i + 1).items():
                merge(out, j, 1 + d)
        if not at(i, {"that"}):
            return out
        if verb(i + 1, transitive, PAST, h, pending):  # that sees the N
            for j, d in noun_phrase(i + 2).items():
                merge(out, j, 1 + d)
        if verb(i + 1, say, PAST_SAY, h, pending):  # that says [that] the N runs
            for j, d in clause(complement(i + 2), intransitive).items():
                merge(out, j, 2 + d)
        for j, d in clause(i + 1, transitive).items():  # that the N sees
            merge(out, j, 1 + d)
        for j, d in clause(i + 1, say).items():  # that the N says [that] the N sees
            for k, e in clause(complement(j), transitive).items():
                merge(out, k, max(1 + d, 2 + e))
        return out

    # constituents the prefix ends inside, each {the target's subject: depth}

    def gather(into, found):
        for s, d in found.items():
            merge(into, s, d)

    @functools.cache
    def open_subject(i):  # a clause's subject at i, its verb not in the prefix
        out, h = {}, head(i)
        if h is None:
            return out
        for j, d in modifiers(h + 1, h, True).items():
            if to_the_end(j):  # the target is this clause's verb
                merge(out, h, d)
            gather(out, open_modifier(j, h, True))
        return out

    @functools.cache
    def open_object(i):  # a noun phrase at i, not a subject, with an open modifier last
        out, h = {}, head(i)
        if h is not None:
            for j in modifiers(h + 1, h, False):
                gather(out, open_modifier(j, h, False))
        return out

    @functools.cache
    def open_modifier(i, h, pending):  # a modifier of the noun at h that runs to the end
        out = {}
        if at(i, PREPOSITIONS):  # near the N …
            gather(out, open_object(i + 1))
        if not at(i, {"that"}):
            return out
        if verb(i + 1, transitive, PAST, h, pending):  # that sees the N …
            gather(out, open_object(i + 2))
        if verb(i + 1, say, PAST_SAY, h, pending):  # that says [that] the N …
            gather(out, open_subject(complement(i + 2)))
        gather(out, open_subject(i + 1))  # that the N … (sees, or says)
        for j in clause(i + 1, say):  # that the N says [that] the N …
            gather(out, open_subject(complement(j)))
        return out

    start = 0
    if "," in t:
        assert t[0] in PREPOSITIONS and t[1] == "the" and t[2] in NUMBER and t[3] == ",", prefix
        start = 4
    found = dict(open_subject(start))  # the main verb, or a verb inside the main subject's phrase
    for j in clause(start, say):  # the N says [that] the N …
        gather(found, open_subject(complement(j)))
    if not found:
        raise ValueError(f"no reading reaches a verb: {' '.join(prefix)}")
    if len(found) > 1:
        raise ValueError(f"readings disagree on the subject ({sorted(found)}): {' '.join(prefix)}")
    (subject, depth), = found.items()
    number = NUMBER[t[subject]]
    attractors = sum(NUMBER[w] != number for w in t[subject + 1:] if w in NUMBER)
    return number, len(t) - subject, attractors, depth, subject


def digest(examples):
    return hashlib.sha256(repr([(e.tokens, e.label, e.length, e.cell) for e in examples]).encode()).hexdigest()


#: recorded from the generator as it was before the grammar option existed
FLAT_DIGESTS = {"train": "88976e733644177b28e737fc3cd35b81bcfedc47cde805bf16dc22e702bd0940",
                "valid": "feb763178ba6e625d56c9ae1d633775befd474c4dc8522f25c53cbc685bb9de7",
                "test": "3c4110557c8c7c74b087113e47c0152ba707d11873034212a707d02b2f0f72c9",
                "vocab": "032c26747261787364c67139164e3ec589b00cbb03619bd78119c7f2c9eff325"}


def test_the_flat_grammar_makes_the_data_it_made_before_the_nested_one():
    cls = TASKS.get("agreement")
    for options in ({}, {"grammar": "flat"}):
        task = cls(cls.Options(n_train=50, n_valid=50, n_test_per_cell=1, **options), None)
        for split in ("train", "valid", "test"):  # 50, 50 and 290 examples, distances up to 64
            assert digest(task.split(split, TRAIN)) == FLAT_DIGESTS[split]
        assert hashlib.sha256(repr(task.vocab).encode()).hexdigest() == FLAT_DIGESTS["vocab"]


def test_grammar_unset_or_flat_keeps_the_run_id():
    options = TASKS.get("agreement").Options
    assert "grammar" not in options().model_dump(mode="json")
    assert options(grammar="flat").model_dump(mode="json") == options().model_dump(mode="json")
    assert options(grammar="nested").model_dump(mode="json")["grammar"] == "nested"
    default, = expand(["lstm"], ["agreement"])
    flat, = expand(["lstm"], ["agreement"], overrides={"grammar": ["flat"]})
    nested, = expand(["lstm"], ["agreement"], overrides={"grammar": ["nested"]})
    assert default.run_id == flat.run_id != nested.run_id


@pytest.mark.parametrize("grammar", [Grammar, NestedGrammar])
def test_the_parse_agrees_with_the_generator_in_every_cell(grammar):
    grammar, rng = grammar(len(NOUNS)), random.Random(5)
    for distance in range(1, 65):
        for attractors in range(0, 5):
            if not grammar.feasible(distance, attractors):
                with pytest.raises(ValueError, match="no sentence"):
                    grammar.sentence(distance, attractors, rng)
                continue
            for _ in range(3):
                prefix, number = grammar.sentence(distance, attractors, rng)
                assert parse(prefix)[:3] == (number, distance, attractors), " ".join(prefix)


TARGETS = ("main", *OPENERS)


def main_subject(prefix):
    """The first noun after the fronted phrase."""
    start = prefix.index(",") + 1 if "," in prefix else 0
    return next(i for i, w in enumerate(prefix) if w in NUMBER and i >= start)


def opening(prefix, subject):
    """What stands before the target's subject noun phrase: a clause taken by a says-verb, or a relative."""
    i = subject - 1
    while prefix[i] != "the":
        i -= 1
    j = i - 1 if prefix[i - 1] == "that" else i  # "that" opens a relative, or may follow "says"
    return "complement" if prefix[j - 1] in {*forms(SAY), *PAST_SAY} else "relative" if j < i else None


def test_the_parse_finds_the_subject_of_every_kind_of_target_in_every_cell():
    grammar, rng = NestedGrammar(len(NOUNS)), random.Random(7)
    for distance in range(1, 65):
        for attractors in range(0, 5):
            if not grammar.feasible(distance, attractors):
                continue
            for target in TARGETS:
                for _ in range(2):
                    prefix, number, kind = grammar.draw(distance, attractors, rng, target)
                    n, d, k, _, subject = parse(prefix)
                    assert (kind, n, d, k) == (target, number, distance, attractors), " ".join(prefix)
                    if target == "main":
                        assert subject == main_subject(prefix), " ".join(prefix)
                    else:
                        assert subject > main_subject(prefix), " ".join(prefix)
                        assert opening(prefix, subject) == ("relative" if target == "orc" else "complement")
    with pytest.raises(ValueError, match="no target"):
        grammar.draw(5, 1, rng, "src")


def test_the_parse_finds_the_subject_of_the_verb_that_comes_next():
    def subject(prefix):
        t = prefix.split()
        number, distance, attractors, _, at = parse(t)
        return t[at], distance, attractors

    assert subject("the dog near the cats") == ("dog", 4, 1)
    assert subject("the dog near the cats that the man") == ("man", 1, 0)
    assert subject("the dogs that the cat says that the men") == ("men", 1, 0)
    assert subject("the dog that the cats see") == ("dog", 5, 1)
    assert subject("the dog says the cats") == ("cats", 1, 0)
    assert subject("the dog that said that the cats near the man often") == ("cats", 5, 1)
    assert subject("near the cats , the dog that the men see that the man") == ("man", 1, 0)
    assert subject("the dogs that the cat that the men") == ("men", 1, 0)
    assert subject("the dogs that the cat that the men see") == ("cat", 5, 1)
    assert subject("the dogs that the cat that the men see likes") == ("dogs", 9, 1)


def test_the_parse_rejects_a_verb_that_does_not_agree():
    assert parse("the dog that the cats see".split())[:3] == (0, 5, 1)
    assert parse("the dog near the cats that see the man".split())[3] == 2  # "see" belongs to the cats
    for wrong in ("the dog that the cats sees", "the dog that sees the cat", "the dog that the cat saw",
                  "the dog near the cats that sees the man", "the dogs that the man thinks that the cat see",
                  "the dog that the men say the cat sleep", "the dog that says that the cat", "the dog near the"):
        with pytest.raises(ValueError, match="no reading"):
            parse(wrong.split())


def test_nested_labels_distances_and_attractors_are_exactly_as_generated(nested):
    for split in ("train", "valid", "test"):
        for e in nested.split(split, TRAIN):
            number, distance, attractors, _, _ = parse(words(nested, e))
            assert (e.label, e.length, e.cell) == (number, distance, f"attractors_{attractors}")


def test_a_third_of_the_targets_are_main_verbs_and_the_rest_embedded_ones(nested):
    for split in ("train", "test"):
        prefixes = [words(nested, e) for e in nested.split(split, TRAIN)]
        main = [parse(p)[4] == main_subject(p) for p in prefixes]
        assert 0.28 < sum(main) / len(main) < 0.39
    openings = [opening(p, parse(p)[4]) for p in prefixes if parse(p)[4] != main_subject(p)]
    assert 0.2 < openings.count("relative") / len(openings) < 0.3  # object relatives: a quarter


def test_neither_the_first_noun_nor_the_nearest_noun_finds_the_subject(nested):
    test = [(words(nested, e), e.label) for e in nested.split("test", TRAIN) if e.cell != "attractors_0"]

    def right(guess):
        return sum(NUMBER[p[guess(p)]] == label for p, label in test) / len(test)

    def first(p):
        return next(i for i, w in enumerate(p) if w in NUMBER)

    def nearest(p):
        return max(i for i, w in enumerate(p) if w in NUMBER)

    assert right(main_subject) <= 0.72  # the first noun after the fronted phrase: right on main verbs
    assert right(first) <= 0.72
    assert right(nearest) == 0.0  # with attractors, the nearest noun is one
    main = [(p, label) for p, label in test if parse(p)[4] == main_subject(p)]
    assert all(NUMBER[p[main_subject(p)]] == label for p, label in main)


def test_nested_sentences_nest_and_flat_ones_do_not(task, nested):
    depths = [parse(words(nested, e))[3] for e in nested.split("test", TRAIN) if e.length >= 16]
    assert sum(d >= 2 for d in depths) / len(depths) > 0.5 and max(depths) >= 4
    assert max(parse(words(task, e))[3] for e in task.split("test", TRAIN)[::7]) == 1
    used = {w for e in nested.split("test", TRAIN) for w in words(nested, e)}
    assert {*PAST, *PAST_SAY, *forms(SAY), *forms(INTRANSITIVE)} <= used


def test_nested_words_join_the_vocabulary_only_with_the_nested_grammar(task, nested):
    new = {*forms(SAY), *PAST_SAY}
    assert not new & set(task.vocab)
    assert set(nested.vocab) == set(task.vocab) | new and nested.vocab[0] == task.vocab[0]


def test_the_nearest_noun_is_an_attractor_whenever_there_is_one(nested):
    nearest = NearestNoun(nested.vocab)
    metrics = {(m.name, m.length): m.value for m in nested.evaluate(nearest, "test", TRAIN, None)}
    assert metrics[("accuracy_attractors_0", None)] == 1.0
    for k in range(1, 5):
        assert metrics[(f"accuracy_attractors_{k}", None)] == 0.0
