"""The end of a search: the trials table (trials.csv), then the selected trial's snapshot tested once on the test
split, with the --seeds reruns and the --ensemble average, and summary.json."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..atomic import replace as replace_file
from ..recipe import Recipe
from ..runs import write_json
from .plots import plot_curves, plot_params
from .space import Dist, edge_warnings
from .storage import HOST, _redact
from .workers import Worker, _direction, _monitor, _without_test, ranked


@dataclass
class SearchResult:
    run_dir: Path
    summary: dict
    trials: list[dict]          # the rows of trials.csv
    warnings: list[str]



def trial_rows(trials: list, space: dict[str, Dist], task: str) -> list[dict]:
    """One flat row per Optuna trial: the columns of trials.csv."""
    from optuna.trial import TrialState

    retried = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    metrics = ["best_val_loss", "best_val_acc"] if task == "classification" else ["best_val_loss"]
    rows = []
    for t in trials:
        u = t.user_attrs
        default = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
                   TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}[t.state]
        state = u.get("state", default) if t.state.is_finished() else default
        reason = u.get("reason", "")
        if t.number in retried:
            reason = (reason or "its worker stopped before it finished") + f" (retried as trial {retried[t.number]})"
        row = {"number": t.number, "stage": u.get("stage", ""), "slot": u.get("slot")}
        for key, d in space.items():
            row[key] = d.decode(t.params[key]) if key in t.params else None
        row.update({m: u.get(m) for m in metrics})
        row.update({"best_epoch": u.get("best_epoch"), "epochs_run": u.get("epochs_run"), "state": state,
                    "reason": reason, "seconds": u.get("seconds"), "retry_of": u.get("retry_of"),
                    "retried": t.number in retried})
        rows.append(row)
    return rows


def _write_trials_csv(run_dir: Path, rows: list[dict]) -> None:
    import pandas as pd

    table = pd.DataFrame(rows).drop(columns=["retried"], errors="ignore")
    replace_file(run_dir / "trials.csv", lambda tmp: table.to_csv(tmp, index=False))  # atomic, synced



def _snapshot(w: Worker, frozen, data):
    """The trial's restored best model: its model.pt when it ran here, else retrained (same seed, same weights)."""
    import torch

    from ..models import build_model
    from ..train import train_in

    stage = frozen.user_attrs["stage"]
    recipe = w.stage_recipe(w.params_of(frozen), stage)
    folder = w.run_dir / "trials" / str(frozen.number)
    ran_here = frozen.user_attrs.get("host") == HOST and Path(frozen.user_attrs.get("run_dir", "")).resolve() \
        == w.run_dir.resolve()
    if not (ran_here and (folder / "model.pt").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        train_in(folder, recipe, w.data_for(recipe), seed=recipe["seed"])
    model = build_model(recipe, data, seed=recipe["seed"]).to(w.device)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=w.device, weights_only=True))
    return model, recipe, folder


def _test(model, recipe: Recipe, data) -> dict[str, float]:
    from ..loop import evaluate, loss_function

    if not len(data.x_test):
        return {}
    tr = recipe.section("train")
    return evaluate(model, data.x_test, data.y_test, recipe.task, loss_function(recipe.task, tr),
                    tr["eval_batch_size"])


def _ensemble_test(models: list, recipe: Recipe, data) -> dict[str, float]:
    """Average the members' predicted probabilities (regression: predictions), then score (lecture 003)."""
    import torch

    from ..loop import loss_function, predict_proba

    if not len(data.x_test):
        return {}
    if recipe.task == "classification":
        p = torch.stack([predict_proba(m, data.x_test) for m in models]).mean(0)
        loss = torch.nn.functional.nll_loss(p.clamp_min(1e-12).log(), data.y_test)
        return {"loss": float(loss), "acc": float((p.argmax(1) == data.y_test).sum()) / len(data.y_test)}  # exact
    with torch.no_grad():
        out = torch.stack([m.eval()(data.x_test).squeeze(-1) for m in models]).mean(0)
    return {"loss": float(loss_function(recipe.task, recipe.section("train"))(out, data.y_test))}


def _finish(w: Worker, study, settings: dict, t0: float) -> SearchResult:
    """Select the best fine trial's snapshot, test it once (with --seeds and --ensemble), write the report."""
    import shutil
    import statistics

    from ..data import load_data
    from ..train import train_in

    recipe, space, run_dir = w.recipe, w.space, w.run_dir
    trials = study.get_trials(deepcopy=False)
    rows = trial_rows(trials, space, recipe.task)
    _write_trials_csv(run_dir, rows)
    for t in trials:  # trials/<n>/metrics.csv for trials that ran on another machine, from the study's record
        folder = run_dir / "trials" / str(t.number)
        if t.user_attrs.get("history") and not (folder / "metrics.csv").is_file():
            import pandas as pd

            folder.mkdir(parents=True, exist_ok=True)
            pd.DataFrame(t.user_attrs["history"]).to_csv(folder / "metrics.csv", index=False)
    direction, monitor = _direction(recipe), _monitor(recipe)
    coarse, fine = ranked(trials, direction, "coarse"), ranked(trials, direction, "fine")
    notes = edge_warnings(space, w.params_of(coarse[0])) if coarse else []
    notes += study.user_attrs.get("notes", [])  # the workers' (e.g. a model trained one trial at a time)
    if recipe["search.fine_trials"] and not fine:
        notes.append("no fine trial completed: the selected model is the best coarse trial")
    if fine and coarse:
        c, f = coarse[0].value, fine[0].value
        if (c < f) if direction == "minimize" else (c > f):
            notes.append(f"coarse trial {coarse[0].number} reached a better {monitor} ({c:.4g}) than every fine "
                         f"trial (the selected {fine[0].number}: {f:.4g}); the fine stage is meant to improve on "
                         f"it: compare the curves in search_curves.png (too few fine_epochs, or a fine range "
                         f"narrowed away from it)")
    if settings.get("ensemble", 1) > len(coarse) + len(fine):
        notes.append(f"--ensemble {settings['ensemble']}: only {len(coarse) + len(fine)} trials completed, the "
                     f"ensemble uses them all")
    skipped = sum(r["state"] == "skipped" for r in rows)
    if skipped:
        notes.append(f"{skipped} slots skipped: the budget's time was up (the trials took longer than planned, "
                     f"e.g. on a busier machine); a larger --budget runs them")
    counts = {s: sum(r["state"] == s and not r["retried"] for r in rows)
              for s in ("complete", "pruned", "diverged", "failed", "skipped")}
    counts["retried"] = sum(bool(r["retried"]) for r in rows)  # failed, then queued again: not counted above
    summary: dict[str, Any] = {
        "name": recipe.name, "command": "search", "study": settings["study"],
        "storage": _redact(settings["storage"]), "monitor": monitor, "direction": direction,
        "space": {k: d.describe() for k, d in space.items()}, "trials": counts,
        "requested": {"coarse": recipe["search.trials"], "fine": recipe["search.fine_trials"]},
        "budget_s": settings.get("budget_s"),
        "jobs": settings.get("jobs"),  # {"most": --jobs's processes at most, "processes": how many ran}
    }
    if coarse and recipe["search.fine_trials"]:
        summary["fine_space"] = {k: d.describe() for k, d in w.fine_space(study).items()}
    best = (fine or coarse)[:1]
    if not best:
        summary.update(status="failed", reason="no trial completed (every one diverged, was pruned or failed): "
                       "see trials.csv; lower the LR range", warnings=notes, seconds=time.perf_counter() - t0,
                       finished=time.strftime("%Y-%m-%d %H:%M:%S"))
        write_json(run_dir / "summary.json", summary)
        return SearchResult(run_dir, summary, rows, notes)

    from ..predict import write_bundle
    from ..train import write_test_predictions

    data = load_data(recipe, w.device)  # now with the test split, used only below
    sel = best[0]
    model, sel_recipe, folder = _snapshot(w, sel, data)
    replace_file(run_dir / "model.pt", lambda tmp: shutil.copyfile(folder / "model.pt", tmp))  # atomic, synced
    write_bundle(run_dir, data, sel_recipe, [{"weights": "model.pt", "model": sel_recipe.section("model")}])
    test = _test(model, sel_recipe, data)
    if test:  # test_predictions.csv, and regression metrics in the target's units (RMSE, MAE, R²)
        test.update(write_test_predictions(run_dir, model, data, None, sel_recipe["train.eval_batch_size"]))
    params = w.params_of(sel)
    summary.update({
        "status": "completed", "reason": f"selected trial {sel.number} ({sel.user_attrs['stage']}), the best "
        f"{monitor} of {len(fine) if fine else len(coarse)} complete {'fine' if fine else 'coarse'} trials",
        "selected_trial": sel.number, "selected_stage": sel.user_attrs["stage"], "best_params": params,
        "best_epoch": sel.user_attrs.get("best_epoch"),
        **{k: sel.user_attrs.get(k) for k in ("best_val_loss", "best_val_acc") if k in sel.user_attrs},
        **{f"test_{k}": v for k, v in test.items()},
    })
    if settings.get("ensemble", 1) > 1:
        members = (fine + coarse)[:settings["ensemble"]]  # fine first: they trained longer
        models = [model] + [_snapshot(w, t, data)[0] for t in members[1:]]
        ens = _ensemble_test(models, sel_recipe, data)
        summary["ensemble"] = {"k": len(members), "trials": [t.number for t in members],
                               **{f"test_{k}": v for k, v in ens.items()}}
    if settings.get("seeds", 1) > 1:
        no_test = _without_test(data)
        runs = [{"seed": sel_recipe["seed"], f"best_{monitor}": sel.user_attrs.get(f"best_{monitor}"),
                 **{f"test_{k}": v for k, v in test.items()}}]
        for s in range(sel_recipe["seed"] + 1, sel_recipe["seed"] + settings["seeds"]):
            (run_dir / "seeds" / str(s)).mkdir(parents=True, exist_ok=True)
            res = train_in(run_dir / "seeds" / str(s), sel_recipe, no_test, seed=s)
            m, _, _ = _snapshot_from(res.run_dir, sel_recipe, data, w.device, s)
            runs.append({"seed": s, f"best_{monitor}": res.summary.get(f"best_{monitor}"),
                         **{f"test_{k}": v for k, v in _test(m, sel_recipe, data).items()}})
        spread = {}
        for key in runs[0]:
            vals = [r[key] for r in runs if key != "seed" and r.get(key) is not None]
            if len(vals) == len(runs):
                spread[key] = {"mean": statistics.fmean(vals), "std": statistics.stdev(vals)}
        summary["seeds"] = {"runs": runs, **spread}
    summary.update(warnings=notes, seconds=time.perf_counter() - t0, finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_json(run_dir / "summary.json", summary)
    plot_params(run_dir / "search_params.png", rows, space, monitor)
    plot_curves(run_dir / "search_curves.png", run_dir, rows, monitor, sel.number)
    return SearchResult(run_dir, summary, rows, notes)


def _snapshot_from(folder: Path, recipe: Recipe, data, device: str, seed: int):
    import torch

    from ..models import build_model

    model = build_model(recipe, data, seed=seed).to(device)
    model.load_state_dict(torch.load(folder / "model.pt", map_location=device, weights_only=True))
    return model, recipe, folder

