"""`dlrecipe sanity` on the user's own modules (tests/sanity_zoo.py): each classic bug caught by the check named for
its cause, healthy modules without an alarm, and the user's exceptions as one line instead of a traceback."""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dlrecipe import sanity as S
from dlrecipe.cli import app
from dlrecipe.data import Data
from dlrecipe.recipe import load

from .conftest import ROOT

runner = CliRunner()
DIGITS = ROOT / "recipes/digits_mlp.toml"


def zoo(name: str) -> list[str]:
    return ["model.kind='python'", f"model.factory='tests.sanity_zoo:{name}'"]


def run_zoo(name: str, **kw):
    kw.setdefault("overfit_steps", 300)  # the structural checks find the bug; overfit_small only has to defer
    return S.run_sanity(load(DIGITS, zoo(name)), device="cpu", runs_dir=None, **kw)


BUGS = {  # factory: the check that must fail first (the cause), and words its advice must hold
    "softmax_out": ("logits", ["softmax", "raw output"]),
    "sigmoid_out": ("logits", ["sigmoid", "layer 'act' (Sigmoid)"]),
    "softmax_dim0": ("logits", ["softmax over the batch dimension (dim=0)"]),
    "relu_out": ("logits", ["after the last layer", "layer '4' (ReLU)"]),
    "batch_mixing": ("batch_independence", ["mixes the examples", "layer '3' (BatchMixer)"]),
    "batch_mean": ("batch_independence", ["mixes the examples", "'out'", "just before it"]),
    "detached": ("gradient_flow", ["fc1, fc2", ".detach()"]),
    "no_grad_forward": ("gradient_flow", ["fc1", "torch.no_grad()"]),
    "unused_layer": ("gradient_flow", ["layer 'extra' (Linear 64->64) is never called"]),
    "list_layers": ("unregistered", ["layers[0] (Linear 64->64)", "nn.ModuleList"]),
    "dict_layers": ("unregistered", ["parts['body']", "nn.ModuleDict"]),
    "raw_tensor": ("unregistered", ["scale (a tensor of shape [64])", "nn.Parameter"]),
    "dropout_always": ("eval_deterministic", ["training=self.training", "layer 'out'"]),
    "noisy_forward": ("eval_deterministic", ["evaluation is random"]),
    "ignores_input": ("uses_input", ["same for every example"]),
    "nan_forward": ("nan_forward", ["layer '2' (LogLayer)", "log or sqrt"]),
}


@pytest.mark.parametrize("name", list(BUGS))
def test_each_bug_is_caught_by_the_check_named_for_its_cause(name):
    check, words = BUGS[name]
    res = run_zoo(name)
    fails = [c for c in res.checks if c.status == "fail"]
    assert fails and fails[0].check == check, [(c.check, c.advice) for c in fails]
    for w in words:
        assert w in fails[0].advice, (w, fails[0].advice)
    assert res.verdict.startswith("FAIL") and fails[0].advice in res.verdict
    of = next(c for c in res.checks if c.check == "overfit_small")  # never blames the LR for a model bug
    assert of.status == "pass" or f"found by {check}" in of.advice
    if name in ("detached", "no_grad_forward", "dropout_always", "noisy_forward"):  # not "a wrong backward"
        assert next(c for c in res.checks if c.check == "gradient_check").status == "pass"


def test_a_relu_after_a_regression_output_is_caught():
    res = S.run_sanity(load(ROOT / "recipes/diabetes_regression.toml", zoo("relu_regression")), device="cpu",
                       runs_dir=None, only="logits")
    (c,) = res.checks
    assert c.status == "fail" and "layer '4' (ReLU)" in c.advice and "cuts the outputs at 0" in c.advice


@pytest.mark.parametrize("name", ["healthy", "cnn", "resmlp", "log_softmax"])
def test_healthy_modules_raise_no_alarm(name):
    res = run_zoo(name, overfit_steps=3000)
    assert {c.check: c.status for c in res.checks if c.status != "pass"} == {}
    assert len(res.checks) == len(S.CHECKS)


def test_deliberately_frozen_layers_are_a_warning_only():
    res = run_zoo("frozen", overfit_steps=3000)
    others = {c.check: c.status for c in res.checks if c.status != "pass"}
    assert others == {"gradient_flow": "warn"} and res.exit_code(strict=False) == 0
    flow = next(c for c in res.checks if c.check == "gradient_flow")
    assert "fc1" in flow.observed and "deliberate" in flow.advice


def test_a_users_own_large_init_is_a_warning_with_advice_that_changes_something():
    res = run_zoo("big_init", only="init_loss,overfit_small")
    init, of = res.checks
    assert init.status == "warn" and init.details["excess"] > S.INIT_LOSS_FAIL  # a fail for dlrecipe's own init
    assert "model.init = 'auto'" not in init.advice and "he_normal" in init.advice  # 'auto' is already set
    assert of.status == "warn" and "set train.lr = " in of.advice and res.exit_code() == 0


def test_gradient_check_holds_functional_dropout_fixed():
    """F.dropout(training=self.training) in a module: every finite-difference pass sees the same mask."""
    torch.manual_seed(0)
    from tests.sanity_zoo import resmlp

    model = resmlp((5,), 3)
    rows = S.gradient_check(model, torch.randn(16, 5), torch.randint(0, 3, (16,)), nn.CrossEntropyLoss(),
                            "classification")
    assert max(r["max_rel_error"] for r in rows if r["max_rel_error"] is not None) < S.GRADCHECK_WARN


def test_log_softmax_outputs_pass_and_probabilities_fail():
    torch.manual_seed(0)
    x, y = torch.randn(64, 5), torch.randint(0, 3, (64,))
    lin = nn.Linear(5, 3)
    assert S.check_logits(nn.Sequential(lin, nn.LogSoftmax(1)), x, y, "classification", "cross_entropy").status == "pass"
    probs = S.check_logits(nn.Sequential(lin, nn.Softmax(1)), x, y, "classification", "cross_entropy")
    assert probs.status == "fail" and "layer '1' (Softmax)" in probs.advice
    assert S.check_logits(lin, x, y, "classification", "cross_entropy").status == "pass"


# ------------------------------------------------------------------------ labels


def _data(y_train, y_val, y_test, classes=None, c=None):
    t = lambda v: torch.tensor(v, dtype=torch.int64)
    n = lambda v: torch.zeros(len(v), 2)
    return Data(n(y_train), t(y_train), n(y_val), t(y_val), n(y_test), t(y_test), "classification",
                c or max(y_train + y_val + y_test) + 1, classes)


@pytest.mark.parametrize("data, words", [
    (_data([1] * 20, [1] * 5, [0, 1]), "one class"),
    (_data([0, 1] * 10, [0, 1, 2], [0, 1], classes=["a", "b", "c"]), "training never shows: 'c'"),
    (_data([0, 1] * 10, [0, 1], [0, 5], c=3), "outside [0, 3)"),
    (_data(list(range(40)) * 2, [0], [1]), "looks continuous"),
], ids=["one class", "unseen class", "out of range", "continuous"])
def test_labels_fail_with_the_cause_in_words(data, words):
    c = S.check_labels(data)
    assert c.status == "fail" and (words in c.observed or words in c.advice), (c.observed, c.advice)


def test_labels_pass_on_named_classes_and_regression():
    many = _data(list(range(40)) * 2, [0], [1], classes=[f"species {i}" for i in range(40)])
    assert S.check_labels(many).status == "pass"  # 40 named classes: not numbers, so not a continuous target


# ------------------------------------------------------------------------ advice a user can trust


def test_advice_never_recommends_what_the_recipe_has():
    text = "vanishing gradients; use model.init = 'auto', relu, or batch norm"
    builtin = load(DIGITS)
    assert "model.init = 'auto'" not in S.not_already(text, builtin)
    assert "model.norm = 'batch'" in S.not_already(text, builtin)
    assert "he_normal" in S.not_already(text, load(DIGITS, zoo("healthy")))
    assert S.not_already(text, load(DIGITS, ["model.init='normal'"])) == text


def test_update_ratio_never_suggests_an_lr_outside_the_sensible_range():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1e6)  # weights so large that 1e-3 per step would need an LR of ~1e6
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    data = Data(x, y, x, y, x, y, "classification", 3)
    c, _ = S.check_update_ratio(model, data, {"lr": 0.01, "optimizer": "sgd", "momentum": 0.0,
                                              "weight_decay": 0.0}, batch_size=32)
    assert "outside the range where any LR helps" in c.advice and "e+0" not in c.advice.split("(")[1][:12]


def test_frozen_layers_do_not_make_update_ratio_advise_a_huge_lr():
    res = run_zoo("frozen", only="update_ratio")
    (c,) = res.checks
    assert c.status == "pass" and "1 of 3 layers not updated" in c.observed


# ------------------------------------------------------------------------ never a traceback


def _cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("name, words", [
    ("forward_raises", ["forward pass of Raises", "ValueError: forward is not implemented yet", "sanity_zoo.py"]),
    ("wrong_input_size", ["layer '1' (Linear 10->32)", "input of shape [8, 64]", "expects [..., 10]"]),
    ("factory_raises", ["raised KeyError: 'width'", "factory_raises(input_shape=(1, 8, 8), num_outputs=10)"]),
    ("wrong_outputs", ["outputs of shape [8, 9]", "10 classes"]),
])
@pytest.mark.parametrize("command", ["sanity", "validate"])
def test_user_code_errors_are_one_line_exit_2(tmp_path, name, words, command):
    extra = ["--runs-dir", tmp_path] if command == "sanity" else []
    res = _cli(command, DIGITS, *[a for s in zoo(name) for a in ("--set", s)], *extra)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and len(res.stderr.strip().splitlines()) == 1, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_unregistered_layers_are_a_failed_check_not_a_traceback(tmp_path):
    res = _cli("sanity", DIGITS, *[a for s in zoo("list_layers") for a in ("--set", s)], "--runs-dir", tmp_path,
               "--json", "--overfit-steps", 200)
    assert res.exit_code == 1 and "Traceback" not in res.output
    checks = {c["check"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks["unregistered"]["status"] == "fail"
    grad = checks["gradient_check"]  # the float64 copy cannot reach the plain list: skipped, saying why
    assert grad["status"] == "skip" and grad["observed"].startswith("skipped: RuntimeError")
    assert "not registered" in grad["advice"]


def test_an_exception_in_forward_during_training_is_one_line_and_a_failed_run(tmp_path):
    res = _cli("train", DIGITS, *[a for s in zoo("raises_later") for a in ("--set", s)], "--set", "train.epochs=1",
               "--runs-dir", tmp_path, "-q")
    assert res.exit_code == 2 and "Traceback" not in res.output
    (line,) = res.stderr.strip().splitlines()
    assert re.fullmatch(r"error: your code raised IndexError: list index out of range \(at sanity_zoo\.py:\d+ in "
                        r"forward\); run with --debug for the traceback", line), line
    (folder,) = tmp_path.iterdir()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["name"] == "digits_mlp" and summary["command"] == "train"
    assert re.fullmatch(r"IndexError: list index out of range \(at sanity_zoo\.py:\d+ in forward\)", summary["reason"])
    debug = _cli("train", DIGITS, *[a for s in zoo("raises_later") for a in ("--set", s)], "--set", "train.epochs=1",
                 "--runs-dir", tmp_path, "-q", "--debug")
    assert isinstance(debug.exception, IndexError)  # --debug: the real exception and its traceback


def test_validate_warns_about_unregistered_layers():
    res = _cli("validate", DIGITS, *[a for s in zoo("list_layers") for a in ("--set", s)])
    assert res.exit_code == 0 and "650 parameters" in res.stdout
    assert "warning: not registered" in res.stderr and "layers[0] (Linear 64->64)" in res.stderr


def test_a_crashed_train_is_recorded_as_failed(tmp_path):
    res = _cli("train", DIGITS, *[a for s in zoo("wrong_input_size") for a in ("--set", s)], "--smoke",
               "--runs-dir", tmp_path, "-q")
    assert res.exit_code == 2 and "layer '1' (Linear 10->32)" in res.stderr
    from dlrecipe.runs import list_runs

    (run,) = list_runs(tmp_path)
    assert run["status"] == "failed"
    (folder,) = tmp_path.iterdir()
    assert "Linear 10->32" in json.loads((folder / "summary.json").read_text())["reason"]


def test_a_training_split_with_one_class_fails_labels_first(tmp_path):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(120, 4)), columns=list("abcd"))
    df["label"] = "cat"  # every row the same class: nothing to learn
    df.to_csv(tmp_path / "one.csv", index=False)
    res = _cli("sanity", ROOT / "recipes/csv_table.toml", "--set", f"data.source={str(tmp_path / 'one.csv')!r}",
               "--set", "data.target='label'", "--runs-dir", tmp_path / "runs", "--json", "--overfit-steps", 100)
    assert res.exit_code == 1 and "Traceback" not in res.output
    out = json.loads(res.stdout)
    first = next(c for c in out["checks"] if c["status"] == "fail")
    assert first["check"] == "labels" and "one class ('cat')" in first["observed"]
