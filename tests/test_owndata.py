"""The user's own data as it comes: tables with text and blanks, image folders, channels-last arrays, Python data
hooks, streamed Datasets, and `predict` on new data. Every file is written by the test and read by the real code."""
from __future__ import annotations

import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from dlrecipe.data import load_data
from dlrecipe.errors import DataError, RecipeError
from dlrecipe.recipe import load, validate


def _recipe(tmp_path, body: str, name: str = "r.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def _messy_table(n: int = 240, seed: int = 0) -> pd.DataFrame:
    """Two informative numbers, a text category, a boolean, blanks everywhere, an all-blank column, a label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    df = pd.DataFrame({
        "size": rng.normal(size=n) + y * 2.0,
        "weight": rng.normal(size=n) * 3 + y,
        "colour": np.array(["red", "green", "blue"])[(y + rng.integers(0, 2, n)) % 3],
        "wet": rng.integers(0, 2, n).astype(bool),
        "empty": np.nan,
        "label": np.array(["ant", "bee", "cat"])[y],
    })
    df.loc[rng.choice(n, 20, replace=False), "size"] = np.nan
    df.loc[rng.choice(n, 15, replace=False), "colour"] = None
    return df


# ----------------------------------------------------------------------------- tables


def test_messy_table_is_encoded_with_statistics_of_the_training_split(tmp_path):
    _messy_table().to_csv(tmp_path / "t.csv", index=False)
    r = validate({"data.source": str(tmp_path / "t.csv"), "data.target": "label", "data.preprocess": "none"})
    d = load_data(r)
    names = list(d.transform.encoder.get_feature_names_out())
    # numbers, one-hot colours and wet, and indicators for the two columns with blanks; the blank column is gone
    assert len(names) == d.input_shape[0] == 2 + 3 + 2 + 2 and not any("empty" in n for n in names)
    assert "column(s) 'empty' blank in every row: dropped" in d.notes
    size = names.index("num__size")
    raw = pd.read_csv(tmp_path / "t.csv")
    train_sizes = raw["size"].to_numpy()[d.ids["train"]]
    blank = np.isnan(train_sizes)
    # a blank is filled with the median of the *training* split, and flagged by its indicator column
    assert np.allclose(d.x_train[blank, size].numpy(), np.nanmedian(train_sizes))
    assert np.array_equal(d.x_train[:, names.index("missing__missingindicator_size")].numpy() == 1, blank)
    colours = [n for n in names if n.startswith("cat__colour")]
    assert torch.all(d.x_val[:, [names.index(c) for c in colours]].sum(1) == 1)  # imputed, then one-hot
    encodings = {c["column"]: c["encoding"] for c in d.columns}
    assert encodings["colour"].startswith("category: one-hot, 3 values") and "most frequent" in encodings["colour"]
    assert encodings["size"].startswith("number") and "median" in encodings["size"]


def test_unseen_category_in_test_encodes_as_zeros_not_a_crash(tmp_path):
    df = _messy_table()
    df.loc[df.index[-40:], "colour"] = "ultraviolet"  # rows that may land in any split
    df.to_csv(tmp_path / "t.csv", index=False)
    r = validate({"data.source": str(tmp_path / "t.csv"), "data.target": "label", "data.preprocess": "none",
                  "data.drop": ["empty"]})
    d = load_data(r)
    from dlrecipe.data.tables import encode

    x = encode(d.transform.encoder, pd.DataFrame({"size": [0.5], "weight": [1.0], "colour": ["never seen"],
                                                  "wet": [True]}))
    names = list(d.transform.encoder.get_feature_names_out())
    assert x[0, [i for i, n in enumerate(names) if n.startswith("cat__colour")]].sum() == 0


def test_features_drop_and_missing_policies(tmp_path):
    _messy_table().to_csv(tmp_path / "t.csv", index=False)
    base = {"data.source": str(tmp_path / "t.csv"), "data.target": "label", "data.preprocess": "none"}
    d = load_data(validate({**base, "data.features": ["size", "weight"]}))
    assert list(d.transform.encoder.feature_names_in_) == ["size", "weight"]
    d = load_data(validate({**base, "data.missing": "drop", "data.drop": ["empty"]}))
    n = len(d.y_train) + len(d.y_val) + len(d.y_test)
    raw = pd.read_csv(tmp_path / "t.csv")
    assert n == int(raw[["size", "colour"]].notna().all(axis=1).sum())
    assert any("dropped (data.missing = 'drop')" in note for note in d.notes)
    with pytest.raises(DataError, match=r"'size' \(20\), 'colour' \(15\) with data.missing = 'error'"):
        load_data(validate({**base, "data.missing": "error", "data.drop": ["empty"]}))


def test_every_table_problem_in_one_message(tmp_path):
    _messy_table().to_csv(tmp_path / "t.csv", index=False)
    r = validate({"data.source": str(tmp_path / "t.csv"), "data.target": "label", "data.categorical": ["nope"],
                  "data.drop": ["gone"], "data.missing": "error"})
    with pytest.raises(DataError) as e:
        load_data(r)
    msg = str(e.value)
    assert "2 problems" in msg and "'gone', 'nope'" in msg and "data.missing = 'error'" in msg and "\n" not in msg


def test_continuous_target_under_classification_asks_for_regression(tmp_path):
    rng = np.random.default_rng(0)
    pd.DataFrame({"a": rng.normal(size=200), "grams": rng.integers(2700, 6300, 200)}).to_csv(tmp_path / "t.csv",
                                                                                           index=False)
    with pytest.raises(DataError, match="looks continuous.*did you mean task = 'regression'"):
        load_data(validate({"data.source": str(tmp_path / "t.csv"), "data.target": "grams"}))
    d = load_data(validate({"data.source": str(tmp_path / "t.csv"), "data.target": "grams", "task": "regression"}))
    assert d.num_outputs == 1 and abs(float(d.y_train.mean())) < 1e-5  # standardised with the training mean


def test_penguins_train_and_predict_reproduces_the_test_predictions(tmp_path, one_thread):
    palmerpenguins = pytest.importorskip("palmerpenguins")
    from dlrecipe.predict import predict
    from dlrecipe.train import train

    csv = tmp_path / "penguins.csv"
    palmerpenguins.load_penguins().to_csv(csv, index=False)
    for target, task in (("species", "classification"), ("body_mass_g", "regression")):
        r = validate({"data.source": str(csv), "data.target": target, "task": task, "train.epochs": 8})
        res = train(r, runs_dir=tmp_path / "runs")
        s = res.summary
        if task == "classification":
            assert s["test_acc"] > 0.9
        else:  # RMSE in grams: the spread of body mass is ~800 g; the standardised loss is MSE / std^2
            assert 150 < s["test_rmse"] < 600 and s["test_r2"] > 0.5
            import json

            std = json.loads((res.run_dir / "model.json").read_text())["target_std"]  # the training split's
            assert s["test_rmse"] == pytest.approx(np.sqrt(s["test_loss"]) * std, rel=1e-4)
        test = pd.read_csv(res.run_dir / "test_predictions.csv")
        pred = predict(res.run_dir, csv, runs_dir=tmp_path / "runs").table
        again = pred.set_index("row").loc[test["row"]]
        assert (again["prediction"].to_numpy() == test["prediction"].to_numpy()).all() if task == "classification" \
            else np.allclose(again["prediction"].to_numpy(), test["prediction"].to_numpy(), rtol=1e-6)
        if task == "classification":
            probs = [c for c in test.columns if c.startswith("prob_")]
            assert probs == ["prob_Adelie", "prob_Chinstrap", "prob_Gentoo"]
            np.testing.assert_allclose(again[probs].to_numpy(), test[probs].to_numpy(), rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- arrays and layouts


def test_channels_last_arrays_are_transposed_and_a_scrambling_shape_refused(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (60, 6, 5, 3)).astype(np.float32)  # (N, H, W, C)
    y = np.arange(60) % 3
    np.savez(tmp_path / "img.npz", x=x, y=y)
    base = {"data.source": str(tmp_path / "img.npz"), "data.preprocess": "none"}
    d = load_data(validate(base))
    assert d.input_shape == (3, 6, 5)
    rows = d.ids["train"]
    assert torch.equal(d.x_train, torch.as_tensor(x[rows].transpose(0, 3, 1, 2)))  # pixels stay where they were
    assert any("channels-last" in n for n in d.notes)
    with pytest.raises(DataError, match="would reorder the pixels"):
        load_data(validate({**base, "data.shape": [5, 6, 3]}))
    np.savez(tmp_path / "grey.npz", x=x[..., 0], y=y)  # (N, H, W): adding a channel axis is allowed
    d = load_data(validate({"data.source": str(tmp_path / "grey.npz"), "data.shape": [1, 6, 5]}))
    assert d.input_shape == (1, 6, 5)
    d = load_data(validate({"data.source": str(tmp_path / "grey.npz"), "data.shape": [30]}))  # flattening too
    assert d.input_shape == (30,)


# ----------------------------------------------------------------------------- image folders


def _write_images(root, classes=("circle", "square"), n=12, size=(10, 12), mode="RGB", seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 60, (*size, 3)).astype(np.uint8)
            a[..., k % 3] += 150  # the class is in the colour
            img = Image.fromarray(a, "RGB").convert(mode)
            img.save(root / c / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_image_folder_flat_rgb_with_a_corrupt_file(tmp_path):
    root = tmp_path / "imgs"
    _write_images(root)
    (root / "circle" / "broken.png").write_bytes(b"\x89PNG not really")
    r = validate({"data.source": str(root), "data.format": "imagefolder", "data.preprocess": "none"})
    d = load_data(r)
    assert d.classes == ["circle", "square"] and d.input_shape == (3, 10, 12)
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 24  # the corrupt file is skipped ...
    assert any("1 image(s) that Pillow cannot read were skipped: circle/broken.png" in n for n in d.notes)  # ... said
    from PIL import Image

    name = d.ids["train"][0]
    want = np.asarray(Image.open(root / name).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
    assert torch.equal(d.x_train[0], torch.as_tensor(want))


def test_image_folder_presplit_grey_resized(tmp_path):
    for split, n in (("train", 10), ("val", 4), ("test", 3)):
        _write_images(tmp_path / "ds" / split, n=n, mode="L", seed=len(split))
    r = validate({"data.source": str(tmp_path / "ds"), "data.format": "imagefolder", "data.image_size": [8, 8]})
    d = load_data(r)
    assert d.input_shape == (1, 8, 8)  # grey files: one channel; resized to data.image_size
    assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (20, 8, 6)  # the folders' own split, honoured
    assert all(i.startswith("train/") for i in d.ids["train"]) and all(i.startswith("test/") for i in d.ids["test"])
    d3 = load_data(validate({"data.source": str(tmp_path / "ds"), "data.format": "imagefolder", "data.channels": 3}))
    assert d3.input_shape == (3, 10, 12)


def test_streamed_image_folder_trains_like_the_in_memory_one(tmp_path, one_thread):
    from dlrecipe.loop import fit
    from dlrecipe.models import build_model

    root = tmp_path / "imgs"
    _write_images(root, n=20)
    base = {"data.source": str(root), "data.format": "imagefolder", "model.hidden": [16], "data.batch_size": 8,
            "train.epochs": 2, "data.workers": 1}
    mem = validate(base)
    streamed = validate({**base, "data.in_memory": False})
    dm, ds = load_data(mem), load_data(streamed)
    assert ds.streamed and not dm.streamed
    assert ds.input_shape == dm.input_shape
    # the streaming pass fits the same preprocessing statistics as the in-memory one
    np.testing.assert_allclose(ds.transform.stats["mu"], dm.transform.stats["mu"], rtol=1e-6)
    np.testing.assert_allclose(ds.transform.stats["sd"], dm.transform.stats["sd"], rtol=1e-4)
    results = []
    for r, d in ((mem, dm), (streamed, ds)):
        model = build_model(r, d, seed=0)
        results.append(fit(model, d, r.section("train"), seed=0, batch_size=8).history)
    for a, b in zip(*results):  # same batches in the same order: the same curves
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_acc"] == b["val_acc"]


# ----------------------------------------------------------------------------- python hooks


HOOKS = '''
import numpy as np
import pandas as pd
import torch

def _arrays(seed):
    rng = np.random.default_rng(seed)
    y = np.arange(90) % 3
    return (rng.normal(size=(90, 4)) + y[:, None]).astype(np.float32), y

def arrays(cfg, seed):
    return _arrays(seed)

def tensors(cfg, seed):
    x, y = _arrays(seed)
    return torch.tensor(x), torch.tensor(y)

def frame(cfg, seed):
    x, y = _arrays(seed)
    df = pd.DataFrame(x, columns=list("abcd"))
    df["kind"] = np.array(["u", "v", "w"])[y]
    return df

def splits(cfg, seed):
    x, y = _arrays(seed)
    return {"train": (x[:60], y[:60]), "val": (x[60:75], y[60:75]), "test": (x[75:], y[75:])}

class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y
    def __len__(self):
        return len(self.x)
    def __getitem__(self, i):
        return torch.tensor(self.x[i]), int(self.y[i])

def dataset(cfg, seed):
    return Pairs(*_arrays(seed))

def datasets(cfg, seed):
    x, y = _arrays(seed)
    return {"train": Pairs(x[:70], y[:70]), "val": Pairs(x[70:], y[70:])}

def wrong(cfg, seed):
    return "not data"

def broken(cfg, seed):
    raise FileNotFoundError("/data/mine.csv")
'''


@pytest.mark.parametrize("func", ["arrays", "tensors", "frame", "splits", "dataset", "datasets"])
def test_data_hook_returning_each_allowed_type(tmp_path, func, monkeypatch):
    (tmp_path / "myhooks.py").write_text(HOOKS)
    body = f'[data]\nsource = "myhooks:{func}"\ntarget = "kind"\n[train]\nepochs = 1\n'
    path = _recipe(tmp_path / "", body)
    monkeypatch.chdir(tmp_path.parent)  # the module is found beside the recipe, not only in the working folder
    d = load_data(load(path))
    assert d.num_outputs == 3 and d.input_shape == (4,)
    assert d.streamed == (func in ("dataset", "datasets"))
    if func == "splits":
        assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (60, 15, 15)
    if func == "datasets":
        assert (len(d.y_train), len(d.y_val), len(d.y_test)) == (70 - len(d.y_test), 20, len(d.y_test))
    from dlrecipe.loop import fit
    from dlrecipe.models import build_model

    r = load(path)
    result = fit(build_model(r, d), d, r.section("train"), batch_size=16)
    assert result.status == "completed"


def test_data_hook_by_file_path_and_its_errors(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "h.py").write_text(HOOKS)
    d = load_data(validate({"data.source": str(tmp_path / "code" / "h.py") + ":arrays"}))
    assert len(d.y_train) + len(d.y_val) + len(d.y_test) == 90
    with pytest.raises(DataError, match="returned value is str; allowed: .*arrays or tensors.*DataFrame.*Dataset"):
        load_data(validate({"data.source": str(tmp_path / "code" / "h.py") + ":wrong"}))
    with pytest.raises(DataError, match=r"raised FileNotFoundError: /data/mine.csv"):
        load_data(validate({"data.source": str(tmp_path / "code" / "h.py") + ":broken"}))
    with pytest.raises(RecipeError, match="has no function 'nope'"):
        load_data(validate({"data.source": str(tmp_path / "code" / "h.py") + ":nope"}))
    with pytest.raises(RecipeError, match="cannot be imported.*No module named"):
        load_data(validate({"data.source": "no_such_module_here:f"}))


def test_model_factory_found_beside_the_recipe_without_pythonpath(tmp_path, monkeypatch):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "mynet.py").write_text(
        "import torch.nn as nn\n\ndef make(shape, n_out, width=8):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(shape[0], width), nn.ReLU(), nn.Linear(width, n_out))\n")
    path = _recipe(tmp_path / "proj", '[data]\nsource = "iris"\n[model]\nkind = "python"\nfactory = "mynet:make"\n'
                   'width = 5\n')
    monkeypatch.chdir(tmp_path)
    from dlrecipe.models import build_model, count_parameters

    r = load(path)
    assert count_parameters(build_model(r, load_data(r))) == 4 * 5 + 5 + 5 * 3 + 3


# ----------------------------------------------------------------------------- predict


def test_predict_on_a_folder_of_new_images_and_errors(tmp_path, one_thread):
    from dlrecipe.errors import UserError
    from dlrecipe.predict import predict
    from dlrecipe.train import train

    _write_images(tmp_path / "imgs", n=20)
    r = validate({"data.source": str(tmp_path / "imgs"), "data.format": "imagefolder", "model.hidden": [32],
                  "train.epochs": 15, "train.lr": 0.05})
    res = train(r, runs_dir=tmp_path / "runs")
    new = tmp_path / "new"
    _write_images(new, n=5, seed=7)  # labelled by folder: predict scores them
    out = predict(res.run_dir, new, output=tmp_path / "p.csv")
    assert len(out.table) == 10 and out.summary["input_acc"] >= 0.9
    assert set(out.table["prediction"]) <= {"circle", "square"}
    assert np.allclose(out.table[["prob_circle", "prob_square"]].sum(axis=1), 1, atol=1e-5)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in sorted((new / "square").iterdir())[:3]:
        (flat / f.name).write_bytes(f.read_bytes())
    out = predict(res.run_dir, flat, output=tmp_path / "q.csv")  # no class folders: predicted, not scored
    assert list(out.table["prediction"]) == ["square"] * 3 and "input_acc" not in out.summary
    with pytest.raises(UserError, match="no model.json"):
        predict(tmp_path, new)
    with pytest.raises(UserError, match="trained on a table|csv, .parquet, .npz"):
        predict(res.run_dir, tmp_path / "p.csv")


# ----------------------------------------------------------------------------- the command line


def _cli(*args):
    from typer.testing import CliRunner

    from dlrecipe.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_validate_shows_each_column_and_its_encoding(tmp_path):
    _messy_table().to_csv(tmp_path / "t.csv", index=False)
    path = _recipe(tmp_path, f'[data]\nsource = "{tmp_path / "t.csv"}"\ntarget = "label"\n')
    res = _cli("validate", path)
    assert res.exit_code == 0, res.output
    colour = next(line for line in res.output.splitlines() if "colour" in line)
    assert "category: one-hot, 3 values" in colour
    assert "note: column(s) 'empty' blank in every row: dropped" in res.output
    assert "of shape 9, 3 classes" in res.output


def test_predict_cli_on_channels_last_npz_and_one_line_errors(tmp_path, one_thread):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    x = rng.normal(size=(120, 4, 4, 3)).astype(np.float32)
    x[y == 1, :, :, 0] += 2.0  # (N, H, W, C): class 1 is redder
    np.savez(tmp_path / "train.npz", x=x, y=y)
    np.savez(tmp_path / "new.npz", x=x[:10])
    path = _recipe(tmp_path, f'[data]\nsource = "{tmp_path / "train.npz"}"\n[train]\nepochs = 5\n')
    res = _cli("train", path, "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "runs").iterdir()
    res = _cli("predict", run, tmp_path / "new.npz", "-o", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table.columns) == ["row", "prediction", "prob_0", "prob_1"] and len(table) == 10
    assert (table["prediction"] == y[:10]).mean() >= 0.8
    for bad, words in ((tmp_path / "missing.npz", "no such file"), (tmp_path / "t.toml", "reads .csv, .parquet"),
                       (tmp_path / "runs", "is a folder")):
        if bad.suffix == ".toml":
            bad.write_text("x")
        res = _cli("predict", run, bad)
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, res.output
    np.savez(tmp_path / "odd.npz", x=x[:3, :2])  # examples of another shape
    res = _cli("predict", run, tmp_path / "odd.npz", "-o", tmp_path / "q.csv")
    assert res.exit_code == 2 and "examples of shape [2, 4, 3]; the model was trained on [4, 4, 3]" in res.output


def test_predict_uses_a_runs_selected_model_or_ensemble(tmp_path, one_thread):
    """dlrecipe run keeps model.json at the top of its folder: its selected model, or the members of the ensemble
    it selected, averaged as in the run's one test; predict reproduces the run's test_predictions.csv."""
    from dlrecipe.pipeline import run_recipe
    from dlrecipe.predict import load_bundle, predict

    from .conftest import small_recipe, write_table_csv

    csv = write_table_csv(tmp_path / "table.csv", n=150)
    r = small_recipe(**{"data.source": str(csv), "data.target": "label", "search.trials": 4,
                        "search.coarse_epochs": 1, "search.fine_trials": 2, "search.fine_epochs": 3})
    res = run_recipe(r, device="cpu", runs_dir=tmp_path / "runs", passes=1)
    assert res.summary["status"] == "completed", res.summary["reason"]
    bundle = load_bundle(res.run_dir)
    assert len(bundle.models) == len(res.summary["selected"]["members"])
    test = pd.read_csv(res.run_dir / "test_predictions.csv")
    pred = predict(res.run_dir, csv, output=tmp_path / "p.csv").table.set_index("row").loc[test["row"]]
    assert (pred["prediction"].to_numpy() == test["prediction"].to_numpy()).all()
    probs = [c for c in test.columns if c.startswith("prob_")]
    np.testing.assert_allclose(pred[probs].to_numpy(), test[probs].to_numpy(), rtol=1e-5, atol=1e-6)
    acc = (test["prediction"] == test["target"]).mean()
    assert acc == pytest.approx(res.summary["selected"]["test_acc"])


def test_an_ensembles_prediction_averages_its_members_probabilities():
    from dlrecipe.predict import predictions_table

    torch.manual_seed(0)
    models = [torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)]
    x = torch.randn(6, 4)
    meta = {"task": "classification", "classes": ["a", "b", "c"], "test": {}}
    table = predictions_table(models, x, meta, np.arange(6))
    want = torch.stack([m(x).softmax(1) for m in models]).mean(0).detach().numpy()
    np.testing.assert_allclose(table[["prob_a", "prob_b", "prob_c"]].to_numpy(), want, rtol=1e-6)
    assert list(table["prediction"]) == [["a", "b", "c"][i] for i in want.argmax(1)]


def test_predict_uses_a_searchs_selected_trial(tmp_path, one_thread):
    from dlrecipe.predict import predict
    from dlrecipe.search import search

    from .conftest import small_recipe, write_table_csv

    csv = write_table_csv(tmp_path / "table.csv", n=150)
    r = small_recipe(**{"data.source": str(csv), "data.target": "label", "search.trials": 3,
                        "search.coarse_epochs": 1, "search.fine_trials": 1, "search.fine_epochs": 3})
    res = search(r, runs_dir=tmp_path / "runs", device="cpu")
    test = pd.read_csv(res.run_dir / "test_predictions.csv")
    assert (test["prediction"] == test["target"]).mean() == pytest.approx(res.summary["test_acc"])
    pred = predict(res.run_dir, csv, output=tmp_path / "p.csv").table.set_index("row").loc[test["row"]]
    assert (pred["prediction"].to_numpy() == test["prediction"].to_numpy()).all()


def test_search_on_a_model_whose_forward_fails_is_one_line_before_any_trial(tmp_path):
    (tmp_path / "badnet.py").write_text(
        "import torch.nn as nn\n\ndef make(shape, n_out):\n"
        "    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, n_out))  # expects 10 inputs\n")
    path = _recipe(tmp_path, '[data]\nsource = "iris"\n[model]\nkind = "python"\nfactory = "badnet:make"\n')
    res = _cli("search", path, "--runs-dir", tmp_path / "runs", "-q")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "forward pass fails in layer '0' (Linear 10->8)" in res.output and "[8, 4]" in res.output
    assert not (tmp_path / "runs").exists()  # no trial ran, no folder left


def test_an_id_column_read_as_a_category_is_named(tmp_path):
    df = _messy_table()
    df["name"] = [f"penguin {i}" for i in range(len(df))]  # one value per row
    df.to_csv(tmp_path / "t.csv", index=False)
    d = load_data(validate({"data.source": str(tmp_path / "t.csv"), "data.target": "label"}))
    assert any(n.startswith("column 'name' has") and "data.drop = ['name']" in n for n in d.notes)
    assert not any("'colour' has" in n for n in d.notes)
