"""The Chomsky-hierarchy tasks: every generated target equals an independent answer computed from
the input alone, worked examples checked by hand, the paper's formats (placeholders per output
position, lengths), the score as the mean over test lengths, and one run through the command."""
import math

import pytest
import torch

from harness.core.registry import ARCHITECTURES, TASKS
from harness.core.train_config import TrainConfig
from harness.store import RunStore
from harness.sweep import expand
from tasks.chomsky import BLANK, END, NAMES, PAPER_TEST_LENGTHS, SPECS, answer
from tasks.token_targets import IGNORE
from tests.conftest import TINY_SETS, harness

TRAIN = TrainConfig(**TASKS.get("chomsky").budgets["smoke"])
L = TRAIN.seq_len
#: placeholders after an input of length n, as the paper's tasks define their output lengths
OUTPUT_LENGTH = {"stack_manipulation": lambda n: n + 1, "reverse_string": lambda n: n,
                 "duplicate_string": lambda n: 2 * n, "odds_first": lambda n: n, "binary_addition": lambda n: n + 1,
                 "binary_multiplication": lambda n: n, "compute_sqrt": lambda n: math.ceil(n / 2),
                 "bucket_sort": lambda n: n}


def make(name, **options):
    cls = TASKS.get("chomsky")
    defaults = dict(n_train=1000, n_valid=40, n_test_per_cell=15, test_lengths=(41, 77))
    return cls(cls.Options(name=name, **{**defaults, **options}), None)


def read(task, e) -> tuple[list[str], int, list[str]]:
    """(input symbols, placeholders, scored outputs) of an example."""
    symbols = [task.vocab[t] for t in e.tokens]
    width = symbols.count(BLANK)
    assert symbols[len(symbols) - width:] == [BLANK] * width, "the placeholders follow the input"
    return symbols[:len(symbols) - width], width, [task.spec.classes[t] for t in e.targets if t != IGNORE]


@pytest.mark.parametrize("name", NAMES)
def test_every_target_is_the_independent_answer_at_the_placeholders(name):
    task = make(name)
    for split in ("train", "valid", "test"):
        for e in task.split(split, TRAIN):
            symbols, width, output = read(task, e)
            n = e.length
            assert len(symbols) == (n - 1 + n % 2 if name == "modular_arithmetic" else n)
            assert width == OUTPUT_LENGTH.get(name, lambda n: 1)(n)
            assert set(symbols) <= set(task.spec.symbols)
            assert output == answer(name, symbols), (symbols, output)
            # scored: the first placeholders, as many as the answer has; nothing else
            scored = [i for i, t in enumerate(e.targets) if t != IGNORE]
            assert scored == list(range(len(symbols), len(symbols) + len(output)))


WORKED = [  # (task, input, output), each checked by hand
    ("even_pairs", "0 0 1 1 1 0", "0"),  # 01 and 10: two pairs
    ("even_pairs", "0 1 0 1 0 0 1", "1"),  # 01 10 01 10 01: five
    ("parity_check", "1 0 1 0 1 0 0", "1"),
    ("parity_check", "0 1 1 1 1", "0"),
    ("cycle_navigation", "+1 -1 0 -1 -1", "3"),  # −2 mod 5
    ("modular_arithmetic", "1 + 2 * 3", "2"),  # 7 mod 5
    ("modular_arithmetic", "1 - 1 - 1", "4"),  # −1 mod 5
    ("modular_arithmetic", "0 * 1 + 4 * 3 - 2", "0"),  # 10 mod 5
    ("stack_manipulation", "0 1 1 0 PUSH1 POP POP", f"1 1 0 {END}"),  # 0110 → 01101 → 0110 → 011
    ("stack_manipulation", "1 1 0 POP POP POP POP", END),  # a POP on the empty stack does nothing
    ("reverse_string", "0 1 1 0 1 0", "0 1 0 1 1 0"),
    ("modular_arithmetic_brackets", "( ( - 2 ) * ( 3 + 4 ) )", "1"),  # −14 mod 5
    ("modular_arithmetic_brackets", "- 3", "2"),
    ("solve_equation", "( x + 3 ) = 1", "3"),  # 3 + 3 = 6 ≡ 1
    ("solve_equation", "( ( - x ) - ( 2 + 4 ) ) = 0", "4"),  # −4 − 6 = −10 ≡ 0
    ("duplicate_string", "1 0 1", "1 0 1 1 0 1"),
    ("missing_duplicate_string", "0 1 1 0 0 ? 1 0", "1"),  # 0110 twice
    ("missing_duplicate_string", "1 0 1 1 ? 1 #", "0"),  # 101 twice, then the odd length's pad
    ("odds_first", "0 0 1 1 0 1 0 1", "0 1 0 0 0 1 1 1"),
    ("odds_first", "1 1 0", "1 0 1"),
    ("binary_addition", "1 0 1 + 1 1", f"0 0 0 1 {END}"),  # little-endian 5 + 3 = 8
    ("binary_addition", "0 0 1 + 0 1 1 0 1", f"0 1 0 1 1 {END}"),  # 4 + 22 = 26
    ("binary_multiplication", "0 0 1 * 0 1 1 0 1", f"0 0 0 1 1 0 1 {END}"),  # 4 × 22 = 88
    ("binary_multiplication", "1 1 * 1", f"1 1 {END}"),  # 3 × 1
    ("compute_sqrt", "1 0 0 1 0 1", "1 1 0"),  # big-endian ⌊√37⌋ = 6, ⌈6/2⌉ bits
    ("compute_sqrt", "1 1 1", "1 0"),  # ⌊√7⌋ = 2
    ("compute_sqrt", "0 0 0 1", "0 1"),  # ⌊√1⌋ = 1, zero-padded
    ("bucket_sort", "1 0 2 0 4 1 1 2", "0 0 1 1 1 2 2 4"),
]


@pytest.mark.parametrize("name,given,expected", WORKED)
def test_worked_examples(name, given, expected):
    assert answer(name, given.split()) == expected.split()


def test_worked_examples_cover_every_task_and_the_hierarchy():
    assert {name for name, _, _ in WORKED} == set(NAMES) == set(SPECS)
    levels = [SPECS[n].level for n in NAMES]
    assert (levels.count("regular"), levels.count("context-free"), levels.count("context-sensitive")) == (4, 4, 7)


@pytest.mark.parametrize("name", ["binary_addition", "missing_duplicate_string", "stack_manipulation"])
def test_train_lengths_uniform_test_lengths_as_asked_data_fixed_by_its_seed(name):
    task = make(name, n_train=2000)
    train, test = task.split("train", TRAIN), task.split("test", TRAIN)
    lengths = [e.length for e in train]
    smallest = SPECS[name].smallest
    assert set(lengths) == set(range(smallest, L + 1))
    assert max(lengths.count(n) for n in set(lengths)) < 3 * 2000 / len(set(lengths)), "uniform lengths"
    assert [e.length for e in test] == [41] * 15 + [77] * 15
    assert [e.tokens for e in make(name, n_train=2000).split("test", TRAIN)] == [e.tokens for e in test]
    assert [e.tokens for e in make(name, n_train=2000, data_seed=1).split("test", TRAIN)] != [e.tokens for e in test]
    assert not {e.tokens for e in task.split("valid", TRAIN)} & {e.tokens for e in train}


def test_test_lengths_default_to_an_even_sample_of_the_papers_and_read_from_text():
    cls = TASKS.get("chomsky")
    assert cls.Options().test_lengths == (41, 92, 143, 194, 245, 296, 347, 398, 449, 500)
    assert cls.Options(test_lengths="41..500").test_lengths == PAPER_TEST_LENGTHS
    assert cls.Options(test_lengths="41..43 100").test_lengths == (41, 42, 43, 100)
    assert cls.Options(test_lengths=60).test_lengths == (60,)
    for bad in ("", "0 5", "a..b"):
        with pytest.raises(ValueError):
            cls.Options(test_lengths=bad)
    with pytest.raises(ValueError, match="test lengths start at 3"):
        make("solve_equation", test_lengths=(2, 50)).split("test", TRAIN)


def test_every_task_runs_unless_one_is_chosen():
    labels = [c.task_label for c in expand(["lstm"], ["chomsky"])]
    assert labels == [f"chomsky/{n}" for n in NAMES]
    chosen = expand(["lstm"], ["chomsky"], overrides={"name": ["parity_check"]})
    assert [c.task_label for c in chosen] == ["chomsky/parity_check"]
    assert not TASKS.get("chomsky").in_all


@pytest.mark.parametrize("name", NAMES)
def test_every_task_builds_a_model_with_a_finite_loss_and_a_score(name):
    task = make(name, n_train=64, n_test_per_cell=3)
    lstm = ARCHITECTURES.get("lstm")
    torch.manual_seed(0)
    model = task.build_model(lstm(d_model=16, n_layers=1, options=lstm.Options()))
    batch = next(task.train_batches(TRAIN.model_copy(update={"batch_size": 16}), torch.Generator().manual_seed(0)))
    loss = task.loss(model, batch)
    assert torch.isfinite(loss) and loss.item() > 0
    metrics = {(m.split, m.name, m.length): m.value for m in task.evaluate(model, "test", TRAIN, None)}
    at = [metrics[("test", "accuracy", n)] for n in (41, 77)]
    assert metrics[("test", "score", None)] == pytest.approx(sum(at) / 2)


def test_a_run_through_the_command_stores_accuracy_per_length_and_the_score(tmp_path):
    rc = harness("run", "--arch", "lstm", "--tasks", "chomsky", "--set", "name=parity_check", "--budget", "smoke",
                 "--results", tmp_path, "--device", "cpu", "--no-progress", *TINY_SETS,
                 "--set", "test_lengths=41 60", "--set", "n_train=200", "--set", "n_valid=20",
                 "--set", "n_test_per_cell=10")
    assert rc == 0
    runs = RunStore(tmp_path).runs()
    assert list(runs.status) == ["finished"] and list(runs.task) == ["chomsky"]
    m = RunStore(tmp_path).metrics()
    test = m[m.split == "test"]
    per_length = test[test.metric == "accuracy"].dropna(subset=["length"])
    assert sorted(per_length.length) == [41, 60]
    score = test[test.metric == "score"]
    assert len(score) == 1 and score.length.isna().all()
    assert score.value.iloc[0] == pytest.approx(per_length.value.mean())
    assert TASKS.get("chomsky").table_metrics[0] == ("test", "score")
    # the per-length accuracy is drawn against length, as lm's and the probes' are
    assert harness("plot", "extrapolation", "--results", tmp_path, "--out", tmp_path / "figures") == 0
    assert (tmp_path / "figures" / "extrapolation.png").stat().st_size > 0
