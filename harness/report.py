"""``harness report``: one document (Markdown and HTML) with every table and figure of a run
store, the environment the runs measured, and the commands that reproduce them."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd

from harness.core.registry import TASKS
from harness.store import FINISHED, RunStore

INVOCATIONS = "invocations.jsonl"


def record_invocation(store: RunStore, argv: list[str], sweep_file: str | None = None) -> None:
    """Append the command (and its sweep file's text) to the store, for the report."""
    from harness.core.measure import git_revision

    entry = {"time": time.strftime("%Y-%m-%d %H:%M:%S"), "argv": argv, "git_sha": git_revision()}
    if sweep_file:
        entry["sweep_file"] = sweep_file
        entry["sweep_text"] = Path(sweep_file).read_text(encoding="utf-8")
    with open(store.root / INVOCATIONS, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


def _invocations(store: RunStore) -> list[dict]:
    path = store.root / INVOCATIONS
    if not path.is_file():
        return []
    entries, seen = [], set()
    for line in path.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        key = (tuple(entry["argv"]), entry.get("sweep_text"))
        if key not in seen:
            seen.add(key)
            entries.append(entry)
    return entries


def _command(argv: list[str]) -> str:
    import shlex

    return "harness " + " ".join(shlex.quote(a) for a in argv)


def write_report(store: RunStore, out: Path, wandb: bool = False) -> Path:
    """Write ``out/report.md``, ``out/report.html``, the tables (md, tex, csv) and the figures
    (``out/figures``, PNG and PDF); returns the Markdown file."""
    from harness.plots import PLOTS
    from harness.rows import task_labels
    from harness.tables import length_table, make_table

    runs = store.runs()
    if runs.empty:
        raise ValueError(f"no runs in {store.root}: nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    tables_dir, figures_dir = out / "tables", out / "figures"
    tables_dir.mkdir(exist_ok=True)

    tables = {"results": lambda fmt: make_table(store, fmt),
              "results_ci95": lambda fmt: make_table(store, fmt, stat="ci95")}
    task_of = task_labels(runs)
    labels = sorted(set(task_of.values()))
    for label in labels:
        tables[f"task_{_slug(label)}"] = lambda fmt, t=label: make_table(store, fmt, task=t)
    tables["efficiency"] = lambda fmt: make_table(store, fmt, efficiency=True)
    finished = {task_of[run_id] for run_id in runs[runs.status == FINISHED].run_id}
    for label in labels:
        if label in finished and TASKS.get(label.split("/")[0]).length_metric:
            tables[f"by_length_{_slug(label)}"] = lambda fmt, t=label: length_table(store, t, fmt=fmt)
    rendered = {}
    for name, make in tables.items():
        for fmt, suffix in (("md", "md"), ("latex", "tex"), ("csv", "csv")):
            text = make(fmt)
            (tables_dir / f"{name}.{suffix}").write_text(text if text.endswith("\n") else text + "\n")
            if fmt == "md":
                rendered[name] = text

    figures = {}
    for kind, plot in PLOTS.items():
        try:
            figures[kind] = plot(store, figures_dir)
        except ValueError as err:  # no data of that kind in this store
            figures[kind] = str(err)

    md = _markdown(store, runs, rendered, figures, out)
    path = out / "report.md"
    path.write_text(md, encoding="utf-8")
    (out / "report.html").write_text(_html(md), encoding="utf-8")
    if wandb:
        _log_to_wandb(store, tables_dir, figures, out.name)
    return path


def _slug(label: str) -> str:
    return label.replace("/", "__")


def _markdown(store: RunStore, runs: pd.DataFrame, tables: dict[str, str], figures: dict, out: Path) -> str:
    """The report's text: tables[name] is each table's Markdown."""
    from harness.captions import environments

    env = environments(runs)
    counts = runs.status.value_counts()
    lines = [f"# Study report: {store.root.name}", "",
             f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())}) over "
             f"{runs.arch.nunique()} architectures, {runs.task.nunique()} tasks and "
             f"{runs.seed.nunique()} seeds; written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             "## Environment", "",
             f"- device: {'; '.join(env['device_name'])}",
             f"- torch {', '.join(env['torch_version'])}, Python {', '.join(env['python_version'])}",
             f"- git: {', '.join(env['git_sha'])}", "", "## Reproduce", ""]
    invocations = _invocations(store)
    if invocations:
        lines.append("The commands that filled this run store (finished runs are reused, so rerunning "
                     "them redoes only what is missing):")
        lines.append("")
        for entry in invocations:
            lines += ["```", _command(entry["argv"]), "```"]
            if entry.get("sweep_text"):
                lines += ["", f"with `{entry['sweep_file']}`:", "", "```yaml", entry["sweep_text"].rstrip(), "```"]
            lines.append("")
    else:
        lines += ["No command was recorded in this run store (it predates command recording).", ""]
    lines += [f"Regenerate this report: `{_command(['report', '--results', str(store.root), '--out', str(out)])}`",
              ""]
    def files(name):
        return " · ".join(f"{kind}: [tables/{name}.{ext}](tables/{name}.{ext})"
                          for kind, ext in (("Markdown", "md"), ("LaTeX", "tex"), ("CSV", "csv")))

    lines += ["## Results", "", "Every task in one table (wide; mean ± std, and with 95% confidence intervals):", "",
              f"- {files('results')}", f"- {files('results_ci95')}", "",
              "One table per task (with its training throughput and memory):", ""]
    for name, text in tables.items():
        if name.startswith("task_"):
            lines += [f"### {name.removeprefix('task_').replace('__', '/')}", "", text, "", files(name), ""]
    lines += ["## Efficiency", "", tables["efficiency"], "", files("efficiency"), ""]
    lines += ["## What the columns mean", "", "Read from each metric's spec (bold picks the best in that "
              "direction; a column with no direction is never bold):", "", *_column_notes(runs), ""]
    for name, text in tables.items():
        if name.startswith("by_length_"):
            lines += [f"## By length: {name.removeprefix('by_length_').replace('__', '/')}", "", text, "",
                      files(name), ""]
    lines += ["## Figures", ""]
    for kind, result in figures.items():
        if isinstance(result, str):
            lines += [f"- {kind}: not drawn ({result})", ""]
            continue
        png = next(p for p in result if p.suffix == ".png")
        pdf = next(p for p in result if p.suffix == ".pdf")
        lines += [f"### {kind}", "", f"![{kind}]({png.relative_to(out)})", "",
                  f"PDF: [{pdf.relative_to(out)}]({pdf.relative_to(out)})", ""]
    failed = runs[runs.status != FINISHED]
    if not failed.empty:
        lines += ["## Runs that did not finish", ""]
        for r in failed.itertuples():
            error = (r.error or "").strip().splitlines()
            lines.append(f"- `{r.run_id}` {r.label} {r.task} seed {r.seed}: **{r.status}**"
                         + (f" — {error[-1]}" if error else ""))
        lines.append("")
    return "\n".join(lines)


def _column_notes(runs: pd.DataFrame) -> list[str]:
    """One line per column of every task in the store, and per efficiency column: direction,
    unit, role and meaning, by the metric's spec."""
    from harness.core.metrics import RUN_METRICS
    from harness.rows import EFFICIENCY, column_spec, columns, task_labels

    def note(heading, spec):
        direction = f"{spec.better} is better" if spec.better else "no better direction"
        unit = f", {spec.unit}" if spec.unit else ""
        return (f"- `{heading}` ({spec.name}): {direction}{unit}; {spec.role}"
                + (f" — {spec.description}" if spec.description else ""))

    lines = []
    for task in sorted(set(task_labels(runs).values())):
        if task.split("/")[0] in TASKS:
            lines += [note(f"{task}: {heading}", column_spec(task, heading))
                      for key, heading in columns(task).items() if key not in EFFICIENCY]
    return lines + [note(heading, RUN_METRICS[metric]) for (_, metric), heading in EFFICIENCY.items()]


def _html(md: str) -> str:
    import markdown

    body = markdown.markdown(md, extensions=["tables", "fenced_code"])
    style = ("body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:85%;margin:1em 0}"
             "th,td{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:0.5em;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>harness report</title>"
            f"<style>{style}</style></head><body>\n{body}\n</body></html>\n")


def _log_to_wandb(store: RunStore, tables_dir: Path, figures: dict, group: str) -> None:
    """The tables as wandb.Table (from their CSV) and the figures as images, in one W&B run
    grouped under the report's name."""
    import wandb

    from harness.tracking import wandb_init

    run = wandb_init(tables_dir.parent, job_type="report", group=group, name=f"report-{group}")
    for csv in sorted(tables_dir.glob("*.csv")):
        frame = pd.read_csv(csv)
        run.log({f"table/{csv.stem}": wandb.Table(dataframe=frame.astype(str))})
    for kind, result in figures.items():
        if not isinstance(result, str):
            run.log({f"figure/{kind}": wandb.Image(str(next(p for p in result if p.suffix == ".png")))})
    run.finish()
