"""``harness report``: one document (Markdown and HTML) with every table and figure of a run
store, the environment the runs measured, and the commands that reproduce them."""
from __future__ import annotations

import json
import os
import time
import warnings
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
    line = (json.dumps(entry) + "\n").encode("utf-8")
    fd = os.open(store.root / INVOCATIONS, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        end = os.lseek(fd, 0, os.SEEK_END)
        if end and os.lseek(fd, end - 1, os.SEEK_SET) >= 0 and os.read(fd, 1) != b"\n":
            line = b"\n" + line  # the last record was cut short: keep it off this one's line
        os.write(fd, line)  # one write: a kill leaves the record whole or cut, never interleaved
    finally:
        os.close(fd)


def _invocations(store: RunStore) -> list[dict]:
    path = store.root / INVOCATIONS
    if not path.is_file():
        return []
    entries, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            if not isinstance(entry["argv"], list) or not all(isinstance(a, str) for a in entry["argv"]):
                raise TypeError("argv is not a list of strings")
            key = (tuple(entry["argv"]), entry.get("sweep_text"))
            hash(key)
        except (ValueError, KeyError, TypeError) as err:  # e.g. a record cut short by a kill
            warnings.warn(f"{path}:{number}: skipped an unreadable command record ({err}): {line[:80]!r}",
                          stacklevel=2)
            continue
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
    from harness.render import FORMATS, write_formats
    from harness.tables import length_table, make_tables

    runs = store.runs()
    if runs.empty:
        raise ValueError(f"no runs in {store.root}: nothing to report")
    out.mkdir(parents=True, exist_ok=True)
    tables_dir, figures_dir = out / "tables", out / "figures"
    tables_dir.mkdir(exist_ok=True)

    # name → the table in every format (each table read and ranked once)
    tables = {"results": lambda: make_tables(store),
              "results_ci95": lambda: make_tables(store, stat="ci95")}
    task_of = task_labels(runs)
    labels = sorted(set(task_of.values()))
    for label in labels:
        tables[f"task_{_slug(label)}"] = lambda t=label: make_tables(store, task=t)
    tables["efficiency"] = lambda: make_tables(store, efficiency=True)
    finished = {task_of[run_id] for run_id in runs[runs.status == FINISHED].run_id}
    for label in labels:
        if label in finished and TASKS.get(label.split("/")[0]).length_metric:
            tables[f"by_length_{_slug(label)}"] = lambda t=label: {fmt: length_table(store, t, fmt=fmt)
                                                                   for fmt in FORMATS}
    rendered = {}
    for name, make in tables.items():
        texts = make()
        write_formats(tables_dir, name, texts)
        rendered[name] = texts["md"]

    figures = {}
    for kind, plot in PLOTS.items():
        try:
            figures[kind] = plot(store, figures_dir)
        except ValueError as err:  # no data of that kind in this store
            figures[kind] = str(err)

    md = _markdown(store, runs, rendered, figures, out)
    path = out / "report.md"
    path.write_text(md, encoding="utf-8")
    (out / "report.html").write_text(_html(md, f"harness report: {store.root.name}"), encoding="utf-8")
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


#: URL schemes a link or image of the HTML report may use (relative links have none)
SAFE_SCHEMES = ("http", "https", "mailto")


def _safe_url(url: str) -> bool:
    """Relative, or http(s)/mailto: never javascript:, data: or any other scheme (read as the
    browser reads it: entities decoded, blanks and control characters dropped)."""
    import html
    import re

    from markdown.util import AMP_SUBSTITUTE

    decoded = html.unescape(url.replace(AMP_SUBSTITUTE, "&"))
    cleaned = "".join(ch for ch in decoded if ch.isprintable() and not ch.isspace())
    head = re.split(r"[/?#]", cleaned, maxsplit=1)[0]
    return ":" not in head or head.split(":", 1)[0].lower() in SAFE_SCHEMES


def _markdown_to_html(md: str) -> str:
    """Markdown → HTML with every piece of text escaped: raw HTML in the Markdown (a store name, a
    row label, a config value, an error message) is not passed through but shown as text, and a
    link or image whose address has a scheme other than http(s)/mailto loses it. The one place
    the report's untrusted text becomes HTML."""
    import markdown
    from markdown.extensions import Extension
    from markdown.treeprocessors import Treeprocessor

    class SafeLinks(Treeprocessor):
        def run(self, root):
            for element in root.iter():
                for attribute in ("href", "src"):
                    if element.get(attribute) is not None and not _safe_url(element.get(attribute)):
                        element.set(attribute, "#")

    class NoRawHtml(Extension):
        def extendMarkdown(self, md):
            md.preprocessors.deregister("html_block")
            md.inlinePatterns.deregister("html")
            md.treeprocessors.register(SafeLinks(md), "safe_links", -10)  # after every other

    return markdown.markdown(md, extensions=["tables", "fenced_code", NoRawHtml()])


def _html(md: str, title: str = "harness report") -> str:
    import html

    body = _markdown_to_html(md)
    style = ("body{font-family:sans-serif;max-width:80em;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:85%;margin:1em 0}"
             "th,td{border:1px solid #bbb;padding:2px 6px;text-align:right}"
             "th:first-child,td:first-child{text-align:left}img{max-width:100%}"
             "pre{background:#f4f4f4;padding:0.5em;overflow-x:auto}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
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
