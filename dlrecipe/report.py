"""`dlrecipe report` and `dlrecipe compare`: curves as scatter plus moving average, every run on one plot, and
the written diagnosis of `diagnose.py`, as report.md and a self-contained report.html in the run folder."""
from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .diagnose import Finding, diagnose, moving_average
from .errors import UserError
from .runs import new_run_dir, read_json, status_shown, write_json

MAX_TABLE_ROWS = 40   # CSVs longer than this are shown as this many evenly spaced rows in the report
LOG_AXIS_SPAN = 30    # losses spanning more than 30x are drawn on a log axis


@dataclass
class Curve:
    label: str                 # e.g. "train" or "trials/3"
    path: Path                 # its metrics.csv
    metrics: pd.DataFrame
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Report:
    run_dir: Path
    curves: list[Curve]
    files: list[Path]          # what the report wrote
    headline: str = ""         # the run's status and result, from its summary.json (markdown bold)


def _metric_files(run_dir: Path) -> tuple[list[Path], list[Path]]:
    """(main curves, search-trial curves): every metrics.csv below run_dir."""
    all_files = sorted(run_dir.rglob("metrics.csv"))
    trials = [p for p in all_files if "trials" in p.relative_to(run_dir).parts[:-1]]
    return [p for p in all_files if p not in trials], trials


def _label(run_dir: Path, path: Path) -> str:
    rel = path.parent.relative_to(run_dir)
    return str(rel) if str(rel) != "." else run_dir.name


def loss_scale(curves: list[Curve]) -> str:
    """"log" when the losses span more than LOG_AXIS_SPAN (one early spike, e.g. batch norm's first epoch or a
    diverging run, would flatten every other curve on a linear axis), else "linear"."""
    parts = [c.metrics[k].to_numpy(float) for c in curves for k in ("train_loss", "val_loss") if k in c.metrics]
    losses = np.concatenate(parts) if parts else np.array([])
    losses = losses[np.isfinite(losses)]
    span_log = len(losses) and losses.min() > 0 and losses.max() / losses.min() > LOG_AXIS_SPAN
    return "log" if span_log else "linear"


def _plot_curves(curves: list[Curve], path: Path, title: str) -> Path:
    """Loss (and accuracy) per epoch: points as a scatter, a moving average as a line (lecture 003)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_acc = any("val_acc" in c.metrics for c in curves)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6, 4), squeeze=False)
    many = len(curves) > 3
    for i, c in enumerate(curves):
        m = c.metrics
        color = plt.cm.tab10(i % 10)
        window = max(3, len(m) // 10)
        for ax, cols in zip(axes[0], (("train_loss", "val_loss"), ("train_acc", "val_acc")), strict=False):
            for col, style in zip(cols, ("--", "-"), strict=True):
                if col not in m or (many and col.startswith("train")):
                    continue
                y = m[col].to_numpy(float)
                name = col if len(curves) == 1 else f"{c.label} {col}"
                ax.scatter(m["epoch"], y, s=10, alpha=0.35, color=color if len(curves) > 1 else None)
                ax.plot(m["epoch"], moving_average(y, window), style, label=name,
                        color=color if len(curves) > 1 else None)
    axes[0][0].set(xlabel="epoch", ylabel="loss", title=f"{title}: loss")
    axes[0][0].set_yscale(loss_scale(curves))
    if has_acc:
        axes[0][1].set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in axes[0]:
        if len(curves) <= 12:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def sparkline(values: list[float] | np.ndarray, width: int = 60) -> str:
    """A one-line terminal curve: ▁▂▃▄▅▆▇█ scaled between the finite minimum and maximum."""
    blocks = "▁▂▃▄▅▆▇█"
    v = np.asarray(values, float)
    if len(v) > width:  # resample long curves to the terminal width
        v = v[np.linspace(0, len(v) - 1, width).round().astype(int)]
    fin = v[np.isfinite(v)]
    if not len(fin):
        return ""
    lo, hi = fin.min(), fin.max()
    scale = (hi - lo) or 1.0
    return "".join("×" if not np.isfinite(x) else blocks[int((x - lo) / scale * (len(blocks) - 1))] for x in v)


def _md_table(df: pd.DataFrame) -> str:
    def cell(x):  # a | inside a value would end the cell
        return f"{x:.4g}" if isinstance(x, float) else str(x).replace("|", "\\|").replace("\n", " ")
    head = "| " + " | ".join(map(str, df.columns)) + " |\n|" + "---|" * len(df.columns) + "\n"
    return head + "".join("| " + " | ".join(cell(x) for x in row) + " |\n" for row in df.itertuples(index=False))


IN_CSV = {"checks": "sanity.csv", "steps": "steps.csv"}  # summary lists that a CSV of the same folder repeats


def _headline(run_dir: Path) -> str:
    """The run's status and result in one line, from its summary.json ("" when it has none)."""
    if not (run_dir / "summary.json").is_file():
        return ""
    s = _read_summary(run_dir / "summary.json")
    status = status_shown(s)
    text = f"**Status: {status}**" + (f": {str(s['reason']).rstrip('.')}" if s.get("reason") else "")
    tested = [f"{label} {s[k]:.4g}" for k, label in (("test_acc", "test accuracy"), ("test_loss", "test loss"))
              if isinstance(s.get(k), (int, float))]
    if tested:
        text += ". Selected model: " + ", ".join(tested)
    if status in ("interrupted", "running or killed"):
        text += (". The run did not finish: the curves below are those of what had finished, and the diagnosis "
                 "reads them")
    return text + "."


def _number(text: str):
    """A CSV cell as shown: decimals to 4 significant digits, everything else (integers, words, empty) as written."""
    if any(c in text for c in ".eE") or text.lower() in ("nan", "inf", "-inf"):
        try:
            return float(text)
        except ValueError:
            return text
    return text


def _summary_table(summary: dict) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A summary.json as key/value rows a reader can scan: nested tables become dotted keys (trials.complete,
    plan.fine_epochs), lists of numbers a comma list; a list of records (lr-find's probes) becomes a table of its
    own (returned by key), and one that a CSV beside it repeats (sanity's checks) points to that CSV."""
    rows: dict = {}
    tables: dict[str, pd.DataFrame] = {}

    def short(v) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    def cell(x) -> str:  # a value inside a record: scalars and number lists as text, deeper values as JSON
        if isinstance(x, list) and not any(isinstance(v, (dict, list)) for v in x):
            return ", ".join(short(v) for v in x)
        return json.dumps(x, default=str) if isinstance(x, dict | list) else short(x)

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
            rows[key] = "; ".join(", ".join(f"{k}={short(x)}" for k, x in v.items()) if isinstance(v, dict)
                                  else json.dumps(v, default=str) for v in value)
        elif isinstance(value, list):
            rows[key] = ", ".join(short(v) for v in value) or "none"
        elif value == {}:
            rows[key] = "none"
        else:
            rows[key] = value

    for k, v in summary.items():
        add(k, v)
    return pd.DataFrame({"key": list(rows), "value": list(rows.values())}), tables


def _recipe_near(run_dir: Path, metrics_path: Path) -> dict:
    """The nearest recipe.toml at or above a curve (within run_dir), parsed; {} when none can be read."""
    import tomllib

    folder = metrics_path.parent
    while True:
        recipe = folder / "recipe.toml"
        if recipe.is_file():
            try:
                return tomllib.loads(recipe.read_text())
            except (tomllib.TOMLDecodeError, OSError):
                return {}
        if folder == run_dir or folder == folder.parent:
            return {}
        folder = folder.parent


def _diagnose_curve(run_dir: Path, metrics_path: Path, metrics: pd.DataFrame) -> list[Finding]:
    """diagnose() told what the curve's recipe says: mixup training batches, batch norm's running-average rate."""
    from .recipe import SCHEMA

    recipe = _recipe_near(run_dir, metrics_path)
    model = recipe.get("model", {})
    bn = model.get("bn_momentum", SCHEMA["model.bn_momentum"].default) if model.get("norm") == "batch" else None
    return diagnose(metrics, mixed_train="mixup" in recipe.get("data", {}).get("augment", []), bn_momentum=bn)


def _for_a_trial(finding: Finding) -> Finding:
    """A search trial's epochs come from search.fine_epochs, not train.epochs: say so in the advice."""
    advice = finding.advice.replace("raise train.epochs", "raise search.fine_epochs, the fine trials' epochs")
    return Finding(finding.code, finding.message, advice)


def _selected_trials(run_dir: Path) -> set[Path]:
    """trials/<n> folders that a search's summary.json (here or below) names as its selected model."""
    out = set()
    for path in run_dir.rglob("summary.json"):
        if "trials" in path.relative_to(run_dir).parts:
            continue
        n = _read_summary(path).get("selected_trial")
        if n is not None:
            out.add(path.parent / "trials" / str(n))
    return out


NO_CURVES = ("no training curves to diagnose: no epoch was trained here (sanity, lr-find and compare folders, or a run "
             "that stopped before its search); the tables and figures below are what there is")
RUN_FILES = ("recipe.toml", "env.json", "summary.json", "metrics.csv")  # what every command writes first


def _is_run(folder: Path) -> bool:
    return any((folder / f).is_file() for f in RUN_FILES)


def _check_run_folder(run_dir: Path) -> None:
    """One run folder, not a folder of runs (a report there would diagnose one arbitrary run) or anything else."""
    if not run_dir.is_dir():
        raise UserError(f"run folder {str(run_dir)!r} not found (dlrecipe runs lists them)")
    if not _is_run(run_dir):
        runs = [d for d in run_dir.iterdir() if d.is_dir() and _is_run(d)]
        if runs:
            raise UserError(f"{run_dir} holds {len(runs)} run folders, not one run: report one of them (dlrecipe runs "
                            f"--runs-dir {run_dir} lists them), or put them side by side with dlrecipe compare")
        raise UserError(f"{run_dir}: not a dlrecipe run folder (none of {', '.join(RUN_FILES)})")


def read_metrics(path: Path) -> pd.DataFrame:
    """A metrics.csv, or a one-line error naming it when it cannot be read."""
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path}: cannot read it as CSV ({reason}); restore or delete that file") from None
    return df


def read_curve(path: Path) -> pd.DataFrame:
    """A metrics.csv with the columns a curve needs, or a one-line error (a foreign or hand-edited file is refused
    here rather than a KeyError deep in the diagnosis)."""
    df = read_metrics(path)
    missing = [c for c in ("train_loss", "val_loss") if c not in df.columns]
    if missing:
        raise UserError(f"{path}: no {' or '.join(missing)} column (it has {', '.join(map(str, df.columns))}); "
                        f"expected a dlrecipe metrics.csv")
    return df


def _read_summary(path: Path) -> dict:
    try:
        summary = read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise UserError(f"{path}: cannot read it as JSON ({e}); restore or delete that file") from None
    if not isinstance(summary, dict):
        raise UserError(f"{path}: holds a JSON {type(summary).__name__}, expected an object; restore or delete it")
    return summary


def build_report(run_dir: str | Path) -> Report:
    """Diagnose every curve in a run folder, draw the figures, write report.md, report.html and report.json."""
    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    main_files, trial_files = _metric_files(run_dir)
    if not main_files and not trial_files and not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: nothing to report yet: no metrics.csv or summary.json (the run was stopped "
                        f"before its first epoch, or is still starting)")
    curves = [Curve(_label(run_dir, p), p, read_curve(p)) for p in main_files]
    trials = [Curve(_label(run_dir, p), p, read_curve(p)) for p in trial_files]
    for c in curves:
        c.findings = _diagnose_curve(run_dir, c.path, c.metrics)
    if trials and not curves:  # a search (or a run's search step): diagnose the selected trial
        selected = _selected_trials(run_dir)
        picked = [c for c in trials if c.path.parent in selected]
        if not picked:  # no selection recorded (killed, failed): the trial with the lowest validation loss
            picked = [min(trials, key=lambda c: c.metrics["val_loss"].min() if len(c.metrics) else np.inf)]
        for c in picked:
            c.findings = [_for_a_trial(f) for f in _diagnose_curve(run_dir, c.path, c.metrics)]
            c.label += " (selected)" if c.path.parent in selected else " (best val_loss)"
        curves = picked

    written: list[Path] = []
    figures: list[tuple[str, Path]] = []
    for i, c in enumerate(curves):
        fig = _plot_curves([c], run_dir / f"report_curves{'' if i == 0 else f'_{i}'}.png", c.label)
        figures.append((f"curves: {c.label}", fig))
    if trials:
        figures.append(("every trial on one plot", _plot_curves(trials, run_dir / "report_trials.png",
                                                                "all trials")))
    written += [f for _, f in figures]
    ours = {f.name for _, f in figures}
    for png in sorted(run_dir.rglob("*.png")):  # figures the steps drew (sanity, lr-find, search)
        if png.name not in ours:
            figures.append((str(png.relative_to(run_dir)), png))

    sections = [f"# Report: {run_dir.name}\n"]  # status, diagnosis, a run's steps, figures, summaries, tables
    headline = _headline(run_dir)
    if headline:
        sections.append(f"{headline}\n")
    if not curves:
        sections += ["## Diagnosis\n", f"- {NO_CURVES}\n"]
    for c in curves:
        sections.append(f"## Diagnosis: {c.label}\n")
        if c.findings:
            sections += [f"- **{f.code}**: {f.message}. Next: {f.advice}." for f in c.findings]
        else:
            sections.append("- no alarm: the curves look healthy.")
        sections.append("")
    tables: list[str] = []
    for summary_path in sorted(run_dir.rglob("summary.json")):
        if "trials" in summary_path.relative_to(run_dir).parts[:-1]:
            continue
        rel = summary_path.parent.relative_to(run_dir)
        where = rel if str(rel) != "." else run_dir.name
        kv, records = _summary_table(_read_summary(summary_path))
        tables += [f"## Summary: {where}\n", _md_table(kv)]
        for key, df in records.items():
            tables += [f"## Summary: {where}: {key}\n", _md_table(df)]
    for csv_path in sorted(run_dir.rglob("*.csv"), key=lambda p: (p.name != "steps.csv", p)):  # steps first
        rel = csv_path.relative_to(run_dir)
        if "trials" in rel.parts[:-1]:
            continue
        try:
            read_metrics(csv_path)
            df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)  # shown as written: an empty cell stays
        except (UserError, pd.errors.ParserError) as e:  # a table the report only shows: say so and go on
            tables += [f"## Table: {rel}\n", f"- not shown: {e}\n"]
            continue
        note = "" if len(df) <= MAX_TABLE_ROWS else (f" ({MAX_TABLE_ROWS} of {len(df)} rows, evenly spaced, the "
                                                     f"first and last included)")
        rows = np.unique(np.linspace(0, len(df) - 1, min(len(df), MAX_TABLE_ROWS)).round().astype(int))
        block = [f"## Table: {rel}{note}\n", _md_table(df.iloc[rows].map(_number))]
        if csv_path == run_dir / "steps.csv":
            sections += block
        else:
            tables += block
    md_figs = [f"## Figure: {title}\n\n![{title}]({fig.relative_to(run_dir)})\n" for title, fig in figures]
    md = "\n".join(sections + md_figs + tables)
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(_html(run_dir, md, figures))
    write_json(run_dir / "report.json", {c.label: [f.to_dict() for f in c.findings] for c in curves})
    written += [run_dir / "report.md", run_dir / "report.html", run_dir / "report.json"]
    return Report(run_dir, curves, written, headline)


def _html(run_dir: Path, md: str, figures: list[tuple[str, Path]]) -> str:
    """report.md rendered as plain HTML with every figure embedded as base64 (one self-contained file)."""
    out = [("<!doctype html><html><head><meta charset='utf-8'><title>dlrecipe report</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse;"
           "font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}img{max-width:100%}</style></head><body>")]
    embedded = {str(fig.relative_to(run_dir)): base64.b64encode(fig.read_bytes()).decode() for _, fig in figures}
    in_table = False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip().replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if set("".join(cells)) <= {"-"}:
                continue
            tag = "td" if in_table else "th"  # a table's first row is its header
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.rindex("](") + 2:-1]
            out.append(f"<img alt='{html.escape(src)}' src='data:image/png;base64,{embedded[src]}'>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("- "):
            out.append(f"<p>&bull; {html.escape(line[2:]).replace('**', '')}</p>")
        elif line.strip():
            out.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def compare(run_dirs: list[str | Path], runs_dir: str | Path = "runs") -> tuple[pd.DataFrame, Path]:
    """One table (summary of each run) and one plot (every run's validation curves) in a new folder."""
    rows, curves = [], []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise UserError(f"{d}: no such run folder (dlrecipe runs lists them)")
        try:  # a corrupted or foreign folder is a row marked unreadable, never the end of the comparison
            if not (d / "summary.json").is_file() and not (d / "metrics.csv").is_file():
                raise UserError(f"{d}: not a run folder (no summary.json or metrics.csv)")
            s = _read_summary(d / "summary.json") if (d / "summary.json").is_file() else {}
            if not isinstance(s, dict):
                raise UserError(f"{d / 'summary.json'}: not a JSON object")
            curve = d / "metrics.csv"
            if not curve.is_file():  # a search or run: the selected trial's curve
                selected = sorted(p / "metrics.csv" for p in _selected_trials(d) if (p / "metrics.csv").is_file())
                curve = selected[0] if selected else None
            if curve is not None:  # a train run's curve, or the selected trial of a search or run
                curves.append(Curve(d.name, curve, read_curve(curve)))
        except UserError as e:
            s, curve = {"status": "unreadable", "reason": str(e)}, None
        rows.append({"run": d.name, "name": s.get("name"), "command": s.get("command"),
                     "status": status_shown(s),  # as `dlrecipe runs` says
                     "best_epoch": s.get("best_epoch"), "best_val_loss": s.get("best_val_loss"),
                     "best_val_acc": s.get("best_val_acc"), "test_loss": s.get("test_loss"),
                     "test_acc": s.get("test_acc"), "curve": "" if curve is None else str(curve.relative_to(d))})
    table = pd.DataFrame(rows)
    table["best_epoch"] = table["best_epoch"].astype("Int64")  # an epoch number, also when some runs have none
    out = new_run_dir(runs_dir, "compare", "compare")
    table.to_csv(out / "compare.csv", index=False)
    write_json(out / "summary.json", {"name": "compare", "command": "compare", "status": "completed",
                                      "runs": [str(d) for d in run_dirs]})  # so `dlrecipe runs` lists it as done
    fig = out / "compare.png"
    if curves:
        _plot_curves(curves, fig, "runs")
    return table, out
