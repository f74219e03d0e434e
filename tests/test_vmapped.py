"""Populations of a python factory's own nn.Module through torch.func.vmap (dlrecipe/search/vmapped.py).

The bar of tests/test_population.py: each member gets the run it gets trained alone with train_in (same seed),
every logged number within 1e-4 relative; a model vmap cannot run trains one at a time, said once, never an error.
"""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from dlrecipe import components as C
from dlrecipe.search.fused import NotFusable
from dlrecipe.search.population import fusable_kind, train_population
from dlrecipe.search.vmapped import VmapNet

from .conftest import small_recipe
from .test_population import DIGITS, alone_and_fused, assert_same_runs, members

PY = {**DIGITS, "model.kind": "python"}


# ----------------------------------------------------------------------------------------------- the factories

def mlp(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 32), nn.ReLU(), nn.Linear(32, 32),
                         nn.Tanh(), nn.Linear(32, num_outputs))


def bn_cnn(input_shape, num_outputs):
    # no bias before the batch norm: its gradient is zero up to rounding noise, which adam turns into steps of
    # lr in random directions, so such a bias (and the running mean with it) drifts differently with any rounding
    return nn.Sequential(nn.Conv2d(input_shape[0], 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 8, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, num_outputs))  # 8x8 in


class Skip(nn.Module):
    """Not an nn.Sequential: a custom forward with a skip connection, batch norm and a tied-in second path."""

    def __init__(self, n_in: int, n_out: int, width: int = 24):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.block = nn.Sequential(nn.Linear(width, width, bias=False), nn.BatchNorm1d(width), nn.ReLU())  # see bn_cnn
        self.out = nn.Linear(width, n_out)
        self.scale = nn.Parameter(torch.ones(1))   # ndim 1: not decayed, as components.build_optimizer does
        self.frozen = nn.Linear(width, width)
        self.frozen.requires_grad_(False)           # the factory freezes it: never trained, never decayed

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        h = h + self.scale * self.block(h)          # the skip connection
        return self.out(h + 0.1 * self.frozen(h))


def skip(input_shape, num_outputs):
    return Skip(math.prod(input_shape), num_outputs)


class Branchy(nn.Module):
    """Data-dependent Python control flow: vmap cannot run it."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)

    def forward(self, x):
        out = self.lin(x.flatten(1))
        return out * 2 if out.mean() > 0 else out


class Item(Branchy):
    def forward(self, x):
        out = self.lin(x.flatten(1))
        return out / (1.0 + out.abs().max().item())


class Remembers(Branchy):
    """Custom state: the forward keeps a tensor as a plain attribute."""

    def forward(self, x):
        self.last = x.detach()
        return self.lin(x.flatten(1))


class Stale(Branchy):
    """Uses its weight through a reference taken at construction: functional_call cannot swap it in."""

    def __init__(self, n_in, n_out):
        super().__init__(n_in, n_out)
        self.held = [self.lin.weight]

    def forward(self, x):
        return x.flatten(1) @ self.held[0].t() + self.lin.bias


def stale(input_shape, num_outputs):
    return Stale(math.prod(input_shape), num_outputs)


class Uncopyable(Branchy):
    def __deepcopy__(self, memo):
        raise TypeError("cannot copy a Uncopyable")


def uncopyable(input_shape, num_outputs):
    return Uncopyable(math.prod(input_shape), num_outputs)


def branchy(input_shape, num_outputs):
    return Branchy(math.prod(input_shape), num_outputs)


def item(input_shape, num_outputs):
    return Item(math.prod(input_shape), num_outputs)


def remembers(input_shape, num_outputs):
    return Remembers(math.prod(input_shape), num_outputs)


def dropout_linear(input_shape, num_outputs):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_outputs), nn.Dropout(0.5))


# ----------------------------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
@pytest.mark.parametrize("factory", ["mlp", "bn_cnn", "skip"])
def test_each_member_gets_the_run_it_gets_alone(tmp_path, factory, optimizer, one_thread):
    """Per-member LR, weight decay, momentum / betas, L1 and clipping, through one vmapped forward."""
    lr = 0.1 if optimizer == "adam" else 1.0
    per = [{"train.lr": 0.01 * lr},
           {"train.lr": 0.05 * lr, "train.weight_decay": 1e-3, "train.momentum": 0.5, "train.beta1": 0.8},
           {"train.lr": 0.003 * lr, "train.weight_decay": 1e-4, "train.l1": 1e-4, "train.grad_clip": 0.5,
            "train.beta2": 0.99}]
    base = {**PY, "model.factory": f"tests.test_vmapped:{factory}", "train.optimizer": optimizer}
    if factory == "bn_cnn":
        base["data.shape"] = [1, 8, 8]
    recipes, data = members(base, per)
    alone, fused = alone_and_fused(tmp_path, recipes, data)
    assert all(f.summary["population"] == 3 for f in fused)
    assert_same_runs(alone, fused)


def test_a_diverging_member_is_recorded_and_the_others_go_on(tmp_path, one_thread):
    per = [{"train.lr": 0.05}, {"train.lr": 1e8}, {"train.lr": 0.02, "train.patience": 1}]
    # (not LR 0.1: there a 1e-6 change of the LR alone moves epoch 4's val_loss by 7e-5 relative, measured)
    recipes, data = members({**PY, "model.factory": "tests.test_vmapped:skip", "train.momentum": 0.9,
                             "train.epochs": 4}, per)
    alone, fused = alone_and_fused(tmp_path, recipes, data)
    assert fused[1].summary["status"] == "diverged" and "NaN/Inf" in fused[1].summary["reason"]
    assert len(fused[1].history) == 1 and len(fused[0].history) == 4
    assert_same_runs(alone, fused)


def test_weight_decay_goes_where_build_optimizer_puts_it_and_states_load_into_the_model():
    torch.manual_seed(0)
    models = [skip((10,), 3) for _ in range(2)]
    net = VmapNet(models, torch.randn(4, 10))
    opt = C.build_optimizer(models[0], {"optimizer": "sgd", "lr": 0.1, "weight_decay": 1e-3})
    names = {id(p): n for n, p in models[0].named_parameters()}
    decayed = {names[id(p)] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert net.decay == decayed == {"inp.weight", "block.0.weight", "out.weight"}
    assert not net.params["frozen.weight"].requires_grad and net.params["inp.weight"].shape == (2, 24, 10)
    with torch.no_grad():
        net.params["out.bias"][1] += 1.0
    fresh = skip((10,), 3)
    fresh.load_state_dict(net.member_state(1))
    x = torch.randn(5, 10)
    torch.testing.assert_close(net.eval()(x)[1], fresh.eval()(x))


def test_batch_norm_statistics_move_per_member(one_thread):
    """Each member's running statistics are the ones its own BatchNorm computes from its own activations."""
    torch.manual_seed(0)
    models = [skip((6,), 2) for _ in range(2)]
    with torch.no_grad():
        models[1].inp.weight.mul_(3.0)
    net = VmapNet(models, torch.randn(4, 6))
    x = torch.randn(16, 6)
    net.train()(x)
    for k, m in enumerate(models):
        m.train()(x)
        torch.testing.assert_close(net.buffers["block.1.running_var"][k], m.block[1].running_var)
        assert int(net.buffers["block.1.num_batches_tracked"][k]) == 1
    assert not torch.allclose(net.buffers["block.1.running_var"][0], net.buffers["block.1.running_var"][1])


def test_dropout_draws_each_members_own_masks():
    """randomness = 'different': identical members get different masks (not the masks alone: the same rate)."""
    torch.manual_seed(0)
    models = [dropout_linear((20,), 500) for _ in range(4)]
    net = VmapNet(models, torch.randn(4, 20))
    assert net.randomness == "different"
    x = torch.randn(64, 20)
    kept = net.train()(x) != 0                                   # [K, B, 500]: where the mask kept a unit
    assert kept.float().mean((1, 2)).tolist() == pytest.approx([0.5] * 4, abs=0.01)
    assert all(0.4 < float((kept[0] == kept[k]).float().mean()) < 0.6 for k in (1, 2, 3))  # independent masks
    torch.testing.assert_close(net.eval()(x)[2], models[2].eval()(x))  # eval: no dropout, the model's outputs


@pytest.mark.parametrize("factory, words", [("branchy", "data-dependent control flow"), ("item", ".item()"),
                                            ("remembers", "module attributes"),
                                            ("stale", "other parameters get gradients"),
                                            ("uncopyable", "the vmap probe failed (TypeError: cannot copy")])
def test_models_vmap_cannot_run_are_refused_with_the_reason(factory, words):
    torch.manual_seed(0)
    models = [globals()[factory]((6,), 2) for _ in range(2)]
    with pytest.raises(NotFusable, match="model.kind = 'python'") as e:
        VmapNet(models, torch.randn(4, 6))
    assert words in str(e.value) and "\n" not in str(e.value)


def test_an_unvmappable_factory_is_refused_before_anything_is_written(tmp_path):
    recipes, data = members({**PY, "model.factory": "tests.test_vmapped:branchy"}, [{"train.lr": 0.1}] * 2)
    folders = [tmp_path / "a", tmp_path / "b"]
    for f in folders:
        f.mkdir()
    with pytest.raises(NotFusable):
        train_population(folders, recipes, data)
    assert not any(any(f.iterdir()) for f in folders)


# ----------------------------------------------------------------------------------------------- in a search

def test_fusable_kind_lets_python_factories_try_vmap():
    assert fusable_kind(small_recipe(**{"model.kind": "python", "model.factory": "tests.test_vmapped:mlp"})) is None
    assert "train.freeze" in fusable_kind(small_recipe(**{"model.kind": "python", "train.freeze": ["0"],
                                                          "model.factory": "tests.test_vmapped:mlp"}))


def test_a_search_with_an_unvmappable_factory_trains_one_at_a_time_and_says_so_once(tmp_path, one_thread):
    from dlrecipe.search import search

    recipe = small_recipe(**{"model.kind": "python", "model.factory": "tests.test_vmapped:item",
                             "search.trials": 5, "search.coarse_epochs": 1, "search.fine_trials": 1,
                             "search.fine_epochs": 1, "search.population": 2})
    result = search(recipe, runs_dir=tmp_path)
    assert result.summary["status"] == "completed" and result.summary["trials"]["complete"] == 6
    notes = [w for w in result.summary["warnings"] if w.startswith("population: model.kind = 'python'")]
    assert len(notes) == 1 and ".item()" in notes[0] and "one at a time" in notes[0]
    populations = {json.loads(p.read_text()).get("population", 1) for p in result.run_dir.glob("trials/*/summary.json")}
    assert populations == {1}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_vmapped_population_on_cuda_matches_training_alone_on_cpu(tmp_path):
    from dlrecipe.data import load_data
    from dlrecipe.recipe import validate
    from dlrecipe.search.workers import _without_test
    from dlrecipe.train import train_in

    per = [{"train.lr": 0.05}, {"train.lr": 0.2, "train.weight_decay": 1e-3}]
    recipes = [validate({**PY, "model.factory": "tests.test_vmapped:skip", "train.momentum": 0.9, **m}) for m in per]
    cpu = _without_test(load_data(recipes[0], "cpu"))
    gpu = _without_test(load_data(recipes[0], "cuda"))
    alone = []
    for i, r in enumerate(recipes):
        (tmp_path / f"a{i}").mkdir()
        alone.append(train_in(tmp_path / f"a{i}", r, cpu, seed=0))
    folders = [tmp_path / f"g{i}" for i in range(len(recipes))]
    for f in folders:
        f.mkdir()
    fused = train_population(folders, recipes, gpu)
    for a, f in zip(alone, fused):
        assert f.summary["population"] == 2
        assert [r["val_loss"] for r in f.history] == pytest.approx([r["val_loss"] for r in a.history], rel=1e-3)
