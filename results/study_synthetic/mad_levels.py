"""Two reference levels for each MAD task at its baseline setting, on the test split the study
uses (256 examples, data seed 0), from the symbols alone (no model):

- uniform: a guess among the tokens an answer can be (the values; the tokens to copy or compress);
- most frequent so far: at each scored position, the value (or token to copy) seen most often
  earlier in the sequence. A model that knows which tokens are answers, and how often each came,
  but not which key each belongs to, reaches this level.

    python results/study_synthetic/mad_levels.py
"""
from __future__ import annotations

import argparse
import collections

from harness.core.train_config import TrainConfig
from tasks.mad import MAD, NAMES, MADOptions


def levels(name: str, n_test: int = 256) -> dict[str, float]:
    task = MAD(MADOptions(name=name, n_test_per_cell=n_test), None)
    train = TrainConfig(steps=1, batch_size=32, seq_len=256, lr=1e-3)
    symbol = {i: s for s, i in task.ids.items()}
    answers = task.role["v"] or task.role["t"]
    scored = frequent = 0
    for example in task.split("test", train):
        seen: collections.Counter = collections.Counter()
        for token, target in zip(example.tokens, example.targets):
            if target >= 0:
                scored += 1
                frequent += bool(seen) and task.ids[seen.most_common(1)[0][0]] == target
            if symbol.get(token) in answers:
                seen[symbol[token]] += 1
    return {"uniform": 1 / len(answers), "most frequent so far": frequent / scored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-test", type=int, default=256)
    args = parser.parse_args()
    print("| task | uniform | most frequent so far |\n|---|---|---|")
    for name in NAMES:
        found = levels(name, args.n_test)
        print(f"| {name} | {found['uniform']:.3f} | {found['most frequent so far']:.3f} |")


if __name__ == "__main__":
    main()
