"""dlrecipe sanity: the lectures' numbers, the classic bugs each caught by the named check, every shipped recipe
passing, and the command line's exit codes and --json contract."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dlrecipe import sanity as S
from dlrecipe.cli import SANITY_HELP, app
from dlrecipe.recipe import load

from .conftest import ROOT, recipe_overrides, write_table_csv

runner = CliRunner()
DIGITS = ROOT / "recipes/digits_mlp.toml"
CSV_RECIPE = ROOT / "recipes/csv_table.toml"
DEEP = "model.hidden=[128,128,128,128,128,128]"


def _sanity(path, sets=(), **kw):
    return S.run_sanity(load(path, list(sets)), device="cpu", runs_dir=None, **kw)


def _check(result, name):
    (c,) = [c for c in result.checks if c.check == name]
    return c


# ------------------------------------------------------------------------ lecture 003: 6 layers of 4096 units


@pytest.fixture(scope="module")
def randn_4096():
    """Six randn(4096, 4096) matrices, drawn once for every init scale (400 MB: the draw is the slow part)."""
    torch.manual_seed(0)
    return [torch.randn(4096, 4096) for _ in range(6)]


def _lecture_net(activation: type[nn.Module], scale, weights) -> nn.Sequential:
    """Lecture 003's experiment: x.dot(W) with W = scale * randn(Din, Dout), no bias, activation after each layer."""
    mods = []
    for w in weights:
        lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            lin.weight.copy_(w * scale(w.shape[1]))
        mods += [lin, activation()]
    return nn.Sequential(*mods).requires_grad_(False)  # activations only: no 400 MB of gradients


LECTURE_STDS = {  # ../shared/LECTURES.md, Diagnostics: per-layer activation std, layers 1 -> 6
    "tanh, 0.01 randn": (nn.Tanh, lambda d: 0.01, [0.491, 0.288, 0.179, 0.113, 0.072, 0.046]),
    "tanh, N(0,1)": (nn.Tanh, lambda d: 1.0, [0.994] * 6),
    "tanh, Xavier": (nn.Tanh, lambda d: 1 / math.sqrt(d), [0.627, 0.485, 0.407, 0.357, 0.321, 0.294]),
    "relu, Xavier": (nn.ReLU, lambda d: 1 / math.sqrt(d), [0.581, 0.413, 0.293, 0.205, 0.146, 0.103]),
    "relu, He": (nn.ReLU, lambda d: math.sqrt(2 / d), [math.sqrt(1 - 1 / math.pi)] * 6),  # 0.826 (EXACT)
}


@pytest.mark.parametrize("pair", list(LECTURE_STDS))
def test_layer_health_reproduces_the_lectures_4096_unit_experiment(pair, randn_4096):
    activation, scale, stds = LECTURE_STDS[pair]
    net = _lecture_net(activation, scale, randn_4096)
    rows = S.layer_health(net, torch.randn(16, 4096, generator=torch.Generator().manual_seed(1)))
    assert [r["layer"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for row, want in zip(rows, stds, strict=True):
        assert row["act_std"] == pytest.approx(want, rel=0.10), (pair, row["layer"])
    if pair == "tanh, N(0,1)":  # "~97% of units |h| > 0.99"
        assert all(r["saturated"] == pytest.approx(0.97, abs=0.02) for r in rows)
        assert S.judge_layers(rows, 1.0)[0] == "fail"
    if pair == "relu, He":  # mean 1/sqrt(pi) = 0.564, 50% zeros
        assert all(r["act_mean"] == pytest.approx(1 / math.sqrt(math.pi), rel=0.10) for r in rows)
        assert all(r["zero_frac"] == pytest.approx(0.5, abs=0.02) for r in rows)
    if pair == "tanh, 0.01 randn":
        status, _, advice = S.judge_layers(rows, 1.0)
        assert status == "warn" and "collapse" in advice  # 0.046 / 0.491 = 0.094: below 0.2, above 0.01


def test_layer_health_selu_lecun_stays_normalised_over_30_layers():
    torch.manual_seed(0)
    net = _lecture_net(nn.SELU, lambda d: 1 / math.sqrt(d), [torch.randn(512, 512) for _ in range(30)])
    rows = S.layer_health(net, torch.randn(256, 512))
    assert all(abs(r["act_mean"]) < 0.1 and r["act_std"] == pytest.approx(1.0, rel=0.10) for r in rows)


# ------------------------------------------------------------------------ gradient check


class _WrongTanh(torch.autograd.Function):
    """tanh whose backward is 10% off: the kind of bug a custom layer has."""

    @staticmethod
    def forward(ctx, z):
        y = torch.tanh(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):
        (y,) = ctx.saved_tensors
        return g * (1 - y * y) * 1.1


class _WrongTanhModule(nn.Module):
    def forward(self, z):
        return _WrongTanh.apply(z)


def _tiny(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), act, nn.Linear(8, 3))


def test_gradient_check_finds_a_wrong_backward_and_passes_a_right_one():
    x, y, loss_fn = torch.randn(16, 5), torch.randint(0, 3, (16,)), nn.CrossEntropyLoss()
    good = S.gradient_check(_tiny(nn.Tanh()), x, y, loss_fn, "classification")
    bad = S.gradient_check(_tiny(_WrongTanhModule()), x, y, loss_fn, "classification")
    assert max(r["max_rel_error"] for r in good) < S.GRADCHECK_WARN
    assert max(r["max_rel_error"] for r in bad) > S.GRADCHECK_FAIL
    assert {r["param"] for r in bad if r["max_rel_error"] > S.GRADCHECK_FAIL} == {"0.weight", "0.bias"}


def test_gradient_check_skips_relu_kinks_instead_of_failing():
    """Zero first-layer weights put every ReLU pre-activation exactly at its kink; the check must not fail."""
    model = _tiny(nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.zero_()
    rows = S.gradient_check(model, torch.randn(16, 5), torch.randint(0, 3, (16,)), nn.CrossEntropyLoss(),
                            "classification")
    assert sum(r["skipped"] for r in rows) > 0
    assert all(r["max_rel_error"] is None or r["max_rel_error"] < S.GRADCHECK_WARN for r in rows)


def test_gradient_check_leaves_the_model_untouched():
    model = _tiny(nn.Tanh())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    S.gradient_check(model, torch.randn(16, 5), torch.randint(0, 3, (16,)), nn.CrossEntropyLoss(), "classification")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------ the classic bugs, each by its check


def test_init_loss_is_log_c_for_zero_logits():
    res = _sanity(DIGITS, ["model.init='zeros'"], only="init_loss")
    c = _check(res, "init_loss")
    assert c.details["loss"] == pytest.approx(math.log(10), abs=1e-6)  # lecture 003: 2.302585
    assert c.details["expected"] == pytest.approx(2.302585, abs=1e-6)
    assert c.details["loss_regularised"] == pytest.approx(c.details["loss"])  # zero weights: no penalty


def test_regression_init_loss_is_the_target_variance_plus_the_outputs_variance():
    """MSE on a standardised target at init = 1 + var(outputs): the lectures' init (Xavier output over He ReLUs)
    gives outputs of std ~1.2, which must pass; N(0, 1) weights (outputs of std ~10) fail."""
    diabetes = ROOT / "recipes" / "diabetes_regression.toml"
    c = _check(_sanity(diabetes, ["model.activation='relu'", "model.hidden=[128, 128]"], only="init_loss"),
               "init_loss")
    assert c.status == "pass" and 1.5 < c.details["loss"] < 1 + S.init_loss.INIT_LOSS_WARN_REG
    c = _check(_sanity(diabetes, ["model.init='normal'"], only="init_loss"), "init_loss")
    assert c.status == "fail" and c.details["excess"] > S.init_loss.INIT_LOSS_FAIL_REG


def test_lr_far_too_high_warns_in_overfit_small_and_names_the_lr_that_passes():
    """The setup learns at another LR: a warning with that LR (lr-find's job), not a failure of the setup."""
    c = _check(_sanity(DIGITS, ["train.lr=10.0"], only="overfit_small"), "overfit_small")
    assert c.status == "warn"
    assert "too high" in c.advice and "passes at lr" in c.advice and "train.lr = " in c.advice


def test_lr_far_too_low_warns_in_overfit_small_and_names_it():
    res = _sanity(DIGITS, ["train.lr=1e-5"], only="update_ratio,overfit_small")
    c = _check(res, "overfit_small")
    assert c.status == "warn"
    assert "too low" in c.advice and "passes at lr" in c.advice
    assert _check(res, "update_ratio").status == "warn"


def test_a_model_too_small_to_memorise_the_sample_is_a_warning_not_a_failure():
    """A 10-4-1 regression MLP (49 parameters) cannot memorise 256 noisy diabetes targets, but fits 32."""
    res = _sanity(ROOT / "recipes/diabetes_regression.toml", ["model.hidden=[4]"], only="overfit_small")
    c = _check(res, "overfit_small")
    assert c.status == "warn" and "too small to memorise" in c.advice and "49 trainable parameters" in c.advice
    assert c.details["capacity"]["examples"] == 32 and c.details["capacity"]["status"] == "pass"


@pytest.mark.parametrize("sets, words", [
    (["model.init='zeros'"], ["zero init", "symmetry"]),
    (["model.init='constant'"], ["constant init", "symmetry"]),
    ([DEEP, "model.activation='tanh'", "model.init='normal'"], ["saturated", "scale down the init"]),
    ([DEEP, "model.activation='tanh'", "model.init='small'"], ["collapse", "init is too small"]),
    ([DEEP, "model.activation='sigmoid'"], ["vanishing gradients", "sigmoid"]),
], ids=["zero init", "constant init", "deep tanh N(0,1)", "deep tanh 0.01", "deep sigmoid"])
def test_init_bugs_fail_layer_health_with_the_cause(sets, words):
    res = _sanity(DIGITS, sets, only="layer_health,overfit_small", overfit_steps=600)
    c = _check(res, "layer_health")
    assert c.status == "fail"
    for w in words:
        assert w in c.advice
    # overfit_small then points at the cause instead of blaming the LR
    of = _check(res, "overfit_small")
    assert of.status == "pass" or c.advice in of.advice


def _csv(path, *, scale=1.0, random_labels=False, n=300):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    x = (rng.normal(size=(n, 4)) + y[:, None] * 2.0) * scale
    if random_labels:
        y = rng.permutation(y)
    df = pd.DataFrame(x, columns=list("abcd"))
    df["label"] = np.array(["cat", "dog", "eel"])[y]
    df.to_csv(path, index=False)
    return [f"data.source={str(path)!r}", "data.target='label'"]


def test_unnormalised_inputs_are_caught_and_named(tmp_path):
    sets = _csv(tmp_path / "big.csv", scale=1000.0) + ["data.preprocess='none'"]
    res = _sanity(CSV_RECIPE, sets, only="init_loss,layer_health")
    for name in ("init_loss", "layer_health"):
        c = _check(res, name)
        assert c.status == "fail" and "not normalised" in c.advice and "standardize" in c.advice


def test_labels_unrelated_to_the_inputs_fail_input_independent(tmp_path):
    res = _sanity(CSV_RECIPE, _csv(tmp_path / "shuffled.csv", random_labels=True), only="input_independent")
    c = _check(res, "input_independent")
    assert c.status == "fail" and "unrelated to the inputs" in c.advice
    healthy = _sanity(CSV_RECIPE, _csv(tmp_path / "ok.csv"), only="input_independent")
    assert _check(healthy, "input_independent").status == "pass"


# ------------------------------------------------------------------------ result, options, CLI


def test_parse_only_keeps_the_standard_order_and_rejects_unknown_names():
    assert S.parse_only("overfit_small, init_loss") == ["init_loss", "overfit_small"]
    assert S.parse_only(None) == list(S.CHECKS)
    with pytest.raises(S.UserError, match="unknown check"):
        S.parse_only("init_loss,overfitt")


def test_help_states_the_thresholds_the_code_uses():
    for value in (S.INIT_LOSS_WARN, S.INIT_LOSS_FAIL, S.GRADCHECK_WARN, S.GRADCHECK_FAIL, S.COLLAPSE_WARN,
                  S.COLLAPSE_FAIL, S.EXPLODE_WARN, S.EXPLODE_FAIL, S.GRAD_RATIO_WARN, S.GRAD_RATIO_FAIL,
                  S.UPDATE_RATIO_LOW, S.UPDATE_RATIO_HIGH, S.UPDATE_RATIO_FAIL, S.OVERFIT_STEPS, S.INDEP_STEPS,
                  S.LAYER_BATCH, S.GRADCHECK_BATCH, S.GRADCHECK_PROBES, S.OVERFIT_BATCHES, S.OVERFIT_MAX_EXAMPLES):
        short = re.sub(r"e([+-])0*(\d)", lambda m: "e" + m[1].replace("+", "") + m[2], f"{value:.0e}")  # 1e-2
        assert f"{value:g}" in SANITY_HELP or short in SANITY_HELP, value
    for frac in (S.SATURATED_WARN, S.SATURATED_FAIL, S.DEAD_WARN, S.DEAD_FAIL, S.INDEP_MIN_GAIN, S.OVERFIT_PASS_ACC,
                 S.OVERFIT_WARN_ACC, S.OVERFIT_REG_PASS, S.OVERFIT_REG_WARN):
        assert f"{frac:.0%}" in SANITY_HELP, frac


def _invoke(*args):
    return runner.invoke(app, ["sanity", *[str(a) for a in args]])


def test_cli_json_is_the_only_stdout_and_a_failure_exits_1(tmp_path):
    res = _invoke(DIGITS, "--set", "model.init=zeros", "--only", "layer_health", "--json", "--runs-dir", tmp_path)
    assert res.exit_code == 1, res.output
    out = json.loads(res.stdout)
    assert out["status"] == "fail" and [c["check"] for c in out["checks"]] == ["layer_health"]
    assert "sanity: layer_health" in res.stderr  # progress went to stderr


def test_cli_warnings_pass_unless_strict(tmp_path):
    args = (DIGITS, "--set", "train.lr=1e-7", "--only", "update_ratio", "--runs-dir", tmp_path, "-q")
    lenient = _invoke(*args, "--json")
    assert lenient.exit_code == 0, lenient.output
    (check,) = json.loads(lenient.stdout)["checks"]
    assert check["status"] == "warn" and "too low" in check["advice"]
    strict = _invoke(*args, "--strict")
    assert strict.exit_code == 1 and "PASS with warnings" in strict.stdout


@pytest.mark.parametrize("args, message", [
    (("--only", "nope"), "unknown check"),
    (("--set", "train.lr=-1"), "train.lr"),
    (("--set", "model.activation=relux"), "did you mean 'relu'"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = _invoke(DIGITS, *args, "--runs-dir", tmp_path)
    assert res.exit_code == 2
    assert message in res.stderr and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # nothing written


def test_cli_missing_data_file_is_exit_2(tmp_path):
    res = _invoke(CSV_RECIPE, "--set", f"data.source={str(tmp_path / 'none.csv')!r}", "--runs-dir", tmp_path)
    assert res.exit_code == 2 and "no such file" in res.stderr


def test_run_folder_holds_every_output(tmp_path):
    res = _invoke(DIGITS, "--runs-dir", tmp_path, "-q")
    assert res.exit_code == 0, res.output
    assert "PASS" in res.stdout
    (run,) = tmp_path.iterdir()
    assert run.name.endswith("-digits_mlp-sanity")
    for name in ("sanity.csv", "layers.csv", "overfit.csv", "summary.json", "overfit.png", "layers.png",
                 "batch.png", "batch.csv", "recipe.toml", "env.json"):
        assert (run / name).is_file(), name
    checks = pd.read_csv(run / "sanity.csv")
    assert list(checks["check"]) == list(S.CHECKS) and set(checks["status"]) == {"pass"}
    layers = pd.read_csv(run / "layers.csv")
    assert list(layers["layer"]) == [1, 2, 3] and list(layers["activation"]) == ["ReLU", "ReLU", "output"]
    assert layers["update_ratio"].notna().all() and layers["gradcheck_max_error"].notna().all()
    overfit = pd.read_csv(run / "overfit.csv")
    assert overfit["iteration"].iloc[0] == 0 and overfit["sample_acc"].dropna().iloc[-1] == 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["command"] == "sanity" and summary["status"] == "pass"
    assert summary["figures"] == ["batch.png", "layers.png", "overfit.png"]
    stats = pd.read_csv(run / "batch.csv")  # the first batch after standardisation and mixup: one channel
    assert list(stats.columns) == ["channel", "mean", "std", "min", "max"] and len(stats) == 1


def test_the_first_batch_is_the_one_fit_trains_on():
    """Visualise just before the net: the batch sanity draws is fit's first batch, augmentation included."""
    from dlrecipe import augment as A
    from dlrecipe.data import load_data
    from dlrecipe.sanity.first_batch import feature_stats, first_batch

    r = load(DIGITS, ["data.augment=['jitter']"])
    data = load_data(r, "cpu")
    x, y, y_b, lam = first_batch(r, data)
    idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(r["seed"]))[:64]
    want = A.jitter(data.x_train[idx], torch.Generator().manual_seed(r["seed"] + 1), r["data.jitter"])
    assert torch.equal(y, data.y_train[idx]) and torch.allclose(x, want) and y_b is None and lam == 1.0
    (row,) = feature_stats(x)
    assert row["mean"] == pytest.approx(float(x.double().mean())) and row["max"] == pytest.approx(float(x.max()))


def test_run_sanity_restores_torch_threads():
    before = torch.get_num_threads()
    _sanity(DIGITS, only="init_loss", threads=1)
    assert torch.get_num_threads() == before


# ------------------------------------------------------------------------ every shipped recipe passes


# digits_pretrain: three sigmoid layers at random init do have vanishing gradients; layer-wise pre-training
# (its [pretrain] table, which sanity does not run) is lecture 002's remedy for exactly that
EXPECTED_WARNINGS = {"digits_pretrain": ("layer_health",)}


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((ROOT / "recipes").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_passes(path, tmp_path):
    csv = write_table_csv(tmp_path / "table.csv")
    sets = [a for s in recipe_overrides(path, csv) for a in ("--set", s)]
    res = _invoke(path, *sets, "--json", "--runs-dir", tmp_path / "runs")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    failing = {c["check"]: c["advice"] for c in out["checks"] if c["status"] != "pass"}
    for check in EXPECTED_WARNINGS.get(path.stem, ()):  # a true alarm the recipe exists to answer
        assert out["checks"][[c["check"] for c in out["checks"]].index(check)]["status"] == "warn"
        failing.pop(check)
    assert not failing, failing  # no false alarms: not even a warning
    assert out["seconds"] < 30


def test_layers_csv_has_the_hidden_unit_measures_of_each_activation(tmp_path):
    """Lecture 002's 'good training' measures per hidden layer, from the same batch as the other columns."""
    res = S.run_sanity(load(DIGITS), device="cpu", runs_dir=tmp_path, only="layer_health")
    table = pd.read_csv(res.run_dir / "layers.csv")
    hidden = table[table["activation"] != "output"]
    assert len(hidden) == 2 and hidden["sparsity"].between(0, 1).all()
    assert (hidden["mean_abs_corr"] > 0).all() and table["sparsity"].isna().iloc[-1]  # no activation after the output
