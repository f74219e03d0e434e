"""A model you can use: what every saved model carries, and `dlrecipe predict RUN_DIR INPUT`.

Beside `model.pt` (a state dict, loaded with `weights_only=True`) a run writes `model.json` (task, class names,
target mean and std, input shape, the model's resolved recipe keys, the layout steps) and `preprocess.npz` (the
training split's statistics), plus `encoder.skops` for tables: the fitted scikit-learn encoder in skops' format,
which is not a pickle and loads only the scikit-learn and numpy types it lists, checked against its SHA-256 in
model.json. `predict` rebuilds the model, applies exactly the training-time transform to a new CSV / Parquet /
NPZ file or image folder, and writes one row per example: the prediction (a class name, or a value in the
target's own units), each class's probability, and the true label when the input has one.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, UserError

TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "scipy.")  # what encoder.skops may contain


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def save_model(run_dir: Path, model, data, recipe, *, name: str = "model") -> None:
    """model.pt plus what predict needs: model.json, preprocess.npz and (tables) encoder.skops."""
    import torch

    from .atomic import replace

    run_dir = Path(run_dir)
    replace(run_dir / f"{name}.pt", lambda tmp: torch.save(model.state_dict(), tmp))  # atomic, synced
    write_bundle(run_dir, data, recipe, [{"weights": f"{name}.pt", "model": recipe.section("model")}])


def write_bundle(folder: Path, data, recipe, members: list[dict], combine: str = "single") -> None:
    """model.json, preprocess.npz and encoder.skops for the models `members` lists ({"weights": path relative to
    folder, "model": the member's [model] keys}); combine: "single", or an ensemble's "mean_probabilities" /
    "mean_predictions" (what `dlrecipe run` selects when averaging beats the best single model)."""
    from .runs import write_json

    folder = Path(folder)
    t = data.transform
    meta = {
        "task": data.task, "classes": data.classes, "num_outputs": data.num_outputs,
        "input_shape": list(data.input_shape), "target_mean": data.target_mean, "target_std": data.target_std,
        "members": members, "combine": combine,
        "recipe_dir": str(Path(recipe.path).resolve().parent) if recipe.path else None,
        "data": {k: recipe[f"data.{k}"] for k in ("source", "format", "target")},
        "image": data.image, "saved": time.strftime("%Y-%m-%d %H:%M:%S"), "test": test_averaging(recipe),
    }
    if t is not None:
        meta["transform"] = {"preprocess": t.preprocess, "channels_last": t.channels_last, "shape": t.shape,
                             "raw_shape": t.raw_shape, "stats": sorted(t.stats)}
        np.savez(folder / "preprocess.npz", **t.stats)
        if t.encoder is not None:
            import skops.io as sio

            sio.dump(t.encoder, folder / "encoder.skops")
            meta["transform"]["encoder"] = {"file": "encoder.skops", "sha256": _sha256(folder / "encoder.skops"),
                                            "columns": [str(c) for c in t.encoder.feature_names_in_]}
    write_json(folder / "model.json", meta)


def test_averaging(recipe) -> dict:
    """What predict averages over ([test] mc_dropout, tta), as model.json keeps it."""
    return {"mc_dropout": recipe["test.mc_dropout"], "tta": list(recipe["test.tta"]),
            "crop_padding": recipe["data.crop_padding"], "seed": recipe["seed"]}


def find_model(run_dir: Path) -> Path:
    """The folder holding a run's usable model (train, search and run folders keep model.json at the top)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such folder (expected a run folder with model.json, e.g. from dlrecipe train)")
    if (run_dir / "model.json").is_file():
        return run_dir
    raise UserError(f"{run_dir}: no model.json here (runs that save a model: train, search, run; a model saved "
                    f"before dlrecipe 0.2 has no model.json and cannot be used by predict)")


@dataclass
class Bundle:
    folder: Path
    meta: dict
    models: list           # one model, or an ensemble's members (meta["combine"] says how they are averaged)
    transform: object

    @property
    def classes(self) -> list[str] | None:
        return self.meta["classes"]


def load_bundle(run_dir: Path) -> Bundle:
    """Rebuild the model and its transform from a run folder (weights_only loading, skops types checked)."""
    import torch

    from .data.prepare import Transform
    from .models import MODEL_KINDS

    folder = find_model(run_dir)
    try:
        meta = json.loads((folder / "model.json").read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{folder / 'model.json'} cannot be read ({type(e).__name__}: {e})") from None
    tm = meta.get("transform") or {}
    with np.load(folder / "preprocess.npz", allow_pickle=False) as z:
        stats = {k: z[k] for k in z.files}
    encoder = None
    if tm.get("encoder"):
        import skops.io as sio

        path = folder / tm["encoder"]["file"]
        if _sha256(path) != tm["encoder"]["sha256"]:
            raise UserError(f"{path}: its SHA-256 differs from the one in model.json: the file was changed, refused")
        types = sio.get_untrusted_types(file=path)
        odd = [t for t in types if not t.startswith(TRUSTED_PREFIXES)]
        if odd:
            raise UserError(f"{path} holds types other than scikit-learn's and numpy's ({', '.join(odd)}): refused")
        encoder = sio.load(path, trusted=types)
    transform = Transform(preprocess=tm.get("preprocess", "none"), stats=stats, encoder=encoder,
                          channels_last=tm.get("channels_last", False), shape=tm.get("shape", []),
                          raw_shape=tm.get("raw_shape", []))
    models = []
    for member in meta["members"]:
        cfg = {k: v for k, v in member["model"].items() if k != "pretrained"}  # the weights are the member's own
        cfg["_recipe_path"] = Path(meta["recipe_dir"]) / "recipe.toml" if meta.get("recipe_dir") else None
        model = MODEL_KINDS[cfg["kind"]].build(tuple(meta["input_shape"]), meta["num_outputs"], cfg)
        weights = folder / member["weights"]
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as e:
            raise UserError(f"{weights} does not fit the model its model.json describes: "
                            f"{' '.join(str(e).split())[:300]}") from None
        models.append(model.eval())
    return Bundle(folder, meta, models, transform)


def read_input(path: Path, bundle: Bundle):
    """(raw features, true labels or None, row ids) of a new input in the training source's kind."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file or folder")
    meta = bundle.meta
    if path.is_dir():
        if not meta.get("image"):
            raise UserError(f"{path} is a folder, but this model was trained on {meta['data']['source']!r}, not "
                            f"on an image folder: give a file of the same kind")
        return _read_images(path, bundle)
    suffix = path.suffix.lower()
    if bundle.transform.encoder is not None:
        if suffix not in (".csv", ".parquet", ".pq"):
            raise UserError(f"{path}: this model was trained on a table; give a .csv or .parquet file")
        try:
            df = pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
        except (OSError, ValueError, ImportError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: cannot read table ({type(e).__name__}: {e})") from None
        df.columns = [str(c) for c in df.columns]
        target = meta["data"]["target"]
        y = df[target].to_numpy() if target in df.columns else None
        return df, y, np.arange(len(df))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z.files:
                raise DataError(f"{path}: no array 'x' (found: {', '.join(z.files) or 'none'})")
            x = z["x"].astype(np.float32)
            y = z["y"] if "y" in z.files else None
        return x, y, np.arange(len(x))
    raise UserError(f"{path}: predict reads .csv, .parquet, .npz files and image folders")


def _read_images(root: Path, bundle: Bundle):
    from .data.images import read_image, scan

    splits, _ = scan(root)
    files = [(f, c) for part in splits.values() for f, c in part]
    size, channels = bundle.meta["image"]["size"], bundle.meta["image"]["channels"]
    xs, ids, labels, skipped = [], [], [], []
    for f, c in files:
        try:
            xs.append(read_image(f, tuple(size), channels))
        except DataError:
            skipped.append(f)
            continue
        ids.append(str(f.relative_to(root)))
        labels.append(c)
    if not xs:
        raise DataError(f"{root}: no readable image")
    y = np.array(labels, dtype=object) if all(c is not None for c in labels) else None
    return np.stack(xs), y, np.array(ids)


@dataclass
class PredictResult:
    run_dir: Path | None
    table: object          # pandas DataFrame, one row per example
    summary: dict


def predictions_table(model, x, bundle_meta: dict, ids, y_true=None, batch_size: int = 1024):
    """One row per example (see _member_table); a list of models is an ensemble: its members' probabilities
    (regression: predictions) averaged."""
    import torch

    if not isinstance(model, list) or len(model) == 1:
        return _member_table(model[0] if isinstance(model, list) else model, x, bundle_meta, ids, y_true, batch_size)
    tables = [_member_table(m, x, bundle_meta, ids, None, batch_size) for m in model]
    out = tables[0].drop(columns=[c for c in ("uncertainty",) if c in tables[0]])
    if bundle_meta["task"] == "classification":
        probs = [c for c in out.columns if c.startswith("prob_")]
        mean = sum(t[probs].to_numpy() for t in tables) / len(tables)
        out[probs] = mean
        classes = [c[5:] for c in probs]
        out["prediction"] = [classes[i] for i in mean.argmax(1)]
    else:
        out["prediction"] = sum(t["prediction"].to_numpy() for t in tables) / len(tables)
    if y_true is not None:
        out["target"] = y_true
    del torch
    return out


def _member_table(model, x, bundle_meta: dict, ids, y_true=None, batch_size: int = 1024):
    """One row per example: row, prediction (class name or value in target units), probabilities, target; with
    [test] averaging (model.json's "test") the averaged probabilities, and with MC dropout an uncertainty column
    (the std over the passes of the predicted class's probability, or of the value in target units)."""
    import pandas as pd
    import torch

    from .loop import predict_outputs
    from .testtime import averaged_outputs

    tcfg = bundle_meta.get("test") or {}
    spread = None
    if tcfg.get("mc_dropout", 0) > 0 or tcfg.get("tta"):
        mean, spread = averaged_outputs(model, x, bundle_meta["task"], mc_dropout=tcfg.get("mc_dropout", 0),
                                        tta=tcfg.get("tta", []), padding=tcfg.get("crop_padding", 4),
                                        batch_size=batch_size, seed=tcfg.get("seed", 0))
        mean = mean.cpu()
        out = mean.log() if bundle_meta["task"] == "classification" else mean[:, None]  # softmax(log p) = p
    else:
        out = predict_outputs(model, x, batch_size).cpu()
    table = pd.DataFrame({"row": ids})
    if bundle_meta["task"] == "classification":
        classes = bundle_meta["classes"] or [str(i) for i in range(out.shape[1])]
        probs = out.softmax(dim=1).numpy()
        table["prediction"] = [classes[i] for i in probs.argmax(1)]
        for i, c in enumerate(classes):
            table[f"prob_{c}"] = probs[:, i]
    else:
        table["prediction"] = out.reshape(-1).double().numpy() * bundle_meta["target_std"] + bundle_meta["target_mean"]
    if spread is not None:
        scale = 1.0 if bundle_meta["task"] == "classification" else bundle_meta["target_std"]
        table["uncertainty"] = spread.cpu().double().numpy() * scale
    if y_true is not None:
        table["target"] = y_true
    del torch
    return table


def outputs_table(out, data, y) -> tuple[object, dict]:
    """test_predictions.csv from outputs already computed (probabilities, or standardised predictions), and the
    regression metrics in the target's units: what a run's one test read gives."""
    import pandas as pd

    y = y.cpu().numpy()
    ids = data.ids.get("test", np.arange(len(y)))[:len(y)]
    table = pd.DataFrame({"row": ids})
    if data.task == "classification":
        names = data.classes or [str(i) for i in range(data.num_outputs)]
        probs = out.detach().cpu().double().numpy()
        table["prediction"] = [names[i] for i in probs.argmax(1)]
        for i, c in enumerate(names):
            table[f"prob_{c}"] = probs[:, i]
        table["target"] = [names[i] for i in y]
        return table, {}
    table["prediction"] = out.detach().cpu().double().numpy().reshape(-1) * data.target_std + data.target_mean
    table["target"] = y.astype(np.float64) * data.target_std + data.target_mean
    return table, metrics_of(table, "regression")


def metrics_of(table, task: str) -> dict[str, float]:
    """Accuracy, or RMSE / MAE / R² in the target's units, of a predictions table that has a target column."""
    if "target" not in table:
        return {}
    table = table[table["target"].notna()]  # rows without a label are predicted, not scored
    if not len(table):
        return {}
    if task == "classification":
        return {"acc": float((table["prediction"].astype(str) == table["target"].astype(str)).mean())}
    return regression_metrics(table["prediction"].to_numpy(float), table["target"].to_numpy(float))


def regression_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (1 - SS_res / SS_tot), in the target's own units."""
    err = pred - target
    ss_tot = float(((target - target.mean()) ** 2).sum())
    return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean()),
            "r2": float(1 - (err ** 2).sum() / ss_tot) if ss_tot > 0 else float("nan")}


def predict(run_dir: Path, input_path: Path, *, output: Path | None = None, runs_dir: Path | str = "runs",
            batch_size: int = 1024) -> PredictResult:
    """Predict every example of `input_path` with the run's model; write predictions.csv (and summary.json) into
    a new run folder runs/<time>-<name>-predict/, or to `output` when given."""
    import torch

    from .atomic import replace
    from .runs import new_run_dir, write_json

    if output is not None and (Path(output).is_dir() or not Path(output).parent.is_dir()):
        raise UserError(f"--output {str(output)!r}: " + ("is a folder" if Path(output).is_dir() else
                        "its folder does not exist") + "; expected a CSV file name in an existing folder")
    bundle = load_bundle(run_dir)
    raw_x, y, ids = read_input(input_path, bundle)
    t, want = bundle.transform, tuple(bundle.meta["input_shape"])
    raw_shape = list(t.raw_shape)
    if raw_shape and list(np.shape(raw_x)[1:]) != raw_shape:
        raise DataError(f"{input_path}: examples of shape {list(np.shape(raw_x)[1:])}; the model was trained on "
                        f"{raw_shape} (it takes {list(want)} after the training transform)")
    try:
        encoded = t.encode(raw_x)
        if tuple(encoded.shape[1:]) != want:
            raise DataError(f"{input_path}: examples of shape {list(encoded.shape[1:])} after the training "
                            f"transform; the model takes {list(want)}")
        x = torch.as_tensor(t.normalise(encoded))
    except DataError:
        raise
    except (ValueError, KeyError, TypeError) as e:  # a table missing a column, an array of the wrong shape
        raise DataError(f"{input_path} does not fit the model's inputs: {' '.join(str(e).split())[:300]}") from None
    table = predictions_table(bundle.models, x, bundle.meta, ids, y, batch_size)
    summary = {"command": "predict", "status": "completed", "model": str(bundle.folder), "input": str(input_path),
               "rows": len(table), **{f"input_{k}": v for k, v in metrics_of(table, bundle.meta["task"]).items()},
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    out_dir = None
    if output is None:
        name = bundle.folder.name
        name = name.split("-", 2)[-1].rsplit("-", 1)[0] if name.count("-") >= 3 else name
        out_dir = new_run_dir(runs_dir, name, "predict")
        output = out_dir / "predictions.csv"
        summary["name"] = name
    replace(Path(output), lambda tmp: table.to_csv(tmp, index=False))
    if out_dir is not None:
        write_json(out_dir / "summary.json", summary)
    return PredictResult(out_dir, table, summary)
