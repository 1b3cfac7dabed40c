"""Every `harness` command in the README and in results/**/*.md is true: each is extracted from the
Markdown (code blocks, indented or fenced, and inline code) and run in this process.

- `run` and `sweep` run with `--dry-run` (added when the text has none, so nothing trains);
  `table`, `export`, `report` and `plot` read a small store of fake finished runs built once;
  `list` and `data` run as they are (`data fetch` with the shared datasets as its cache, so it
  downloads nothing); `bench` measures on the smallest settings (one short length, one repeat,
  in process); `bench --from` reads the committed `results/bench_cpu/bench.csv`.
- Placeholders become real things: FILE (a minimal-pairs JSONL), A/B/C (CoNLL files), DIR and
  `runs/...` (temporary stores), OUT and `--out`/`--output` (temporary folders), `study.yaml` (a
  temporary sweep file), `../shared/data` (the shared datasets), N (2). `[--opt]` is optional:
  included. `a|b` alternatives run each. A trailing `# comment` is dropped.
- A command that needs a GPU (`--device cuda`) is parsed and then skipped, with that reason, when
  torch sees none. Inline code that is only `harness <command>` names the command: it is checked
  to exist. Inline option fragments (`--set train=A`, `--budget smoke|full`) must parse as options
  of some `harness` command.
"""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from harness.cli import build_parser, main
from tests.conftest import DATA_DIR, ROOT, TINY_TRAIN

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "results").rglob("*.md"))]
SUBCOMMANDS = ("run", "sweep", "list", "table", "plot", "bench", "report", "export", "data")
#: documented commands that cannot run here, and why
SKIPS = {"harness run --arch my_mixer": "the plugin example: its package (my_package) is not installed"}


def _code_and_prose(text: str) -> tuple[list[str], str]:
    """(code lines, prose): lines of fenced and indented code blocks, and everything else."""
    code, prose, fence, previous_blank, in_indented = [], [], None, True, False
    for line in text.splitlines():
        stripped = line.strip()
        if fence:
            if stripped.startswith(fence):
                fence = None
            else:
                code.append(line)
            continue
        if stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
            continue
        indented = line.startswith(("    ", "\t")) and stripped
        if indented and (previous_blank or in_indented):  # an indented block goes on to the next text
            in_indented = True
            code.append(line)
        else:
            in_indented = in_indented and not stripped
            prose.append(line)
        previous_blank = not stripped
    return code, "\n".join(prose)


def _commands_in(path: Path) -> list[tuple[str, str]]:
    """(kind, text) for each command: kind "code", "inline" or "fragment"."""
    code, prose = _code_and_prose(path.read_text(encoding="utf-8"))
    found = []
    joined, pending = [], ""
    for line in code:
        text = re.sub(r"^\s*(\$|#)\s*", "", line.strip()) if pending else line.strip()
        pending += (" " if pending else "") + text
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        joined.append(pending)
        pending = ""
    for line in joined:
        for part in line.split("&&"):
            part = re.sub(r"^(\$|#)\s+", "", part.strip())
            if part.startswith("harness ") and part.split()[1] in SUBCOMMANDS:
                found.append(("code", part))
    for span in re.findall(r"`([^`]+)`", prose):
        span = " ".join(span.split()).replace("\\|", "|")
        if span.startswith("harness ") and span.split()[1] in SUBCOMMANDS:
            found.append(("inline", span))
        elif span.startswith("--") and len(span) > 2:
            found.append(("fragment", span))
    return found


def _all_commands():
    seen, cases = set(), []
    for path in DOCS:
        for kind, text in _commands_in(path):
            if (kind, text) not in seen:
                seen.add((kind, text))
                needs_data = text.startswith(("harness data fetch", "harness data verify"))
                cases.append(pytest.param(kind, text, id=f"{path.relative_to(ROOT)}: {text}"[:150],
                                          marks=[pytest.mark.data] if needs_data else []))
    return cases


COMMANDS = _all_commands()


def _tokens(text: str) -> list[str]:
    text = re.sub(r"\s+#\s.*$", "", text)  # a trailing comment
    return [t[1:-1] if t.startswith("[--") and t.endswith("]") else t for t in shlex.split(text)]


def _alternatives(tokens: list[str]) -> list[list[str]]:
    """`md|latex|csv` → one command each (in a `key=a|b` the values alternate)."""
    out = [[]]
    for token in tokens:
        if "|" in token:
            key, _, values = token.rpartition("=") if "=" in token else ("", "", token)
            choices = [f"{key}={v}" if key else v for v in values.split("|")]
        else:
            choices = [token]
        out = [argv + [choice] for argv in out for choice in choices]
    return out


def _value(argv: list[str], option: str) -> str | None:
    return argv[argv.index(option) + 1] if option in argv[:-1] else None


def _concrete(argv: list[str], env: dict, tmp: Path) -> list[str]:
    """The documented command with its placeholders and paths made real and harmless."""
    command, out = argv[0], []
    if command in ("bench", "report") and "--out" in argv[:-1]:  # always a temporary one, at the end
        at = argv.index("--out")
        argv = argv[:at] + argv[at + 2:]
    for i, token in enumerate(argv):
        before = argv[i - 1] if i else ""
        if before in ("--out", "--output"):
            token = str(tmp / ("out.csv" if before == "--output" else "out"))
        elif before == "--results":
            token = str(env["store"] if command in ("table", "export", "report", "plot") else tmp / "plan")
        elif before == "--data-dir" or token == "../shared/data":
            token = str(DATA_DIR)
        elif before == "--from":
            token = str(ROOT / "results" / "bench_cpu" / "bench.csv")
        elif before in ("--workers", "--cpus-per-run") and token == "N":
            token = "2"
        elif command == "sweep" and i == 1 and not (ROOT / token).is_file():
            token = str(env["sweep_file"])  # e.g. study.yaml: the documentation's own example
        else:
            for placeholder, real in env["files"].items():
                token = re.sub(rf"(?<==){placeholder}$", str(real), token)
            if (ROOT / token).exists() and "/" in token:
                token = str(ROOT / token)
        out.append(token)
    if command in ("table", "export", "report", "plot") and "--results" not in out:
        out += ["--results", str(env["store"])]
    if command == "report" and "--out" not in out:
        out += ["--out", str(tmp / "out")]
    if command in ("run", "sweep"):
        out += [] if "--dry-run" in out else ["--dry-run"]
        out += [] if "--results" in out else ["--results", str(tmp / "plan")]
    if command == "bench" and "--from" not in out:  # the smallest real measurement
        if "--lengths" in out:
            out[out.index("--lengths") + 1] = "16"
        out += ["--size", "tiny", "--batch", "1", "--warmup", "0", "--repeats", "1", "--min-seconds", "0",
                "--decode-tokens", "2", "--in-process", "--attention", "auto"]
        out += [] if "--out" in out else ["--out", str(tmp / "out")]
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """A small store of fake finished runs (lm, agreement, extrapolation/parity, two Chomsky tasks,
    word problems, regbench, probe_number; two backbones, two seeds; mqar at two learning rates) with every number the
    documented tables and figures read, and the files the placeholders stand for."""
    from harness.config import RunConfig
    from harness.core.metrics import Metric
    from harness.core.train_config import TrainConfig
    from harness.store import FINISHED, RunStore

    root = tmp_path_factory.mktemp("docs")
    store = RunStore(root / "store")
    train = TrainConfig(**TINY_TRAIN)
    L = train.seq_len
    for arch, quality in (("lstm", 1.0), ("transformer", 1.1)):
        for seed in (0, 1):
            jitter = 0.01 * seed
            ids: dict[str, str] = {}
            for task, options, metrics in (
                ("lm", {}, [Metric(s, "ppl", 100 * quality + seed, n) for s in ("valid", "test") for n in (L, 2 * L)]
                 + [Metric("test", "ppl_by_position", 90.0 + k, k) for k in (1, 2, 4, 8)]),
                ("agreement", {}, [Metric(s, "accuracy", 0.8 / quality + jitter) for s in ("valid", "test")]
                 + [Metric("test", f"accuracy_attractors_{k}", 0.9 - 0.1 * k + jitter, n)
                    for k in (0, 1, 2, 3, 4) for n in (2, 4, 8)]
                 + [Metric("test", "accuracy", 0.9 - 0.01 * n, n) for n in (2, 4, 8)]),
                ("extrapolation", {"probe": "parity"}, [Metric(s, "accuracy", 0.7 + jitter) for s in ("valid", "test")]
                 + [Metric("test", "accuracy", 0.9 - 0.01 * n, n) for n in (L, 2 * L, 4 * L)]),
                *(("chomsky", {"name": name}, [Metric(s, m, 0.6 + jitter) for s in ("valid", "test")
                                               for m in ("accuracy", "sequence_accuracy")]
                   + [Metric("test", "score", 0.55 + jitter)]
                   + [Metric("test", "accuracy", 0.6 - 0.01 * n, n) for n in (2 * L, 4 * L)])
                  for name in ("parity_check", "modular_arithmetic")),
                *(("word_problem", {"group": group}, [Metric(s, m, 0.4 + jitter) for s in ("valid", "test")
                                                     for m in ("accuracy", "sequence_accuracy")]
                   + [Metric("test", "solved_length", 2.0), Metric("test", "sequence_accuracy_within", 0.2),
                      Metric("test", "sequence_accuracy_beyond", 0.0)]
                   + [Metric("test", "sequence_accuracy", 0.5 - 0.01 * n, n) for n in (2, 12, 24)])
                  for group in ("Z60", "A5")),
                ("regbench", {}, [Metric(s, m, 0.5 + jitter) for s in ("valid", "test") for m in ("accuracy", "tvd")]
                 + [Metric("test", "accuracy", 0.5 + 0.01 * n, n) for n in (1, 2, 3)]),
                ("probe_number", {}, [Metric("generated", f"{t}_{m}", 0.7 + jitter) for t in ("number", "position", "distance")
                                      for m in ("accuracy", "selectivity", "compression")]
                 + [Metric("generated", f"number_accuracy_attractors_{k}", 0.9 - 0.1 * k) for k in range(4)]
                 + [Metric("generated", m, 0.9 - 0.01 * n + jitter, n) for m in ("number_accuracy", "number_selectivity",
                                                                                "number_accuracy_attractors_1")
                    for n in range(6)]),
            ):
                upstream = ids.get("agreement") if task == "probe_number" else None  # zero-shot: scores it
                cfg = RunConfig(arch=arch, task=task, seed=seed, task_options=options, train=train, upstream=upstream)
                ids[task] = cfg.run_id
                assert store.claim(cfg)
                efficiency = [Metric("run", "params_non_embedding", 5e5), Metric("train", "tokens_per_s", 1e3 * quality),
                              Metric("inference", "tokens_per_s", 5e3), Metric("run", "peak_memory_mb", 300.0),
                              Metric("run", "wall_time_s", 12.0)]
                info = {"train_length": L, "dtype": "fp32", "batch_shape": [train.batch_size, L], "task_version": "1",
                        "env": {"device_name": "cpu", "torch_version": "x", "python_version": "3", "git_sha": "abc"}}
                store.finish(cfg.run_id, FINISHED, metrics + efficiency, info)
        for lr, score in ((3e-3, 0.9), (1e-2, 0.3)):  # an mqar learning-rate sweep (the lr view and figure)
            cfg = RunConfig(arch=arch, task="mqar", train=TrainConfig(**{**TINY_TRAIN, "lr": lr}))
            assert store.claim(cfg)
            metrics = [Metric(s, m, score / quality) for s in ("valid", "test")
                       for m in ("accuracy", "accuracy_pairs_4", "accuracy_pairs_8")]
            store.finish(cfg.run_id, FINISHED, metrics + [Metric("test", "accuracy", score, n) for n in (64, 128)]
                         + efficiency, info)
    pairs = root / "pairs.jsonl"
    pairs.write_text('{"sentence_good": "the dog runs", "sentence_bad": "the dog run"}\n')
    conll = {}
    for name in "ABC":
        conll[name] = root / f"{name}.conll"
        conll[name].write_text("EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n")
    sweep_file = root / "study.yaml"
    sweep_file.write_text("archs: [lstm]\ntasks: [lm]\nseeds: [0, 1]\ndevice: cpu\n")
    return {"store": store.root, "files": {"FILE": pairs, **conll}, "sweep_file": sweep_file}


def test_the_docs_have_commands_of_every_kind():
    kinds = {kind for kind, _ in (p.values for p in COMMANDS)}
    subcommands = {text.split()[1] for kind, text in (p.values for p in COMMANDS) if kind != "fragment"}
    assert kinds == {"code", "inline", "fragment"}
    assert set(SUBCOMMANDS) <= subcommands, set(SUBCOMMANDS) - subcommands


def _parses(argv: list[str]) -> str | None:
    """None when argparse accepts ``argv``, else its message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit:
            return err.getvalue().strip() or f"exit {exit.code}"
    return None


#: concrete commands that have passed (each is run once, wherever the docs repeat it)
_PASSED: set[tuple[str, ...]] = set()


def _options() -> set[str]:
    """Every option string of every harness command."""
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {o for sub in commands.values() for action in sub._actions for o in action.option_strings}


#: what each command needs before an option fragment parses
BASES = {"run": ["run", "--arch", "lstm", "--tasks", "lm"], "sweep": ["sweep", "study.yaml"], "table": ["table"],
         "bench": ["bench"], "plot": ["plot", "pareto"], "report": ["report"], "export": ["export"], "data": ["data", "list"]}


@pytest.mark.parametrize("kind,text", COMMANDS)
def test_documented_command(kind, text, env, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # a default path (runs/, report/) lands here, never in the checkout
    if kind == "fragment":
        if len(_tokens(text)) == 1:  # names an option: some command has it
            assert text in _options(), f"`{text}` is no option of any harness command"
            return
        for argv in _alternatives(_tokens(text)):
            argv = ["2" if t == "N" else t for t in argv]
            problems = [_parses(base + argv) for base in BASES.values()]
            assert None in problems, f"`{text}` is no option of any harness command: {problems[0]}"
        return
    if text in SKIPS:
        pytest.skip(SKIPS[text])
    tokens = _tokens(text)[1:]
    if kind == "inline" and len(tokens) == 1 and tokens[0] in ("run", "sweep", "bench", "plot"):
        return  # names the command; it exists (extraction keeps only known commands)
    for argv in _alternatives(tokens):
        argv = _concrete(argv, env, tmp_path)
        if _value(argv, "--device") and _value(argv, "--device").startswith("cuda"):
            import torch

            assert _parses(argv) is None, f"`{text}` does not parse: {_parses(argv)}"
            if not torch.cuda.is_available():
                pytest.skip("needs a CUDA device (--device cuda exits 2 without one); it parses")
        key = tuple(a.replace(str(tmp_path), "<tmp>") for a in argv)
        if key in _PASSED:  # the same command elsewhere in the docs (e.g. only its --out differs)
            continue
        if argv[0] == "data":  # the datasets are already here: a fetch finds them and downloads nothing
            monkeypatch.setenv("HARNESS_CACHE_DIR", str(DATA_DIR))
        code = main(argv)
        captured = capsys.readouterr()
        assert code == 0, f"`{text}` as {argv} exited {code}:\n{captured.err[-2000:]}"
        _PASSED.add(key)
