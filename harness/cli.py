"""The ``harness`` command: run, sweep, list, table, plot, export, report, bench."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from harness.core.registry import UnknownName

DEFAULT_RESULTS = os.environ.get("HARNESS_RESULTS", "runs")


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:  # `--arch ""` would select nothing and "succeed"
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def _execution_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default=DEFAULT_RESULTS, help="run store folder")
    parser.add_argument("--data-dir", default=None, help="folder with one sub-folder per dataset")
    parser.add_argument("--wandb", action="store_true", help="track every run in W&B (offline without an API key)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed, diverged or oom")
    parser.add_argument("--dry-run", action="store_true", help="print the plan without running it")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (the training bar is shown only on a terminal anyway)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the libraries' own progress bars, log lines and warnings (lm-eval, Ray, "
                             "W&B, Hugging Face); without it they are silenced")
    parser.add_argument("--launcher", default="local",
                        help="local (this machine: one worker process per GPU, or per CPU core) or ray (a Ray cluster)")
    parser.add_argument("--workers", type=int, default=None,
                        help="local: worker processes (default: $HARNESS_WORKERS, else one per visible GPU, else one "
                             "per CPU core up to 8 and to the runs that can start at once, each with its share of the "
                             "threads); "
                             "ray: CPUs of the local cluster it starts (default: all)")
    parser.add_argument("--address", default=None,
                        help="ray: address of a running cluster (e.g. auto); default: start a local one")
    parser.add_argument("--cpus-per-run", type=int, default=1, help="ray: CPUs each CPU run asks for")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="harness", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate every (arch, task, seed); skip finished runs")
    run.add_argument("--arch", type=_csv, required=True, help="comma-separated backbones (see `harness list`); hf:<model name or "
                     "folder> adds a pretrained Hugging Face causal LM as a reference row of the zero-shot suites")
    run.add_argument("--tasks", type=_csv, required=True, help="comma-separated tasks, or 'all'")
    run.add_argument("--size", default="tiny", help="size preset (parameter budget or d<width>x<layers>); "
                     "several, comma-separated, give one run each")
    run.add_argument("--seeds", type=_ints, default=[0], help="comma-separated seeds")
    run.add_argument("--budget", default="smoke", help="smoke (CPU minutes), study (lm and the tasks that score its models: about an hour "
                          "per model on 2 CPU cores at --size small) or full (GPU-sized)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=V[,V...]",
                     help="override any config field; several values expand to one run each")
    _execution_options(run)

    sweep = sub.add_parser("sweep", help="run a sweep file (YAML): archs × tasks × sizes × seeds × changes")
    sweep.add_argument("file", help="the sweep file")
    sweep.add_argument("--device", default=None, help="overrides the file's device (auto, cpu, cuda[:N])")
    _execution_options(sweep)

    sub.add_parser("list", help="registered backbones, tasks and size presets")

    data = sub.add_parser("data", help="the datasets: list them, fetch them into the cache, verify a copy")
    data.add_argument("action", choices=["list", "fetch", "verify"])
    data.add_argument("names", nargs="*", help="datasets (default: all)")
    data.add_argument("--data-dir", default=None, help="list/verify: this folder first; fetch: into this folder "
                      "instead of the cache")

    table = sub.add_parser("table", help="results as a paper table (mean ± std over seeds)")
    table.add_argument("--results", default=DEFAULT_RESULTS)
    table.add_argument("--format", default="md", help="md, latex or csv")
    table.add_argument("--task", default=None,
                       help="only this task (or task family, e.g. extrapolation); adds efficiency columns")
    table.add_argument("--protocol", default="all",
                       help="all: every setting a row; best-lr: each row at its best learning rate by dev score")
    table.add_argument("--stat", default="std", help="std, or ci95: the 95%% confidence interval over seeds")
    table.add_argument("--efficiency", action="store_true",
                       help="params, train and inference tokens/s and peak memory per training task")
    table.add_argument("--by", choices=["length"], default=None,
                       help="length: one column per length bucket of one task (e.g. extrapolation/parity)")
    table.add_argument("--metric", default=None,
                       help="with --by length or --view depth: the metric stored per length (default: the "
                            "task's); with --view lr: the score (default: the task's first table metric)")
    table.add_argument("--split", default=None,
                       help="with --by length or --view depth: the split (default: test, or the task's "
                            "probing set); with --view lr: the split of the score (alone: valid gives the dev metric)")
    table.add_argument("--view", default=None,
                       help="a table of its own. mad: the MAD score per backbone, each mad setting at its best "
                            "lr × weight decay by valid accuracy, reported on test; a column per task. lr: "
                            "learning-rate robustness (Okpekpe & Orvieto 2025), one table per task with runs at "
                            "several learning rates: a row per backbone (every setting but lr) and size, the "
                            "score (first table metric) at each rate, mean ± std over seeds, how many rates come "
                            "within 0.05 (fractions; else 5%%) of the row's best, and the best rate; takes "
                            "--task, --metric, --split, --stat. depth: depth to solve (Merrill et al. 2024), one "
                            "table per task: a row per backbone and width (size d<W>x<L> less its depth), a "
                            "column per test length, the fewest layers whose best run (over lrs and seeds, by "
                            "the test metric at that length) reaches --threshold, >L when none does; takes "
                            "--task, --metric, --split, --threshold")
    table.add_argument("--threshold", type=float, default=None,
                       help="with --view depth: the score a depth must reach (default 0.99; ≥ for a "
                            "higher-is-better metric, ≤ for a lower one)")

    plot = sub.add_parser("plot", help="figures: metric vs length (extrapolation), accuracy vs distance "
                                        "(agreement), probe accuracy vs distance from the subject (probe), "
                                        "accuracy vs throughput (pareto), score vs learning rate (lr)")
    plot.add_argument("kind", help="extrapolation, agreement, probe (subject-number probe against distance "
                                   "from the subject), pareto, or lr (score against learning rate, a "
                                   "line per backbone, a panel per task with several rates)")
    plot.add_argument("--results", default=DEFAULT_RESULTS)
    plot.add_argument("--output", default=None, help="folder for the PNG and PDF (default: RESULTS/plots)")
    plot.add_argument("--wandb", action="store_true", help="also log the figure to W&B")
    plot.add_argument("--protocol", default="all",
                      help="extrapolation and agreement: all (a line per setting) or best-lr (a line per "
                           "row, each at its best learning rate by dev score)")

    bench = sub.add_parser("bench", help="speed and peak memory against sequence length: training, "
                                          "inference and one-token-at-a-time decoding")
    bench.add_argument("--arch", type=_csv, help="comma-separated backbones")
    bench.add_argument("--lengths", type=_ints, default=[128, 256, 512, 1024], help="comma-separated lengths")
    bench.add_argument("--size", default="small", help="size preset (every backbone matched to it)")
    bench.add_argument("--batch", type=int, default=8, help="sequences per batch")
    bench.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    bench.add_argument("--dtype", default="auto", help="auto (bf16 autocast on CUDA, float32 on CPU), float32, bfloat16")
    bench.add_argument("--attention", type=_csv, default=["auto", "math"],
                       help="SDPA backends for attention models: auto, math, flash, efficient, cudnn")
    bench.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="architecture option, e.g. position=alibi or kernel_size=5")
    bench.add_argument("--vocab", type=int, default=256, help="softmax size of the benchmark's language model")
    bench.add_argument("--warmup", type=int, default=2)
    bench.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported")
    bench.add_argument("--min-seconds", type=float, default=1.0,
                       help="repeat (up to 100 times) until a phase's timed calls add up to this")
    bench.add_argument("--decode-tokens", type=int, default=64, help="tokens generated one at a time per cell")
    bench.add_argument("--compile", action="store_true", help="torch.compile the model for training and inference")
    bench.add_argument("--peak-tflops", type=float, default=None,
                       help="dense bf16 peak for MFU (default: known from the GPU's name)")
    bench.add_argument("--in-process", action="store_true",
                       help="all cells in this process (faster; peak memory then means little)")
    bench.add_argument("--format", default="md", help="md, latex or csv")
    bench.add_argument("--out", default=None, help="folder for bench.csv and the plot (default: RESULTS/bench)")
    bench.add_argument("--results", default=DEFAULT_RESULTS)
    bench.add_argument("--from", dest="from_csv", default=None, metavar="CSV",
                       help="print the table of an earlier bench.csv instead of measuring")

    report = sub.add_parser("report", help="one Markdown + HTML document: every table and figure, the "
                                            "environment, the commands that reproduce them")
    report.add_argument("--results", default=DEFAULT_RESULTS)
    report.add_argument("--out", default="report", help="folder for report.md, report.html, tables/, figures/")
    report.add_argument("--wandb", action="store_true", help="also log the tables and figures to W&B")

    export = sub.add_parser("export", help="every stored number in long format")
    export.add_argument("--results", default=DEFAULT_RESULTS)
    export.add_argument("--format", default="csv", help="csv or jsonl")
    export.add_argument("--output", default=None, help="file to write (default: standard output)")
    return parser


def cmd_bench(args) -> int:
    from pathlib import Path

    import pandas as pd
    import pydantic

    from harness.bench import BenchConfig, run_bench
    from harness.core.measure import resolve_device
    from harness.plots import plot_bench
    from harness.core.registry import ARCHITECTURES, suggest
    from harness.sweep import parse_overrides
    from harness.render import bench_table, read_bench_csv

    if args.from_csv:
        print(bench_table(read_bench_csv(args.from_csv), args.format))
        return 0
    if not args.arch:
        raise ValueError("harness bench needs --arch (or --from an earlier bench.csv)")
    for arch in args.arch:
        ARCHITECTURES.get(arch)
    options = {}
    for key, values in parse_overrides(args.overrides).items():
        known = sorted({f for a in args.arch for f in ARCHITECTURES.get(a).Options.model_fields})
        suggest("architecture option", key, known)
        if len(values) != 1:
            raise ValueError(f"--set {key}: harness bench takes one value per option")
        options[key] = values[0]
    try:
        cfg = BenchConfig(archs=args.arch, lengths=args.lengths, size=args.size, arch_options=options,
                          batch=args.batch, device=resolve_device(args.device), dtype=args.dtype,
                          attention=args.attention, vocab=args.vocab, warmup=args.warmup,
                          repeats=args.repeats, min_seconds=args.min_seconds,
                          decode_tokens=args.decode_tokens, compile=args.compile,
                          peak_tflops=args.peak_tflops, isolate=not args.in_process)
    except pydantic.ValidationError as err:
        raise ValueError(f"invalid bench settings:\n{err}") from None
    out = Path(args.out) if args.out else Path(args.results) / "bench"
    out.mkdir(parents=True, exist_ok=True)

    def keep(rows: list[dict]) -> None:  # cell by cell: an interrupted bench keeps what it measured
        pd.DataFrame(rows).to_csv(out / "bench.csv", index=False)

    signal.signal(signal.SIGTERM, _interrupt)
    rows = pd.DataFrame(run_bench(cfg, log=lambda *a, **k: print(*a, file=sys.stderr, **k), keep=keep))
    (out / "bench.md").write_text(bench_table(rows, "md") + "\n")
    paths = [out / "bench.csv", out / "bench.md", *plot_bench(rows, out)]
    print(bench_table(rows, args.format))
    print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0 if (rows.status == "ok").all() else 1


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_run(args) -> int:
    from harness.core.measure import resolve_device
    from harness.core.registry import selected_tasks
    from harness.sweep import expand, parse_overrides

    tasks = selected_tasks(args.tasks)
    device, overrides = resolve_device(args.device), parse_overrides(args.overrides)
    found = {}  # a run that several sizes share (the upstream of none) is planned once
    for size in args.size.split(","):
        for cfg in expand(args.arch, tasks, size=size, seeds=args.seeds, budget=args.budget, device=device,
                          overrides=overrides):
            found.setdefault(cfg.run_id, cfg)
    configs = list(found.values())
    if not configs:
        raise ValueError(f"nothing to run: --arch {','.join(args.arch)} --tasks {','.join(args.tasks)} "
                         f"--seeds {','.join(map(str, args.seeds))} select no runs")
    return execute_plan(configs, args)


def cmd_sweep(args) -> int:
    from harness.core.measure import resolve_device
    from harness.sweep import expand_sweep, load_sweep_file

    sweep = load_sweep_file(args.file)
    device = resolve_device(args.device or sweep.device)
    return execute_plan(expand_sweep(sweep, device), args)


def _workers(args, configs, store) -> int | None:
    """The local launcher's workers: ``--workers``, else its default for these runs; the Ray
    launcher's ``--workers`` as given (None: every CPU of the cluster it starts)."""
    if args.launcher != "local" or args.workers is not None:
        return args.workers
    from harness.launchers import default_workers

    return default_workers(configs, store, args.retry_failed)


def execute_plan(configs, args) -> int:
    """Print the plan, then (unless ``--dry-run``) run it with the libraries kept quiet (unless
    ``-v``), and end with a summary a terminal can show and the full tables written to files."""
    import time

    from harness.launchers import LAUNCHERS, Launch
    from harness.core.registry import suggest
    from harness.report import record_invocation
    from harness.screen import duration, plan_lines, quiet, table_file_lines, write_tables
    from harness.store import RunStore
    from harness.sweep import check_datasets
    from harness.tables import summary_table

    suggest("launcher", args.launcher, LAUNCHERS)
    if args.launcher == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ValueError("--launcher ray needs Ray: pip install -e '.[ray]'") from None
    if args.workers is not None and args.workers < 1:
        raise ValueError("--workers must be at least 1")
    if args.dry_run:
        store = RunStore(args.results, create=False, missing_ok=True)  # a plan creates nothing
        statuses = {c.run_id: store.status(c.run_id) for c in configs}
        print("\n".join(plan_lines(configs, store, args.retry_failed, _workers(args, configs, store))))
        for cfg in configs:
            print(f"  {cfg.run_id}  {cfg.label:30s} {cfg.task_label:22s} size={cfg.size} seed={cfg.seed}"
                  f"  [{statuses[cfg.run_id] or 'new'}]")
        return 0
    # the plan first, from the store as it is (read only: a rejected command writes nothing)
    planned = RunStore(args.results, create=False, missing_ok=True)
    workers = _workers(args, configs, planned)
    print("plan: " + "\n".join(plan_lines(configs, planned, args.retry_failed, workers)), flush=True)
    bars = not args.no_progress and sys.stderr.isatty()  # a log gets one line per run, not a training bar
    with quiet(verbose=args.verbose, progress=not args.no_progress):
        check_datasets(configs, args.data_dir)  # a rejected command writes nothing, not even its record
        store = RunStore(args.results)
        record_invocation(store, args.argv, getattr(args, "file", None))
        signal.signal(signal.SIGTERM, _interrupt)  # like Ctrl-C: the run in progress is released
        launch = Launch(data_dir=args.data_dir, wandb=args.wandb, retry_failed=args.retry_failed,
                        progress=bars, workers=workers, address=args.address,
                        cpus_per_run=args.cpus_per_run, verbose=args.verbose)
        started = time.perf_counter()
        summary = LAUNCHERS[args.launcher](configs, store, launch)
    ran = ", ".join(f"{n} {status}" for status, n in summary.ran.items()) or "nothing"
    took = f"; took {duration(time.perf_counter() - started)}" if summary.ran else ""
    print(f"\nran: {ran}; already recorded: {summary.skipped}{took}\n")
    run_ids = [c.run_id for c in configs]
    print(summary_table(store, run_ids))
    print()
    print("\n".join(table_file_lines(write_tables(store, run_ids, store.root / "tables"))))
    return 0 if all(status == "finished" for status in summary.ran) else 1


def cmd_list(args) -> int:
    from architectures.sizing import PRESETS
    from harness.core.registry import ARCHITECTURES, TASKS, EntryUnavailable

    print("architectures:")
    width = max(map(len, ARCHITECTURES.names()))
    for name in ARCHITECTURES.names():
        try:
            cls = ARCHITECTURES.get(name)
        except EntryUnavailable as err:  # a missing optional dependency hides only its own entry
            print(f"  {name:{width}s} unavailable: {err}")
            continue
        options = ", ".join(f"{k}={v.default!r}" for k, v in cls.Options.model_fields.items() if not v.exclude)
        both = "causal+bidirectional" if cls.supports_bidirectional else "causal"
        print(f"  {name:{width}s} {both:22s} options: {options}")
    print(f"  {'hf:<model>':{width}s} {'causal':22s} a pretrained Hugging Face causal LM (name or local folder), "
          f"scored as a reference by the zero-shot suites, not trained")
    print("tasks:")
    for name in TASKS.names():
        try:
            cls = TASKS.get(name)
        except EntryUnavailable as err:
            print(f"  {name:16s} unavailable: {err}")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        budgets = {"trained": f"budgets: {', '.join(getattr(cls, 'budgets', {}))}",
                   "fine_tuned": f"tunes {cls.upstream} runs",
                   "zero_shot": f"scores {cls.upstream} runs"}[cls.kind]
        print(f"  {name:16s} v{cls.version:3s} {budgets:20s}  {doc}")
    for problem in ARCHITECTURES.problems() + TASKS.problems():
        print(f"  unavailable: {problem}")
    print("size presets (non-embedding parameters, or a fixed width):")
    for name, p in PRESETS.items():
        print(f"  {name:12s} {p.describe()}")
    print(f"  {'d<W>x<L>':12s} width W, L layers (not parameter matched): d128x3")
    return 0


def cmd_data(args) -> int:
    from harness.core.catalogue import cache_dir, datasets, dataset, fetch, verify
    from harness.core.data import search_path

    names = args.names or list(datasets())
    for name in names:
        dataset(name)  # an unknown name is refused before anything is done
    if args.action == "fetch":
        for name in names:
            folder = fetch(name, args.data_dir)
            print(f"{name}: {folder}")
        return 0
    roots = [Path(args.data_dir)] if args.data_dir and args.action == "verify" else search_path(args.data_dir)
    bad = 0
    for name in names:
        ds = dataset(name)
        found = [(root, verify(name, root)) for root in roots if (root / name).is_dir()]
        if args.action == "list":
            where = next((f"{root / name}" + (f" ({len(p)} of {len(ds.files)} files missing or wrong)" if p else "")
                          for root, p in found), "not here: `harness data fetch` downloads it")
            print(f"{name:20s} {len(ds.files):3d} files {ds.size / 1e6:6.1f} MB  {where}")
            print(f"{'':20s} {ds.title}\n{'':20s} licence: {ds.licence}")
            continue
        if not found:
            print(f"{name}: not found in {', '.join(str(r) for r in roots)}")
            bad += 1
            continue
        root, problems = found[0]
        for f, problem in problems:
            print(f"{root / name / f.path}: {problem} (from {f.origin()})")
        print(f"{name}: {'ok' if not problems else f'{len(problems)} bad'} ({len(ds.files)} files in {root / name})")
        bad += bool(problems)
    if args.action == "list":
        print(f"\ncache: {cache_dir()}")
    return 1 if bad else 0


#: ``harness table --view``: tables of their own
VIEWS = ("mad", "lr", "depth")


def _check_view(args) -> None:
    """Reject options a view does not take (exit 2, with what it takes)."""
    from harness.core.registry import suggest

    if args.view is None:
        if args.threshold is not None:
            raise ValueError("--threshold goes with --view depth")
        return
    suggest("view", args.view, VIEWS)
    if args.view == "mad":
        if (args.task not in (None, "mad") or args.by or args.protocol != "all" or args.efficiency
                or args.threshold is not None or args.metric or args.split):
            raise ValueError("--view mad is a table of its own (every mad run, each setting at its best lr × "
                             "weight decay): it takes no --by, --protocol, --efficiency, --metric, --split or "
                             "--threshold, and no --task but mad")
    elif args.view == "lr":
        if args.by or args.protocol != "all" or args.efficiency or args.threshold is not None:
            raise ValueError("--view lr is a table of its own (every learning rate a column): it takes no --by, "
                             "--protocol, --efficiency or --threshold; it takes --task, --metric, --split, --stat")
    elif args.view == "depth":
        if args.by or args.protocol != "all" or args.efficiency or args.stat != "std":
            raise ValueError("--view depth is a table of its own (the fewest layers that reach --threshold): it "
                             "takes no --by, --protocol, --efficiency or --stat; it takes --task, --metric, "
                             "--split, --threshold")


def cmd_table(args) -> int:
    from harness.store import RunStore
    from harness.tables import depth_table, length_table, lr_table, mad_table, make_table

    _check_view(args)
    store = RunStore(args.results, create=False)
    if args.view == "mad":
        print(mad_table(store, args.format, stat=args.stat))
    elif args.view == "lr":
        print(lr_table(store, args.format, task=args.task, stat=args.stat, metric=args.metric, split=args.split))
    elif args.view == "depth":
        threshold = 0.99 if args.threshold is None else args.threshold
        print(depth_table(store, args.format, threshold, args.metric, args.task, args.split or "test"))
    elif args.by == "length":
        if not args.task:
            raise ValueError("--by length needs --task (e.g. --task extrapolation/parity)")
        print(length_table(store, args.task, args.metric, args.split, args.format, args.protocol))
    else:
        print(make_table(store, args.format, task=args.task, protocol=args.protocol, stat=args.stat,
                         efficiency=args.efficiency))
    return 0


def cmd_plot(args) -> int:
    from pathlib import Path

    from harness.plots import PLOTS, PROTOCOL_PLOTS, log_to_wandb
    from harness.core.registry import suggest
    from harness.store import RunStore

    suggest("plot", args.kind, PLOTS)
    if args.protocol != "all" and args.kind not in PROTOCOL_PLOTS:
        raise ValueError(f"--protocol applies to the {' and '.join(PROTOCOL_PLOTS)} figures, not to {args.kind}")
    out = Path(args.output) if args.output else Path(args.results) / "plots"
    protocol = {"protocol": args.protocol} if args.kind in PROTOCOL_PLOTS else {}
    paths = PLOTS[args.kind](RunStore(args.results, create=False), out, **protocol)
    if args.wandb:
        log_to_wandb(paths, args.kind)
    for path in paths:
        print(path)
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from harness.report import write_report
    from harness.store import RunStore

    path = write_report(RunStore(args.results, create=False), Path(args.out), wandb=args.wandb)
    print(f"wrote {path} and {path.with_suffix('.html')}")
    return 0


def cmd_export(args) -> int:
    from harness.store import RunStore
    from harness.tables import export

    text = export(RunStore(args.results, create=False), args.format)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    from harness.core.data import MissingDataset

    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    command = {"run": cmd_run, "sweep": cmd_sweep, "list": cmd_list, "table": cmd_table, "plot": cmd_plot,
               "export": cmd_export, "bench": cmd_bench, "report": cmd_report, "data": cmd_data}[args.command]
    try:
        code = command(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
        return code
    except (UnknownName, MissingDataset, ValueError) as err:
        print(f"harness: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if argv is None:  # the program, not a call in-process: it only winds down from here,
            # and a second signal would escape as an unhandled KeyboardInterrupt, ending it by
            # SIGINT instead of status 130
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("harness: interrupted; finished runs are kept, the run in progress will be redone",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`harness export | head`): end quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
