"""Tables as text: numbers and cells, Markdown with the caption below, a LaTeX float (booktabs,
every special character escaped) with its marks (bold: best, †: tied with it), and the
``harness bench`` table."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

#: table format → the suffix of its file
SUFFIXES = {"md": "md", "latex": "tex", "csv": "csv"}
FORMATS = tuple(SUFFIXES)


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown table format {fmt!r} (choose from {', '.join(FORMATS)})")


def write_formats(folder: Path, name: str, texts: dict[str, str]) -> Path:
    """One table's texts (format → text) as ``folder/name.<suffix>``, each ending in a newline;
    returns the Markdown file."""
    for fmt, text in texts.items():
        (folder / f"{name}.{SUFFIXES[fmt]}").write_text(text if text.endswith("\n") else text + "\n",
                                                       encoding="utf-8")
    return folder / f"{name}.md"


def number(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "nan"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.1f}"
    return f"{x:.2f}"


def params_text(count: float) -> str:
    """A parameter count as millions, e.g. 0.50M."""
    return "nan" if count is None or not math.isfinite(count) else f"{count / 1e6:.2f}M"


def cell(mean: float, std: float, count: int) -> str:
    """A table cell: the mean, and ± the standard deviation when there are several seeds."""
    return number(mean) if count == 1 else f"{number(mean)} ± {number(std)}"


def render(table: pd.DataFrame, caption: str, fmt: str, marks: dict | None = None) -> str:
    """Markdown with the caption below, or a LaTeX table (booktabs) with its caption; ``marks``
    maps (row position, column) to "best" (bold) or "tie" (†)."""
    marks = marks or {}
    if fmt == "md":
        shown = table.copy()
        for (row, col), mark in marks.items():
            text = shown.iloc[row][col]
            shown.iloc[row, shown.columns.get_loc(col)] = f"**{text}**" if mark == "best" else f"{text} †"
        return f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n{caption}"
    return latex_table(table, caption, marks)


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 "±": r"$\pm$", "—": "---", "–": "--", "×": r"$\times$", "≥": r"$\geq$", "†": r"\dag{}",
                 "·": r"$\cdot$", "²": r"\textsuperscript{2}"}


def latex_escape(text) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(table: pd.DataFrame, caption: str, marks: dict | None = None) -> str:
    """A table float ready to ``\\input`` (needs ``\\usepackage{booktabs}``): text columns
    left-aligned, numbers right-aligned, every special character escaped."""
    marks = marks or {}
    numeric = [not any(str(v)[:1].isalpha() for v in table[c] if str(v) not in ("—", "nan")) for c in table.columns]
    spec = "".join("r" if n else "l" for n in numeric)
    lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(c) for c in table.columns) + r" \\", r"\midrule"]
    for i in range(len(table)):
        cells = []
        for col in table.columns:
            text = latex_escape(table.iloc[i][col])
            mark = marks.get((i, col))
            cells.append(rf"\textbf{{{text}}}" if mark == "best" else rf"{text}\textsuperscript{{\dag}}"
                         if mark == "tie" else text)
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


#: bench columns: row key → heading, how to print it, and the unit of its values
BENCH_COLUMNS = {
    "params_non_embedding": ("params", lambda v: f"{v / 1e6:.2f}M", "parameters"),
    "length": ("length", lambda v: f"{int(v)}", "tokens"),
    "train_tokens_per_s": ("train tok/s", lambda v: f"{v:,.0f}", "tokens/s"),
    "infer_tokens_per_s": ("inference tok/s", lambda v: f"{v:,.0f}", "tokens/s"),
    "decode_tokens_per_s": ("decode tok/s", lambda v: f"{v:,.0f}", "tokens/s"),
    "decode_ms_per_step": ("decode ms/step", lambda v: f"{v:.2f}", "ms"),
    "train_peak_mb": ("train peak MB", lambda v: f"{v:,.0f}", "MB"),
    "train_activations_mb": ("activations MB", lambda v: f"{v:,.1f}", "MB"),
    "inference_peak_mb": ("inference peak MB", lambda v: f"{v:,.0f}", "MB"),
    "decode_state_mb": ("decode state MB", lambda v: f"{v:,.2f}", "MB"),
    "train_flops_per_token": ("train GFLOP/token", lambda v: f"{v / 1e9:.3f}", "FLOP/token"),
    "mfu": ("MFU", lambda v: f"{100 * v:.1f}%", "fraction"),
}


def bench_unit(key: str) -> str:
    """The unit of bench column ``key`` (bench rows are no runs, so they have no metric spec)."""
    return BENCH_COLUMNS[key][2]


def bench_label(row) -> str:
    return row["arch"] if row["attention"] in ("—", None) or pd.isna(row["attention"]) \
        else f"{row['arch']} [{row['attention']}]"


#: what a run or bench row records of its environment, as text even where it looks like a number
#: (a git SHA of digits only or like "1234e56", Python "3.10")
ENVIRONMENT_KEYS = ("device_name", "torch_version", "python_version", "git_sha")


def read_bench_csv(path) -> pd.DataFrame:
    """A ``bench.csv`` as ``harness bench`` wrote it: the environment columns stay text."""
    return pd.read_csv(path, dtype={column: str for column in ENVIRONMENT_KEYS})


def bench_table(rows: pd.DataFrame, fmt: str = "md") -> str:
    """``harness bench`` rows as a table: one row per architecture (and attention backend) and
    length; a phase that failed shows its status instead of a number."""
    check_format(fmt)
    if fmt == "csv":
        return rows.to_csv(index=False)
    table = pd.DataFrame({"arch": rows.apply(bench_label, axis=1), "kernels": rows.get("kernels")})
    phase_of = {"train": "train", "infer": "inference", "inference": "inference", "decode": "decode"}
    for key, (heading, show, _) in BENCH_COLUMNS.items():
        if key not in rows or rows[key].isna().all():
            continue
        phase = phase_of.get(key.split("_")[0])
        table[heading] = [show(v) if pd.notna(v) else
                          (r.get(f"{phase}_status", "—").split(" (")[0] if phase else "—")
                          for v, (_, r) in zip(rows[key], rows.iterrows())]
    first = rows.iloc[0]
    memory = {"peak_rss": "resident-set growth of the cell's own process",
              "cuda_max_allocated": "CUDA memory allocated by tensors"}.get(first.get("memory_kind"), "—")
    caption = (f"harness bench: size {first['size']}, batch {first['batch']} × length, "
               f"{first['dtype']}{', torch.compile' if first.get('compiled') else ''}; "
               f"median of ≥ {first.get('repeats')} repeats (and ≥ {first.get('min_seconds')} s) after "
               f"{first.get('warmup')} warm-up; "
               f"decode: the last {int(rows['decode_tokens'].max()) if 'decode_tokens' in rows else '—'} "
               f"tokens generated one at a time after the rest as a prefix; peak memory: {memory}, "
               f"model and optimiser included; activations: tensors saved for the backward pass; "
               f"decode state: RNN state, CNN buffers or KV cache at the full length; device: {', '.join(sorted(set(rows.device_name)))}; "
               f"torch {', '.join(sorted(set(rows.torch_version)))}; git {', '.join(sorted(set(rows.git_sha)))}")
    return render(table.fillna("—"), caption, fmt)
