"""Perplexity of finished `lm` runs on the part of valid/test their budget scored
(`final_eval_tokens`) and on the whole splits, at the training length.

    harness run --arch lstm --tasks lm --budget smoke --results runs/lm_smoke
    python benchmarks/whole_split_ppl.py --results runs/lm_smoke --data-dir ../shared/data
"""
from __future__ import annotations

import argparse

from harness.runner import load_trained, make_task
from harness.store import FINISHED, RunStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    store = RunStore(args.results, create=False)
    runs = store.runs()
    for run in runs[(runs.task == "lm") & (runs.status == FINISHED)].itertuples():
        cfg, model = load_trained(store, run.run_id, args.data_dir)
        task = make_task(cfg, args.data_dir)
        row = [f"{run.label} seed={run.seed} ({run.run_id})"]
        for split in ("valid", "test"):
            for limit in (cfg.train.final_eval_tokens, None):
                ppl = next(m.value for m in task.evaluate(model, split, cfg.train, limit, lengths=False)
                           if m.name == "ppl")
                row.append(f"{split} {'first ' + format(limit, ',') if limit else 'whole'}: {ppl:.1f}")
        print("  ".join(row))


if __name__ == "__main__":
    main()
