"""The fifteen tasks of Delétang et al. 2023, "Neural Networks and the Chomsky Hierarchy" (ICLR;
google-deepmind/neural_networks_chomsky_hierarchy), in their formats; ``name`` picks one and
``--tasks chomsky`` runs them all.

- regular: ``even_pairs`` (is the number of 01 and 10 pairs odd?), ``modular_arithmetic`` (an
  expression over 0–4 and + − ×, × first, mod 5), ``parity_check`` (is the number of 1s odd?),
  ``cycle_navigation`` (moves −1/0/+1 on a cycle of 5: where does it end?);
- context-free: ``stack_manipulation`` (a stack bottom to top, then POP/PUSH0/PUSH1: the final
  stack top to bottom, then <end>), ``reverse_string``, ``modular_arithmetic_brackets`` (a fully
  bracketed expression over 0–4 and + − ×, unary minus, mod 5), ``solve_equation`` (a bracketed
  expression over + − with one digit replaced by x, "=", its value: which digit was x?);
- context-sensitive: ``duplicate_string`` (ss), ``missing_duplicate_string`` (ss with one symbol
  replaced by "?", "#" appended at odd lengths: the missing symbol), ``odds_first`` (the symbols
  at positions 1, 3, 5 … then 2, 4, 6 …), ``binary_addition`` and ``binary_multiplication`` (two
  little-endian numbers around + or ×: the result little-endian, then <end>),
  ``compute_sqrt`` (a big-endian number: its integer square root, big-endian, ⌈n/2⌉ bits),
  ``bucket_sort`` (symbols 0–4, sorted).

Strings are binary unless said otherwise. An example of length n is the input (n symbols; an even
``modular_arithmetic`` length drops one, as the paper's does) followed by one placeholder ``_``
per output position, the paper's non-autoregressive setting: the model predicts the output at the
placeholders. Classification tasks have one placeholder, the last position. Where a result ends
in <end> (stack, addition, multiplication: n+1, n+1 and n placeholders) positions after it are
neither trained nor scored, as the paper's accuracy mask leaves them out; the paper also trains on
their zero padding. Duplication has 2n placeholders, reversal, odds first and sorting n.

The paper's protocol: lengths uniform in 1..40 for training (here 1..L, L = ``train.seq_len``,
from the shortest length a task's grammar has: 3 for ``solve_equation`` and the binary
arithmetic, 2 for ``missing_duplicate_string``, where the paper feeds degenerate inputs), tested
at every length 41..500 (512 sequences each); the score is the token accuracy at each test length,
averaged over the lengths (the ``score`` metric); 1,000,000 steps of batch 128 and Adam, fresh
samples every step (here a fixed training set of ``n_train``), 10 seeds for each learning rate.
By default the test lengths are every 51st of 41..500 (41, 92 … 500) with ``n_test_per_cell``
sequences each; results/chomsky_protocol.yaml sets the paper's. Each answer is also computed by
``answer``, from the input symbols alone.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Literal, get_args

import pydantic

from harness.core.metrics import Metric, MetricSpec, specs
from harness.core.registry import TASKS
from harness.core.train_config import TrainConfig
from tasks.token_targets import IGNORE, PAD, Tagged, TokenTargetOptions, TokenTargetTask, lengths_from_text

Name = Literal["even_pairs", "modular_arithmetic", "parity_check", "cycle_navigation",
               "stack_manipulation", "reverse_string", "modular_arithmetic_brackets", "solve_equation",
               "duplicate_string", "missing_duplicate_string", "odds_first", "binary_addition",
               "binary_multiplication", "compute_sqrt", "bucket_sort"]
NAMES: tuple[str, ...] = get_args(Name)
#: the paper's test lengths: every length from 41 to 500 (``--set test_lengths=41..500``)
PAPER_TEST_LENGTHS = tuple(range(41, 501))
#: the default: every 51st of them, 41, 92 … 500; their mean accuracy estimates the paper's score
#: at a 46th of its cost (all 460 lengths take hours a run on a CPU)
TEST_LENGTHS = PAPER_TEST_LENGTHS[::51]
BLANK, END = "_", "<end>"
MODULUS = 5
BITS = ("0", "1")
DIGITS = tuple(str(d) for d in range(MODULUS))
MOVES = {"-1": -1, "0": 0, "+1": 1}
ACTIONS = ("POP", "PUSH0", "PUSH1")

Sample = tuple[list[str], list[str]]  # (input symbols, scored output symbols)


def bits(n: int, rng: random.Random) -> list[str]:
    return [rng.choice(BITS) for _ in range(n)]


# Generators: (length n, rng) → (input, output). Each output comes from how its input was drawn.

def sample_even_pairs(n, rng) -> Sample:
    s = bits(n, rng)
    return s, [str(sum(a != b for a, b in zip(s, s[1:])) % 2)]


def sample_parity_check(n, rng) -> Sample:
    s = bits(n, rng)
    return s, [str(s.count("1") % 2)]


def sample_cycle_navigation(n, rng) -> Sample:
    moves = [rng.choice(list(MOVES)) for _ in range(n)]
    return moves, [str(sum(MOVES[m] for m in moves) % MODULUS)]


def sample_modular_arithmetic(n, rng) -> Sample:
    if n % 2 == 0:  # the paper's expressions have odd lengths
        n -= 1
    numbers = [rng.randrange(MODULUS) for _ in range(n // 2 + 1)]
    ops = [rng.choice("+-*") for _ in range(n // 2)]
    total, term = 0, numbers[0]  # a sum of products: a minus negates the product it starts
    for op, x in zip(ops, numbers[1:]):
        if op == "*":
            term *= x
        else:
            total, term = total + term, (x if op == "+" else -x)
    symbols = [str(numbers[0])] + [s for op, x in zip(ops, numbers[1:]) for s in (op, str(x))]
    return symbols, [str((total + term) % MODULUS)]


def sample_stack_manipulation(n, rng) -> Sample:
    depth = 1 if n == 1 else rng.randint(1, n - 1)
    stack = bits(depth, rng)
    actions = [rng.choice(ACTIONS) for _ in range(n - depth)]
    final = list(stack)
    for action in actions:
        if action != "POP":
            final.append(action[-1])
        elif final:
            final.pop()
    return stack + actions, final[::-1] + [END]


def sample_reverse_string(n, rng) -> Sample:
    s = bits(n, rng)
    return s, s[::-1]


def bracketed(n: int, rng: random.Random, ops: str) -> tuple[list[str], int]:
    """The paper's grammar: d, -d, (d), (-d) up to length 4, else (left op right)."""
    if n <= 4:
        d = rng.randrange(MODULUS)
        forms = {1: ([str(d)], d), 2: (["-", str(d)], -d), 3: (["(", str(d), ")"], d),
                 4: (["(", "-", str(d), ")"], -d)}
        symbols, value = forms[n]
        return symbols, value % MODULUS
    left = rng.randint(1, n - 4)
    a, x = bracketed(left, rng, ops)
    b, y = bracketed(n - 3 - left, rng, ops)
    op = rng.choice(ops)
    value = x + y if op == "+" else x - y if op == "-" else x * y
    return ["(", *a, op, *b, ")"], value % MODULUS


def sample_modular_arithmetic_brackets(n, rng) -> Sample:
    symbols, value = bracketed(n, rng, "+-*")  # the paper's runs include × (mult=True)
    return symbols, [str(value)]


def sample_solve_equation(n, rng) -> Sample:
    expression, value = bracketed(n - 2, rng, "+-")
    i = rng.randrange(len(expression))
    while expression[i] not in DIGITS:  # the paper's way: the first digit from a random start
        i = (i + 1) % len(expression)
    unknown = expression[i]
    return expression[:i] + ["x"] + expression[i + 1:] + ["=", str(value)], [unknown]


def sample_duplicate_string(n, rng) -> Sample:
    s = bits(n, rng)
    return s, s + s


def sample_missing_duplicate_string(n, rng) -> Sample:
    doubled = bits(n // 2, rng) * 2
    i = rng.randrange(len(doubled))
    missing, doubled[i] = doubled[i], "?"
    return doubled + ["#"] * (n % 2), [missing]


def sample_odds_first(n, rng) -> Sample:
    s = bits(n, rng)
    return s, s[0::2] + s[1::2]


def little_endian(x: int, width: int) -> list[str]:
    return [str(x >> k & 1) for k in range(width)]


def two_numbers(n: int, rng: random.Random, op: str) -> tuple[list[str], int, int]:
    """n symbols: a little-endian number of 1..n−2 bits, ``op``, one of the remaining bits (each
    number ≥ 1, leading zeros allowed)."""
    width_a = rng.randint(1, n - 2)
    width_b = n - 1 - width_a
    a, b = rng.randint(1, 2 ** width_a - 1), rng.randint(1, 2 ** width_b - 1)
    return little_endian(a, width_a) + [op] + little_endian(b, width_b), a, b


def sample_binary_addition(n, rng) -> Sample:
    symbols, a, b = two_numbers(n, rng, "+")
    return symbols, little_endian(a + b, (a + b).bit_length()) + [END]


def sample_binary_multiplication(n, rng) -> Sample:
    symbols, a, b = two_numbers(n, rng, "*")
    return symbols, little_endian(a * b, (a * b).bit_length()) + [END]


def sample_compute_sqrt(n, rng) -> Sample:
    x = rng.randint(1, 2 ** n - 1)
    return little_endian(x, n)[::-1], little_endian(math.isqrt(x), -(-n // 2))[::-1]


def sample_bucket_sort(n, rng) -> Sample:
    s = [rng.choice(DIGITS) for _ in range(n)]
    return s, [d for d in DIGITS for _ in range(s.count(d))]


@dataclass(frozen=True)
class Spec:
    level: Literal["regular", "context-free", "context-sensitive"]
    #: input alphabet
    symbols: tuple[str, ...]
    #: output alphabet, in class order
    classes: tuple[str, ...]
    #: placeholders after an input of length n
    output_length: Callable[[int], int]
    sample: Callable[[int, random.Random], Sample]
    #: the shortest length the task's grammar has
    smallest: int = 1


ONE, SAME = (lambda n: 1), (lambda n: n)
SPECS: dict[str, Spec] = {
    "even_pairs": Spec("regular", BITS, BITS, ONE, sample_even_pairs),
    "modular_arithmetic": Spec("regular", DIGITS + ("+", "-", "*"), DIGITS, ONE, sample_modular_arithmetic),
    "parity_check": Spec("regular", BITS, BITS, ONE, sample_parity_check),
    "cycle_navigation": Spec("regular", tuple(MOVES), DIGITS, ONE, sample_cycle_navigation),
    "stack_manipulation": Spec("context-free", BITS + ACTIONS, BITS + (END,), lambda n: n + 1,
                               sample_stack_manipulation),
    "reverse_string": Spec("context-free", BITS, BITS, SAME, sample_reverse_string),
    "modular_arithmetic_brackets": Spec("context-free", DIGITS + ("+", "-", "*", "(", ")"), DIGITS, ONE,
                                        sample_modular_arithmetic_brackets),
    "solve_equation": Spec("context-free", DIGITS + ("+", "-", "(", ")", "x", "="), DIGITS, ONE,
                           sample_solve_equation, smallest=3),
    "duplicate_string": Spec("context-sensitive", BITS, BITS, lambda n: 2 * n, sample_duplicate_string),
    "missing_duplicate_string": Spec("context-sensitive", BITS + ("?", "#"), BITS, ONE,
                                     sample_missing_duplicate_string, smallest=2),
    "odds_first": Spec("context-sensitive", BITS, BITS, SAME, sample_odds_first),
    "binary_addition": Spec("context-sensitive", BITS + ("+",), BITS + (END,), lambda n: n + 1,
                            sample_binary_addition, smallest=3),
    "binary_multiplication": Spec("context-sensitive", BITS + ("*",), BITS + (END,), SAME,
                                  sample_binary_multiplication, smallest=3),
    "compute_sqrt": Spec("context-sensitive", BITS, BITS, lambda n: -(-n // 2), sample_compute_sqrt),
    "bucket_sort": Spec("context-sensitive", DIGITS, DIGITS, SAME, sample_bucket_sort),
}


# Answers: each task's output from its input symbols alone, written apart from the generators.

def evaluate(symbols: list[str]) -> int:
    """An expression over digits, + - * ( ) and unary minus; * binds tighter than + and -."""
    at = 0

    def peek():
        return symbols[at] if at < len(symbols) else None

    def take():
        nonlocal at
        at += 1
        return symbols[at - 1]

    def expression():
        value = term()
        while peek() in ("+", "-"):
            value = value + term() if take() == "+" else value - term()
        return value

    def term():
        value = factor()
        while peek() == "*":
            take()
            value *= factor()
        return value

    def factor():
        s = take()
        if s == "-":
            return -factor()
        if s == "(":
            value = expression()
            if take() != ")":
                raise ValueError(f"unbalanced expression: {' '.join(symbols)}")
            return value
        return int(s)

    value = expression()
    if at != len(symbols):
        raise ValueError(f"trailing symbols in {' '.join(symbols)}")
    return value


def solve(symbols: list[str]) -> int:
    equals = symbols.index("=")
    side, value = symbols[:equals], int(symbols[equals + 1])
    roots = [x for x in range(MODULUS) if evaluate([str(x) if s == "x" else s for s in side]) % MODULUS == value]
    if len(roots) != 1:
        raise ValueError(f"{' '.join(symbols)} has {len(roots)} solutions mod {MODULUS}")
    return roots[0]


def final_stack(symbols: list[str]) -> list[str]:
    stack = []  # the initial stack, bottom to top, reads as pushes
    for s in symbols:
        if s == "POP":
            stack = stack[:-1]
        else:
            stack.append(s.removeprefix("PUSH"))
    return stack[::-1] + [END]


def arithmetic(symbols: list[str], op: str) -> list[str]:
    at = symbols.index(op)
    a, b = (int("".join(reversed(part)), 2) for part in (symbols[:at], symbols[at + 1:]))
    return list(reversed(bin(a + b if op == "+" else a * b)[2:])) + [END]


def missing(symbols: list[str]) -> str:
    body = [s for s in symbols if s != "#"]
    half, at = len(body) // 2, body.index("?")
    return body[at + half if at < half else at - half]


def walk(symbols: list[str]) -> int:
    position = 0
    for s in symbols:
        position = (position + MOVES[s]) % MODULUS
    return position


ANSWERS: dict[str, Callable[[list[str]], list[str]]] = {
    "even_pairs": lambda s: ["1" if s[0] != s[-1] else "0"],
    "modular_arithmetic": lambda s: [str(evaluate(s) % MODULUS)],
    "parity_check": lambda s: [str(sum(x == "1" for x in s) % 2)],
    "cycle_navigation": lambda s: [str(walk(s))],
    "stack_manipulation": final_stack,
    "reverse_string": lambda s: list(reversed(s)),
    "modular_arithmetic_brackets": lambda s: [str(evaluate(s) % MODULUS)],
    "solve_equation": lambda s: [str(solve(s))],
    "duplicate_string": lambda s: list(s) + list(s),
    "missing_duplicate_string": lambda s: [missing(s)],
    "odds_first": lambda s: [x for i, x in enumerate(s) if i % 2 == 0] + [x for i, x in enumerate(s) if i % 2],
    "binary_addition": lambda s: arithmetic(s, "+"),
    "binary_multiplication": lambda s: arithmetic(s, "*"),
    "compute_sqrt": lambda s: list(format(math.isqrt(int("".join(s), 2)), f"0{(len(s) + 1) // 2}b")),
    "bucket_sort": sorted,
}


def answer(name: str, symbols: list[str]) -> list[str]:
    """The output of task ``name`` for ``symbols`` (<end> included where the task has one)."""
    return ANSWERS[name](list(symbols))


class ChomskyOptions(TokenTargetOptions):
    name: Name = "parity_check"
    #: test lengths (the paper's: 41..500); also read from text, as ``--set`` cannot pass a list:
    #: "41..500", "41 100 500", "41..50 100"
    test_lengths: tuple[pydantic.PositiveInt, ...] = pydantic.Field(default=TEST_LENGTHS, min_length=1)

    @pydantic.field_validator("test_lengths", mode="before")
    @classmethod
    def _lengths_from_text(cls, value):
        return lengths_from_text(value)


@TASKS.register("chomsky")
class Chomsky(TokenTargetTask):
    """Delétang et al. 2023's 15 Chomsky-hierarchy tasks: train on lengths ≤ 40, score 41..500."""

    Options = ChomskyOptions
    version = "1"
    #: 15 runs a backbone; ``--tasks chomsky`` runs them
    in_all = False
    sweep_axes = {"name": NAMES}
    metric_specs = specs(
        *TokenTargetTask.metric_specs.values(),
        MetricSpec("score", "higher", "score", "fraction",
                   "the paper's score: token accuracy at each test length, averaged over the test lengths"),
    )
    table_metrics = (("test", "score"), ("test", "accuracy"), ("test", "sequence_accuracy"), ("valid", "accuracy"))
    budgets = {
        # seq_len is the longest training length L (the paper's 40)
        "smoke": dict(steps=1000, batch_size=32, seq_len=40, lr=1e-3, warmup_steps=50, eval_every=250),
        # the paper's 1,000,000 steps of batch 128 (GPU-days for the 15 tasks; lr swept by the protocol)
        "full": dict(steps=1_000_000, batch_size=128, seq_len=40, lr=1e-3, warmup_steps=1000, eval_every=20_000),
    }

    def __init__(self, options: ChomskyOptions, data_dir):
        super().__init__(options, data_dir)
        self.spec = SPECS[options.name]
        self.vocab = [PAD, *self.spec.symbols, BLANK]
        self.index = {s: i for i, s in enumerate(self.vocab)}
        self.n_outputs = len(self.spec.classes)

    def info(self) -> dict:
        return {"level": self.spec.level}

    def example(self, n: int, rng: random.Random) -> Tagged:
        symbols, output = self.spec.sample(n, rng)
        width = self.spec.output_length(n)
        tokens = [self.index[s] for s in symbols] + [self.index[BLANK]] * width
        scored = [self.spec.classes.index(s) for s in output]
        targets = [IGNORE] * len(symbols) + scored + [IGNORE] * (width - len(scored))
        return Tagged(tuple(tokens), tuple(targets), n)

    def generate(self, split: str, rng: random.Random, train: TrainConfig) -> list[Tagged]:
        name, smallest = self.options.name, self.spec.smallest
        if split == "test":
            if min(self.options.test_lengths) < smallest:
                raise ValueError(f"chomsky/{name}: test lengths start at {smallest}")
            return [self.example(n, rng) for n in self.options.test_lengths for _ in range(self.options.n_test_per_cell)]
        if train.seq_len < smallest:
            raise ValueError(f"chomsky/{name}: training length {train.seq_len} is below its shortest, {smallest}")
        count = self.options.n_train if split == "train" else self.options.n_valid
        return [self.example(rng.randint(smallest, train.seq_len), rng) for _ in range(count)]

    def evaluate(self, model, split, train, max_tokens, lengths=True):
        metrics = super().evaluate(model, split, train, max_tokens, lengths)
        per_length = [m.value for m in metrics if m.name == "accuracy" and m.length is not None]
        if split == "test" and per_length:
            metrics.append(Metric(split, "score", sum(per_length) / len(per_length)))
        return metrics
