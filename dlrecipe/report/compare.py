"""`dlrecipe compare`: several runs side by side, one table and one plot of their validation curves."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..runs import new_run_dir, status_shown, write_json
from .curves import Curve, plot_curves, read_curve, read_summary, selected_trials


def compare(run_dirs: list[str | Path], runs_dir: str | Path = "runs") -> tuple[pd.DataFrame, Path]:
    """One table (summary of each run) and one plot (every run's validation curves) in a new folder."""
    rows, curves = [], []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise UserError(f"{d}: no such run folder (dlrecipe runs lists them)")
        try:  # a corrupted or foreign folder is a row marked unreadable, never the end of the comparison
            if not (d / "summary.json").is_file() and not (d / "metrics.csv").is_file():
                raise UserError(f"{d}: not a run folder (no summary.json or metrics.csv)")
            s = read_summary(d / "summary.json") if (d / "summary.json").is_file() else {}
            curve = d / "metrics.csv"
            single = ((s.get("selected") or {}).get("single") or {}).get("model")  # a run: its best single model
            if single and (d / Path(single).parent / "metrics.csv").is_file():
                curve = d / Path(single).parent / "metrics.csv"
            elif not curve.is_file():  # a search: the selected trial's curve
                selected = sorted(p / "metrics.csv" for p in selected_trials(d) if (p / "metrics.csv").is_file())
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
        plot_curves(curves, fig, "runs")
    return table, out
