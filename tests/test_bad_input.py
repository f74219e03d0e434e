"""The bad-input corpus: every kind of bad value reaching every command ends in exactly one line naming what is
wrong and what is allowed, exit code 2 (or the documented code), no traceback, and no file already written changed.

Each case is a setup function that writes its files under tmp_path and returns (argv, words): the command line and
words the one line must contain. Grow the corpus whenever a new kind of input is added.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from dlrecipe.cli import app

from .conftest import write_table_csv

IRIS = {"name": "c", "data": {"source": "iris", "batch_size": 16}, "model": {"hidden": [8]},
        "train": {"epochs": 1}}


def recipe(tmp: Path, base: dict | None = None, **sections) -> Path:
    """A recipe file: IRIS (or base) with some tables' keys replaced, e.g. recipe(tmp, train={"lr": -1})."""
    table = json.loads(json.dumps(base or IRIS))
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(table.get(section), dict):
            table[section].update(values)
        else:
            table[section] = values
    path = tmp / "r.toml"
    path.write_text(tomli_w.dumps(table))
    return path


def data_recipe(tmp: Path, source: Path | str, **data) -> Path:
    return recipe(tmp, data={"source": str(source), **data})


def _idx(path: Path, magic: int, dims: list[int], payload: bytes) -> Path:
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)
    return path


def _idx_folder(tmp: Path, n_img: int = 20, n_lbl: int = 20, cut: int = 0, magic: int = 0x803) -> Path:
    folder = tmp / "idx"
    folder.mkdir()
    _idx(folder / "train-images-idx3-ubyte", magic, [n_img, 4, 4], bytes(16 * n_img - cut))
    _idx(folder / "train-labels-idx1-ubyte", 0x801, [n_lbl], bytes(i % 2 for i in range(n_lbl)))
    return folder


def _cifar_folder(tmp: Path, records: int = 20, label: int = 0, extra: int = 0) -> Path:
    folder = tmp / "cifar"
    folder.mkdir()
    rec = bytes([label]) + bytes(3072)
    (folder / "data_batch_1.bin").write_bytes(rec * records + bytes(extra))
    return folder


def _images(tmp: Path, classes: dict[str, int], corrupt: bool = False) -> Path:
    from PIL import Image

    root = tmp / "images"
    for c, n in classes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            if corrupt:
                (root / c / f"{i}.png").write_bytes(b"\x89PNG not really")
            else:
                Image.new("RGB", (8, 8), (i * 10 % 255, 0, 0)).save(root / c / f"{i}.png")
    return root


MODULES = iter(range(10**6))


def _module(tmp: Path, body: str) -> str:
    """A module file beside the recipe, under a name no earlier case used (imported modules are cached)."""
    name = f"usercode_{next(MODULES)}"
    (tmp / f"{name}.py").write_text(body)
    return name


def _factory(tmp: Path, body: str) -> Path:
    name = _module(tmp, "import torch.nn as nn\n" + body)
    return recipe(tmp, model={"kind": "python", "factory": f"{name}:make", "hidden": [8]})


def _hook(tmp: Path, body: str) -> Path:
    name = _module(tmp, "import numpy as np\n" + body)
    return recipe(tmp, data={"source": f"{name}:load"})


def _train_run(tmp: Path, name: str = "good") -> Path:
    """A run folder as `dlrecipe train` leaves it, written by hand: summary.json and metrics.csv."""
    run = tmp / "runs" / f"20260101-000000-{name}-train"
    run.mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"name": name, "command": "train", "status": "completed",
                                                  "best_val_loss": 0.5, "best_val_acc": 0.8}))
    pd.DataFrame({"epoch": [1, 2, 3], "lr": [0.1] * 3, "train_loss": [1.0, 0.8, 0.6], "train_acc": [0.5, 0.6, 0.7],
                  "val_loss": [1.1, 0.9, 0.7], "val_acc": [0.5, 0.6, 0.7], "seconds": [0.1] * 3}
                 ).to_csv(run / "metrics.csv", index=False)
    return run


def _csv(tmp: Path, text: str | bytes) -> Path:
    path = tmp / "t.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _npz(tmp: Path, **arrays) -> Path:
    path = tmp / "d.npz"
    np.savez(path, **arrays)
    return path


def _x(n=30, d=4):
    return np.random.default_rng(0).normal(size=(n, d)).astype(np.float32)


def _y(n=30, c=3):
    return np.arange(n) % c


R = "validate"  # most cases need only validate: it reads the data, builds the model and runs one forward pass

# id -> setup(tmp) -> (argv, words the one line must contain)
CASES = {
    # ---- recipe values: types, ranges, non-finite numbers, unknown keys and tables
    "lr_nan": lambda t: ([R, recipe(t), "--set", "train.lr=nan"], ["train.lr", "finite"]),
    "lr_inf": lambda t: ([R, recipe(t), "--set", "train.lr=inf"], ["train.lr", "finite"]),
    "lr_negative": lambda t: ([R, recipe(t, train={"lr": -0.1})], ["train.lr", "> 0"]),
    "lr_string": lambda t: ([R, recipe(t, train={"lr": "fast"})], ["train.lr", "a number"]),
    "lr_bool": lambda t: ([R, recipe(t, train={"lr": True})], ["train.lr", "a number"]),
    "epochs_zero": lambda t: ([R, recipe(t, train={"epochs": 0})], ["train.epochs", ">= 1"]),
    "epochs_float": lambda t: ([R, recipe(t, train={"epochs": 1.5})], ["train.epochs", "an integer"]),
    "epochs_huge_inf": lambda t: ([R, recipe(t), "--set", "train.epochs=inf"], ["train.epochs", "an integer"]),
    "dropout_one": lambda t: ([R, recipe(t, model={"dropout": 1.0})], ["model.dropout", "< 1"]),
    "bn_momentum_zero": lambda t: ([R, recipe(t, model={"bn_momentum": 0.0})], ["model.bn_momentum", "> 0"]),
    "hidden_not_list": lambda t: ([R, recipe(t, model={"hidden": 64})], ["model.hidden", "a list of ints"]),
    "hidden_zero": lambda t: ([R, recipe(t, model={"hidden": [0]})], ["model.hidden", "positive"]),
    "hidden_nested": lambda t: ([R, recipe(t, model={"hidden": [[8]]})], ["model.hidden[0]", "an integer"]),
    "activation_typo": lambda t: ([R, recipe(t, model={"activation": "relux"})], ["model.activation", "relu"]),
    "optimizer_unknown": lambda t: ([R, recipe(t, train={"optimizer": "lbfgs"})], ["train.optimizer", "Allowed"]),
    "split_two": lambda t: ([R, recipe(t, data={"split": [0.5, 0.5]})], ["data.split", "three fractions"]),
    "split_sum": lambda t: ([R, recipe(t, data={"split": [0.8, 0.1, 0.2]})], ["data.split", "summing to 1"]),
    "split_nan": lambda t: ([R, recipe(t), "--set", "data.split=[nan, 0.5, 0.5]"], ["data.split[0]", "finite"]),
    "batch_negative": lambda t: ([R, recipe(t, data={"batch_size": -1})], ["data.batch_size", ">= 1"]),
    "seed_negative": lambda t: ([R, recipe(t, seed=-1)], ["seed", ">= 0"]),
    "task_unknown": lambda t: ([R, recipe(t, task="clustering")], ["task", "classification, regression"]),
    "task_mismatch": lambda t: ([R, recipe(t, task="regression")], ["task", "classification"]),
    "name_int": lambda t: ([R, recipe(t, name=5)], ["name", "a string"]),
    "unknown_key": lambda t: ([R, recipe(t, train={"lrr": 0.1})], ["train.lrr", "did you mean 'train.lr'"]),
    "unknown_table": lambda t: ([R, recipe(t, trian={"lr": 0.1})], ["[trian]", "Allowed tables"]),
    "augment_unknown": lambda t: ([R, recipe(t, data={"augment": ["flipx"]})], ["data.augment", "Allowed"]),
    "shape_zero": lambda t: ([R, recipe(t, data={"shape": [0, 4]})], ["data.shape", "positive"]),
    "channels_two": lambda t: ([R, recipe(t, data={"channels": 2})], ["data.channels", "1 (grey) or 3"]),
    "image_size_one": lambda t: ([R, recipe(t, data={"image_size": [8]})], ["data.image_size", "[H, W]"]),
    "decay_factor_low": lambda t: ([R, recipe(t, train={"decay_factor": 10.0})], ["train.decay_factor", ">= 100"]),
    "format_unknown": lambda t: ([R, recipe(t, data={"format": "xls"})], ["data.format", "Allowed"]),
    "space_not_table": lambda t: ([R, recipe(t, search={"space": 3})], ["search.space", "a table"]),
    "space_bad_kind": lambda t: ([R, recipe(t, search={"space": {"train.lr": {"gauss": [1, 2]}}})],
                                 ["train.lr", "log_uniform"]),
    "space_unknown_key": lambda t: ([R, recipe(t, search={"space": {"train.lrr": {"uniform": [0.1, 0.2]}}})],
                                    ["train.lrr"]),
    "space_inverted": lambda t: ([R, recipe(t, search={"space": {"train.lr": {"log_uniform": [0.1, 0.001]}}})],
                                 ["train.lr"]),
    "python_no_factory": lambda t: ([R, recipe(t, model={"kind": "python"})], ["model.factory", "module:function"]),
    "set_no_equals": lambda t: ([R, recipe(t), "--set", "train.lr"], ["--set", "KEY=VALUE"]),
    # ---- keys of transfer learning, pre-training, test-time averaging, population search
    "pretrained_missing": lambda t: ([R, recipe(t, model={"pretrained": str(t / "nope.pt")})], ["nope.pt"]),
    "pretrained_garbage": lambda t: ([R, recipe(t, model={"pretrained": str(_csv(t, b"not a model") and
                                                                             _rename(t / "t.csv", "w.pt"))})],
                                     ["w.pt"]),
    "pretrained_pickle": lambda t: ([R, recipe(t, model={"pretrained": str(_pickled(t))})],
                                    ["evil.pt", "could run code: refused"]),
    "classes_only_range": lambda t: ([R, recipe(t, data={"classes_only": [7, 9]})], ["classes_only"]),
    "max_train_zero": lambda t: ([R, recipe(t, data={"max_train": 0})], ["data.max_train"]),
    "freeze_unknown": lambda t: ([R, recipe(t, train={"freeze": [99]})], ["train.freeze"]),
    "tta_unknown": lambda t: ([R, recipe(t, test={"tta": ["spin"]})], ["test.tta"]),
    "mc_dropout_negative": lambda t: ([R, recipe(t, test={"mc_dropout": -1})], ["test.mc_dropout"]),
    "pool_ratio_big": lambda t: ([R, recipe(t, model={"pool_ratio": 1.5})], ["model.pool_ratio"]),
    "population_negative": lambda t: ([R, recipe(t, search={"population": -1})], ["search.population"]),
    "pretrain_lr_nan": lambda t: ([R, recipe(t), "--set", "pretrain.lr=nan"], ["pretrain.lr", "finite"]),
    # ---- recipe files
    "recipe_missing": lambda t: ([R, t / "nope.toml"], ["not found"]),
    "recipe_binary": lambda t: ([R, _csv(t, bytes(range(256)))], ["not a text file"]),
    "recipe_empty": lambda t: ([R, _csv(t, "")], ["data.source is missing"]),
    "recipe_bad_toml": lambda t: ([R, _csv(t, "[data\nsource = 1")], ["not valid TOML"]),
    "recipe_is_folder": lambda t: ([R, t], ["not found"]),
    "source_missing_file": lambda t: ([R, data_recipe(t, t / "nope.csv")], ["nope.csv"]),
    # ---- csv and parquet tables
    "csv_empty": lambda t: ([R, data_recipe(t, _csv(t, ""))], ["t.csv"]),
    "csv_binary": lambda t: ([R, data_recipe(t, _csv(t, bytes(range(256)) * 4))], ["t.csv", "not a text file"]),
    "csv_header_only": lambda t: ([R, data_recipe(t, _csv(t, "a,b,target\n"))], ["t.csv"]),
    "csv_no_target": lambda t: ([R, data_recipe(t, write_table_csv(t / "t.csv"))], ["target"]),
    "csv_ragged": lambda t: ([R, data_recipe(t, _csv(t, "a,b,target\n1,2,x\n3,4,y,5,6\n" * 20))], ["t.csv"]),
    "csv_one_class": lambda t: ([R, data_recipe(t, _csv(t, "a,b,target\n" + "".join(
        f"{i},{i % 7},x\n" for i in range(40))))], ["one class"]),
    "csv_too_few_rows": lambda t: ([R, data_recipe(t, _csv(t, "a,b,target\n1,2,x\n3,4,y\n"))], ["at least 10"]),
    "parquet_garbage": lambda t: ([R, data_recipe(t, _csv(t, b"PAR1 not parquet" * 10), format="parquet")],
                                  ["t.csv"]),
    "parquet_truncated": lambda t: ([R, data_recipe(t, _truncated_parquet(t))], ["t.parquet"]),
    "parquet_empty": lambda t: ([R, data_recipe(t, _empty(t, "t.parquet"))], ["t.parquet"]),
    # ---- npz arrays
    "npz_empty": lambda t: ([R, data_recipe(t, _empty(t, "d.npz"))], ["d.npz"]),
    "npz_truncated": lambda t: ([R, data_recipe(t, _truncated_npz(t))], ["d.npz"]),
    "npz_no_y": lambda t: ([R, data_recipe(t, _npz(t, x=_x()))], ["d.npz", "x and y"]),
    "npz_lengths": lambda t: ([R, data_recipe(t, _npz(t, x=_x(30), y=_y(20)))], ["d.npz", "same N"]),
    "npz_object": lambda t: ([R, data_recipe(t, _npz(t, x=np.array([[1], "a"] * 15, dtype=object), y=_y()))],
                             ["d.npz"]),
    "npz_nan": lambda t: ([R, data_recipe(t, _npz(t, x=np.full((30, 4), np.nan), y=_y()))], ["d.npz", "NaN"]),
    "npz_y_2d": lambda t: ([R, data_recipe(t, _npz(t, x=_x(), y=_y().reshape(-1, 1).repeat(2, 1)))],
                           ["d.npz", "(N,)"]),
    "npz_test_shape": lambda t: ([R, data_recipe(t, _npz(t, x=_x(), y=_y(), x_test=_x(6, 5), y_test=_y(6)))],
                                 ["x_test"]),
    "npz_no_rows": lambda t: ([R, data_recipe(t, _npz(t, x=np.zeros((0, 4)), y=np.zeros(0)))], ["d.npz"]),
    # ---- idx and cifar10 folders
    "idx_empty_folder": lambda t: ([R, data_recipe(t, _mkdir(t / "idx"), format="idx")], ["train-images"]),
    "idx_bad_magic": lambda t: ([R, data_recipe(t, _idx_folder(t, magic=0x1234), format="idx")], ["magic"]),
    "idx_truncated": lambda t: ([R, data_recipe(t, _idx_folder(t, cut=7), format="idx")], ["bytes"]),
    "idx_counts": lambda t: ([R, data_recipe(t, _idx_folder(t, n_lbl=10), format="idx")], ["labels"]),
    "idx_on_file": lambda t: ([R, data_recipe(t, _csv(t, "x"), format="idx")], ["needs a folder"]),
    "cifar_empty_folder": lambda t: ([R, data_recipe(t, _mkdir(t / "cifar"), format="cifar10")], ["data_batch_1"]),
    "cifar_size": lambda t: ([R, data_recipe(t, _cifar_folder(t, extra=5), format="cifar10")], ["multiple"]),
    "cifar_label_range": lambda t: ([R, data_recipe(t, _cifar_folder(t, label=12), format="cifar10")],
                                    ["label 12"]),
    # ---- image folders
    "images_empty": lambda t: ([R, data_recipe(t, _mkdir(t / "images"), format="imagefolder")], ["images"]),
    "images_one_class": lambda t: ([R, data_recipe(t, _images(t, {"a": 10}), format="imagefolder")],
                                   ["class"]),
    "images_corrupt": lambda t: ([R, data_recipe(t, _images(t, {"a": 5, "b": 5}, corrupt=True),
                                                 format="imagefolder")], ["images"]),
    "images_on_file": lambda t: ([R, data_recipe(t, _csv(t, "x"), format="imagefolder")], ["needs a folder"]),
    "folder_auto": lambda t: ([R, data_recipe(t, _mkdir(t / "stuff"))], ["is a folder", "data.format"]),
    # ---- the user's own code
    "factory_raises": lambda t: ([R, _factory(t, "def make(input_shape, num_outputs, **kw):\n    raise ValueError('boom')\n")], ["boom"]),
    "factory_not_module": lambda t: ([R, _factory(t, "def make(input_shape, num_outputs, **kw):\n    return 42\n")], ["nn.Module"]),
    "factory_out_size": lambda t: ([R, _factory(t, "def make(input_shape, num_outputs, **kw):\n    return nn.Linear(4, 7)\n")], ["7"]),
    "factory_in_size": lambda t: ([R, _factory(t, "def make(input_shape, num_outputs, **kw):\n    return nn.Linear(5, 3)\n")], ["5"]),
    "factory_no_function": lambda t: ([R, _factory(t, "def other():\n    pass\n")], ["no function 'make'"]),
    "factory_no_module": lambda t: ([R, recipe(t, model={"kind": "python", "factory": "nomod:make"})], ["nomod"]),
    "factory_syntax": lambda t: ([R, _factory(t, "def make(:\n")], ["SyntaxError"]),
    "hook_raises": lambda t: ([R, _hook(t, "def load(cfg, seed):\n    raise OSError('no network')\n")],
                              ["no network"]),
    "hook_string": lambda t: ([R, _hook(t, "def load(cfg, seed):\n    return 'data'\n")], ["allowed"]),
    "hook_lengths": lambda t: ([R, _hook(t, "def load(cfg, seed):\n    return np.zeros((30, 4)), np.zeros(20)\n")],
                               ["same N"]),
    "hook_bad_dict": lambda t: ([R, _hook(t, "def load(cfg, seed):\n    return {'training': None}\n")],
                                ["'train'"]),
    "hook_none": lambda t: ([R, _hook(t, "def load(cfg, seed):\n    pass\n")], ["NoneType"]),
    # ---- degenerate data found when training
    "train_one_class_npz": lambda t: (["train", data_recipe(t, _npz(t, x=_x(), y=np.zeros(30, int))), "-q",
                                       "--runs-dir", t / "runs"], ["one class"]),
    # ---- options out of range, devices, runs folders that are files
    "lr_find_seeds": lambda t: (["lr-find", recipe(t), "--seeds", "0"], ["--seeds"]),
    "lr_find_lrs": lambda t: (["lr-find", recipe(t), "--lrs", "a,b"], ["--lrs"]),
    "lr_find_range": lambda t: (["lr-find", recipe(t), "--start-lr", "10", "--end-lr", "1"], ["start_lr", "0 < start_lr < end_lr"]),
    "lr_find_range_nan": lambda t: (["lr-find", recipe(t), "--start-lr", "nan"], ["start_lr = nan"]),
    "lr_find_apply_self": lambda t: (["lr-find", recipe(t), "--apply", t / "r.toml"], ["--apply"]),
    "search_jobs": lambda t: (["search", recipe(t), "--jobs", "0", "--runs-dir", t / "runs"], ["--jobs"]),
    "search_prune": lambda t: (["search", recipe(t), "--prune", "medain", "--runs-dir", t / "runs"],
                               ["did you mean 'median'"]),
    "search_seeds": lambda t: (["search", recipe(t), "--seeds", "0", "--runs-dir", t / "runs"], ["--seeds"]),
    "search_ensemble": lambda t: (["search", recipe(t), "--ensemble", "-1", "--runs-dir", t / "runs"],
                                  ["--ensemble"]),
    "sanity_only": lambda t: (["sanity", recipe(t), "--only", "lables"], ["lables"]),
    "runs_limit": lambda t: (["runs", "--runs-dir", t / "runs", "--limit", "0"], ["--limit", "at least 1"]),
    "device_unknown": lambda t: (["train", recipe(t), "--device", "tpu", "--runs-dir", t / "runs"], ["--device"]),
    "runs_dir_file": lambda t: (["train", recipe(t), "--runs-dir", _csv(t, "x"), "-q"], ["is a file"]),
    "runs_dir_under_file": lambda t: (["train", recipe(t), "--runs-dir", _csv(t, "x") / "sub", "-q"],
                                      ["cannot create"]),
    "predict_output_folder": lambda t: (["predict", _model_run(t), _iris_csv(t), "-o", _mkdir(t / "out")],
                                        ["out"]),
    # ---- storages for search --storage
    "storage_misspelt": lambda t: (["search", recipe(t), "--storage", "postgresq://u:pw@localhost/db",
                                    "--runs-dir", t / "runs"], ["did you mean 'postgresql'", "Allowed"]),
    "storage_unreachable": lambda t: (["search", recipe(t), "--storage", "postgresql://u:pw@127.0.0.1:1/db",
                                       "--runs-dir", t / "runs"], ["--storage"]),
    "storage_sqlite_dir": lambda t: (["search", recipe(t), "--storage", f"sqlite:///{t}/nodir/x.db",
                                      "--runs-dir", t / "runs"], ["--storage"]),
    "storage_folder": lambda t: (["search", recipe(t), "--storage", str(_mkdir(t / "journal")),
                                  "--runs-dir", t / "runs"], ["--storage"]),
    "worker_no_study": lambda t: (["search", recipe(t), "--worker", "--storage", str(t / "j.journal")],
                                  ["--worker"]),
    # ---- corrupted and foreign run folders
    "report_missing": lambda t: (["report", t / "nope"], ["not found"]),
    "report_foreign": lambda t: (["report", _mkdir(t / "runs" / "holiday-photos")], ["not a dlrecipe run folder"]),
    "report_file": lambda t: (["report", _csv(t, "x")], ["t.csv"]),
    "report_truncated_summary": lambda t: (["report", _corrupt(_train_run(t), "summary.json", b'{"status": "co')],
                                           ["summary.json"]),
    "report_binary_metrics": lambda t: (["report", _corrupt(_train_run(t), "metrics.csv", bytes(range(256)))],
                                        ["metrics.csv"]),
    "report_metrics_no_columns": lambda t: (["report", _corrupt(_train_run(t), "metrics.csv", b"a,b\n1,2\n")],
                                            ["metrics.csv"]),
    "compare_missing": lambda t: (["compare", _train_run(t), t / "nope", "--runs-dir", t / "runs"], ["nope"]),
    "resume_search_missing": lambda t: (["search", "--resume", t / "nope"], ["no such folder"]),
    "resume_search_foreign": lambda t: (["search", "--resume", _train_run(t)], ["not a dlrecipe search"]),
    "resume_search_bad_json": lambda t: (["search", "--resume", _corrupt(_mkdir(t / "s"), "search.json", b"{")],
                                         ["search.json"]),
    "resume_run_foreign": lambda t: (["run", "--resume", _train_run(t)], ["not a dlrecipe run folder"]),
    "resume_run_bad_summary": lambda t: (["run", "--resume", _corrupt(_mkdir(t / "r"), "summary.json", b"\xff\xfe")],
                                         ["summary.json"]),
    "predict_no_model": lambda t: (["predict", _train_run(t), _csv(t, "a\n1\n")], ["model"]),
    "predict_corrupt_model": lambda t: (["predict", _corrupt(_model_run(t), "model.pt", b"PK\x03\x04 nope"),
                                         _csv(t, "a\n1\n")], ["model"]),
    "predict_missing_input": lambda t: (["predict", _model_run(t), t / "nope.csv"], ["nope.csv"]),
    "predict_wrong_columns": lambda t: (["predict", _model_run(t), _csv(t, "x,y\n1,2\n")], ["column"]),
    "predict_binary_input": lambda t: (["predict", _model_run(t), _csv(t, bytes(range(256)) * 8)], ["t.csv"]),
    "predict_tampered_model_json": lambda t: (["predict", _corrupt(_model_run(t), "model.json", b"{"),
                                               _iris_csv(t)], ["model.json"]),
    "predict_truncated_model": lambda t: (["predict", _truncate(_model_run(t), "model.pt"), _iris_csv(t)],
                                          ["model.pt"]),
}


_TRAINED: dict[str, Path] = {}


def _model_run(tmp: Path) -> Path:
    """A copy of a real `dlrecipe train` run folder on a CSV table (trained once per session)."""
    import shutil
    import tempfile

    if "run" not in _TRAINED:
        from dlrecipe.recipe import validate
        from dlrecipe.train import train

        home = Path(tempfile.mkdtemp(prefix="dlrecipe-corpus-"))
        csv = pd.read_csv(write_table_csv(home / "table.csv"))
        csv.to_csv(home / "table.csv", index=False)
        r = validate({"name": "model", "data.source": str(home / "table.csv"), "data.target": "label",
                      "model.hidden": [8], "train.epochs": 1})
        _TRAINED["run"] = train(r, device="cpu", runs_dir=home / "runs").run_dir
    return Path(shutil.copytree(_TRAINED["run"], tmp / "runs" / _TRAINED["run"].name))


def _iris_csv(tmp: Path) -> Path:
    """New rows for _model_run's model: its four feature columns."""
    return _csv(tmp, "a,b,c,d\n" + "0.1,0.2,0.3,0.4\n" * 5)


def _truncate(folder: Path, name: str) -> Path:
    data = (folder / name).read_bytes()
    (folder / name).write_bytes(data[: len(data) // 2])
    return folder


def _rename(path: Path, name: str) -> Path:
    return path.rename(path.with_name(name))


class _Evil:
    def __reduce__(self):  # what a malicious model file does: run code when unpickled
        return (print, ("pwned",))


def _pickled(tmp: Path) -> Path:
    """A .pt file holding a pickled object that runs code when loaded without weights_only."""
    import torch

    torch.save({"layer": _Evil()}, tmp / "evil.pt")
    return tmp / "evil.pt"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _empty(tmp: Path, name: str) -> Path:
    (tmp / name).write_bytes(b"")
    return tmp / name


def _corrupt(folder: Path, name: str, data: bytes) -> Path:
    (folder / name).write_bytes(data)
    return folder


def _truncated_parquet(tmp: Path) -> Path:
    path = tmp / "t.parquet"
    pd.read_csv(write_table_csv(tmp / "full.csv")).rename(columns={"label": "target"}).to_parquet(path)
    path.write_bytes(path.read_bytes()[:200])
    return path


def _truncated_npz(tmp: Path) -> Path:
    path = _npz(tmp, x=_x(), y=_y())
    path.write_bytes(path.read_bytes()[:300])
    return path


# Exit codes other than 2 that are documented: none so far for bad input.
CODES: dict[str, int] = {}


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, monkeypatch, one_thread):
    monkeypatch.chdir(tmp_path)  # module files beside the recipe; nothing written into the checkout
    argv, words = CASES[case](tmp_path)
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(app, [str(a) for a in argv])
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.exit_code == CODES.get(case, 2), (res.exit_code, res.output, res.exception)
    assert "Traceback" not in res.output and not isinstance(res.exception, Exception) or \
        isinstance(res.exception, SystemExit), res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "pw@" not in res.output  # a storage URL's password is never printed
    after = _snapshot(tmp_path)
    changed = [name for name, data in before.items() if after.get(name) != data]
    assert not changed, f"files already written were changed or removed: {changed}"


def test_the_corpus_has_at_least_60_cases():
    assert len(CASES) >= 60


def test_a_constant_feature_is_a_warning_not_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rows = "".join(f"{i % 5},7,{'xy'[i % 2]}\n" for i in range(60))
    res = CliRunner().invoke(app, [R, str(data_recipe(tmp_path, _csv(tmp_path, "a,const,target\n" + rows)))])
    assert res.exit_code == 0, res.output
    assert "const" in res.output and "constant" in res.output
