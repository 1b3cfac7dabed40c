"""REGBENCH (in-context language learning): the generator's ranges as the paper's, minimisation that
keeps the language and leaves no two states equivalent (checked by brute force), an acceptance
simulation apart from the sampler, the scored "valid continuation" sets computed two ways, splits
disjoint by language and fixed by the data seed, the paper's accuracy on worked and oracle models,
and one run through the command."""
import itertools
import random
from collections import Counter, deque

import pytest
import torch
import yaml

from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from harness.store import RunStore
from tasks.regbench import (DELIM, DFA, LONGEST, PAPER_TRAIN_AUTOMATA, SYMBOLS, VOCAB, Instance, accepts,
                            canonical_form, minimise, run, sample_automaton, scored_answers, sequence_of, strings_of,
                            trim, walk)
from tasks.token_targets import IGNORE
from tests.conftest import ROOT, TINY_SETS, harness

#: long enough that no sequence is cut
WHOLE = TrainConfig(**{**TASKS.get("regbench").budgets["smoke"], "seq_len": 1024})


def make(**options):
    cls = TASKS.get("regbench")
    defaults = dict(n_train_automata=60, n_valid=20, n_test_per_cell=20)
    return cls(cls.Options(**{**defaults, **options}), None)


def raw_automata(n: int, seed: int = 0) -> list[DFA]:
    rng = random.Random(seed)
    return [sample_automaton(rng) for _ in range(n)]


def language_upto(dfa: DFA, length: int) -> set[tuple[int, ...]]:
    """Every accepted string of at most ``length`` symbols, by following ``edges`` breadth first
    (not the simulation under test)."""
    out, frontier = set(), [((), dfa.start)]
    for _ in range(length + 1):
        out |= {w for w, s in frontier if s in dfa.accepting}
        frontier = [(w + (a,), t) for w, s in frontier for a, t in dfa.edges[s]]
    return out


def same_language_upto(a: DFA, b: DFA, length: int, symbols) -> bool:
    """Acceptance by ``a`` and ``b`` agrees on every string over ``symbols`` of at most ``length``
    (a subtree is skipped only where neither automaton has a run: no extension is accepted)."""
    todo = [()]
    while todo:
        w = todo.pop()
        if accepts(a, w) != accepts(b, w):
            return False
        if len(w) < length and (run(a, w) is not None or run(b, w) is not None):
            todo += [w + (s,) for s in symbols]
    return True


START = "start"


def distinguishing_word(a: DFA, b: DFA, p=START, q=START) -> tuple[int, ...] | None:
    """A shortest word accepted by exactly one of ``a`` from state p and ``b`` from state q (the
    start states by default; None: the same language), by searching pairs of states, None standing
    for the dead state."""
    start = (a.start if p == START else p, b.start if q == START else q)
    seen, queue = {start}, deque([(start, ())])
    while queue:
        (x, y), w = queue.popleft()
        if (x in a.accepting) != (y in b.accepting):
            return w
        for s in range(len(SYMBOLS)):
            nxt = (None if x is None else a.table[x].get(s), None if y is None else b.table[y].get(s))
            if nxt != (None, None) and nxt not in seen:
                seen.add(nxt)
                queue.append((nxt, w + (s,)))
    return None


def renamed(dfa: DFA, rng: random.Random) -> DFA:
    """The same automaton with its states renumbered at random."""
    perm = list(range(dfa.n_states))
    rng.shuffle(perm)
    edges = [None] * dfa.n_states
    for s, out in enumerate(dfa.edges):
        edges[perm[s]] = tuple((a, perm[t]) for a, t in out)
    return DFA(tuple(edges), frozenset(perm[s] for s in dfa.accepting), perm[dfa.start], dfa.alphabet)


#: hand-made automata over {0, 1, 2} with rejecting and unreachable states (the generator's are
#: all accepting): (edges, accepting, start, the minimal number of states)
HAND = [
    # an even number of 0s, written with four states (two copies of each parity) and an
    # unreachable fifth: minimal 2
    ((((0, 1), (1, 2)), ((0, 0), (1, 3)), ((0, 3), (1, 0)), ((0, 2), (1, 1)), ((0, 4),)), {0, 2}, 0, 2),
    # strings that end in 1, with a dead-end rejecting state 2 reached by 2: minimal 2
    ((((0, 0), (1, 1), (2, 2)), ((0, 0), (1, 1), (2, 2)), ()), {1}, 0, 2),
    # 0 then anything over {0, 1}, where states 1 and 3 are copies: minimal 2
    ((((0, 1),), ((0, 3), (1, 1)), (), ((0, 1), (1, 3))), {1, 3}, 0, 2),
    # nothing accepted: one rejecting state
    ((((0, 1),), ((1, 0),)), set(), 0, 1),
]


def test_automata_are_drawn_as_the_paper_describes():
    raws = raw_automata(400)
    assert Counter(d.n_states for d in raws).keys() == set(range(4, 13))
    assert Counter(len(d.alphabet) for d in raws).keys() == set(range(4, 19))
    degrees = Counter()
    for d in raws:
        assert set(d.alphabet) <= set(range(18)) and d.accepting == frozenset(range(d.n_states)) and d.start == 0
        for s, out in enumerate(d.edges):
            symbols, targets = [a for a, _ in out], [t for _, t in out]
            degrees[len(out)] += 1
            assert set(symbols) <= set(d.alphabet) and len(set(symbols)) == len(out)
            assert s not in targets and len(set(targets)) == len(out), "distinct other states"
        m = minimise(d)
        assert 1 <= m.n_states <= d.n_states and m.alphabet == d.alphabet
    assert set(degrees) == {1, 2, 3}
    assert len(VOCAB) == 20 and VOCAB[DELIM] == "|" and len(SYMBOLS) == 18
    # the full budget reads every sequence whole; the protocol runs the paper's training-set sizes
    assert TASKS.get("regbench").budgets["full"]["seq_len"] >= LONGEST - 1 == 19 * 49 + 18 - 1
    protocol = yaml.safe_load((ROOT / "results" / "regbench_protocol.yaml").read_text())
    assert tuple(protocol["changes"]["n_train_automata"]) == PAPER_TRAIN_AUTOMATA


def test_examples_hold_10_to_19_strings_of_1_to_49_symbols_each_accepted_by_the_simulation():
    task = make(n_train_automata=150)
    counts, lengths = Counter(), Counter()
    for split in ("train", "valid", "test"):
        for e in task.split(split, WHOLE):
            strings = strings_of(e)
            counts[len(strings)] += 1
            lengths.update(len(s) for s in strings)
            assert e.length == len(strings)
            assert all(accepts(e.dfa, s) for s in strings)
            assert e.dfa in task.automata(split)
    assert set(counts) == set(range(10, 20))
    assert min(lengths) == 1 and max(lengths) == 49 and len(lengths) == 49
    # the sampler walks uniformly: at a state with two edges each is taken about half the time
    dfa = DFA((((0, 1), (1, 2)), ((2, 0),), ((3, 0),)), frozenset({0, 1, 2}))
    firsts = Counter(walk(dfa, 1, random.Random(i))[0] for i in range(2000))
    assert abs(firsts[0] - 1000) < 120 and firsts.keys() == {0, 1}


def test_the_simulation_rejects_what_the_automaton_does_not_generate():
    task = make()
    rng = random.Random(1)
    rejected = 0
    for e in task.split("test", WHOLE)[:10]:
        language = language_upto(e.dfa, 5)
        alphabet = e.dfa.alphabet
        strings = [s[:5] for s in strings_of(e)]
        words = [tuple(w) for w in strings]
        for w in strings:  # one symbol changed: mostly outside the language
            if w:
                i = rng.randrange(len(w))
                words.append(tuple(w[:i] + [rng.choice(alphabet)] + w[i + 1:]))
        words += [tuple(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(30)]
        for w in words:
            assert accepts(e.dfa, w) == (w in language), w
            rejected += w not in language
        assert all(w in language for w in map(tuple, strings))
    assert rejected > 100


def test_minimisation_keeps_the_language_and_leaves_no_two_states_equivalent():
    cases = [(minimise(d), d, d.used_symbols() + (17,)) for d in raw_automata(40, seed=2)]
    for edges, accepting, start, size in HAND:
        d = DFA(edges, frozenset(accepting), start)
        m = minimise(d)
        assert m.n_states == size, (edges, m)
        cases.append((m, d, (0, 1, 2)))
    for m, d, symbols in cases:
        assert same_language_upto(d, m, 6, symbols)
        assert same_language_upto(trim(d), d, 6, symbols)
        reached, todo = {m.start}, [m.start]
        while todo:
            for _, t in m.edges[todo.pop()]:
                if t not in reached:
                    reached.add(t)
                    todo.append(t)
        assert reached == set(range(m.n_states)), "every state reachable"
        for p, q in itertools.combinations(range(m.n_states), 2):
            w = distinguishing_word(m, m, p, q)
            assert w is not None, f"states {p} and {q} of {m} are equivalent"
            assert (run(m, w, p) in m.accepting) != (run(m, w, q) in m.accepting)
        if m.accepting:  # and none equivalent to the dead state
            assert all(distinguishing_word(m, m, p, None) is not None for p in range(m.n_states))


def test_the_canonical_form_is_the_language_up_to_renaming():
    rng = random.Random(3)
    raws = raw_automata(60, seed=3)
    for d in raws:
        assert canonical_form(renamed(d, rng)) == canonical_form(d) == canonical_form(minimise(d))
        assert distinguishing_word(d, renamed(minimise(d), rng)) is None
    for a, b in itertools.combinations(raws[:20], 2):
        w = distinguishing_word(a, b)
        assert (w is None) == (canonical_form(a) == canonical_form(b))
        if w is not None:
            assert accepts(a, w) != accepts(b, w)


def test_splits_share_no_language_and_are_fixed_by_the_data_seed():
    task = make()
    forms = {s: [canonical_form(d) for d in task.automata(s)] for s in ("train", "valid", "test")}
    assert [len(forms[s]) for s in ("train", "valid", "test")] == [60, 20, 20]
    for s, f in forms.items():
        assert len(set(f)) == len(f), f"{s}: an automaton twice"
    assert not set(forms["test"]) & set(forms["train"]) and not set(forms["valid"]) & set(forms["train"])
    assert not set(forms["test"]) & set(forms["valid"])
    again, other = make(), make(data_seed=1)
    for s in ("train", "valid", "test"):
        assert [e.tokens for e in again.split(s, WHOLE)] == [e.tokens for e in task.split(s, WHOLE)]
        assert [e.tokens for e in other.split(s, WHOLE)] != [e.tokens for e in task.split(s, WHOLE)]
    # held-out sets do not depend on the training set's size; a larger one extends a smaller one
    more = make(n_train_automata=90)
    assert [e.tokens for e in more.split("test", WHOLE)] == [e.tokens for e in task.split("test", WHOLE)]
    assert more.automata("train")[:60] == task.automata("train")
    # n_train examples cycle over the training automata
    cycled = make(n_train_automata=10, n_train=25).split("train", WHOLE)
    assert len(cycled) == 25 and [e.dfa for e in cycled[:10]] == [e.dfa for e in cycled[10:20]]


def test_the_valid_continuations_computed_two_ways_agree():
    task = make()
    for e in task.split("valid", WHOLE)[:8] + make(train_on_delimiter=True).split("test", WHOLE)[:4]:
        assert e.dfa.accepting == frozenset(range(e.dfa.n_states)), "every state accepts: a prefix is a string"
        sets, strings = scored_answers(e)
        sequence = sequence_of(e)
        expected, ks, k, current = [], [], 1, []
        for i, token in enumerate(sequence[:-1]):
            if token == DELIM:
                k, current = k + 1, []
            else:
                current.append(token - 1)
            if sequence[i + 1] != DELIM:  # the next token is a symbol: a scored position
                expected.append(frozenset(a + 1 for a in range(len(SYMBOLS)) if accepts(e.dfa, current + [a])))
                ks.append(k)
                assert sequence[i + 1] in expected[-1], "the string's own next symbol is valid"
        assert sets == expected and strings == ks
        assert len(sets) == sum(t != IGNORE and t != DELIM for t in e.targets)


def test_training_targets_are_every_next_token_but_the_delimiter_unless_asked():
    for on in (False, True):
        for e in make(train_on_delimiter=on).split("train", WHOLE)[:10]:
            sequence = sequence_of(e)
            assert list(e.tokens) == sequence[:-1]
            expected = [t if t != DELIM or on else IGNORE for t in sequence[1:]]
            assert list(e.targets) == expected
    cut = TrainConfig(**{**WHOLE.model_dump(), "seq_len": 30})
    assert max(len(e.tokens) for e in make().split("test", cut)) == 30
    with pytest.raises(ValueError, match="at least 2 tokens"):
        make().split("test", TrainConfig(**{**WHOLE.model_dump(), "seq_len": 1}))


class Fixed(torch.nn.Module):
    """Scores every position with logits chosen by ``pick(example, position)``."""

    def __init__(self, examples, pick):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.examples, self.pick = {e.tokens: e for e in examples}, pick

    def forward(self, tokens, mask, where=None):
        logits = torch.zeros(*tokens.shape, len(VOCAB))
        for row in range(len(tokens)):
            e = self.examples[tuple(tokens[row][mask[row]].tolist())]
            for i in range(len(e.tokens)):
                logits[row, i] = self.pick(e, i)
        return logits if where is None else logits[where]


def test_the_accuracy_is_the_papers_on_a_worked_example():
    # 0 -a-> 1, 1 -b-> 0, 1 -c-> 2, 2 -a-> 0; the strings "a b a" and "a c"
    dfa = DFA((((0, 1),), ((1, 0), (2, 2)), ((0, 0),)), frozenset({0, 1, 2}))
    a, b, c = 1, 2, 3
    e = Instance((a, b, a, DELIM, a), (b, a, IGNORE, a, c), 2, None, dfa)
    task = make()
    always_b = torch.full((len(VOCAB),), -1.0).index_fill_(0, torch.tensor([b]), 1.0)
    # scored: after "a" (b right), after "a b" (b wrong), after "|" (b wrong), after "a" (b right)
    [(hits, tvd)] = task.predict(Fixed([e], lambda e, i: always_b), [e], [task.answers_of(e)])
    assert hits == [True, False, False, True]
    assert task.answers_of(e)[1] == [1, 1, 2, 2]
    assert tvd > 0


def test_an_oracle_scores_one_a_delimiter_predictor_zero():
    task = make()
    examples = task.split("test", WHOLE)
    answers = task.answers("test", WHOLE)

    def exact(e, i):  # the automaton's own next-token distribution (its state's edges, uniformly)
        begins = max((j + 1 for j in range(i + 1) if e.tokens[j] == DELIM), default=0)
        state = run(e.dfa, [t - 1 for t in e.tokens[begins:i + 1]])
        logits = torch.full((len(VOCAB),), -1e4)
        logits[[a + 1 for a, _ in e.dfa.edges[state]]] = 0.0
        return logits

    scores = {(m.name, m.length): m.value for m in task.evaluate(Fixed(examples, exact), "test", WHOLE, None)}
    assert scores[("accuracy", None)] == 1.0 and scores[("sequence_accuracy", None)] == 1.0
    assert scores[("tvd", None)] == pytest.approx(0.0, abs=1e-4)
    assert {k for _, k in scores if k is not None} == set(range(1, 1 + max(len(strings_of(e)) for e in examples)))
    delimiter = torch.zeros(len(VOCAB)).index_fill_(0, torch.tensor([DELIM]), 5.0)
    scores = {(m.name, m.length): m.value for m in task.evaluate(Fixed(examples, lambda e, i: delimiter), "test",
                                                                 WHOLE, None)}
    assert scores[("accuracy", None)] == 0.0 and scores[("examples", None)] == len(examples) == len(answers)


def test_a_run_through_the_command_stores_accuracy_overall_and_per_string(tmp_path):
    rc = harness("run", "--arch", "lstm", "--tasks", "regbench", "--budget", "smoke", "--results", tmp_path,
                 "--device", "cpu", "--no-progress", *TINY_SETS, "--set", "n_train_automata=40",
                 "--set", "n_valid=10", "--set", "n_test_per_cell=10")
    assert rc == 0
    store = RunStore(tmp_path)
    assert list(store.runs().status) == ["finished"]
    m = store.metrics()
    test = m[m.split == "test"]
    overall = test[(test.metric == "accuracy") & test.length.isna()]
    per_string = test[(test.metric == "accuracy") & test.length.notna()]
    assert len(overall) == 1 and 0 <= overall.value.iloc[0] <= 1
    assert sorted(per_string.length)[0] == 1 and len(per_string) >= 1
    assert {"tvd", "sequence_accuracy", "examples"} <= set(test.metric)
    assert set(m[m.split == "valid"].metric) >= {"accuracy", "tvd"}
