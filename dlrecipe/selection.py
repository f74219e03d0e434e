"""The end of `dlrecipe run`: more seeds with what the budget leaves, the model picked on validation across every pass
(an ensemble when it pays), and the test split read once.

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

from .runs import read_json, write_json

SEEDS_FOLDER = "4-seeds"   # extra seeds of the selected configuration, trained with what the budget leaves ...
MAX_SEEDS = 16             # ... at most this many (the ensemble takes the best 2-5 of every candidate),
SEED_MARGIN = 1.2          # ... each started only when 1.2x the selected trial's seconds are left
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
    """The selected model (or ensemble) on the test split, the run's one read of it: (metrics, averaged outputs);
    ({}, None) when the split is empty."""
    from .loop import loss_function

    if not len(data.x_test):
        return {}, None
    built = [build(c, data, device, path) for c in sel.members]
    loss_fn = loss_function(task, built[0][1].section("train"))
    out = outputs([m for m, _ in built], data.x_test, task)
    return score(out, data.y_test, task, loss_fn), out


def save_selected(run_dir: Path, sel: Selection, data, recipe, out, test: dict) -> None:
    """What `dlrecipe predict RUN` uses: model.json (the members' snapshots and model keys, how to average them),
    the training transform, and test_predictions.csv from the one test read (`out`); regression metrics in the
    target's units join `test`."""
    from .predict import outputs_table, write_bundle

    members = [{"weights": str(c.model.relative_to(run_dir)), "model": _recipe(c.values, recipe.path).section("model")}
               for c in sel.members]
    combine = "single" if sel.kind == "single" else ("mean_probabilities" if recipe.task == "classification"
                                                     else "mean_predictions")
    write_bundle(run_dir, data, recipe, members, combine)
    if out is not None:
        table, units = outputs_table(out, data, data.y_test)
        table.to_csv(run_dir / "test_predictions.csv", index=False)
        test.update(units)


def member_record(c: Candidate, run_dir: Path) -> dict:
    return {"source": c.source, "model": str(c.model.relative_to(run_dir)), "recipe": c.values,
            **({f"val_{k}": v for k, v in c.val.items()} if c.val else {})}


def load_selected(run_dir: str | Path, data, device: str = "cpu") -> tuple[list, str]:
    """The selected model of a `dlrecipe run` folder, ready to predict: (models, combine), where combine is
    "mean_probabilities" (classification), "mean_predictions" (regression) or "single"; `outputs` combines them."""
    run_dir = Path(run_dir)
    selected = read_json(run_dir / "summary.json").get("selected") or {}
    members = [Candidate(m["source"], run_dir / m["model"], m["recipe"]) for m in selected.get("members", [])]
    path = read_json(run_dir / "summary.json").get("recipe_path")
    models = [build(c, data, device, Path(path) if path else None)[0] for c in members]
    return models, selected.get("combine", "single")


# ---------------------------------------------------------------------------------------- the end of a run

def read_json_safe(path: Path) -> dict:
    return read_json(path) if path.is_file() else {}


def searched_recipe(recipe, search_dir: Path):
    """The recipe a search pass ran (its planned counts and epochs, its space), from its search.json."""
    from .recipe import validate

    return validate(dict(read_json_safe(search_dir / "search.json")["recipe"]), path=recipe.path)


def selected_values(search_dir: Path, recipe, ss: dict) -> dict:
    """The selected trial's resolved recipe (its parameters and its stage's epochs), as dotted user values."""
    searched = searched_recipe(recipe, search_dir)
    epochs = searched["search.fine_epochs" if ss.get("selected_stage") == "fine" else "search.coarse_epochs"]
    return searched.with_values({**(ss.get("best_params") or {}), "train.epochs": epochs}).user_values()


def extra_seeds(recipe, values: dict, search_dir: Path, ss: dict, run_dir: Path, left_s, device: str,
                 say) -> list[dict]:
    """Train the selected configuration again from other seeds (init and minibatch order; the split stays) while
    the budget lasts: a typical run's cost (the selected trial's seconds) must fit in what is left, plus the end."""
    import pandas as pd

    from .data import load_data
    from .recipe import validate
    from .train import train_in

    cfg = validate(dict(values), path=recipe.path)
    try:
        trials = pd.read_csv(search_dir / "trials.csv")
        cost = float(trials.loc[trials["number"] == ss.get("selected_trial"), "seconds"].iloc[0])
    except (OSError, IndexError, KeyError, ValueError):
        return []
    folder = run_dir / SEEDS_FOLDER
    done, data = [], None
    for i in range(1, MAX_SEEDS + 1):
        seed = cfg["seed"] + i
        out = folder / str(seed)
        if (out / "summary.json").is_file() and (out / "model.pt").is_file():  # a resume keeps a finished seed
            done.append({"seed": seed, "folder": str(out.relative_to(run_dir))})
            continue
        left = left_s()
        if left is None or left < cost * SEED_MARGIN:
            break
        if data is None:
            data = load_data(cfg, device)  # inside withheld_test_split: no test split
        if out.exists():
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True)
        (out / "recipe.toml").write_text(cfg.to_toml())  # what the report reads its curves with (mixup, dropout)
        say(f"seeds: the selected configuration again from seed {seed} ({left:.0f} s of the budget left)")
        res = train_in(out, cfg, data, seed=seed)
        if res.summary["status"] in ("completed", "early_stopped") and res.summary.get("best_epoch"):
            done.append({"seed": seed, "folder": str(out.relative_to(run_dir))})
    if done:
        write_json(folder / "seeds.json", {"recipe": values, "seeds": done})
    return done


def select_and_test(recipe, run_dir: Path, passes: list[dict], summary: dict, device: str) -> str:
    """Candidates from every pass and seed, the selection on validation, the one test; summary["selected"]."""
    from .data import load_data

    candidates = []
    for p in passes:
        if p.get("best_val") is None:
            continue
        folder = run_dir / p["folder"]
        candidates += pass_candidates(folder, searched_recipe(recipe, folder), f"pass {p['pass']}")
    seeds = read_json_safe(run_dir / SEEDS_FOLDER / "seeds.json")
    for s in seeds.get("seeds", []):
        candidates.append(Candidate(f"seed {s['seed']}", run_dir / s["folder"] / "model.pt", seeds["recipe"]))
    data = load_data(recipe, device)  # with the test split: read once, below
    task, monitor = recipe.task, monitor_of(recipe)
    sel = select(candidates, data, task, monitor, device, recipe.path)
    test, out = test_selected(sel, data, task, device, recipe.path)
    save_selected(run_dir, sel, data, recipe, out, test)
    key = monitor.removeprefix("val_")
    single = f"{sel.best.source} ({monitor.replace('_', ' ')} {sel.single_val[key]:.4g})"
    rec = {"kind": sel.kind, "combine": "single" if sel.kind == "single" else
           ("mean_probabilities" if task == "classification" else "mean_predictions"),
           "members": [member_record(c, run_dir) for c in sel.members], "monitor": monitor,
           "single": member_record(sel.best, run_dir), "single_val": sel.single_val,
           "ensemble_val": sel.ensemble_val, "ensemble_candidates": [c.source for c in sel.ensemble_members],
           "candidates": len(candidates), "val": sel.ensemble_val if sel.kind == "ensemble" else sel.single_val,
           **{f"test_{k}": v for k, v in test.items()}}
    if sel.kind == "ensemble":
        write_json(run_dir / "ensemble.json", {k: rec[k] for k in ("kind", "combine", "members", "monitor")})
        rec["model"] = "ensemble.json"
        rec["text"] = (f"an ensemble of {len(sel.members)} ({monitor.replace('_', ' ')} {sel.ensemble_val[key]:.4g}, "
                       f"better than the best single model, {single})")
    else:
        rec["model"] = rec["single"]["model"]
        rec["text"] = single + ("" if sel.ensemble_val is None else
                                f"; an ensemble of {len(sel.ensemble_members)} was not better "
                                f"({sel.ensemble_val[key]:.4g})")
    tested = (f"test acc {test['acc']:.4f}" if "acc" in test else f"test loss {test['loss']:.4g}" if test
              else "no test split")
    rec["text"] += f"; {tested}"
    summary["selected"] = rec
    return rec["text"]
