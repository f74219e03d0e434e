"""dlrecipe lr-find: curve verdicts on hand-made losses, NaN-safe rules, the range test's restore, reproducibility,
an early-diverging model, and the acceptance test (the recommended LR trains at least as well in 3 epochs as the
best of the lectures' four LRs, on digits and MNIST-1D)."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from dlrecipe import lr_find as L
from dlrecipe.augment import config as augment_config
from dlrecipe.cli import app
from dlrecipe.data import load_data
from dlrecipe.loop import fit
from dlrecipe.models import build_model
from dlrecipe.recipe import load

from .conftest import ROOT

DIGITS = ROOT / "recipes/digits_mlp.toml"
MNIST1D = ROOT / "recipes/mnist1d_mlp.toml"
LECTURE_LRS = (1e-1, 1e-2, 1e-3, 1e-4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    recipe = load(DIGITS)
    return recipe, load_data(recipe)


# --- verdicts on hand-made curves -------------------------------------------------------------------------------

def test_smooth_is_a_bias_corrected_ema_and_stops_at_nan():
    s = L.smooth([1.0, 2.0, math.nan, 1.0])
    assert s[0] == 1.0  # bias correction: the first value is the first loss
    assert s[1] == pytest.approx((0.9 * 0.1 * 1.0 + 0.1 * 2.0) / (1 - 0.9 ** 2))
    assert math.isnan(s[2]) and math.isnan(s[3])  # a finite loss after NaN does not revive the curve


def _decay(start=2.3, end=0.3, n=80):
    return [end + (start - end) * math.exp(-i / 15) for i in range(n)]


@pytest.mark.parametrize("losses, verdict, words", [
    (_decay(), "good", "fell"),
    ([2.3 + 0.02 * (-1) ** i for i in range(80)], "flat", "under 20%"),
    (_decay(2.3, 2.0), "flat", "under 20%"),                                    # fell 13%: not significant
    ([2.3, 2.2, 2.1, math.nan], "diverged", "NaN/Inf at iteration 4"),
    ([2.3, 2.1, math.inf, 2.0], "diverged", "NaN/Inf at iteration 3"),
    ([2.3 * 1.1 ** i for i in range(30)], "diverged", "rose to"),               # explodes past 2x its start
    (_decay(2.3, 0.5, 40) + [0.5 + 0.05 * i for i in range(40)], "diverged", "climbed back"),  # falls, then rises
    ([], "flat", "no iterations"),
])
def test_classify_synthetic_curves(losses, verdict, words):
    v = L.classify(losses)
    assert v.verdict == verdict
    assert words in v.reason


def test_classify_thresholds_sit_where_documented():
    # drop exactly around FLAT_FRACTION: 25% is good, 15% is flat
    assert L.classify([2.0] * 5 + [1.5] * 200).verdict == "good"
    assert L.classify([2.0] * 5 + [1.7] * 200).verdict == "flat"
    # a spike to 1.8x the start that recovers is not divergence; 2.5x is
    spike = lambda h: [2.0] + [2.0 * h] * 3 + [1.0] * 100
    assert L.classify(spike(1.8)).verdict == "good"
    assert L.classify(spike(2.5)).verdict == "diverged"


# --- range-test rules -------------------------------------------------------------------------------------------

def _sweep(n=100, lo=1e-7, hi=10.0):
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def test_rules_find_the_steepest_point_and_the_minimum():
    lrs = _sweep()
    # falls fastest at lr = 1e-3 (a tanh step in log10 lr), lowest at lr ~ 0.1, then blows up
    loss = [2.0 - math.tanh(math.log10(x) + 3) + (max(0.0, math.log10(x) + 1) * 5) ** 2 for x in lrs]
    s = L.smooth(loss, beta=0.0)  # no smoothing: exact positions
    assert L.steepest(lrs, s) == pytest.approx(1e-3, rel=0.25)
    assert L.min_over_10(lrs, s) == pytest.approx(1e-2, rel=0.5)
    # flat up to 1e-4, a straight descent in log10 lr down to 1e-1, then up: the valley is its middle, ~3e-3
    loss = [3.0 if x < 1e-4 else 1.0 - math.log10(x) if x < 1e-1 else 2.0 + math.log10(x) * 3 for x in lrs]
    assert L.valley(lrs, loss) == pytest.approx(10 ** -2.5, rel=0.3)


def test_rules_are_nan_safe():
    lrs = _sweep()
    loss = _decay(2.3, 0.4, 60) + [math.nan] * 40
    s = L.smooth(loss)
    for name, rule in L.RULES.items():
        value = rule(lrs, s)
        assert value is not None and math.isfinite(value) and value <= lrs[59], name
        assert rule(lrs, [math.nan] * 100) is None, name  # NaN from the start: no suggestion, no crash
        assert rule([], []) is None, name


# --- recommendation rules on hand-made probe rows ----------------------------------------------------------------

def _row(lr, verdict, final):
    return {"lr": lr, "verdict": verdict, "final_loss": final}


def test_choose_takes_the_good_probe_with_the_lowest_final_loss():
    rows = [_row(0.1, "diverged", 9.0), _row(0.05, "good", 0.4), _row(0.01, "good", 0.3), _row(1e-3, "flat", 2.0)]
    assert L.choose(rows) == (0.01, "ok")
    assert L.halving_bounds(rows) == (0.1, 0.05)  # halve down from the diverged 0.1 while above 0.05
    assert L.search_range(0.05, rows) == pytest.approx((0.005, 0.1))  # x3 would pass the diverged 0.1: capped
    assert L.search_range(0.01, rows) == pytest.approx((0.001, 0.03))


def test_choose_without_a_good_probe():
    flat = [_row(0.1, "diverged", math.nan), _row(0.01, "flat", 2.0), _row(1e-3, "flat", 2.2)]
    assert L.choose(flat) == (0.01, "all_flat")
    assert L.halving_bounds(flat) == (0.1, 0.01)
    diverged = [_row(0.1, "diverged", math.nan), _row(0.01, "diverged", math.nan)]
    assert L.choose(diverged) == (pytest.approx(1e-3), "all_diverged")
    assert L.halving_bounds(diverged) == (0.01, 0.0)
    assert L.halving_bounds([_row(0.1, "good", 0.1), _row(0.01, "good", 0.5)]) is None  # nothing diverged above


def test_range_test_agreement():
    rules = {"steepest": 0.02, "valley": 0.003, "min_over_10": 0.03}
    assert L.agreement(0.1, rules, lr_at_min=0.3)[0] is True
    assert L.agreement(0.1, rules, lr_at_min=0.05)[0] is False    # past the range test's minimum
    assert L.agreement(1e-5, rules, lr_at_min=0.3)[0] is False    # far below every rule
    assert L.agreement(0.1, dict.fromkeys(rules), lr_at_min=None)[0] is None


# --- the range test restores what it touched ---------------------------------------------------------------------

def _trained_model_and_optimizer(recipe, data):
    """A model and an SGD-momentum optimizer after a few steps, so that momentum buffers exist."""
    model = build_model(recipe, data)
    tr = dict(recipe.section("train"), lr=0.05)
    from dlrecipe.components import build_optimizer

    optimizer = build_optimizer(model, tr)
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(data.x_train[:64]), data.y_train[:64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, optimizer, tr


def _snapshot(model, optimizer):
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in optimizer.state.items()}
    return weights, state, [g["lr"] for g in optimizer.param_groups]


def _assert_same(model, optimizer, snap):
    weights, state, lrs = snap
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in weights.items())
    assert [g["lr"] for g in optimizer.param_groups] == lrs
    for p, s in optimizer.state.items():
        assert all(torch.equal(s[k], v) for k, v in state[id(p)].items())
    assert len(optimizer.state) == len(state)


def test_range_test_restores_weights_and_optimizer_exactly(digits):
    recipe, data = digits
    model, optimizer, tr = _trained_model_and_optimizer(recipe, data)
    model.eval()
    snap = _snapshot(model, optimizer)
    result = L.range_test(model, optimizer, data, tr, seed=0)
    assert len(result.losses) > 20 and result.losses[0] != result.losses[-1]  # it did train
    assert result.lrs[0] == pytest.approx(L.RANGE_START_LR)
    _assert_same(model, optimizer, snap)
    assert not model.training  # mode restored too


def test_range_test_restores_even_when_training_fails(digits):
    recipe, data = digits
    model, optimizer, tr = _trained_model_and_optimizer(recipe, data)
    snap = _snapshot(model, optimizer)
    calls = []

    def boom(module, args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("boom")

    handle = model.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        L.range_test(model, optimizer, data, tr)
    handle.remove()
    _assert_same(model, optimizer, snap)


# --- lr_find end to end -----------------------------------------------------------------------------------------

def test_same_seed_same_recommendation_and_outputs(digits, tmp_path):
    recipe, data = digits
    a = L.lr_find(recipe, device="cpu", runs_dir=tmp_path, data=data)
    b = L.lr_find(recipe, device="cpu", runs_dir=None, data=data)
    assert a.recommended_lr == b.recommended_lr and a.search_range == b.search_range
    assert [c.losses for c in a.curves] == [c.losses for c in b.curves]
    assert a.status == "ok"
    low, high = a.search_range
    assert low < a.recommended_lr < high
    assert a.summary["iterations"] <= L.ITERATION_BUDGET

    run = a.run_dir
    for name in ("probes.csv", "range_test.csv", "summary.json", "lr_find.png", "recipe.toml", "env.json"):
        assert (run / name).is_file(), name
    probes = pd.read_csv(run / "probes.csv")
    assert list(probes.columns) == ["lr", "iteration", "loss", "smoothed_loss"]
    assert set(probes["lr"]) >= set(LECTURE_LRS)
    assert list(pd.read_csv(run / "range_test.csv").columns) == ["lr", "loss", "smoothed_loss"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recommended_lr"] == a.recommended_lr  # what dlrecipe search reads
    assert summary["search_range"] == [low, high]
    assert set(summary["rules"]) == {"probes", "steepest", "valley", "min_over_10"}
    assert {p["verdict"] for p in summary["probes"]} <= set(L.VERDICTS)


def test_seeds_report_the_spread_and_a_seed_column(digits, tmp_path):
    recipe, data = digits
    res = L.lr_find(recipe, device="cpu", runs_dir=tmp_path, data=data, seeds=2, lrs=[0.1, 0.01])
    assert [p["seed"] for p in res.per_seed] == [0, 1]
    assert len(res.range_tests) == 2
    assert all(len(p["seed_verdicts"]) == 2 for p in res.probes)
    assert res.summary["spread"]["ratio"] >= 1
    probes = pd.read_csv(res.run_dir / "probes.csv")
    assert list(probes.columns) == ["lr", "seed", "iteration", "loss", "smoothed_loss"]
    assert set(probes["seed"]) == {0, 1}
    assert "seed" in pd.read_csv(res.run_dir / "range_test.csv").columns


class SqrtGain(nn.Module):
    """An MLP whose output is scaled by sqrt(1 + 20 g), g a learned gain starting at 0: a large step pushes g below
    -1/20 and the square root turns the loss into NaN (a model that diverges early, not only at huge LRs)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, 64), nn.ReLU(), nn.Linear(64, n_out))
        self.gain = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.body(x) * torch.sqrt(1 + 20 * self.gain)


def sqrt_gain_mlp(input_shape, num_outputs, **_):
    return SqrtGain(math.prod(input_shape), num_outputs)


def _three_epochs(recipe, data, lr: float) -> tuple[float, str]:
    """Best validation accuracy of a 3-epoch run at `lr` (the recipe's everything else), and its status."""
    model = build_model(recipe, data)
    d = recipe.section("data")
    result = fit(model, data, dict(recipe.section("train"), lr=lr, epochs=3), seed=recipe["seed"],
                 batch_size=d["batch_size"], augment=d["augment"], aug_cfg=augment_config(d))
    accs = [h["val_acc"] for h in result.history if not math.isnan(h["val_acc"])]
    return max(accs, default=0.0), result.status


def test_a_model_that_diverges_early_still_gets_a_sensible_recommendation():
    recipe = load(DIGITS).with_values({"model.kind": "python", "model.factory": "tests.test_lr_find:sqrt_gain_mlp"})
    data = load_data(recipe)
    res = L.lr_find(recipe, device="cpu", runs_dir=None, data=data)
    nan_probes = [p for p in res.probes if "NaN" in p["reason"]]
    assert nan_probes and all(p["verdict"] == "diverged" for p in nan_probes)
    (test,) = res.range_tests
    assert "NaN" in test.stopped and not math.isfinite(test.losses[-1])  # NaN within the sweep
    assert all(v is None or math.isfinite(v) for v in res.rules.values())
    assert res.status == "ok"
    assert res.recommended_lr < min(p["lr"] for p in nan_probes)
    assert res.search_range[1] <= min(p["lr"] for p in res.probes if p["verdict"] == "diverged")
    acc, status = _three_epochs(recipe, data, res.recommended_lr)
    assert status == "completed" and acc > 0.85


@pytest.mark.slow
@pytest.mark.parametrize("path", [DIGITS, MNIST1D], ids=["digits", "mnist1d"])
def test_acceptance_recommended_lr_matches_the_best_lecture_lr_in_3_epochs(path):
    recipe = load(path)
    data = load_data(recipe)
    res = L.lr_find(recipe, device="cpu", runs_dir=None, data=data)
    lecture = {lr: _three_epochs(recipe, data, lr)[0] for lr in LECTURE_LRS}
    ours, status = _three_epochs(recipe, data, res.recommended_lr)
    assert status == "completed"
    assert ours >= max(lecture.values()), (res.recommended_lr, ours, lecture)


# --- the command ------------------------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_lr_find_prints_the_recommendation_and_applies_it_to_a_copy(tmp_path):
    original = DIGITS.read_text()
    out = tmp_path / "tuned.toml"
    res = runner.invoke(app, ["lr-find", str(DIGITS), "--runs-dir", str(tmp_path / "runs"), "-q", "--lrs",
                              "0.1,0.01", "--apply", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "recommended lr: 0.1" in res.output and "search range" in res.output
    (run,) = (tmp_path / "runs").iterdir()
    assert run.name.endswith("-digits_mlp-lr-find")
    assert DIGITS.read_text() == original
    tuned = load(out)
    assert tuned["train.lr"] == 0.1
    assert {k: v for k, v in tuned.values.items() if k != "train.lr"} == \
        {k: v for k, v in load(DIGITS).values.items() if k != "train.lr"}


def test_apply_writes_a_copy_whose_data_path_still_resolves(tmp_path):
    from .conftest import write_table_csv

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_table_csv(tmp_path / "a" / "table.csv")
    original = tmp_path / "a" / "r.toml"
    original.write_text('[data]\nsource = "table.csv"\ntarget = "label"\n[train]\nlr = 0.5\n')
    before = original.read_text()
    recipe = load(original)
    out = L.apply_lr(recipe, 0.0123456, tmp_path / "b" / "tuned.toml")
    copy = load(out)
    assert copy["train.lr"] == 0.01235 and copy["data.source"] == "../a/table.csv"
    assert load_data(copy).x_train.shape == load_data(recipe).x_train.shape
    assert original.read_text() == before
    with pytest.raises(L.UserError, match="input recipe"):
        L.apply_lr(recipe, 0.1, original)


@pytest.mark.parametrize("args, message", [
    (["--apply", str(DIGITS)], "input recipe"),
    (["--lrs", "0.1,x"], "comma-separated numbers"),
    (["--lrs", "0.1,0"], "positive"),
    (["--start-lr", "1", "--end-lr", "0.5"], "start_lr < end_lr"),
    (["--seeds", "0"], "at least 1"),
    (["--set", "train.lr=-1"], "train.lr"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    res = runner.invoke(app, ["lr-find", str(DIGITS), "--runs-dir", str(tmp_path), *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert not any(tmp_path.iterdir())  # nothing was run
