"""`dlrecipe train`: one training run of a recipe, logged to a new run folder."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .display import NullProgress
from .runs import CsvLog, resolve_device, start_run, write_json

SMOKE_BATCHES = 3  # --smoke: minibatches per split, enough to run every code path


@dataclass
class TrainResult:
    run_dir: Path
    summary: dict
    history: list[dict]


def metric_columns(task: str) -> list[str]:
    """The columns of metrics.csv."""
    if task == "classification":
        return ["epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc", "seconds"]
    return ["epoch", "lr", "train_loss", "val_loss", "seconds"]


def train_in(run_dir: Path, recipe, data, *, smoke: bool = False, progress=None, on_epoch=None,
             seed: int | None = None, interruptible: bool = False) -> TrainResult:
    """Build, fit and test the recipe's model on `data`, writing metrics.csv, model.pt and summary.json.

    interruptible: Ctrl-C ends training with status "interrupted"; the best snapshot is still saved and tested.
    """
    from .augment import config as augment_config
    from .loop import evaluate, fit, loss_function
    from .models import build_model, count_parameters
    from .predict import save_model, test_averaging

    progress = progress or NullProgress()
    seed = recipe["seed"] if seed is None else seed
    tr, d = dict(recipe.section("train")), recipe.section("data")
    if smoke:
        tr["epochs"] = 1
    max_batches = SMOKE_BATCHES if smoke else None
    device = data.x_train.device
    model = build_model(recipe, data, seed=seed).to(device)
    if recipe["pretrain.epochs"] > 0:  # [pretrain]: greedy layer-wise autoencoders first, then fine-tune it all
        from .pretrain import pretrain_in

        pretrain_in(run_dir, recipe.with_values({"pretrain.epochs": 1}) if smoke else recipe, data, model, seed=seed)
    aug_cfg = augment_config(d)
    per_epoch = min(len(data.x_train), (max_batches or 10**9) * d["batch_size"])
    t0 = time.perf_counter()
    progress.start(tr["epochs"], per_epoch, recipe.name)
    with CsvLog(run_dir / "metrics.csv", metric_columns(recipe.task)) as log:
        def on_row(row: dict):
            log.write(row)
            progress.epoch(row)
            return on_epoch(row) if on_epoch else None

        try:
            result = fit(model, data, tr, seed=seed, augment=d["augment"], aug_cfg=aug_cfg, on_epoch=on_row,
                         on_step=progress.step, max_batches=max_batches, batch_size=d["batch_size"],
                         interruptible=interruptible)
        finally:
            progress.close()
    save_model(run_dir, model, data, recipe)
    limit = None if max_batches is None else max_batches * d["batch_size"]
    test = {}
    if len(data.x_test) and result.best_epoch is not None:
        test = evaluate(model, data.x_test[:limit], data.y_test[:limit], recipe.task,
                        loss_function(recipe.task, tr), tr["eval_batch_size"])
        test.update(write_test_predictions(run_dir, model, data, limit, tr["eval_batch_size"],
                                           test_averaging(recipe)))
    extra = _technique_summary(run_dir, recipe, model, data, result, limit, tr, seed)
    summary = {
        "name": recipe.name, "command": "train", "status": result.status, "reason": result.reason,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        **{f"best_{k}": v for k, v in result.best.items() if k.startswith("val_")},
        **{f"test_{k}": v for k, v in test.items()},
        "parameters": count_parameters(model), "seconds": time.perf_counter() - t0, "smoke": smoke,
        "seed": seed, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **({"data_notes": data.notes} if data.notes else {}),
        **extra,
    }
    write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, summary, result.history)


HEALTH_SAMPLES = 1000  # validation examples the hidden-unit health is measured on


def _technique_summary(run_dir: Path, recipe, model, data, result, limit: int | None, tr: dict, seed: int) -> dict:
    """layers.csv (each layer: parameters, pretrained load, frozen / unfrozen), hidden_units.csv, FLOPs, and the
    test metrics with test-time averaging (MC dropout, TTA) beside the plain ones."""
    from .health import count_flops, hidden_unit_health
    from .runs import CsvLog
    from .transfer import layer_groups

    out: dict = {"trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
                 "flops_per_example": count_flops(model, data.input_shape)}
    loaded = {r["layer"]: r for r in getattr(model, "pretrained_report", []) if r["layer"] != ""}
    tuning = result.fine_tuning
    unfrozen = {e["name"]: e["epoch"] for e in tuning.get("unfrozen", [])}
    frozen_end = set(tuning.get("frozen_at_end", []))
    params = dict(model.named_parameters())
    with CsvLog(run_dir / "layers.csv", ["layer", "name", "parameters", "pretrained", "frozen", "unfrozen_epoch"]) \
            as log:
        for i, (name, modules) in enumerate(layer_groups(model)):
            n = sum(p.numel() for k, p in params.items() if k.startswith(tuple(m + "." for m in modules)))
            status = loaded.get(i)
            log.write({"layer": i, "name": name, "parameters": n,
                       "pretrained": "" if status is None else f"{status['status']}: {status['detail']}",
                       "frozen": "yes" if name in frozen_end else "until epoch " + str(unfrozen[name])
                       if name in unfrozen else "no", "unfrozen_epoch": unfrozen.get(name, "")})
    if hasattr(model, "pretrained_report"):
        rows = model.pretrained_report
        out["pretrained"] = {"path": recipe["model.pretrained"],
                             **{s: sum(r["status"] == s for r in rows) for s in ("loaded", "new", "ignored")}}
    if tuning:
        out["fine_tuning"] = tuning
    if recipe["pretrain.epochs"] > 0:
        out["pretrain"] = {"epochs_per_layer": recipe["pretrain.epochs"], "curves": "pretrain.csv"}
    x_health = data.x_val[:min(HEALTH_SAMPLES, len(data.x_val)) if limit is None else limit]
    if len(x_health) > 1:
        health, warnings = hidden_unit_health(model, x_health)
        if health:
            with CsvLog(run_dir / "hidden_units.csv") as log:
                for row in health:
                    log.write(row)
        if warnings:
            out["hidden_unit_warnings"] = warnings
    tcfg = recipe.section("test")
    if (tcfg["mc_dropout"] > 0 or tcfg["tta"]) and len(data.x_test) and result.best_epoch is not None:
        from .loop import loss_function
        from .testtime import describe, evaluate_averaged

        avg = evaluate_averaged(model, data.x_test[:limit], data.y_test[:limit], recipe.task,
                                loss_function(recipe.task, tr), tcfg, padding=recipe["data.crop_padding"],
                                batch_size=tr["eval_batch_size"], seed=seed)
        out["test_averaging"] = describe(tcfg)
        out.update({f"test_{k}_averaged": v for k, v in avg.items()})
    return out


def write_test_predictions(run_dir: Path, model, data, limit: int | None = None, batch_size: int = 1024,
                           test_cfg: dict | None = None) -> dict:
    """test_predictions.csv (the source's row or file, prediction, probabilities, target) for the tested model;
    returns the test metrics in the target's own units for regression (RMSE, MAE, R²), else nothing."""
    from .predict import metrics_of, predictions_table

    meta = {"task": data.task, "classes": data.classes, "target_mean": data.target_mean,
            "target_std": data.target_std, "test": test_cfg or {}}
    y = data.y_test[:limit].cpu().numpy()
    if data.task == "classification":
        names = data.classes or [str(i) for i in range(data.num_outputs)]
        y_true = [names[i] for i in y]
    else:
        y_true = y.astype(np.float64) * data.target_std + data.target_mean
    ids = data.ids.get("test", np.arange(len(data.y_test)))[:len(y)]
    table = predictions_table(model, data.x_test[:limit], meta, ids, y_true, batch_size)
    table.to_csv(run_dir / "test_predictions.csv", index=False)
    return metrics_of(table, data.task) if data.task == "regression" else {}


def train(recipe, *, device: str = "auto", runs_dir: str | Path = "runs", smoke: bool = False,
          progress=None) -> TrainResult:
    """Run `dlrecipe train`: new run folder, load data, train with early stopping, test the best snapshot.

    Ctrl-C stops training early (status "interrupted") and still saves and tests the best snapshot.
    """
    from .data import load_data

    device = resolve_device(device)
    data = load_data(recipe, device)  # before the run folder: a bad data file leaves nothing behind
    run_dir = start_run(recipe, runs_dir, "smoke" if smoke else "train", device)
    return train_in(run_dir, recipe, data, smoke=smoke, progress=progress, interruptible=True)
