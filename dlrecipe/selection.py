"""The end of `dlrecipe run`: pick the model on validation across every pass, an ensemble when it pays, and read the
test split once.

Candidates are the best fine trials of every search pass (their snapshots trials/<n>/model.pt) and the extra-seed
runs of the selected configuration. Each is scored again on the validation split; the best one by the recipe's
monitor is the best single model. The ensemble averages the predicted probabilities (regression: the
predictions) of the best n candidates on validation, for the n in 2 .. ENSEMBLE_K that does best there (lecture 003:
independently trained models, averaged at test time, "~2% extra"); it is selected when its validation metric beats
the best single model's. Then the selected model, and
only it, is evaluated on the test split: the one read of the test split in the whole run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

ENSEMBLE_K = 5   # ensembles of the best 2 .. 5 candidates on validation are tried; the best of them is compared


@dataclass
class Candidate:
    source: str        # e.g. "pass 2, trial 31" or "seed 3"
    model: Path        # its model.pt
    values: dict       # its resolved recipe (user values, dotted keys), to rebuild the model
    val: dict | None = None   # recomputed on the validation split: {"loss", "acc"}


def monitor_of(recipe) -> str:
    return "val_acc" if recipe.task == "classification" and recipe["train.monitor"] == "val_acc" else "val_loss"


def better(a: float, b: float, monitor: str) -> bool:
    """a strictly better than b on the monitor (b may be NaN/None: anything finite beats it)."""
    if b is None or not math.isfinite(b):
        return a is not None and math.isfinite(a)
    return a > b if monitor == "val_acc" else a < b


def _parse(value):
    """A trials.csv cell back as a recipe value (numbers, booleans, lists written as TOML)."""
    import tomllib

    if not isinstance(value, str):
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def pass_candidates(search_dir: Path, pass_recipe, label: str, k: int = ENSEMBLE_K) -> list[Candidate]:
    """The best k fine trials of one search pass (coarse ones when no fine trial completed), best first."""
    import pandas as pd

    if not (search_dir / "trials.csv").is_file():
        return []
    trials = pd.read_csv(search_dir / "trials.csv", dtype=str, keep_default_na=False)
    trials = trials[trials["state"] == "complete"]
    space = [c for c in trials.columns if "." in c and c not in ("best_val_loss", "best_val_acc")]
    monitor = monitor_of(pass_recipe)
    out = []
    for stage in ("fine", "coarse"):
        rows = trials[trials["stage"] == stage].copy()
        if rows.empty:
            continue
        rows["_m"] = pd.to_numeric(rows[f"best_{monitor}"], errors="coerce")
        rows = rows.sort_values(["_m", "number"], ascending=[monitor != "val_acc", True],
                                key=lambda s: s.astype(float))
        epochs = pass_recipe["search.fine_epochs" if stage == "fine" else "search.coarse_epochs"]
        for _, row in rows.head(k).iterrows():
            model = search_dir / "trials" / str(row["number"]) / "model.pt"
            if not model.is_file():
                continue
            params = {key: _parse(row[key]) for key in space if row[key] != ""}
            values = pass_recipe.with_values({**params, "train.epochs": epochs}).user_values()
            out.append(Candidate(f"{label}, trial {row['number']}", model, values))
        if out:
            break
    return out


def _recipe(values: dict, path):
    from .recipe import validate

    return validate(dict(values), path=path)


def build(c: Candidate, data, device: str, path=None):
    """The candidate's model with its snapshot's weights, and its recipe."""
    import torch

    from .models import build_model

    recipe = _recipe(c.values, path)
    model = build_model(recipe, data, seed=recipe["seed"]).to(device)
    model.load_state_dict(torch.load(c.model, map_location=device, weights_only=True))
    return model.eval(), recipe


def outputs(models: list, x, task: str):
    """Averaged softmax probabilities (classification) or predictions (regression) of the models on x."""
    import torch

    from .loop import predict_proba

    if task == "classification":
        return torch.stack([predict_proba(m, x) for m in models]).mean(0)
    with torch.no_grad():
        return torch.stack([torch.cat([m(x[i:i + 1024]).squeeze(-1) for i in range(0, len(x), 1024)])
                            for m in models]).mean(0)


def score(out, y, task: str, loss_fn=None) -> dict:
    """Loss and accuracy of averaged outputs: NLL of the mean probabilities (classification), else loss_fn."""
    import torch

    if task == "classification":
        loss = torch.nn.functional.nll_loss(out.clamp_min(1e-12).log(), y)
        return {"loss": float(loss), "acc": float((out.argmax(1) == y).sum()) / max(len(y), 1)}
    return {"loss": float(loss_fn(out, y))}


@dataclass
class Selection:
    kind: str                  # "single" or "ensemble"
    members: list[Candidate]   # the selected model's members (one for "single")
    best: Candidate            # the best single model on validation
    single_val: dict           # its validation metrics
    ensemble_val: dict | None  # the ensemble's (None: fewer than 2 candidates)
    ensemble_members: list[Candidate]
    monitor: str


def select(candidates: list[Candidate], data, task: str, monitor: str, device: str, path=None,
           k: int = ENSEMBLE_K) -> Selection:
    """Score every candidate on validation; the best single model, or the ensemble of the best k when it is better."""
    from .loop import loss_function

    models = []
    for c in candidates:
        model, recipe = build(c, data, device, path)
        c.val = score(outputs([model], data.x_val, task), data.y_val, task,
                      loss_function(task, recipe.section("train")))
        models.append(model)
    key = monitor.removeprefix("val_")
    sign = -1 if monitor == "val_acc" else 1
    order = sorted(range(len(candidates)), key=lambda i: (sign * candidates[i].val[key], i))
    best = candidates[order[0]]
    ens_val, top = None, []
    loss_fn = loss_function(task, _recipe(best.values, path).section("train"))
    for n in range(2, min(k, len(order)) + 1):  # the best n on validation, n = 2 .. k: the best such ensemble
        val = score(outputs([models[i] for i in order[:n]], data.x_val, task), data.y_val, task, loss_fn)
        if ens_val is None or better(val[key], ens_val[key], monitor):
            ens_val, top = val, order[:n]
    members = [candidates[i] for i in top]
    if ens_val is not None and better(ens_val[key], best.val[key], monitor):
        return Selection("ensemble", members, best, best.val, ens_val, members, monitor)
    return Selection("single", [best], best, best.val, ens_val, members, monitor)


def test_selected(sel: Selection, data, task: str, device: str, path=None) -> dict:
    """The selected model (or ensemble) on the test split: the run's one read of it. {} when the split is empty."""
    from .loop import loss_function

    if not len(data.x_test):
        return {}
    built = [build(c, data, device, path) for c in sel.members]
    loss_fn = loss_function(task, built[0][1].section("train"))
    return score(outputs([m for m, _ in built], data.x_test, task), data.y_test, task, loss_fn)


def member_record(c: Candidate, run_dir: Path) -> dict:
    return {"source": c.source, "model": str(c.model.relative_to(run_dir)), "recipe": c.values,
            **({f"val_{k}": v for k, v in c.val.items()} if c.val else {})}


def load_selected(run_dir: str | Path, data, device: str = "cpu") -> tuple[list, str]:
    """The selected model of a `dlrecipe run` folder, ready to predict: (models, combine), where combine is
    "mean_probabilities" (classification), "mean_predictions" (regression) or "single"; `outputs` combines them."""
    from .runs import read_json

    run_dir = Path(run_dir)
    selected = read_json(run_dir / "summary.json").get("selected") or {}
    members = [Candidate(m["source"], run_dir / m["model"], m["recipe"]) for m in selected.get("members", [])]
    path = read_json(run_dir / "summary.json").get("recipe_path")
    models = [build(c, data, device, Path(path) if path else None)[0] for c in members]
    return models, selected.get("combine", "single")
