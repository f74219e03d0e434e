"""`dlrecipe report`: one run folder read as a page: a header card (status, the selected model, its test metrics,
the diagnosis in words, the next step, the time), a table of contents, the story of the recipe one section per
step (and per search pass) with its figures and a short summary, and the raw tables and summaries behind
collapsible sections. Written as report.md, the same page as a self-contained report.html, and report.json."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..diagnose import ACTION_ORDER, Finding
from ..errors import UserError
from ..runs import status_shown, write_json
from .curves import (
    TRIAL_FOLDERS,
    Curve,
    diagnose_curve,
    for_a_trial,
    label_of,
    metric_files,
    plot_curves,
    read_curve,
    read_summary,
    selected_trials,
    training_notes,
)
from .page import render, slug
from .tables import FIGURE_TITLES, TABLE_TITLES, csv_table, fmt, md_table, summary_table, words

CODE_WORDS = {  # a finding's code in words, for the header card and the section summaries
    "diverged": "the loss diverged", "lr_too_high": "learning rate too high", "lr_too_low": "learning rate too low",
    "overfitting": "overfitting", "underfitting": "underfitting", "train_longer": "still improving: train longer",
    "early_best": "best epoch very early", "noisy_val": "noisy validation", "no_data": "no epoch finished",
}
STEP_TITLES = {"sanity": "Sanity checks", "lr-find": "Learning-rate finder", "seeds": "More seeds of the selected "
               "configuration", "test": "Selection on validation, and the test"}
NO_CURVES = ("no training curves to diagnose: no epoch was trained here (sanity, lr-find and compare folders, or a run "
             "that stopped before its search); the tables and figures below are what there is")
RUN_FILES = ("recipe.toml", "env.json", "summary.json", "metrics.csv")  # what every command writes first


@dataclass
class Report:
    run_dir: Path
    curves: list[Curve]
    files: list[Path]          # what the report wrote
    headline: str = ""         # the run's status and result, from its summary.json (markdown bold)
    final: Curve | None = None  # the curve of the selected model (a run's best single model), diagnosed


@dataclass
class Page:
    """The report as headings and markdown blocks, in reading order; the table of contents is made from it."""

    title: str
    blocks: list[tuple[int, str, str]] = field(default_factory=list)   # (level, heading, body)
    figures: list[Path] = field(default_factory=list)                  # embedded, in order
    shown: set[Path] = field(default_factory=set)                      # files already on the page

    def add(self, level: int, heading: str, body: str) -> None:
        self.blocks.append((level, heading, body))

    def figure(self, path: Path, run_dir: Path, title: str) -> str:
        self.figures.append(path)
        self.shown.add(path)
        return f"![{title}]({path.relative_to(run_dir)})\n"

    def markdown(self, card: str) -> str:
        seen: dict[str, int] = {}
        slug(self.title, seen)
        slug("Contents", seen)
        toc = []
        for level, heading, _ in self.blocks:
            toc.append(f"{'  ' * (level - 2)}- [{heading}](#{slug(heading, seen)})")
        out = [f"# {self.title}\n", card, "## Contents\n", "\n".join(toc) + "\n"]
        for level, heading, body in self.blocks:
            out += [f"{'#' * level} {heading}\n", body]
        return "\n".join(out)


def details(summary_line: str, body: str) -> str:
    """A collapsible block; markdown inside it is rendered (blank lines around it, CommonMark HTML block rules)."""
    return f"<details><summary>{summary_line}</summary>\n\n{body}\n</details>\n"


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


def headline(s: dict) -> str:
    """The run's status and result in one line ("" without a summary)."""
    if not s:
        return ""
    status = status_shown(s)
    text = f"**Status: {status}**" + (f": {str(s['reason']).rstrip('.')}" if s.get("reason") else "")
    tested = [f"{label} {s[k]:.4g}" for k, label in (("test_acc", "test accuracy"), ("test_loss", "test loss"))
              if isinstance(s.get(k), (int, float))]
    if tested and s.get("command") != "run":  # a run's reason names its selected model and test already
        text += ". Selected model: " + ", ".join(tested)
    if status in ("interrupted", "running or killed"):
        text += (". The run did not finish: the curves below are those of what had finished, and the diagnosis "
                 "reads them")
    return text + "."


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def primary(findings: list[Finding]) -> Finding | None:
    codes = {f.code: f for f in findings}
    return next((codes[c] for c in ACTION_ORDER if c in codes), findings[0] if findings else None)


def _diagnosis_words(findings: list[Finding]) -> str:
    if not findings:
        return "no alarm: the curves look healthy"
    return "; ".join(f"{CODE_WORDS.get(f.code, f.code)} ({f.message})" for f in findings)


def card(s: dict, final: Curve | None, curves: list[Curve]) -> str:
    """The header card: status, selected model, test metrics, the diagnosis in words, the next step, the time."""
    lines = [headline(s)] if s else []
    selected = s.get("selected") or {}
    if selected and s.get("command") == "run":  # its reason repeats the lines below: the status and the passes
        npass = sum(p.get("best_val") is not None for p in s.get("passes") or [])
        lines = [f"**Status: {status_shown(s)}** after {npass} search pass{'es' if npass != 1 else ''}"
                 + (f" (the loop stopped: {s['passes_stop']})" if s.get("passes_stop") else "") + "."]
    if selected:
        keys = list((s.get("search") or {}).get("best_params") or {})
        members = selected.get("members") or []
        said = [f"{m['source']} (" + ", ".join(f"{k} = {fmt(m['recipe'][k])}" for k in keys if k in m["recipe"])
                + ")" for m in members]
        if len({s_[s_.index(" ("):] for s_ in said}) == 1 and len(said) > 1:  # one configuration, several runs
            said = [", ".join(s_[:s_.index(" (")] for s_ in said) + ", all" + said[0][said[0].index(" ("):]]
        what = (f"an ensemble of {len(members)}, the mean of their predicted probabilities: " + "; ".join(said)
                if selected.get("kind") == "ensemble" else said[0] if said else "")
        key = selected.get("monitor", "val_loss")
        val = (selected.get("ensemble_val") if selected.get("kind") == "ensemble" else selected.get("single_val"))
        if val:
            what += f"; validation {'accuracy' if key == 'val_acc' else 'loss'} {fmt(val[key.removeprefix('val_')])}"
        lines.append(f"**Selected model:** {what}.")
    elif s.get("selected_trial") is not None:
        params = ", ".join(f"{k} = {fmt(v)}" for k, v in (s.get("best_params") or {}).items())
        lines.append(f"**Selected model:** trial {s['selected_trial']} ({s.get('selected_stage', '')}): {params}.")
    tested = [f"{label} {fmt(float(s[k]))}" for k, label in (("test_acc", "accuracy"), ("test_loss", "loss"))
              if isinstance(s.get(k), (int, float))]
    if tested:
        once = " (the test split, read once, at the very end)" if s.get("command") in ("run", "search") else ""
        lines.append(f"**Test:** {', '.join(tested)}{once}.")
    if selected.get("ensemble_val") and selected.get("single_val"):
        key = selected["monitor"].removeprefix("val_")
        name = "accuracy" if key == "acc" else "loss"
        ens, one = selected["ensemble_val"][key], selected["single_val"][key]
        chosen = "the ensemble is what was tested and saved" if selected["kind"] == "ensemble" else \
            "the single model is what was tested and saved"
        lines.append(f"**Ensemble:** validation {name} {fmt(ens)} for an ensemble of "
                     f"{len(selected.get('ensemble_candidates', []))} against {fmt(one)} for the best single model: "
                     f"{chosen}.")
    seen = final or (curves[0] if len(curves) == 1 else None)
    if seen is not None:
        lines.append(f"**Diagnosis** ({seen.title or seen.label}): {_diagnosis_words(seen.findings)}.")
        first = primary(seen.findings)
        nxt = first.advice if first else "nothing the curves ask for"
        if s.get("command") == "run" and s.get("passes_stop"):
            nxt = (f"left to try: {first.advice}" if first else
                   "nothing the curves ask for; what is left is more data, or another architecture (yours to choose)")
        lines.append(f"**Next step:** {nxt.rstrip('.')}.")
    elif not curves:
        lines.append(f"**Diagnosis:** {NO_CURVES}.")
    if isinstance(s.get("seconds"), (int, float)):
        budget = s.get("budget_minutes")
        used = f" of a budget of {budget:g} minutes ({s['seconds'] / (budget * 60):.0%})" if budget else ""
        lines.append(f"**Time:** {_minutes(s['seconds'])}{used}.")
    bad = s.get("status") not in (None, "completed", "early_stopped", "pass", "ok", "warn")
    return f"<div class=\"card{' bad' if bad else ''}\">\n\n" + "\n\n".join(lines) + "\n\n</div>\n"


def _curves(run_dir: Path, summary: dict) -> tuple[list[Curve], list[Curve], Curve | None]:
    """(diagnosed curves, trial curves, the selected model's curve)."""
    main_files, trial_files = metric_files(run_dir)
    curves = [Curve(label_of(run_dir, p), p, read_curve(p)) for p in main_files]
    for c in curves:
        c.findings, c.title = diagnose_curve(run_dir, c.path, c.metrics), "the training run"
    trials = [Curve(label_of(run_dir, p), p, read_curve(p)) for p in trial_files]
    final = curves[0] if len(curves) == 1 else None
    if trials and not curves:  # a search (or a run's search passes): diagnose the selected trials
        selected = selected_trials(run_dir)
        picked = [c for c in trials if c.path.parent in selected]
        if not picked:  # no selection recorded (killed, failed): the trial with the lowest validation loss
            searched = [c for c in trials if "trials" in c.path.parts]
            picked = [min(searched or trials, key=lambda c: c.metrics["val_loss"].min() if len(c.metrics) else np.inf)]
        for c in picked:
            c.findings = [for_a_trial(f) for f in diagnose_curve(run_dir, c.path, c.metrics)]
            c.label += " (selected)" if c.path.parent in selected else " (best val_loss)"
            folder = c.path.parents[2]
            c.title = (f"{_pass_title(run_dir, folder, summary)}: trial {c.path.parent.name}"
                       if folder != run_dir else f"trial {c.path.parent.name}")
        curves = picked
        single = ((summary.get("selected") or {}).get("single") or {}).get("model")
        if single:  # a run: its best single model's curve (a pass's selected trial, another fine trial, or a seed)
            path = run_dir / Path(single).parent / "metrics.csv"
            final = next((c for c in curves if c.path == path), None)
            if final is None and path.is_file():
                final = Curve(label_of(run_dir, path) + " (selected)", path, read_curve(path))
                final.findings = [for_a_trial(f) for f in diagnose_curve(run_dir, path, final.metrics)]
                final.title = summary["selected"]["single"].get("source", final.label)
                curves.append(final)
        elif len(curves) == 1:
            final = curves[0]
    for c in curves:
        c.notes = training_notes(run_dir, c.path)
    return curves, trials, final


def _pass_title(run_dir: Path, folder: Path, summary: dict) -> str:
    for p in summary.get("passes") or []:
        if p.get("folder") == folder.name:
            return f"search pass {p['pass']}"
    return str(folder.relative_to(run_dir))


def _folder_tables(page: Page, run_dir: Path, folder: Path, recursive: bool = False) -> str:
    """Every summary.json and CSV of one folder (not its trials), each behind a collapsible block."""
    out = []
    summaries = sorted(folder.rglob("summary.json") if recursive else folder.glob("summary.json"))
    csvs = sorted(folder.rglob("*.csv") if recursive else folder.glob("*.csv"),
                  key=lambda p: (p.name != "steps.csv", p))
    for path in summaries:
        if path in page.shown or set(TRIAL_FOLDERS) & set(path.relative_to(run_dir).parts[:-1]):
            continue
        page.shown.add(path)
        rel = path.relative_to(run_dir)
        kv, records = summary_table(read_summary(path))
        where = str(rel.parent) if str(rel.parent) != "." else run_dir.name
        body = md_table(kv) + "".join(f"\n**{key}**\n\n{md_table(df)}" for key, df in records.items())
        out.append(details(f"Summary: {where} (summary.json, {len(kv)} values)", body))
    for path in csvs:
        rel = path.relative_to(run_dir)
        if path in page.shown or set(TRIAL_FOLDERS) & set(rel.parts[:-1]):
            continue
        page.shown.add(path)
        note, df, error = csv_table(path)
        body = f"- not shown: {error}\n" if error else (f"{note.strip()}\n\n" if note else "") + md_table(df)
        out.append(details(f"Table: {words(path.name, TABLE_TITLES)} ({rel})", body))
    return "\n".join(out)


def _curve_block(page: Page, run_dir: Path, c: Curve, fig: Path) -> str:
    text = [page.figure(fig, run_dir, f"loss and accuracy: {c.title or c.label}")]
    text.append(f"Diagnosis of {c.title or c.label}: {_diagnosis_words(c.findings)}." + (
        "" if not c.findings else " Next: " + primary(c.findings).advice.rstrip(".") + "."))
    text += [f"\n*{n}*" for n in c.notes]
    return "\n".join(text) + "\n"


def _step_story(page: Page, run_dir: Path, s: dict, curve_figs: dict[Path, Path], curves: list[Curve]) -> None:
    """A `dlrecipe run` folder: one section per step (and per search pass), each with its figures, a short summary
    and its own tables behind collapsible blocks."""
    steps = list((s.get("steps") or {}).values())
    passes = {p["step"]: p for p in s.get("passes") or []}
    page.add(2, "The recipe, step by step", "Each step's result feeds the next (lecture 003); after each search pass "
             "the run reads the selected trial's curves and, when they call for a change it can make, goes back "
             "to the search with it (step 7, \"go to step 5\").\n\n" + (md_table(_steps_frame(steps)) if steps
                                                                         else ""))
    page.shown.add(run_dir / "steps.csv")
    number = 0
    for row in steps:
        step = row["step"]
        if step == "report":
            continue
        folder = run_dir / row["folder"] if row.get("folder") else None
        if step.startswith("search"):
            p = passes.get(step, {})
            k = p.get("pass", 1)
            if k == 1:
                number += 1
            title = f"{number}. Search, pass {k}" if len(passes) > 1 else f"{number}. Search"
            body = _pass_summary(row, p, folder)
        else:
            number += 1
            title = f"{number}. {STEP_TITLES.get(step, step)}"
            body = _step_summary(step, row, s, folder)
        if row["status"] == "interrupted":
            body = f"Interrupted: {row['result']}\n"
        blocks = [body]
        for c in curves:
            if folder is not None and c.path.is_relative_to(folder):
                blocks.append(_curve_block(page, run_dir, c, curve_figs[c.path]))
        if folder is not None and folder.is_dir():
            for png in sorted(folder.glob("*.png")):
                name = words(png.name, FIGURE_TITLES)
                blocks.append(f"**{name}**\n\n{page.figure(png, run_dir, name)}")
            blocks.append(_folder_tables(page, run_dir, folder, recursive=step == "seeds"))
        if step == "seeds" and folder is not None:
            blocks.append(_seeds_table(run_dir, folder))
        if step == "test" and s.get("selected"):
            blocks.append(_members(s["selected"]))
        page.add(3, title, "\n".join(b for b in blocks if b))


def _steps_frame(steps: list[dict]):
    import pandas as pd

    cols = ["step", "status", "result", "seconds", "trigger", "change", "best_val"]
    df = pd.DataFrame([{c: r.get(c, "") for c in cols} for r in steps])
    return df.rename(columns={"trigger": "diagnosis that triggered it", "best_val": "best validation"})


def _pass_summary(row: dict, p: dict, folder: Path | None) -> str:
    from ..runs import read_json

    first = ("Coarse random trials over the search space, then fine trials narrowed around the best ones; the LR "
             "range comes from the learning-rate finder." if p.get("pass", 1) == 1 else
             f"Back to the search because the previous pass's diagnosis was **{p.get('trigger', '')}**; the "
             f"change: {p.get('change', '')}.")
    plan = ""
    if folder is not None and (folder / "search.json").is_file():
        r = read_json(folder / "search.json").get("recipe", {})
        plan = (f" It planned {r.get('search.trials')} coarse trials of {r.get('search.coarse_epochs')} epochs and "
                f"{r.get('search.fine_trials')} fine ones of up to {r.get('search.fine_epochs')}.")
    result = f"Selected {row['result']}" if row["status"] == "completed" else f"{row['status']}: {row['result']}"
    took = f" ({_minutes(float(row['seconds']))})" if row.get("seconds") not in ("", None) else ""
    return f"{first}{plan}\n\n{result}{took}.\n"


def _step_summary(step: str, row: dict, s: dict, folder: Path | None) -> str:
    took = f" ({_minutes(float(row['seconds']))})" if row.get("seconds") not in ("", None) else ""
    if step == "sanity":
        checks = (s.get("sanity") or {}).get("checks") or {}
        tally = ", ".join(f"{sum(v == st for v in checks.values())} {st}" for st in ("pass", "warn", "fail")
                          if any(v == st for v in checks.values()))
        return (f"Before any search: the initial loss, a gradient check, layer health at initialisation, and "
                f"overfitting a small sample (lecture 002).{' ' + tally + '.' if tally else ''}\n\n"
                f"{row['result']}{took}.\n")
    if step == "lr-find":
        return (f"Probes of learning rates from one initialisation, then a range test: the LR that makes the loss go "
                f"down, and the range the search draws from (lectures 002-003).\n\n{row['result']}{took}.\n")
    if step == "seeds":
        return (f"What the budget had left went into training the selected configuration again from other seeds "
                f"(initialisation and minibatch order; the split stays): candidates for the ensemble.\n\n"
                f"{row['result']}{took}.\n")
    if step == "test":
        return (f"Every pass's best fine trials and the extra seeds are scored again on the validation split; the "
                f"best single model, or the average of the best few when that is better on validation (lecture 003: "
                f"ensembles, ~2% extra), is then evaluated on the test split, once.\n\n{row['result']}{took}.\n")
    return f"{row['status']}: {row['result']}{took}.\n"


def _seeds_table(run_dir: Path, folder: Path) -> str:
    import pandas as pd

    rows = []
    for path in sorted(folder.glob("*/summary.json"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit()
                       else 0):
        r = read_summary(path)
        rows.append({"seed": path.parent.name, **{k: r.get(k) for k in ("best_epoch", "best_val_loss",
                                                                        "best_val_acc", "status")}})
    return details(f"Seed runs: {len(rows)}", md_table(pd.DataFrame(rows).fillna(""))) if rows else ""


def _members(selected: dict) -> str:
    import pandas as pd

    rows = [{"member": m["source"], **{k: m[k] for k in ("val_loss", "val_acc") if k in m}, "snapshot": m["model"]}
            for m in selected.get("members", [])]
    name = "Ensemble members (mean of their predicted probabilities)" if selected.get("kind") == "ensemble" else \
        "The selected model"
    return details(f"{name}: {len(rows)}", md_table(pd.DataFrame(rows)))


def _health_section(s: dict) -> str:
    """Model size, hidden-unit health (lecture 002) and test-time averaging, from a train run's summary.json; the
    per-layer table (hidden_units.csv) is among the raw tables."""
    if "flops_per_example" not in s:
        return ""
    lines = [f"- {s.get('parameters', 0):,} parameters ({s.get('trainable_parameters', 0):,} trainable at the end), "
             f"{s['flops_per_example']:,} FLOPs per example and forward pass"]
    if "test_averaging" in s:
        metric = "acc" if "test_acc_averaged" in s else "loss"
        lines.append(f"- test {metric} {s.get(f'test_{metric}', float('nan')):.4g} plain, "
                     f"{s[f'test_{metric}_averaged']:.4g} with {s['test_averaging']}")
    lines += [f"- **warning**: {w}" for w in s.get("hidden_unit_warnings", [])] or \
        ["- hidden units: no strongly correlated or input-ignoring units (hidden_units.csv)"]
    return "\n".join(lines) + "\n"


def build_report(run_dir: str | Path) -> Report:
    """Diagnose every curve in a run folder, draw the figures, write report.md, report.html and report.json."""
    run_dir = Path(run_dir)
    _check_run_folder(run_dir)
    main_files, trial_files = metric_files(run_dir)
    if not main_files and not trial_files and not (run_dir / "summary.json").is_file():
        raise UserError(f"{run_dir}: nothing to report yet: no metrics.csv or summary.json (the run was stopped "
                        f"before its first epoch, or is still starting)")
    s = read_summary(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    for old in [*run_dir.glob("report_curves*.png"), run_dir / "report_trials.png"]:  # an earlier report's figures
        old.unlink(missing_ok=True)
    curves, trials, final = _curves(run_dir, s)
    is_run = s.get("command") == "run"

    written: list[Path] = []
    curve_figs: dict[Path, Path] = {}
    for i, c in enumerate(curves):
        curve_figs[c.path] = plot_curves([c], run_dir / f"report_curves{'' if i == 0 else f'_{i}'}.png", c.label)
    written += list(curve_figs.values())
    trials_fig = None
    if trials and not is_run:  # a run's passes each draw their trials (search_curves.png)
        trials_fig = plot_curves(trials, run_dir / "report_trials.png", "all trials")
        written.append(trials_fig)

    page = Page(f"Report: {s.get('name') or run_dir.name}" + (f", dlrecipe {s['command']}" if s.get("command")
                                                              else ""))
    page.shown |= {run_dir / "report.md", run_dir / "report.html"}
    if is_run:
        _step_story(page, run_dir, s, curve_figs, curves)
    else:
        if not curves:
            page.add(2, "Diagnosis", f"- {NO_CURVES}\n")
        for c in curves:
            page.add(2, f"Diagnosis: {c.title or c.label}" if len(curves) > 1 else "Diagnosis",
                     _curve_block(page, run_dir, c, curve_figs[c.path]))
        if trials_fig is not None:
            page.add(2, "Every trial on one plot", page.figure(trials_fig, run_dir, "every trial on one plot"))
    health = _health_section(s)
    if health:
        page.add(2, "Model size and hidden units", health)
    others = [p for p in sorted(run_dir.rglob("*.png")) if p not in page.shown and p not in written]
    if others:  # figures the steps drew and no section showed
        page.add(2, "Figures", "\n".join(f"**{words(p.name, FIGURE_TITLES)}** ({p.parent.relative_to(run_dir)})\n\n"
                                         f"{page.figure(p, run_dir, words(p.name, FIGURE_TITLES))}" for p in others))
    rest = _folder_tables(page, run_dir, run_dir, recursive=True)
    if rest:
        page.add(2, "Raw tables and summaries", "Every summary and table not shown above, as written (numbers "
                 "rounded to 4 significant digits), one per collapsible block.\n\n" + rest)
    md = page.markdown(card(s, final, curves))
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(render(md, run_dir, page.figures, page.title))
    write_json(run_dir / "report.json", {c.label: [f.to_dict() for f in c.findings] for c in curves})
    written += [run_dir / "report.md", run_dir / "report.html", run_dir / "report.json"]
    return Report(run_dir, curves, written, headline(s), final)
