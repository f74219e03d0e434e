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
    import torch

    from .augment import config as augment_config
    from .loop import evaluate, fit, loss_function
    from .models import build_model, count_parameters
    from .predict import save_model
    from .tensorboard import event_log

    progress = progress or NullProgress()
    seed = recipe["seed"] if seed is None else seed
    tr, d = dict(recipe.section("train")), recipe.section("data")
    if smoke:
        tr["epochs"] = 1
    max_batches = SMOKE_BATCHES if smoke else None
    device = data.x_train.device
    model = build_model(recipe, data, seed=seed).to(device)
    aug_cfg = augment_config(d)
    per_epoch = min(len(data.x_train), (max_batches or 10**9) * d["batch_size"])
    t0 = time.perf_counter()
    progress.start(tr["epochs"], per_epoch, recipe.name)
    events = event_log(run_dir, recipe)  # TensorBoard, beside metrics.csv, when train.tensorboard is on
    with CsvLog(run_dir / "metrics.csv", metric_columns(recipe.task)) as log:
        def on_row(row: dict):
            log.write(row)
            events.write(row)
            progress.epoch(row)
            return on_epoch(row) if on_epoch else None

        try:
            result = fit(model, data, tr, seed=seed, augment=d["augment"], aug_cfg=aug_cfg, on_epoch=on_row,
                         on_step=progress.step, max_batches=max_batches, batch_size=d["batch_size"],
                         interruptible=interruptible)
        finally:
            progress.close()
            events.close()
    save_model(run_dir, model, data, recipe)
    limit = None if max_batches is None else max_batches * d["batch_size"]
    test = {}
    if len(data.x_test) and result.best_epoch is not None:
        test = evaluate(model, data.x_test[:limit], data.y_test[:limit], recipe.task,
                        loss_function(recipe.task, tr), tr["eval_batch_size"])
        test.update(write_test_predictions(run_dir, model, data, limit, tr["eval_batch_size"]))
    summary = {
        "name": recipe.name, "command": "train", "status": result.status, "reason": result.reason,
        "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        **{f"best_{k}": v for k, v in result.best.items() if k.startswith("val_")},
        **{f"test_{k}": v for k, v in test.items()},
        "parameters": count_parameters(model), "seconds": time.perf_counter() - t0, "smoke": smoke,
        "seed": seed, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        **({"data_notes": data.notes} if data.notes else {}),
    }
    write_json(run_dir / "summary.json", summary)
    return TrainResult(run_dir, summary, result.history)


def write_test_predictions(run_dir: Path, model, data, limit: int | None = None, batch_size: int = 1024) -> dict:
    """test_predictions.csv (the source's row or file, prediction, probabilities, target) for the tested model;
    returns the test metrics in the target's own units for regression (RMSE, MAE, R²), else nothing."""
    from .predict import metrics_of, predictions_table

    meta = {"task": data.task, "classes": data.classes, "target_mean": data.target_mean,
            "target_std": data.target_std}
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
