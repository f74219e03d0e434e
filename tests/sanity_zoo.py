"""Hand-written modules for `model.kind = "python"`, one per classic bug of a user's own model, and healthy ones.

Each factory is `f(input_shape, num_outputs, **keys)` as dlrecipe calls it (recipe: model.factory =
"tests.sanity_zoo:NAME"). The bugs are the kinds DeepLocalize, TheDeepChecker and NeuraLint collect from Stack
Overflow and GitHub (the ideas ported, not their code): the names say which `dlrecipe sanity` check must catch it.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def _n(input_shape) -> int:
    return math.prod(input_shape)


class MLP(nn.Module):
    """The healthy base: flatten, two ReLU layers, logits."""

    def __init__(self, n_in: int, n_out: int, width: int = 64):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(n_in, width), nn.Linear(width, width), nn.Linear(width, n_out)

    def hidden(self, x):
        return F.relu(self.fc2(F.relu(self.fc1(x.flatten(1)))))

    def forward(self, x):
        return self.out(self.hidden(x))


# ----------------------------------------------------------------------------------------------- healthy modules


class SmallCNN(nn.Module):
    def __init__(self, input_shape, n_out):
        super().__init__()
        c = input_shape[0]
        self.conv1 = nn.Conv2d(c, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(32 * (input_shape[1] // 4) * (input_shape[2] // 4), n_out)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        return self.head(x.flatten(1))


def cnn(input_shape, num_outputs, **_):
    return SmallCNN(input_shape, num_outputs)


class ResBlock(nn.Module):
    def __init__(self, width: int, p: float):
        super().__init__()
        self.fc, self.bn, self.drop = nn.Linear(width, width), nn.BatchNorm1d(width), nn.Dropout(p)

    def forward(self, x):
        return x + self.drop(F.relu(self.bn(self.fc(x))))


class ResMLP(nn.Module):
    """Residual MLP with batch norm and dropout (dropout as a module and as F.dropout with self.training)."""

    def __init__(self, n_in, n_out, width=64, p=0.3):
        super().__init__()
        self.inp = nn.Linear(n_in, width)
        self.blocks = nn.Sequential(ResBlock(width, p), ResBlock(width, p))
        self.out = nn.Linear(width, n_out)
        self.p = p

    def forward(self, x):
        h = self.blocks(F.relu(self.inp(x.flatten(1))))
        return self.out(F.dropout(h, self.p, training=self.training))


def resmlp(input_shape, num_outputs, **_):
    return ResMLP(_n(input_shape), num_outputs)


class LogSoftmaxMLP(MLP):
    def forward(self, x):
        return F.log_softmax(self.out(self.hidden(x)), dim=1)  # log-probabilities: cross-entropy is unchanged


def log_softmax(input_shape, num_outputs, **_):
    return LogSoftmaxMLP(_n(input_shape), num_outputs)


def frozen(input_shape, num_outputs, **_):
    """A deliberately frozen first layer (a fixed random feature map): a warning, never a failure."""
    m = MLP(_n(input_shape), num_outputs)
    m.fc1.requires_grad_(False)
    return m


def healthy(input_shape, num_outputs, **_):
    return MLP(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- outputs_are_logits


class SoftmaxOut(MLP):
    def forward(self, x):
        return torch.softmax(self.out(self.hidden(x)), dim=1)  # bug: cross-entropy applies its own softmax


def softmax_out(input_shape, num_outputs, **_):
    return SoftmaxOut(_n(input_shape), num_outputs)


class SigmoidOut(MLP):
    def __init__(self, *a):
        super().__init__(*a)
        self.act = nn.Sigmoid()

    def forward(self, x):
        return self.act(self.out(self.hidden(x)))


def sigmoid_out(input_shape, num_outputs, **_):
    return SigmoidOut(_n(input_shape), num_outputs)


def relu_out(input_shape, num_outputs, **_):
    n = _n(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), nn.Linear(64, num_outputs), nn.ReLU())


class SoftmaxDim0(MLP):
    def forward(self, x):
        return F.softmax(self.out(self.hidden(x)), dim=0)  # two bugs: probabilities, and over the batch


def softmax_dim0(input_shape, num_outputs, **_):
    return SoftmaxDim0(_n(input_shape), num_outputs)


def relu_regression(input_shape, num_outputs, **_):
    n = _n(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 32), nn.Tanh(), nn.Linear(32, num_outputs), nn.ReLU())


# ----------------------------------------------------------------------------------------------- batch_independence


class BatchMixer(nn.Module):
    """The reshape bug: (B, H) viewed as (H, B) and back, so each row holds pieces of other examples."""

    def forward(self, h):
        return h.t().reshape(h.shape)


def batch_mixing(input_shape, num_outputs, **_):
    n = _n(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 64), nn.ReLU(), BatchMixer(), nn.Linear(64, num_outputs))


class BatchMean(MLP):
    def forward(self, x):
        h = self.hidden(x)
        return self.out(h - h.mean(dim=0))  # a hand-made "normalisation" over the batch, in eval mode too


def batch_mean(input_shape, num_outputs, **_):
    return BatchMean(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- gradient_flow


class Detached(MLP):
    def forward(self, x):
        return self.out(self.hidden(x).detach())  # bug: fc1 and fc2 never receive a gradient


def detached(input_shape, num_outputs, **_):
    return Detached(_n(input_shape), num_outputs)


class NoGradForward(MLP):
    def forward(self, x):
        with torch.no_grad():
            h = F.relu(self.fc1(x.flatten(1)))
        return self.out(F.relu(self.fc2(h)))


def no_grad_forward(input_shape, num_outputs, **_):
    return NoGradForward(_n(input_shape), num_outputs)


class UnusedLayer(MLP):
    def __init__(self, *a):
        super().__init__(*a)
        self.extra = nn.Linear(64, 64)  # defined, never called

    def forward(self, x):
        return self.out(self.hidden(x))


def unused_layer(input_shape, num_outputs, **_):
    return UnusedLayer(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- unregistered


class ListLayers(nn.Module):
    """Layers kept in a plain Python list: not parameters of the module, never trained, never moved."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.layers = [nn.Linear(n_in, 64), nn.Linear(64, 64)]
        self.out = nn.Linear(64, n_out)

    def forward(self, x):
        h = x.flatten(1)
        for layer in self.layers:
            h = F.relu(layer(h))
        return self.out(h)


def list_layers(input_shape, num_outputs, **_):
    return ListLayers(_n(input_shape), num_outputs)


class DictLayers(nn.Module):
    def __init__(self, n_in, n_out):
        super().__init__()
        self.parts = {"body": nn.Linear(n_in, 64)}
        self.out = nn.Linear(64, n_out)

    def forward(self, x):
        return self.out(F.relu(self.parts["body"](x.flatten(1))))


def dict_layers(input_shape, num_outputs, **_):
    return DictLayers(_n(input_shape), num_outputs)


class RawTensorWeight(MLP):
    def __init__(self, *a):
        super().__init__(*a)
        self.scale = torch.ones(64, requires_grad=True)  # a plain tensor, not nn.Parameter

    def forward(self, x):
        return self.out(self.hidden(x) * self.scale)


def raw_tensor(input_shape, num_outputs, **_):
    return RawTensorWeight(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- eval_deterministic


class DropoutAlways(MLP):
    def forward(self, x):
        return self.out(F.dropout(self.hidden(x), 0.5, training=True))  # bug: on in eval mode too


def dropout_always(input_shape, num_outputs, **_):
    return DropoutAlways(_n(input_shape), num_outputs)


class NoisyForward(MLP):
    def forward(self, x):
        return self.out(self.hidden(x) + 0.1 * torch.randn(x.shape[0], 64))  # noise in eval mode too


def noisy_forward(input_shape, num_outputs, **_):
    return NoisyForward(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- input_dependence


class IgnoresInput(MLP):
    def forward(self, x):
        return self.out(self.hidden(torch.zeros_like(x)))  # bug: the input never reaches the layers


def ignores_input(input_shape, num_outputs, **_):
    return IgnoresInput(_n(input_shape), num_outputs)


# ----------------------------------------------------------------------------------------------- nan_forward


class LogLayer(nn.Module):
    def forward(self, h):
        return torch.log(h)  # bug: log of pre-activations, negative half the time


def nan_forward(input_shape, num_outputs, **_):
    n = _n(input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(n, 64), LogLayer(), nn.Linear(64, num_outputs))


# ----------------------------------------------------------------------------------------------- before any check


def wrong_input_size(input_shape, num_outputs, **_):
    return nn.Sequential(nn.Flatten(), nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, num_outputs))


class Raises(MLP):
    def forward(self, x):
        raise ValueError("forward is not implemented yet")


def forward_raises(input_shape, num_outputs, **_):
    return Raises(_n(input_shape), num_outputs)


def factory_raises(input_shape, num_outputs, **_):
    raise KeyError("width")


def wrong_outputs(input_shape, num_outputs, **_):
    return MLP(_n(input_shape), num_outputs - 1)


# ----------------------------------------------------------------------------------------------- init_loss


def big_init(input_shape, num_outputs, **_):
    """The user's own init: an output layer 60x PyTorch's, logits of std ~10 at the start; it still trains."""
    m = MLP(_n(input_shape), num_outputs)
    with torch.no_grad():
        m.out.weight.mul_(60.0)
    return m


class RaisesLater(MLP):
    """Fine for the first forward passes (the checks before training), then an IndexError in training."""

    def __init__(self, *a):
        super().__init__(*a)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.training and self.calls > 5:
            raise IndexError("list index out of range")
        return super().forward(x)


def raises_later(input_shape, num_outputs, **_):
    return RaisesLater(_n(input_shape), num_outputs)
