"""Tables a report shows: summaries as key/value rows, CSV logs sampled and rounded, and names in words."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

MAX_TABLE_ROWS = 40   # CSVs longer than this are shown as this many evenly spaced rows in the report
DIGITS = 4            # significant digits of the numbers a report shows

IN_CSV = {"checks": "sanity.csv", "steps": "steps.csv"}  # summary lists that a CSV of the same folder repeats

TABLE_TITLES = {  # a CSV's file name -> what it holds, in words
    "steps.csv": "Steps of the run", "sanity.csv": "Sanity checks", "layers.csv": "Layer statistics at initialisation",
    "overfit.csv": "Overfitting a small sample, per iteration", "probes.csv": "Learning-rate probes",
    "range_test.csv": "Learning-rate range test", "trials.csv": "Search trials", "metrics.csv": "Per-epoch metrics",
    "compare.csv": "Runs compared",
}
FIGURE_TITLES = {  # a figure's file name -> what it shows, in words
    "overfit.png": "Overfitting a small sample", "layers.png": "Layer health at initialisation",
    "lr_find.png": "Learning-rate probes and range test", "search_params.png": "Validation metric against each "
    "searched setting", "search_curves.png": "Validation curves of the trials", "report_trials.png": "Every trial "
    "on one plot", "compare.png": "Validation curves of the runs compared",
}


def words(name: str, titles: dict[str, str]) -> str:
    """A file's title in words: the known ones from `titles`, any other from its name ("my_plot.png": "My plot")."""
    if name in titles:
        return titles[name]
    stem = Path(name).stem.replace("_", " ").replace("-", " ").strip()
    return stem[:1].upper() + stem[1:]


def fmt(x) -> str:
    """A value as a reader wants it: floats to 4 significant digits, anything else as written."""
    if isinstance(x, float):
        return f"{x:.{DIGITS}g}"
    return str(x)


def md_table(df: pd.DataFrame) -> str:
    def cell(x):  # a | inside a value would end the cell
        return fmt(x).replace("|", "\\|").replace("\n", " ")
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(x) for x in row) + " |\n" for row in df.itertuples(index=False))


def number(text: str):
    """A CSV cell as shown: decimals to 4 significant digits, everything else (integers, words, empty) as written."""
    if any(c in text for c in ".eE") or text.lower() in ("nan", "inf", "-inf"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def summary_table(summary: dict) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A summary.json as key/value rows a reader can scan: nested tables become dotted keys (trials.complete,
    plan.fine_epochs), lists of numbers a comma list; a list of records (lr-find's probes) becomes a table of its
    own (returned by key), and one that a CSV beside it repeats (sanity's checks) points to that CSV."""
    rows: dict = {}
    tables: dict[str, pd.DataFrame] = {}

    def cell(x) -> str:  # a value inside a record: scalars and number lists as text, deeper values as JSON
        if isinstance(x, list) and not any(isinstance(v, (dict, list)) for v in x):
            return ", ".join(fmt(v) for v in x)
        return json.dumps(x, default=str) if isinstance(x, dict | list) else fmt(x)

    def add(key: str, value) -> None:
        nested = isinstance(value, (dict, list)) and any(isinstance(v, (dict, list)) for v in
                                                         (value.values() if isinstance(value, dict) else value))
        if key in IN_CSV and nested:
            rows[key] = f"{len(value)} row{'s' if len(value) != 1 else ''}: see {IN_CSV[key]}"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value) and "." not in key:
            tables[key] = pd.DataFrame([{k: cell(x) for k, x in v.items()} for v in value]).fillna("")
            rows[key] = f"{len(value)} row{'s' if len(value) != 1 else ''}: the table below"
        elif isinstance(value, dict) and value:
            for k, v in value.items():
                add(f"{key}.{k}", v)
        elif isinstance(value, list) and nested:
            rows[key] = "; ".join(", ".join(f"{k}={fmt(x)}" for k, x in v.items()) if isinstance(v, dict)
                                  else json.dumps(v, default=str) for v in value)
        elif isinstance(value, list):
            rows[key] = ", ".join(fmt(v) for v in value) or "none"
        elif value == {}:
            rows[key] = "none"
        else:
            rows[key] = value

    for k, v in summary.items():
        add(k, v)
    return pd.DataFrame({"key": list(rows), "value": list(rows.values())}), tables


def csv_table(path: Path) -> tuple[str, pd.DataFrame | None, str]:
    """(note, table, error): a CSV as written (an empty cell stays empty), evenly sampled to MAX_TABLE_ROWS rows and
    rounded; error is the one-line reason when it cannot be read (the report says so and goes on)."""
    from ..errors import UserError
    from .curves import read_metrics

    try:
        read_metrics(path)
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (UserError, pd.errors.ParserError) as e:
        return "", None, str(e)
    note = "" if len(df) <= MAX_TABLE_ROWS else (f" ({MAX_TABLE_ROWS} of {len(df)} rows, evenly spaced, the first "
                                                 f"and last included)")
    rows = np.unique(np.linspace(0, len(df) - 1, min(len(df), MAX_TABLE_ROWS)).round().astype(int))
    return note, df.iloc[rows].map(number), ""
