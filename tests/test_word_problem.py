"""The word problem: the task's multiplication (permutations composed as index tuples, integers
added mod n) checked against independent implementations, matrices multiplied with numpy and
sympy's permutations; the composition order (left to right: g₁ first); group orders, closure,
identity and solvability (the derived series computed here, from matrices); targets equal to the
running products; lengths and data fixed by data_seed; one run through the command."""
import json
import math
from collections import Counter

import numpy as np
import pydantic
import pytest
import torch
from sympy.combinatorics import Permutation
from sympy.combinatorics.named_groups import AlternatingGroup, SymmetricGroup

from harness.core.metrics import Metric
from harness.core.registry import ARCHITECTURES, TASKS
from harness.core.train_config import TrainConfig
from harness.store import RunStore
from harness.sweep import expand
from tasks.token_targets import IGNORE
from tasks.word_problem import PAPER_GROUPS, make_group, parse_group, solved_length
from tests.conftest import TINY_SETS, harness

CLS = TASKS.get("word_problem")
TRAIN = TrainConfig(**CLS.budgets["smoke"])
L = TRAIN.seq_len
ORDERS = {"Z60": 60, "A4xZ5": 60, "A5": 60, "S3": 6, "S5": 120}
#: orders of G ⊇ G' ⊇ G'' … (A5 is perfect; A4's derived subgroup is the Klein four-group)
DERIVED = {"Z60": [60, 1], "A4xZ5": [60, 4, 1], "A5": [60], "S3": [6, 3, 1], "S5": [120, 60]}


def make(**options):
    defaults = dict(group="A5", n_train=400, n_valid=50, n_test_per_cell=20, test_lengths=(2, 7, 30))
    return CLS(CLS.Options(**{**defaults, **options}), None)


# An independent representation: every element as a permutation matrix acting on row vectors
# (e_i · R(p) = e_{p[i]}), so "a, then b" is the matrix product R(a) @ R(b), left to right. Zn is
# the cyclic shift by k; a direct product is block diagonal.

def block(kind: str, n: int, x) -> np.ndarray:
    image = [(i + x) % n for i in range(n)] if kind == "Z" else list(x)
    m = np.zeros((n, n))  # float: BLAS products, exact for 0/1 entries
    m[np.arange(n), image] = 1
    return m


def matrix(group_name: str, element) -> np.ndarray:
    factors = [(f.kind, f.n) for f in parse_group(group_name)]
    parts = [element] if len(factors) == 1 else list(element)
    blocks = [block(kind, n, x) for (kind, n), x in zip(factors, parts)]
    size = sum(b.shape[0] for b in blocks)
    out, at = np.zeros((size, size)), 0
    for b in blocks:
        out[at:at + len(b), at:at + len(b)] = b
        at += len(b)
    return out


def matrices(name: str) -> np.ndarray:
    return np.stack([matrix(name, e) for e in make_group(name).elements])


def key(m: np.ndarray) -> bytes:
    """A permutation matrix by the column of each row's 1."""
    return m.argmax(-1).astype(np.int16).tobytes()


@pytest.mark.parametrize("name", ORDERS)
def test_orders_identity_first_canonical_elements_and_closure(name):
    group = make_group(name)
    assert group.order == ORDERS[name] == len(set(group.elements))
    ms = matrices(name)
    assert (ms[0] == np.eye(ms.shape[1])).all(), "the identity comes first"
    index = {key(m): i for i, m in enumerate(ms)}
    assert len(index) == group.order, "the representation is faithful"
    # closed: every product R(a) R(b) is an element, and it is the one the task's table names
    table = np.array([[index[key(m)] for m in ms[a] @ ms] for a in range(group.order)])
    assert (table == group.table).all()
    for f, part in zip(parse_group(name), [group.elements[-1]] if len(group.factors) == 1 else group.elements[-1]):
        assert isinstance(part, int) if f.kind == "Z" else (isinstance(part, tuple) and sorted(part) == list(range(f.n)))


@pytest.mark.parametrize("name", ["S3", "S5", "A5"])
def test_permutations_compose_as_sympy_does_and_are_its_groups(name):
    group = make_group(name)
    for a in group.elements:
        for b in group.elements[::7]:
            assert list(group.multiply(a, b)) == (Permutation(list(a)) * Permutation(list(b))).array_form
    n = group.factors[0].n
    reference = SymmetricGroup(n) if name.startswith("S") else AlternatingGroup(n)
    assert {tuple(p.array_form) for p in reference.elements} == set(group.elements)


def test_the_running_product_goes_left_to_right():
    """Worked by hand: a swaps 0 and 1, b swaps 1 and 2; "a, then b" sends 0 → 1 → 2, and a·b·a
    sends 0 → 1 → 2 → 2, 1 → 0 → 0 → 1, 2 → 2 → 1 → 0."""
    group, task = make_group("S3"), make(group="S3")
    a, b = (1, 0, 2), (0, 2, 1)
    assert group.multiply(a, b) == (2, 0, 1) != group.multiply(b, a) == (1, 2, 0)
    assert (Permutation([1, 0, 2]) * Permutation([0, 2, 1])).array_form == [2, 0, 1]
    rows = np.array([[group.index(a), group.index(b), group.index(a)]])
    assert [group.elements[i] for i in group.running_products(rows)[0]] == [a, (2, 0, 1), (2, 1, 0)]
    e = task.examples(np.array([3]), np.random.default_rng(0))[0]
    assert e.tokens == tuple(i + 1 for i in np.random.default_rng(0).integers(0, 6, size=(1, 3))[0])
    assert make_group("Z60").multiply(59, 3) == 2


def derived_series(ms: np.ndarray) -> list[int]:
    """Orders of the derived series, from the matrices alone (inverse = transpose)."""
    current = ms
    orders = [len(ms)]
    while True:
        t = current.transpose(0, 2, 1)
        subgroup = {key(m): m for a in range(len(current)) for m in t[a] @ t @ current[a] @ current}  # a⁻¹b⁻¹ab
        frontier = list(subgroup.values())
        gens = list(subgroup.values())
        while frontier:  # close under products with the generators
            new = {}
            for x in np.stack(frontier)[:, None] @ np.stack(gens)[None]:
                for m in x:
                    if key(m) not in subgroup:
                        subgroup[key(m)] = new[key(m)] = m
            frontier = list(new.values())
        if len(subgroup) == len(current):
            return orders
        current = np.stack(list(subgroup.values()))
        orders.append(len(current))


@pytest.mark.parametrize("name", DERIVED)
def test_a5_is_not_solvable_and_the_other_paper_groups_are(name):
    assert derived_series(matrices(name)) == DERIVED[name]
    info = make(group=name).info()
    assert info == {"group": name, "order": ORDERS[name], "derived_series": DERIVED[name],
                    "solvable": DERIVED[name][-1] == 1}
    if name.startswith(("A", "S")) and "x" not in name:  # and sympy agrees
        n = int(name[1:])
        assert (SymmetricGroup(n) if name[0] == "S" else AlternatingGroup(n)).is_solvable == info["solvable"]


@pytest.mark.parametrize("name", ORDERS)
def test_every_target_is_the_running_product_of_its_tokens(name):
    task = make(group=name)
    group = task.group
    ms = matrices(name)
    index = {key(m): i for i, m in enumerate(ms)}
    for split in ("train", "valid", "test"):
        for e in task.split(split, TRAIN):
            assert len(e.tokens) == e.length and IGNORE not in e.targets
            assert all(1 <= t <= group.order for t in e.tokens) and task.vocab[0] == "<pad>"
            state = np.eye(ms.shape[1])
            expected = []
            for t in e.tokens:
                state = state @ ms[t - 1]
                expected.append(index[key(state)])
            assert list(e.targets) == expected
    assert task.n_outputs == group.order and len(task.vocab) == group.order + 1


def test_sympy_agrees_on_sampled_a5_and_s5_sequences():
    for name in ("A5", "S5"):
        task = make(group=name, n_train=200)
        elements = task.group.elements
        for e in task.split("train", TRAIN)[:100]:
            product = Permutation(list(range(5)))
            for t, target in zip(e.tokens, e.targets):
                product = product * Permutation(list(elements[t - 1]))
                assert tuple(product.array_form) == elements[target]


def test_lengths_uniform_elements_uniform_and_data_fixed_by_its_seed():
    task = make(n_train=3000, test_lengths=None)
    train = task.split("train", TRAIN)
    counts = Counter(e.length for e in train)
    assert set(counts) == set(range(2, L + 1))
    assert max(counts.values()) < 1.5 * 3000 / (L - 1) and min(counts.values()) > 0.5 * 3000 / (L - 1)
    elements = Counter(t for e in train for t in e.tokens)
    assert set(elements) == set(range(1, 61))
    expected = sum(elements.values()) / 60
    assert max(elements.values()) < 1.3 * expected and min(elements.values()) > 0.7 * expected
    test = task.split("test", TRAIN)
    assert [e.length for e in test] == [n for n in range(2, 2 * L + 1) for _ in range(20)], "default: 2..2L"
    again = make(n_train=3000, test_lengths=None)
    for split in ("train", "valid", "test"):
        assert [e.tokens for e in again.split(split, TRAIN)] == [e.tokens for e in task.split(split, TRAIN)]
    other = make(n_train=3000, test_lengths=None, data_seed=1)
    assert [e.tokens for e in other.split("test", TRAIN)] != [e.tokens for e in test]
    assert [e.tokens for e in task.split("valid", TRAIN)] != [e.tokens for e in train[:50]]


def test_options_spellings_and_refusals():
    assert CLS.Options().group == "A5" and CLS.Options().test_lengths is None
    assert CLS.Options(group="a4 × z5").group == "A4xZ5" == CLS.Options(group="A4xZ5").group
    assert CLS.Options(test_lengths="2..5 9").test_lengths == (2, 3, 4, 5, 9)
    assert CLS.Options(test_lengths=20).test_lengths == (20,)
    for bad in ("Q8", "A5x", "S0", "Z 6 0 x", "D4"):
        with pytest.raises(pydantic.ValidationError, match=r"expected Zn .*An .*Sn .*joined by 'x'"):
            CLS.Options(group=bad)
    with pytest.raises(pydantic.ValidationError, match="5,040 elements; at most 1,000"):
        CLS.Options(group="S7")
    with pytest.raises(pydantic.ValidationError, match="trivial"):
        CLS.Options(group="Z1xA2")
    for bad in ("1 5", "", "a..b"):
        with pytest.raises(pydantic.ValidationError):
            CLS.Options(test_lengths=bad)
    with pytest.raises(ValueError, match="seq_len=1; sequences are at least 2"):
        make().split("train", TRAIN.model_copy(update={"seq_len": 1}))


def test_the_three_paper_groups_run_unless_one_is_chosen():
    assert PAPER_GROUPS == ("Z60", "A4xZ5", "A5") and not CLS.in_all
    assert [c.task_label for c in expand(["lstm"], ["word_problem"])] == [f"word_problem/{g}" for g in PAPER_GROUPS]
    chosen = expand(["lstm"], ["word_problem"], overrides={"group": ["s5"]})
    assert [c.task_label for c in chosen] == ["word_problem/S5"]


def test_dev_metric_solved_length_and_the_within_beyond_split():
    assert CLS.dev_metric == "sequence_accuracy" and CLS.length_metric == "sequence_accuracy"
    assert solved_length({2: 1.0, 3: 0.995, 4: 0.5, 5: 1.0}) == 3 and solved_length({2: 0.9, 3: 1.0}) == 0
    task = make(group="S3", test_lengths=(2, 5, 13, 20))
    test = task.split("test", TRAIN)

    class Oracle(torch.nn.Module):  # right everywhere except at position 14 and later
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, tokens, mask, where):
            logits = torch.zeros(*tokens.shape, 6)
            for row in range(len(tokens)):
                seq = tuple(tokens[row][mask[row]].tolist())
                e = next(x for x in test if x.tokens == seq)
                for i, t in enumerate(e.targets):
                    logits[row, i, t if i < 13 else (t + 1) % 6] = 1.0
            return logits[where]

    metrics = {(m.name, m.length): m.value for m in task.evaluate(Oracle(), "test", TRAIN, None)}
    assert metrics[("sequence_accuracy", 13)] == 1.0 and metrics[("sequence_accuracy", 20)] == 0.0
    assert metrics[("solved_length", None)] == 13
    assert metrics[("sequence_accuracy_within", None)] == 1.0 and metrics[("sequence_accuracy_beyond", None)] == 0.5
    assert metrics[("accuracy_beyond", None)] == pytest.approx((20 * 13 + 20 * 13) / (20 * 13 + 20 * 20))
    assert 0 < metrics[("seen_in_training", None)] < 1, "S3 at length 2: few sequences, most seen"
    dev = task.evaluate(Oracle(), "test", TRAIN, None, lengths=False)
    assert {m.name for m in dev} == {"accuracy", "sequence_accuracy", "examples"}
    assert CLS.dev_score([Metric("valid", "sequence_accuracy", 0.25), Metric("valid", "accuracy", 0.9)], TRAIN) == 0.25


def test_a_model_builds_with_a_chance_level_loss():
    task = make(n_train=64)
    lstm = ARCHITECTURES.get("lstm")
    torch.manual_seed(0)
    model = task.build_model(lstm(d_model=16, n_layers=1, options=lstm.Options()))
    batch = next(task.train_batches(TRAIN, torch.Generator().manual_seed(0)))
    assert task.loss(model, batch).item() == pytest.approx(math.log(60), rel=0.1)


def test_a_run_through_the_command_stores_sequence_accuracy_per_length(tmp_path):
    rc = harness("run", "--arch", "lstm", "--tasks", "word_problem", "--set", "group=S3", "--budget", "smoke",
                 "--results", tmp_path, "--device", "cpu", "--no-progress", *TINY_SETS,
                 "--set", "test_lengths=2 20", "--set", "n_train=200", "--set", "n_valid=20",
                 "--set", "n_test_per_cell=10")
    assert rc == 0
    store = RunStore(tmp_path)
    runs = store.runs()
    assert list(runs.status) == ["finished"] and list(runs.task) == ["word_problem"]
    info = json.loads(runs["info"].iloc[0])
    assert info["group"] == "S3" and info["solvable"] and info["train_length"] == 16
    m = store.metrics()
    test = m[m.split == "test"]
    per_length = test[test.metric == "sequence_accuracy"].dropna(subset=["length"])
    assert sorted(per_length.length) == [2, 20]
    for name in ("solved_length", "sequence_accuracy_within", "sequence_accuracy_beyond", "seen_in_training"):
        assert len(test[test.metric == name]) == 1, name
    assert {s for _, s in CLS.table_metrics} <= set(test.metric) | set(m[m.split == "valid"].metric)
