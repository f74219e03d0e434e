"""Recipe files: TOML with [data], [model], [train] and [search] tables, validated before anything runs.

Every key lives in `SCHEMA` with its type, default and allowed values: validation, `--set` overrides, the search
space's keys and the README's key reference all read from this one table. Errors name the key, the value and
what is allowed, in one line (`RecipeError`).
"""
from __future__ import annotations

import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from . import components as C
from .augment import AUGMENTATIONS
from .data.files import FORMATS
from .errors import RecipeError

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Key:
    type: str                      # "str", "int", "float", "bool", "list[int]", "list[float]", "list[str]",
                                   # "list[int|str]", "table"
    default: Any
    help: str
    choices: tuple[str, ...] | None = None
    lo: float | None = None        # inclusive lower bound
    hi: float | None = None        # inclusive upper bound
    lo_open: bool = False          # True: the lower bound itself is not allowed
    hi_open: bool = False


def _names(registry: dict) -> tuple[str, ...]:
    return tuple(registry)


SCHEMA: dict[str, Key] = {
    "name": Key("str", None, "run name (default: the file name)"),
    "seed": Key("int", 0, "seed for the split, the init, the batch order and dropout", lo=0),
    "task": Key("str", "classification", "classification or regression", choices=TASKS),
    "description": Key("str", "", "free text"),
    # [data]
    "data.source": Key("str", None, "embedded dataset name (see `dlrecipe components`) or a file/folder path"),
    "data.format": Key("str", "auto", "file format; auto = from the extension", choices=_names(FORMATS)),
    "data.target": Key("str", "target", "label column of a CSV/Parquet file"),
    "data.split": Key("list[float]", [0.7, 0.15, 0.15], "train / validation / test fractions (stratified, by seed)"),
    "data.preprocess": Key("str", "standardize", "fitted on the training split only",
                           choices=_names(C.PREPROCESS)),
    "data.batch_size": Key("int", 64, "minibatch size", lo=1),
    "data.shape": Key("list[int]", [], "reshape each example to this shape, e.g. [1, 28, 28] (default: natural)"),
    "data.augment": Key("list[str]", [], "training-time augmentation, any of: " + ", ".join(AUGMENTATIONS)),
    "data.crop_padding": Key("int", 4, "padding for the random crop", lo=0),
    "data.jitter": Key("float", 0.2, "brightness/contrast jitter strength", lo=0, hi=1),
    "data.cutout_size": Key("int", 8, "side of the cutout square", lo=1),
    "data.mixup_alpha": Key("float", 0.2, "mixup Beta(alpha, alpha)", lo=0, lo_open=True),
    "data.n_samples": Key("int", 1000, "examples generated for spiral / xor", lo=10),
    "data.noise": Key("float", 0.2, "noise of the generated spiral / xor data", lo=0),
    "data.classes": Key("int", 3, "arms of the generated spiral", lo=2),
    "data.features": Key("list[str]", [], "table columns to use as features (default: every column but the target "
                         "and data.drop)"),
    "data.drop": Key("list[str]", [], "table columns to leave out (ids, leaks, other targets)"),
    "data.categorical": Key("list[str]", [], "table columns to one-hot encode although they hold numbers (codes); "
                            "text and boolean columns are categories anyway"),
    "data.missing": Key("str", "impute", "blank table cells: impute (median / most frequent, plus a missing "
                        "indicator, fitted on the training split), drop the rows, or error",
                        choices=("impute", "drop", "error")),
    "data.image_size": Key("list[int]", [], "imagefolder: resize every image to [H, W] (default: the first "
                           "image's size)"),
    "data.channels": Key("int", None, "imagefolder: 1 (grey) or 3 (RGB) (default: the first image's)",
                         choices=None, lo=1, hi=3),
    "data.in_memory": Key("bool", None, "false: stream examples from disk through a DataLoader (data larger than "
                          "memory; default: true for files and image folders, false for a hook's Dataset)"),
    "data.workers": Key("int", None, "DataLoader worker processes for streamed data (default: cores - 1, at most "
                        "4; 0 = read in the main process)", lo=0),
    "data.classes_only": Key("list[int]", [], "keep only these class labels (by label index, in every split), "
                             "relabelled 0..k-1 in this order, e.g. [5, 6, 7, 8, 9] (default: every class; "
                             "transfer learning, lecture 003)"),
    "data.max_train": Key("int", None, "keep a stratified random sample of this many training examples, drawn by "
                          "seed; validation and test keep their size (default: all; few-label experiments)", lo=1),
    "data.pca_std": Key("float", 0.1, "augment pca_colour: std of the offsets along the RGB principal components "
                        "(AlexNet, Krizhevsky et al. 2012: 0.1; lecture 003)", lo=0),
    "data.scale": Key("list[float]", [0.22, 0.77], "augment resized_crop: [min, max] fraction of the image area a "
                      "crop covers before it is resized back (lecture 003's ResNet recipe, 224 out of 256-480: "
                      "0.22-0.77)", lo=0, hi=1, lo_open=True),
    # [model]
    "model.kind": Key("str", "mlp", "mlp, cnn or python (your own factory)", choices=("mlp", "cnn", "python")),
    "model.hidden": Key("list[int]", [128, 128], "hidden layer sizes (cnn: the head after the conv stack)"),
    "model.activation": Key("str", "relu", "hidden-layer non-linearity", choices=_names(C.ACTIVATIONS)),
    "model.slope": Key("float", 0.01, "leaky_relu slope", lo=0),
    "model.elu_alpha": Key("float", 1.0, "elu alpha", lo=0, lo_open=True),
    "model.maxout_k": Key("int", 2, "maxout pieces", lo=2),
    "model.init": Key("str", "auto", "weight init (biases are 0)", choices=_names(C.INITS)),
    "model.init_value": Key("float", 0.1, "value for init = constant"),
    "model.norm": Key("str", "none", "normalisation of pre-activations", choices=_names(C.NORMS)),
    "model.bn_eps": Key("float", 1e-5, "batch norm epsilon (the lectures give none: torch's default)", lo=0,
                        lo_open=True),
    "model.bn_momentum": Key("float", 0.01, "batch norm running-average rate (lecture 004: mu <- 0.99 mu + 0.01 mu_B)",
                             lo=0, hi=1, lo_open=True),
    "model.dropout": Key("float", 0.0, "inverted dropout DROP probability after each hidden layer", lo=0, hi=1,
                         hi_open=True),
    "model.dropconnect": Key("float", 0.0, "DropConnect probability on hidden linear weights", lo=0, hi=1,
                             hi_open=True),
    "model.output_bias": Key("str", "zero", "output-layer bias", choices=_names(C.OUTPUT_BIASES)),
    "model.conv": Key("list[int]", [32, 64], "cnn: channels of each conv block (conv, norm, activation, pool)"),
    "model.kernel_size": Key("int", 3, "cnn: kernel size (odd: 'same' padding)", lo=1),
    "model.pool": Key("str", "max", "cnn: pooling after each conv block (fractional: 2-D only, "
                      "nn.FractionalMaxPool2d, lecture 003)", choices=("max", "avg", "none", "fractional")),
    "model.pool_size": Key("int", 2, "cnn: pooling window and stride", lo=1),
    "model.factory": Key("str", "", "python: 'package.module:function' or 'file.py:function' (looked for beside the recipe, in the working folder, on sys.path) returning an nn.Module"),
    "model.pool_ratio": Key("float", 0.7071, "pool = 'fractional': output / input size of each pooling (Graham "
                            "2014: 1/sqrt(2); lecture 003)", lo=0, hi=1, lo_open=True, hi_open=True),
    "model.residual": Key("bool", False, "mlp and cnn: identity skip around each hidden block, y = x + block(x), "
                          "with a bias-free linear / 1x1-conv projection where widths differ (lecture 003)"),
    "model.stochastic_depth": Key("float", 0.0, "with residual: drop the last block with this probability while "
                                  "training, survival 1 - (l/L) p decaying linearly with depth, the block scaled by "
                                  "its survival at test (Huang et al. 2016: 0.5; lecture 003; 0 = off)", lo=0, hi=1,
                                  hi_open=True),
    "model.pretrained": Key("str", "", "transfer learning: a run folder or a state-dict .pt file whose matching "
                            "layers are loaded (weights_only), e.g. runs/...-train (lecture 003; default: none)"),
    "model.pretrained_skip": Key("list[int|str]", [], "layers to keep new although model.pretrained has them: "
                                 "layer numbers from the input (integers), 'output', or module names (strings)"),
    # [train]
    "train.optimizer": Key("str", "sgd", "optimizer", choices=_names(C.OPTIMIZERS)),
    "train.lr": Key("float", 0.01, "learning rate", lo=0, lo_open=True),
    "train.momentum": Key("float", None, "momentum (default: 0 for sgd/rmsprop, 0.9 for momentum/nesterov)",
                          lo=0, hi=1, hi_open=True),
    "train.beta1": Key("float", 0.9, "adam/adamw/nadam first-moment decay", lo=0, hi=1, hi_open=True),
    "train.beta2": Key("float", 0.999, "adam/adamw/nadam second-moment decay", lo=0, hi=1, hi_open=True),
    "train.rho": Key("float", 0.99, "rmsprop squared-gradient decay", lo=0, hi=1, hi_open=True),
    "train.eps": Key("float", 1e-8, "adaptive optimizers' epsilon", lo=0, lo_open=True),
    "train.weight_decay": Key("float", 0.0, "L2 on weights, not biases (2*lambda for lambda*sum W^2)", lo=0),
    "train.l1": Key("float", 0.0, "L1 penalty lambda*sum|W| on weights (with weight_decay: elastic net)", lo=0),
    "train.epochs": Key("int", 20, "maximum epochs", lo=1),
    "train.patience": Key("int", 5, "early stopping: epochs without validation improvement (0 = off)", lo=0),
    "train.lr_halving": Key("int", 2, "schedule plateau: halve the LR after this many epochs without improvement "
                            "(0 = off)", lo=0),
    "train.schedule": Key("str", "plateau", "LR schedule", choices=_names(C.SCHEDULES)),
    "train.step_size": Key("int", 10, "schedule step: epochs between steps", lo=1),
    "train.gamma": Key("float", 0.5, "schedule step: LR factor at each step", lo=0, hi=1, lo_open=True),
    "train.decay_factor": Key("float", 100.0, "exponential/cosine: the last epoch's LR is lr / decay_factor "
                              "(lecture 002: ~100 or more)", lo=100),
    "train.grad_clip": Key("float", 0.0, "clip the global gradient norm to this (0 = off)", lo=0),
    "train.loss": Key("str", "auto", "auto = cross_entropy (classification) or mse (regression)",
                      choices=("auto",) + _names(C.LOSSES)),
    "train.huber_delta": Key("float", 1.0, "huber loss threshold", lo=0, lo_open=True),
    "train.monitor": Key("str", "val_loss", "validation metric for early stopping, LR halving and the best snapshot",
                         choices=("val_loss", "val_acc")),
    "train.eval_batch_size": Key("int", 1024, "batch size for validation and test passes", lo=1),
    "train.freeze": Key("list[int|str]", [], "layers whose parameters are not trained: numbers from the input "
                        "(integers, 0 = first layer; see the run's layers.csv), 'output', or module names (strings) "
                        "(transfer learning, lecture 003; default: none)"),
    "train.unfreeze": Key("list[int]", [], "staged fine-tuning: at each of these epochs unfreeze the top-most "
                          "still-frozen layer, e.g. [6, 11] (lecture 003: fine-tune more layers)", lo=1),
    "train.unfreeze_lr": Key("float", 1.0, "LR of an unfrozen layer as a fraction of the LR at that moment "
                             "(default 1: the same LR)", lo=0, hi=1, lo_open=True),
    "train.tensorboard": Key("bool", False, "also write TensorBoard event files (loss, accuracy, LR per epoch) beside "
                             "each metrics.csv, for train, search trials and run (default false; --tensorboard; "
                             "needs pip install tensorboard)"),
    # [search] (dlrecipe search)
    "search.space": Key("table", {}, "dotted recipe key -> {log_uniform|uniform|int|choice = [...]}"),
    "search.trials": Key("int", 20, "coarse-stage random trials", lo=1),
    "search.coarse_epochs": Key("int", 3, "epochs per coarse trial (lecture 003: 1-5)", lo=1),
    "search.fine_trials": Key("int", 5, "fine-stage trials around the best coarse ones", lo=0),
    "search.fine_epochs": Key("int", 15, "epochs per fine trial (lecture 003: 10-20)", lo=1),
    "search.top_k": Key("int", 3, "coarse trials the fine stage narrows around", lo=1),
    "search.population": Key("int", 0, "trials trained at once as one fused model (HFTA); 0 = auto (coarse "
                             "trials, as many as the model size and free memory suit), 1 = off: one trial at a "
                             "time, N = up to N trials of either stage", lo=0),
    # [pretrain] (dlrecipe pretrain; train and run pre-train first when epochs > 0)
    "pretrain.epochs": Key("int", 0, "greedy layer-wise autoencoder pre-training of each hidden layer of an mlp "
                           "for this many epochs, then fine-tuning of the whole net (lecture 002; 0 = off)", lo=0),
    "pretrain.lr": Key("float", 0.001, "pre-training learning rate", lo=0, lo_open=True),
    "pretrain.optimizer": Key("str", "adam", "pre-training optimizer (its other settings: the [train] ones)",
                              choices=_names(C.OPTIMIZERS)),
    "pretrain.batch_size": Key("int", None, "pre-training minibatch size (default: data.batch_size)", lo=1),
    "pretrain.loss": Key("str", "auto", "reconstruction loss: cross_entropy with a sigmoid decoder for inputs in "
                         "[0, 1], squared = 1/2 sum (x_hat - x)^2 with a linear decoder for real-valued inputs; "
                         "auto picks per layer from its inputs (lecture 002)",
                         choices=("auto", "cross_entropy", "squared")),
    # [test] (test-time averaging: train, search, run, predict)
    "test.mc_dropout": Key("int", 0, "Monte Carlo dropout: average the class probabilities of this many passes with "
                           "dropout on (lecture 003; 0 = off); predict adds an uncertainty column", lo=0),
    "test.tta": Key("list[str]", [], "test-time augmentation: average the probabilities over copies of each image, "
                    "any of: hflip (original + mirrored), crops (centre + 4 corners of the padded image, "
                    "data.crop_padding; lecture 003)", choices=("hflip", "crops")),
}

SECTIONS = ("data", "model", "train", "search", "pretrain", "test")


def _fmt(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)


def _suggest(word: str, options: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_type(key: str, value: Any, spec: Key) -> Any:
    """Return value converted to spec.type (int -> float allowed), or raise RecipeError."""
    def bad(expected: str) -> RecipeError:
        return RecipeError(f"{key} = {_fmt(value)} is not allowed: expected {expected}")

    t = spec.type
    if t == "str":
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if t == "int|str":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise bad("an integer or a string")
        return value
    if t == "table":
        if not isinstance(value, dict):
            raise bad("a table")
        return value
    inner = t[5:-1]  # "list[int]" -> "int"
    if not isinstance(value, list):
        hint = ' (TOML: quote the strings, e.g. ["a", "b"])' if inner == "str" and str(value).startswith("[") else ""
        raise bad(f"a list of {inner}s{hint}")
    return [_check_type(f"{key}[{i}]", v, Key(inner, None, "")) for i, v in enumerate(value)]


def _check_range(key: str, value: Any, spec: Key) -> None:
    values = value if isinstance(value, list) else [value]
    for v in values:
        if spec.choices is not None and v not in spec.choices:
            raise RecipeError(f"{key} = {_fmt(v)} is unknown{_suggest(str(v), spec.choices)} "
                              f"Allowed: {', '.join(spec.choices)}")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        low_bad = spec.lo is not None and (v < spec.lo or (spec.lo_open and v == spec.lo))
        high_bad = spec.hi is not None and (v > spec.hi or (spec.hi_open and v == spec.hi))
        if low_bad or high_bad:
            lo = "" if spec.lo is None else f"{'>' if spec.lo_open else '>='} {spec.lo:g}"
            hi = "" if spec.hi is None else f"{'<' if spec.hi_open else '<='} {spec.hi:g}"
            raise RecipeError(f"{key} = {_fmt(v)} is out of range: allowed {' and '.join(x for x in (lo, hi) if x)}")


def reference_row(key: str) -> str:
    """The README's key-reference row for one schema key: | `key` | type | `default` | meaning (allowed) |."""
    spec = SCHEMA[key]
    default = "-" if spec.default is None else (f'"{spec.default}"' if isinstance(spec.default, str)
                                                else _fmt(spec.default))
    allowed = []
    if spec.choices:
        allowed.append(", ".join(spec.choices))
    if spec.lo is not None:
        allowed.append(f"{'>' if spec.lo_open else '>='} {spec.lo:g}")
    if spec.hi is not None:
        allowed.append(f"{'<' if spec.hi_open else '<='} {spec.hi:g}")
    extra = f" ({' and '.join(allowed) if not spec.choices else '; '.join(allowed)})" if allowed else ""
    return f"| `{key}` | {spec.type} | `{default}` | {spec.help}{extra} |"


def reference_table() -> str:
    """Every key as the README's Markdown table (the README's copy is checked against this by a test)."""
    return "\n".join(["| key | type | default | allowed / meaning |", "|---|---|---|---|",
                      *(reference_row(k) for k in SCHEMA)])


def flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}; [search] space stays one table-valued key."""
    flat: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key in SECTIONS:
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def parse_override(text: str) -> tuple[str, Any]:
    """'train.lr=0.1' -> ("train.lr", 0.1). The value is TOML; a bare word is taken as a string."""
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=0.1")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # model.activation=tanh: a bare word is a string
    return key, value


@dataclass
class Recipe:
    """A validated recipe: every schema key resolved to a value (defaults filled in)."""

    values: dict[str, Any]
    path: Path | None = None
    extra_model: dict[str, Any] = field(default_factory=dict)  # kind = "python": passed to the user's factory

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def name(self) -> str:
        return self.values["name"]

    @property
    def task(self) -> str:
        return self.values["task"]

    def section(self, name: str) -> dict[str, Any]:
        """The keys of one table without their prefix, e.g. section("train")["lr"]."""
        p = name + "."
        out = {k[len(p):]: v for k, v in self.values.items() if k.startswith(p)}
        if name == "model":
            out.update(self.extra_model)
        return out

    def with_values(self, overrides: dict[str, Any]) -> Recipe:
        """A new validated recipe with some dotted keys replaced (used by --set and the search)."""
        flat = self.user_values()
        flat.update(overrides)
        return validate(flat, path=self.path)

    def user_values(self) -> dict[str, Any]:
        flat = {k: v for k, v in self.values.items() if v is not None}
        flat.update({f"model.{k}": v for k, v in self.extra_model.items()})
        return flat

    def to_dict(self) -> dict[str, Any]:
        """Nested tables, None values left out (TOML has no null)."""
        out: dict[str, Any] = {}
        for key, value in self.user_values().items():
            if value is None:
                continue
            head, _, tail = key.partition(".")
            if tail:
                out.setdefault(head, {})[tail] = value
            else:
                out[head] = value
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())


def validate(flat: dict[str, Any], *, path: Path | None = None) -> Recipe:
    """Check every key, type, range and combination; return the resolved Recipe or raise RecipeError."""
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    kind = flat.get("model.kind", SCHEMA["model.kind"].default)
    for key, value in flat.items():
        spec = SCHEMA.get(key)
        if spec is None:
            if key.startswith("model.") and kind == "python":
                extra[key[6:]] = value
                continue
            section = key.split(".")[0]
            shown = key if key.isprintable() and key.strip() == key and key else repr(key)  # one line, visible
            if ("." in key or isinstance(value, dict)) and section not in SECTIONS:
                raise RecipeError(f"unknown table [{section if section.isprintable() else repr(section)}] (key "
                                  f"{shown}){_suggest(section, SECTIONS)} Allowed tables: {', '.join(SECTIONS)}")
            raise RecipeError(f"unknown key {shown}{_suggest(key, list(SCHEMA))} "
                              f"(`dlrecipe keys` lists every key)")
        value = _check_type(key, value, spec)
        _check_range(key, value, spec)
        values[key] = value
    for key, spec in SCHEMA.items():
        if key not in values:
            values[key] = list(spec.default) if isinstance(spec.default, list) else spec.default
    if values["name"] is None:
        values["name"] = path.stem if path else "recipe"
    _check_combinations(values, path)
    return Recipe(values, path, extra)


def _check_combinations(v: dict[str, Any], path: Path | None) -> None:
    from .data import DATASETS, is_hook, resolve_source  # data imports torch: only when validating

    if v["data.channels"] not in (None, 1, 3):
        raise RecipeError(f"data.channels = {v['data.channels']} is not allowed: 1 (grey) or 3 (RGB)")
    if v["data.image_size"] and (len(v["data.image_size"]) != 2 or min(v["data.image_size"]) < 1):
        raise RecipeError(f"data.image_size = {v['data.image_size']} is not allowed: [H, W], positive sizes")
    if v["data.source"] is None:
        raise RecipeError("data.source is missing: name an embedded dataset (" + ", ".join(DATASETS)
                          + ") or a file path")
    split = v["data.split"]
    if len(split) != 3 or split[0] <= 0 or split[1] <= 0 or split[2] < 0 or abs(sum(split) - 1) > 1e-6:
        raise RecipeError(f"data.split = {split} is not allowed: three fractions train, validation, test with "
                          f"train > 0, validation > 0, test >= 0, summing to 1")
    name = v["data.source"]
    if name in DATASETS:
        ds_task = DATASETS[name].task
        if ds_task != v["task"]:
            raise RecipeError(f"task = {v['task']!r} does not fit data.source = {name!r}, a {ds_task} dataset: "
                              f"set task = {ds_task!r}")
    elif not is_hook(name, path):
        resolve_source(name, v["data.format"], path)  # raises RecipeError naming the missing file
    for aug in v["data.augment"]:
        if aug not in AUGMENTATIONS:
            raise RecipeError(f"data.augment = {_fmt(aug)} is unknown{_suggest(aug, list(AUGMENTATIONS))} "
                              f"Allowed: {', '.join(AUGMENTATIONS)}")
    if any(s < 1 for s in v["data.shape"]):
        raise RecipeError(f"data.shape = {v['data.shape']} is not allowed: positive sizes, e.g. [1, 28, 28]")
    if any(h < 1 for h in v["model.hidden"]) or any(c < 1 for c in v["model.conv"]):
        raise RecipeError("model.hidden and model.conv sizes must be positive integers")
    if v["model.kind"] == "python" and ":" not in v["model.factory"]:
        raise RecipeError(f"model.factory = {v['model.factory']!r} is not allowed with model.kind = 'python': "
                          f"expected 'package.module:function'")
    if v["model.kind"] == "cnn" and not v["model.conv"]:
        raise RecipeError("model.conv = [] is not allowed with model.kind = 'cnn': give at least one channel count")
    _check_new_techniques(v, path)
    loss = v["train.loss"]
    if v["task"] == "classification" and loss not in ("auto", "cross_entropy"):
        raise RecipeError(f"train.loss = {loss!r} does not fit task = 'classification': allowed auto, cross_entropy")
    if v["task"] == "regression":
        if loss == "cross_entropy":
            raise RecipeError("train.loss = 'cross_entropy' does not fit task = 'regression': allowed auto, mse, huber")
        if v["train.monitor"] == "val_acc":
            raise RecipeError("train.monitor = 'val_acc' does not fit task = 'regression': allowed val_loss")
        if "mixup" in v["data.augment"]:
            raise RecipeError("data.augment 'mixup' needs task = 'classification'")


def _check_new_techniques(v: dict[str, Any], path: Path | None) -> None:
    """Combinations of the transfer, pre-training, residual, pooling and augmentation keys."""
    if len(v["data.scale"]) != 2 or v["data.scale"][0] > v["data.scale"][1]:
        raise RecipeError(f"data.scale = {v['data.scale']} is not allowed: [min, max] area fractions, 0 < min <= "
                          f"max <= 1")
    if len(set(v["data.classes_only"])) != len(v["data.classes_only"]) or any(c < 0 for c in v["data.classes_only"]):
        raise RecipeError(f"data.classes_only = {v['data.classes_only']} is not allowed: distinct label numbers >= 0")
    if v["model.stochastic_depth"] > 0 and not v["model.residual"]:
        raise RecipeError("model.stochastic_depth drops residual blocks: set model.residual = true as well")
    if v["model.kind"] == "python" and (v["model.residual"] or v["model.stochastic_depth"] > 0):
        raise RecipeError("model.residual and model.stochastic_depth are for model.kind = 'mlp' or 'cnn'; a python "
                          "factory builds its own blocks")
    if v["train.unfreeze"] and not v["train.freeze"]:
        raise RecipeError("train.unfreeze needs frozen layers to unfreeze: set train.freeze too")
    if v["model.pretrained"]:
        from .transfer import resolve_pretrained

        resolve_pretrained(v["model.pretrained"], path)  # raises RecipeError naming what is missing
    if v["pretrain.epochs"] > 0:
        if v["model.kind"] != "mlp" or v["model.norm"] != "none" or v["model.activation"] == "maxout" \
                or v["model.residual"] or not v["model.hidden"]:
            raise RecipeError("pretrain.epochs > 0 (layer-wise autoencoder pre-training, lecture 002) needs model.kind "
                              "= 'mlp' with hidden layers, model.norm = 'none', no maxout and no residual blocks")
        if v["model.pretrained"]:
            raise RecipeError("model.pretrained and pretrain.epochs > 0 both set: the pre-training would overwrite "
                              "the loaded layers; choose one")


def load(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file, apply --set overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"recipe file {str(path)!r} not found")
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (UTF-8): expected a TOML recipe") from None
    except OSError as e:
        raise RecipeError(f"{path}: cannot be read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise RecipeError(f"{path}: not valid TOML: {e}") from None
    flat = flatten(table)
    for text in overrides or []:
        key, value = parse_override(text)
        flat[key] = value
    try:
        return validate(flat, path=path)
    except RecipeError as e:
        raise RecipeError(f"{path}: {e}") from None
