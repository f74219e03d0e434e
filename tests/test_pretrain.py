"""Layer-wise autoencoder pre-training (lecture 002): the tied-weight autoencoder against a hand-computed forward
and loss, the greedy layer order, and the train / pretrain commands."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from torch import nn

from dlrecipe.data import load_data
from dlrecipe.errors import RecipeError
from dlrecipe.models import build_model
from dlrecipe.pretrain import TiedAutoencoder, hidden_pairs, hidden_state, pretrain, pretrain_layers
from dlrecipe.train import train_in

from .conftest import small_recipe


def _sigm(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def _tiny(binary: bool) -> TiedAutoencoder:
    lin = nn.Linear(2, 1)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0]]))  # W (1 x 2)
        lin.bias.fill_(0.5)                             # b
    ae = TiedAutoencoder(lin, nn.Sigmoid(), binary)
    with torch.no_grad():
        ae.c.copy_(torch.tensor([0.1, -0.3]))
    return ae


def test_tied_autoencoder_binary_matches_the_hand_computed_forward_and_cross_entropy():
    ae = _tiny(binary=True)
    x = torch.tensor([[1.0, 0.0]])
    h = _sigm(0.5 + 1.0 * 1 + (-2.0) * 0)          # h = sigm(b + Wx) = sigm(1.5)
    xh = [_sigm(0.1 + 1.0 * h), _sigm(-0.3 + (-2.0) * h)]  # x_hat = sigm(c + W^T h)
    assert ae.encode(x).item() == pytest.approx(h, rel=1e-6)
    assert ae(x)[0].tolist() == pytest.approx(xh, rel=1e-6)
    ce = -(1 * math.log(xh[0]) + 0 * math.log(1 - xh[0])) - (0 * math.log(xh[1]) + 1 * math.log(1 - xh[1]))
    assert ae.loss(x).item() == pytest.approx(ce, rel=1e-5)


def test_tied_autoencoder_real_valued_uses_a_linear_output_and_half_the_squared_error():
    ae = _tiny(binary=False)
    x = torch.tensor([[0.5, -1.5], [2.0, 1.0]])
    total = 0.0
    for x1, x2 in x.tolist():
        h = _sigm(0.5 + x1 - 2 * x2)
        xh = [0.1 + h, -0.3 - 2 * h]                 # linear output: c + W^T h
        total += 0.5 * ((xh[0] - x1) ** 2 + (xh[1] - x2) ** 2)
    assert ae(x)[1].tolist() == pytest.approx([0.1 + _sigm(0.5 + 2 - 2), -0.3 - 2 * _sigm(0.5)], rel=1e-6)
    assert ae.loss(x).item() == pytest.approx(total / 2, rel=1e-6)  # averaged over the examples


def test_decoder_weight_is_the_encoder_weight():
    ae = _tiny(binary=True)
    ae.loss(torch.tensor([[1.0, 0.0]])).backward()
    assert ae.linear.weight.grad is not None and ae.c.grad is not None
    assert {id(p) for p in ae.parameters()} == {id(ae.linear.weight), id(ae.linear.bias), id(ae.c)}


def test_greedy_pretraining_trains_each_layer_on_the_codes_of_the_one_below():
    r = small_recipe(**{"model.hidden": [6, 4], "model.activation": "sigmoid", "pretrain.epochs": 3})
    data = load_data(r)
    model = build_model(r, data)
    out_before = model[5].weight.clone()
    w0 = model[1].weight.clone()
    rows = pretrain_layers(model, data.x_train, data.x_val, {**r.section("pretrain"), "batch_size": 16},
                           r.section("train"))
    assert [(row["layer"], row["epoch"]) for row in rows] == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert rows[0]["loss"] == "squared"        # standardised iris features are real-valued
    assert rows[3]["loss"] == "cross_entropy"  # sigmoid codes lie in (0, 1)
    assert rows[2]["train_loss"] < rows[0]["train_loss"]
    assert not torch.equal(model[1].weight, w0)
    assert torch.equal(model[5].weight, out_before)  # the output layer is added after pre-training
    assert set(hidden_state(model)) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert len(hidden_pairs(model)) == 2


def test_train_with_a_pretrain_table_writes_the_curves_then_fine_tunes(tmp_path):
    r = small_recipe(**{"model.hidden": [6], "model.activation": "sigmoid", "pretrain.epochs": 2,
                        "train.epochs": 2})
    summary = train_in(tmp_path, r, load_data(r)).summary
    curves = pd.read_csv(tmp_path / "pretrain.csv")
    assert list(curves["layer"]) == [0, 0] and (tmp_path / "pretrain.png").is_file()
    assert summary["pretrain"]["epochs_per_layer"] == 2 and summary["epochs_run"] == 2


def test_pretrain_command_output_feeds_model_pretrained(tmp_path):
    r = small_recipe(**{"model.hidden": [6], "model.activation": "sigmoid", "pretrain.epochs": 1})
    result = pretrain(r, device="cpu", runs_dir=tmp_path)
    assert (result.run_dir / "pretrain.pt").is_file()
    r2 = small_recipe(**{"model.hidden": [6], "model.activation": "sigmoid", "model.pretrained": str(result.run_dir)})
    model = build_model(r2, load_data(r2))
    assert [row["status"] for row in model.pretrained_report] == ["loaded", "new"]  # new output layer


def test_pretraining_needs_a_plain_mlp():
    with pytest.raises(RecipeError, match="pretrain.epochs"):
        small_recipe(**{"pretrain.epochs": 2, "model.norm": "batch"})


@pytest.mark.slow
def test_run_pretrains_once_and_every_step_starts_from_it(tmp_path):
    from dlrecipe.pipeline import run_recipe

    r = small_recipe(**{"model.hidden": [6], "model.activation": "sigmoid", "pretrain.epochs": 1,
                        "search.trials": 2, "search.coarse_epochs": 1, "search.fine_trials": 1,
                        "search.fine_epochs": 1})
    result = run_recipe(r, device="cpu", runs_dir=tmp_path)
    assert (result.run_dir / "0-pretrain" / "pretrain.pt").is_file()
    layers = sorted((result.run_dir / "3-search").rglob("layers.csv"))
    assert layers and all(pd.read_csv(p)["pretrained"].str.startswith("loaded").iloc[0] for p in layers)


def test_pretrain_cli_writes_the_folder_and_refuses_zero_epochs(tmp_path):
    from typer.testing import CliRunner

    from dlrecipe.cli import app

    recipe = tmp_path / "r.toml"
    recipe.write_text('[data]\nsource = "iris"\n[model]\nhidden = [6]\nactivation = "sigmoid"\n[pretrain]\nepochs = 1\n')
    res = CliRunner().invoke(app, ["pretrain", str(recipe), "--runs-dir", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "pre-trained hidden layer 0: squared reconstruction loss" in res.output
    assert len(list((tmp_path / "runs").glob("*-r-pretrain/pretrain.pt"))) == 1
    res = CliRunner().invoke(app, ["pretrain", str(recipe), "--set", "pretrain.epochs=0"])
    assert res.exit_code == 2 and "pretrain.epochs >= 1" in res.output
