"""Tests for dlrecipe.models: shapes, layer order, batch norm and dropout semantics against the lectures'
formulas (../shared/LECTURES.md), the output prior against counted class frequencies, the python factory kind.
"""
import math
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlrecipe import components as C
from dlrecipe import models
from dlrecipe.data import load_data
from dlrecipe.errors import RecipeError
from dlrecipe.recipe import validate


def recipe_of(source: str = "iris", **keys):
    """A validated recipe: `keys` are dotted recipe keys with '__' for '.' (model__hidden=[8])."""
    return validate({"data.source": source, **{k.replace("__", "."): v for k, v in keys.items()}})


def build(source: str = "iris", **keys):
    recipe = recipe_of(source, **keys)
    data = load_data(recipe)
    return models.build_model(recipe, data), data


# ---------------------------------------------------------------------------------------------------------------
# Shapes


def test_mlp_on_features_and_on_images():
    model, data = build("iris", model__hidden=[16, 8])
    assert data.input_shape == (4,)
    assert model(data.x_val).shape == (len(data.x_val), 3)
    model, data = build("digits", model__hidden=[32])
    assert data.input_shape == (1, 8, 8)  # an MLP flattens the image: 64 inputs
    assert models.weight_layers(model)[0].weight.shape == (32, 64)
    assert model(data.x_val).shape == (len(data.x_val), 10)


@pytest.mark.parametrize("shape, conv", [(None, nn.Conv2d), ([1, 64], nn.Conv1d)])
def test_cnn_on_2d_and_1d_inputs(shape, conv):
    keys = {"model__kind": "cnn", "model__conv": [4, 6], "model__hidden": [12]}
    if shape:
        keys["data__shape"] = shape
    model, data = build("digits", **keys)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    assert [type(m) for m in convs] == [conv, conv]
    assert [c.out_channels for c in convs] == [4, 6] and convs[0].in_channels == 1
    # 'same' padding, then two max pools of 2: 8x8 -> 2x2 (6 channels: 24) or 64 -> 16 (6 channels: 96)
    head = [m for m in model if isinstance(m, nn.Linear)]
    assert head[0].in_features == (6 * 2 * 2 if conv is nn.Conv2d else 6 * 16)
    assert model(data.x_val).shape == (len(data.x_val), 10)


def test_cnn_needs_channel_shaped_inputs():
    recipe = recipe_of("iris", model__kind="cnn")
    with pytest.raises(RecipeError, match="data.shape"):
        models.build_model(recipe, load_data(recipe))


# ---------------------------------------------------------------------------------------------------------------
# Batch norm (lectures 002, 004): on pre-activations, no linear bias, momentum 0.01, biased batch variance.


def test_batch_norm_sits_between_linear_and_activation_and_replaces_the_bias():
    model, _ = build("iris", model__hidden=[16, 8], model__norm="batch", model__activation="tanh")
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Linear, nn.BatchNorm1d, nn.Tanh, nn.Linear]
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [lin.bias is None for lin in linears] == [True, True, False]  # BN's beta is the hidden bias
    cnn, _ = build("digits", model__kind="cnn", model__conv=[4], model__hidden=[8], model__norm="batch")
    kinds = [type(m) for m in cnn]
    assert kinds[:4] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert cnn[0].bias is None


def test_batch_norm_running_mean_uses_the_lectures_momentum():
    model, _ = build("iris", model__hidden=[5], model__norm="batch")
    bn = next(m for m in model if isinstance(m, nn.BatchNorm1d))
    assert bn.momentum == 0.01
    bn.train()
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(5)
    for _ in range(3):
        x = torch.randn(32, 5, generator=g) * 3 + 2
        y = bn(x)
        mu_b = x.mean(0)
        mu = 0.99 * mu + 0.01 * mu_b  # lecture 004: mu <- 0.99 mu + 0.01 mu_B
        torch.testing.assert_close(bn.running_mean, mu)
        # training: normalise with the batch's own mean and BIASED variance (gamma = 1, beta = 0 at the start)
        var_b = ((x - mu_b) ** 2).mean(0)
        torch.testing.assert_close(y, (x - mu_b) / torch.sqrt(var_b + bn.eps))
    bn.eval()  # test time: the running statistics, not the batch's
    x = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(bn(x), (x - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps))


def test_bn_keys_reach_the_layers():
    model, _ = build("iris", model__hidden=[5], model__norm="batch", model__bn_momentum=0.1, model__bn_eps=1e-3)
    bn = next(m for m in model if isinstance(m, nn.BatchNorm1d))
    assert (bn.momentum, bn.eps) == (0.1, 1e-3)


# ---------------------------------------------------------------------------------------------------------------
# Dropout (lecture 003): p is the DROP probability, inverted scaling so test time is unchanged.


def test_dropout_after_each_hidden_activation_not_after_the_output():
    model, _ = build("iris", model__hidden=[16, 8], model__dropout=0.3)
    kinds = [type(m) for m in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert all(m.p == 0.3 for m in model if isinstance(m, nn.Dropout))


def test_dropout_drop_probability_and_inverted_scaling():
    model, _ = build("iris", model__hidden=[16], model__dropout=0.3)
    drop = next(m for m in model if isinstance(m, nn.Dropout)).train()
    n = 200_000
    torch.manual_seed(0)
    out = drop(torch.ones(n))
    dropped = (out == 0).double().mean().item()
    assert dropped == pytest.approx(0.3, abs=5 * math.sqrt(0.3 * 0.7 / n))  # 0.3 = DROP probability
    assert torch.all((out == 0) | torch.isclose(out, torch.tensor(1 / 0.7)))  # kept units scaled by 1/keep
    # E[out] = 1: mean of n iid draws of (0 or 1/0.7) has sd sqrt(0.3/0.7/n)
    assert out.mean().item() == pytest.approx(1.0, abs=5 * math.sqrt(0.3 / 0.7 / n))


def test_dropout_leaves_eval_outputs_unchanged():
    with_dropout, data = build("iris", model__hidden=[16, 8], model__dropout=0.5)
    without, _ = build("iris", model__hidden=[16, 8], model__dropout=0.0)
    with_dropout.eval(), without.eval()
    torch.testing.assert_close(with_dropout(data.x_val), without(data.x_val), rtol=0, atol=0)
    with_dropout.train()
    assert not torch.equal(with_dropout(data.x_val), without(data.x_val))


# ---------------------------------------------------------------------------------------------------------------
# DropConnect (lectures 003, 004): drop weights, not activations.


def test_dropconnect_layers_are_hidden_only():
    model, _ = build("iris", model__hidden=[16, 8], model__dropconnect=0.4)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    assert [type(m) for m in linears] == [models.DropConnectLinear, models.DropConnectLinear, nn.Linear]
    assert all(m.p == 0.4 for m in linears[:2])


def test_dropconnect_eval_is_plain_linear_and_train_drops_weights():
    torch.manual_seed(0)
    layer = models.DropConnectLinear(200, 500, p=0.4)
    with torch.no_grad():
        layer.bias.uniform_(-1, 1)
    eye = torch.eye(200)  # row i of the output is column i of the effective weight, plus the bias
    layer.eval()
    torch.testing.assert_close(layer(eye), F.linear(eye, layer.weight, layer.bias), rtol=0, atol=0)
    layer.train()
    effective = (layer(eye) - layer.bias).T.detach()  # (500, 200): the weights used in this forward pass
    kept = effective != 0
    n = kept.numel()
    assert 1 - kept.double().mean().item() == pytest.approx(0.4, abs=5 * math.sqrt(0.4 * 0.6 / n))
    torch.testing.assert_close(effective[kept], layer.weight.detach()[kept] / 0.6)  # inverted scaling
    again = (layer(eye) - layer.bias).T.detach()
    assert not torch.equal(again != 0, kept)  # a new mask every forward pass


# ---------------------------------------------------------------------------------------------------------------
# Output bias


def test_output_bias_prior_is_log_class_frequency():
    model, data = build("wine", model__output_bias="prior")  # wine: 59 / 71 / 48, not balanced
    counts = torch.bincount(data.y_train, minlength=3).double()
    assert len(set(counts.tolist())) == 3
    out = models.weight_layers(model)[-1]
    torch.testing.assert_close(out.bias.double(), torch.log(counts / counts.sum()), rtol=0, atol=1e-6)
    # softmax of the bias alone gives back the training class frequencies
    torch.testing.assert_close(out.bias.double().softmax(0), counts / counts.sum(), rtol=0, atol=1e-6)
    hidden_biases = [m.bias for m in models.weight_layers(model)[:-1]]
    assert all(torch.count_nonzero(b) == 0 for b in hidden_biases)


def test_output_bias_zero_is_zero():
    model, _ = build("wine", model__output_bias="zero")
    assert torch.count_nonzero(models.weight_layers(model)[-1].bias) == 0


# ---------------------------------------------------------------------------------------------------------------
# No layer keeps PyTorch's default init.

ARCHITECTURES = {
    "mlp": ("iris", {"model__hidden": [16, 8]}),
    "mlp_batch_norm": ("iris", {"model__hidden": [16, 8], "model__norm": "batch"}),
    "mlp_maxout": ("iris", {"model__hidden": [16, 8], "model__activation": "maxout"}),
    "mlp_dropconnect": ("iris", {"model__hidden": [16, 8], "model__dropconnect": 0.5}),
    "cnn_2d": ("digits", {"model__kind": "cnn", "model__conv": [4, 6], "model__hidden": [12]}),
    "cnn_1d": ("digits", {"model__kind": "cnn", "model__conv": [4], "model__hidden": [12], "data__shape": [1, 64]}),
}


def weights_and_biases(model: nn.Module):
    weights, biases = [], []
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            weights.append(m.weight)
            if m.bias is not None:
                biases.append(m.bias)
    return weights, biases


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_weight_is_initialised_by_the_recipe(arch):
    source, keys = ARCHITECTURES[arch]
    model, _ = build(source, model__init="zeros", **keys)
    weights, biases = weights_and_biases(model)
    assert len(weights) >= 2
    assert all(torch.count_nonzero(w) == 0 for w in weights)
    assert all(torch.count_nonzero(b) == 0 for b in biases)
    model, _ = build(source, model__init="constant", model__init_value=0.37, **keys)
    weights, biases = weights_and_biases(model)
    assert all(torch.all(w == torch.tensor(0.37)) for w in weights)
    assert all(torch.count_nonzero(b) == 0 for b in biases)


def test_same_seed_same_weights_other_seed_other_weights():
    a, _ = build("iris", seed=3)
    b, _ = build("iris", seed=3)
    c, _ = build("iris", seed=4)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(models.weight_layers(a)[0].weight, models.weight_layers(c)[0].weight)


# ---------------------------------------------------------------------------------------------------------------
# kind = "python": the user's own nn.Module.


@pytest.fixture
def factory_module(tmp_path, monkeypatch, request):
    """A module on sys.path with factories `make` (records its arguments), `not_a_module` and `raises`."""
    name = f"user_factory_{request.node.name.replace('[', '_').replace(']', '_').replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        CALLS = []

        def make(input_shape, num_outputs, **kwargs):
            CALLS.append((input_shape, num_outputs, kwargs))
            model = nn.Sequential(nn.Flatten(), nn.Linear(input_shape[-1], kwargs.get("width", 5)), nn.ReLU(),
                                  nn.Linear(kwargs.get("width", 5), num_outputs))
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(0.123)  # the user's own init, recognisable
            return model

        def not_a_module(input_shape, num_outputs, **kwargs):
            return "a string"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_factory_gets_shape_outputs_and_its_own_keys(factory_module):
    recipe = recipe_of("iris", model__kind="python", model__factory=f"{factory_module}:make", model__width=7,
                       model__tag="hello")
    data = load_data(recipe)
    model = models.build_model(recipe, data)
    calls = sys.modules[factory_module].CALLS
    assert calls == [((4,), 3, {"width": 7, "tag": "hello"})]  # no schema keys (hidden, activation...) leak in
    assert model(data.x_val).shape == (len(data.x_val), 3)
    # init = "auto" keeps the user's own init
    assert all(torch.all(p == torch.tensor(0.123)) for p in model.parameters())


def test_python_factory_with_a_named_init_is_reinitialised(factory_module):
    recipe = recipe_of("iris", model__kind="python", model__factory=f"{factory_module}:make",
                       model__init="he_normal", model__output_bias="prior")
    data = load_data(recipe)
    model = models.build_model(recipe, data)
    first, last = models.weight_layers(model)
    assert not torch.any(first.weight == torch.tensor(0.123))
    assert torch.count_nonzero(first.bias) == 0
    counts = torch.bincount(data.y_train, minlength=3).double()
    torch.testing.assert_close(last.bias.double(), torch.log(counts / counts.sum()), rtol=0, atol=1e-6)


def test_python_factory_with_auto_init_still_gets_the_prior_bias(factory_module):
    recipe = recipe_of("iris", model__kind="python", model__factory=f"{factory_module}:make",
                       model__output_bias="prior")
    data = load_data(recipe)
    first, last = models.weight_layers(models.build_model(recipe, data))
    assert torch.all(first.weight == torch.tensor(0.123))  # the user's init is kept ...
    counts = torch.bincount(data.y_train, minlength=3).double()
    torch.testing.assert_close(last.bias.double(), torch.log(counts / counts.sum()), rtol=0, atol=1e-6)  # the prior set


@pytest.mark.parametrize("factory, message", [
    ("no_such_module_dlrecipe_test:make", "cannot be imported"),
    ("{mod}:no_such_function", "cannot be imported"),
    ("{mod}:not_a_module", "not a torch.nn.Module"),
])
def test_bad_python_factory_is_a_recipe_error(factory_module, factory, message):
    recipe = recipe_of("iris", model__kind="python", model__factory=factory.format(mod=factory_module))
    with pytest.raises(RecipeError, match=message) as err:
        models.build_model(recipe, load_data(recipe))
    assert "model.factory" in str(err.value)


def test_python_factory_without_colon_is_refused_at_validation():
    with pytest.raises(RecipeError, match="package.module:function"):
        recipe_of("iris", model__kind="python", model__factory="just_a_module")


# ---------------------------------------------------------------------------------------------------------------
# The model factory uses the component registry for activations.


@pytest.mark.parametrize("activation", sorted(set(C.ACTIVATIONS) - {"maxout"}))
def test_hidden_activation_is_the_recipe_s(activation):
    model, _ = build("iris", model__hidden=[6], model__activation=activation)
    expected = type(C.ACTIVATIONS[activation].build({}))
    assert [type(m) for m in model][2] is expected


def test_a_python_model_with_3d_convolutions_gets_the_recipe_init():
    """Conv3d counts as a weight layer (fan_in = in_channels x kernel volume), as Conv1d and Conv2d do."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv3d(4, 256, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(256, 3))
    cfg = dict(recipe_of("iris", model__init="he_normal").section("model"))
    models.initialise(model, cfg)
    conv = model[0]
    assert models.weight_layers(model) == [conv, model[3]]
    expected = math.sqrt(2 / (4 * 3 ** 3))  # he_normal: N(0, 2 / fan_in)
    assert float(conv.weight.detach().std()) == pytest.approx(expected, rel=0.03)
    assert torch.count_nonzero(conv.bias) == 0
