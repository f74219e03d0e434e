"""K models of one architecture as one fused program (HFTA's horizontal fusion, Wang et al., MLSys 2021).

Every parameter gets a leading member dimension K: a Linear's weight is [K, in, out] and runs as one batched
matmul (baddbmm), a conv's kernel [K, out, in, *k] runs as one grouped convolution (groups = K; the first conv,
whose input every member shares, as one convolution with K * out channels), a batch norm is one batch norm over
K * C channels (so its statistics stay per member). Dropout draws each member's mask from that member's own
generator, in the order and shape the member's own nn.Dropout would (CPU: the same masks as training it alone).

Activations travel in one of three layouts: "shared" (the input, [B, ...], the same for every member), "conv"
([B, K * C, H, W]: members' channels side by side, what grouped convolutions want; a 1-D signal is an image of
height 1) and "lin" ([K, B, F]). On CPU the conv layout is channels last ([B, H, W, K * C] in memory): batch norm
and pooling over [B, K * C, L] channels first loop over rows of L <= 40 values, 3x (batch norm) and 7x (max-pool)
slower per element than over channels last, where the K * C channels of a position are one contiguous vector
(measured on recipes/mnist1d_cnn.toml's blocks, K = 12: they had been most of a fused step); oneDNN's grouped
convolution runs as fast either way. On CUDA the layout stays channels first, cuDNN's usual one. Two rewrites
keep every value and gradient and save work: a max pool after a never-decreasing activation runs first
(`_pool_first`), and on CPU a one-channel input's first convolution is one matmul (`_one_channel_conv`).

The optimizer step is one vectorised update per fused tensor for every optimizer of dlrecipe.components.OPTIMIZERS,
with each member's LR, weight decay, momentum, betas, eps and rho as broadcast coefficients; the formulas are
torch.optim's single-tensor ones (torch 2.x), so a member follows the trajectory it would follow alone, up to float
rounding (the fused kernels add and multiply in another order: about 1e-6 relative per step).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .. import components as C

# element-wise activations without parameters or randomness: applied to a fused tensor as they are
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.SELU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.Identity)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d)
# FusedOptimizer's .grad views of one [K, P] buffer are strided across members by design (backward adds into them
# in place); torch warns that such a layout "may impair performance", which it does not here
warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
FLAT_MAX_PARAMS = 65536  # FusedOptimizer on CPU: one flat buffer for members up to this many parameters (see there)


class NotFusable(Exception):
    """These members cannot run as one fused model (the reason says which layer or setting): train them alone."""


def _pool2d(m: nn.Module) -> dict:
    """A pooling layer as the 2-D pooling call over the conv layout (a 1-D pool: over width, height 1)."""
    one_d = isinstance(m, (nn.MaxPool1d, nn.AvgPool1d))
    two = lambda v, pad=1: (pad, *(v if isinstance(v, tuple) else (v,))) if one_d else v
    args = {"kernel_size": two(m.kernel_size), "stride": two(m.stride), "padding": two(m.padding, 0),
            "ceil_mode": m.ceil_mode}
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)):
        return {"fn": F.max_pool2d, "args": {**args, "dilation": two(m.dilation)}}
    if getattr(m, "divisor_override", None) is not None:
        raise NotFusable(f"{m} (divisor_override)")
    return {"fn": F.avg_pool2d, "args": {**args, "count_include_pad": m.count_include_pad}}


def _monotonic(m: nn.Module) -> bool:
    """Whether activation m never decreases (so that it commutes with a max: max f(x) = f(max x))."""
    if isinstance(m, (nn.ReLU, nn.SELU, nn.Tanh, nn.Sigmoid, nn.Identity)):
        return True
    if isinstance(m, nn.LeakyReLU):
        return m.negative_slope >= 0
    return isinstance(m, nn.ELU) and m.alpha >= 0


def _pool_first(ops: list) -> list:
    """An activation followed by a max pool runs as the pool, then the activation: for a never-decreasing
    activation the outputs are the same values, and each window's gradient reaches the element with the largest
    input, which is the one the original order picks (a ReLU's zeros tie in the pool, but a ReLU passes no gradient
    to them either way) unless a saturated tanh / sigmoid rounds different inputs to one float32 output: then the
    same gradient goes to another element of the tie. The activation and its backward touch a quarter (2x2 pool)
    or half (1-D) of the elements (recipes/mnist1d_cnn.toml's blocks: ~25% faster)."""
    out = list(ops)
    for i in range(len(out) - 1):
        a, b = out[i], out[i + 1]
        if a.kind == "act" and b.kind == "pool" and _monotonic(a.module) and b.conf["fn"] is F.max_pool2d:
            out[i], out[i + 1] = b, a
    return out


def _one_channel_conv(x: torch.Tensor, w: torch.Tensor, bias, padding) -> torch.Tensor:
    """The shared first convolution of a one-channel input, [B, 1, H, W] -> [B, K * out, H', W'] channels last, as
    one matmul of its patches: a convolution gives this output channels first (a one-channel input is both
    layouts), and the copy to channels last and back in backward cost more than the convolution (CPU only; used
    when the patches, kh * kw values per output position, take no more memory than the K * out outputs)."""
    B, (_, _, kh, kw) = x.shape[0], w.shape
    cols = F.unfold(x, (kh, kw), padding=padding)                     # [B, kh * kw, H' W']
    h, wd = x.shape[2] + 2 * padding[0] - kh + 1, x.shape[3] + 2 * padding[1] - kw + 1
    out = cols.transpose(1, 2).reshape(-1, kh * kw)                    # [B H' W', kh * kw]
    w2 = w.reshape(w.shape[0], -1).t().contiguous()  # [kh * kw, K * out]; contiguous: its gradient is then
    # patches^T @ grad (0.25 ms here), not (grad^T @ patches)^T (2 ms: a 5-column product)
    out = torch.addmm(bias, out, w2) if bias is not None else out @ w2
    return out.view(B, h, wd, -1).permute(0, 3, 1, 2)                  # channels-last strides, no copy


@dataclass
class _Op:
    kind: str                   # flatten | linear | maxout | conv | bn | act | pool | dropout
    names: dict = field(default_factory=dict)   # role (weight, bias, ...) -> fused tensor name
    module: nn.Module | None = None             # act: applied as it is
    conf: dict = field(default_factory=dict)


def _skeleton(model: nn.Module) -> tuple[list[tuple[int, nn.Module]], dict[int, float]]:
    """The model's layers without its dropouts (index, module), and the drop probability after each of them."""
    if not isinstance(model, nn.Sequential):
        raise NotFusable(f"{type(model).__name__} is not an nn.Sequential")
    layers, drops = [], {}
    for i, m in enumerate(model):
        if type(m) is nn.Dropout:
            if not layers:
                raise NotFusable("a dropout before the first layer")
            drops[len(layers) - 1] = float(m.p)
        else:
            layers.append((i, m))
    return layers, drops


def _same(a: nn.Module, b: nn.Module) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, nn.Linear):
        return a.weight.shape == b.weight.shape and (a.bias is None) == (b.bias is None)
    if isinstance(a, C.Maxout):
        return a.k == b.k and _same(a.linear, b.linear)
    if isinstance(a, (nn.Conv1d, nn.Conv2d)):
        return a.weight.shape == b.weight.shape and a.padding == b.padding and (a.bias is None) == (b.bias is None)
    if isinstance(a, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return (a.num_features, a.eps, a.momentum) == (b.num_features, b.eps, b.momentum)
    return repr(a) == repr(b)


class FusedNet:
    """K nn.Sequential models of one architecture (dlrecipe's mlp and cnn kinds) as one set of fused tensors."""

    def __init__(self, models: list[nn.Module]):
        self.K = len(models)
        skeletons = [_skeleton(m) for m in models]
        first = skeletons[0][0]
        for layers, _ in skeletons[1:]:
            if len(layers) != len(first) or not all(_same(a, b) for (_, a), (_, b) in zip(first, layers)):
                raise NotFusable("the members' architectures differ")
        self.params: dict[str, torch.Tensor] = {}   # fused name -> leaf tensor [K, ...] (requires grad)
        self.buffers: dict[str, torch.Tensor] = {}  # batch norm running statistics [K, C]
        self.decay: set[str] = set()                # weights (ndim > 1 in a member): weight decay and L1 apply
        self.keys: list[dict[str, str]] = [{} for _ in models]  # per member: fused name -> its state_dict key
        self.transposed: set[str] = set()           # Linear weights, stored [K, in, out]
        self.batches_tracked = 0
        self.ops: list[_Op] = []
        self.drop = torch.zeros(self.K, len(first))  # [K, layer]: drop probability after each layer
        for j, (_, drops) in enumerate(skeletons):
            for pos, p in drops.items():
                self.drop[j, pos] = p
        for pos, (_, m) in enumerate(first):
            self.ops.append(self._op(pos, m, [layers[pos] for layers, _ in skeletons]))
            if bool((self.drop[:, pos] > 0).any()):
                self.ops.append(_Op("dropout", conf={"pos": pos}))
        self.ops = _pool_first(self.ops)
        self.training = True
        self._keep: dict = {}  # GPU dropout: each member's keep probability on the device, per layer

    # ------------------------------------------------------------------------------------------------ building

    def _stack(self, name: str, entries: list[tuple[int, nn.Module]], attr: str, *, param: bool, decay: bool,
               transpose: bool = False):
        tensors = []
        for j, (i, m) in enumerate(entries):
            sub, _, leaf = attr.rpartition(".")
            owner = m.get_submodule(sub) if sub else m
            t = getattr(owner, leaf).detach()
            tensors.append(t.t() if transpose else t)
            self.keys[j][name] = f"{i}.{attr}"
        if transpose:  # a Linear's [out, in] weight kept as [in, out]: bmm's layout, ~1.7x faster on CPU than .mT
            self.transposed.add(name)
        t = torch.stack(tensors).clone()
        if param:
            self.params[name] = t.requires_grad_(True)
            if decay:
                self.decay.add(name)
        else:
            self.buffers[name] = t
        return name

    def _op(self, pos: int, m: nn.Module, entries: list[tuple[int, nn.Module]]) -> _Op:
        n = f"l{pos}"
        if type(m) is nn.Flatten:
            return _Op("flatten")
        if type(m) is nn.Linear or type(m) is C.Maxout:
            lin = "linear." if type(m) is C.Maxout else ""
            names = {"weight": self._stack(f"{n}.weight", entries, f"{lin}weight", param=True, decay=True,
                                           transpose=True)}
            if (m.linear if lin else m).bias is not None:
                names["bias"] = self._stack(f"{n}.bias", entries, f"{lin}bias", param=True, decay=False)
            conf = {"out": m.out_features, "k": m.k} if lin else {}
            return _Op("maxout" if lin else "linear", names, conf=conf)
        if type(m) in (nn.Conv1d, nn.Conv2d):
            if any(s != 1 for s in m.stride) or any(d != 1 for d in m.dilation) or m.groups != 1 \
                    or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise NotFusable(f"layer {pos}: {m} (only stride 1, dilation 1, zero padding convolutions)")
            names = {"weight": self._stack(f"{n}.weight", entries, "weight", param=True, decay=True)}
            if m.bias is not None:
                names["bias"] = self._stack(f"{n}.bias", entries, "bias", param=True, decay=False)
            return _Op("conv", names, conf={"padding": (0, *m.padding) if len(m.padding) == 1 else m.padding})
        if type(m) in (nn.BatchNorm1d, nn.BatchNorm2d):
            if not (m.affine and m.track_running_stats) or m.momentum is None:
                raise NotFusable(f"layer {pos}: {m} (only affine batch norm with running statistics)")
            names = {"weight": self._stack(f"{n}.weight", entries, "weight", param=True, decay=False),
                     "bias": self._stack(f"{n}.bias", entries, "bias", param=True, decay=False),
                     "mean": self._stack(f"{n}.running_mean", entries, "running_mean", param=False, decay=False),
                     "var": self._stack(f"{n}.running_var", entries, "running_var", param=False, decay=False)}
            for j, (i, _) in enumerate(entries):
                self.keys[j][f"{n}.num_batches_tracked"] = f"{i}.num_batches_tracked"
            return _Op("bn", names, conf={"eps": m.eps, "momentum": m.momentum})
        if type(m) in ELEMENTWISE:
            return _Op("act", module=m)
        if type(m) in POOLS:
            return _Op("pool", module=m, conf=_pool2d(m))
        raise NotFusable(f"layer {pos}: {type(m).__name__} has no fused form (learned or random activations and "
                         f"DropConnect train one member at a time)")

    # ------------------------------------------------------------------------------------------------ running

    def train(self, mode: bool = True) -> FusedNet:
        self.training = mode
        return self

    def eval(self) -> FusedNet:
        return self.train(False)

    def __call__(self, x: torch.Tensor, gens: list[torch.Generator | None] | None = None) -> torch.Tensor:
        """x: [B, ...] shared by every member -> outputs [K, B, n_out]. gens: each member's dropout generator."""
        K, B, layout, P = self.K, x.shape[0], "shared", self.params
        for op in self.ops:
            if op.kind == "flatten":
                if layout == "conv":  # [B, K*C, *S] -> [K, B, C * prod(S)]: each member's nn.Flatten order
                    x, layout = x.reshape(B, K, -1).transpose(0, 1), "lin"
                else:
                    x = x.flatten(1) if layout == "shared" else x.flatten(2)
            elif op.kind in ("linear", "maxout"):
                w = P[op.names["weight"]]                              # [K, in, out]
                if layout == "shared":
                    x = x.unsqueeze(0).expand(K, *x.shape)             # [K, B, in], no copy
                elif layout == "conv":
                    raise NotFusable("a linear layer on convolution maps without a flatten")
                if "bias" in op.names:
                    x = torch.baddbmm(P[op.names["bias"]].unsqueeze(1), x, w)
                else:
                    x = torch.bmm(x, w)
                layout = "lin"
                if op.kind == "maxout":                                # [K, B, out*k] -> [K, B, out]
                    x = x.view(K, B, op.conf["out"], op.conf["k"]).amax(dim=-1)
            elif op.kind == "conv":
                w = P[op.names["weight"]]                              # [K, out, in, *k]
                w = w.reshape(-1, w.shape[2], *([1] if w.dim() == 4 else []), *w.shape[3:])  # [K*out, in, (1,) k]
                bias = P[op.names["bias"]].reshape(-1) if "bias" in op.names else None
                groups = 1 if layout == "shared" else K                # shared input: one conv, K*out channels
                cpu = x.device.type == "cpu"                           # channels last (module docstring)
                if layout == "shared":                                 # a 1-D signal as an image of height 1
                    x = x.unsqueeze(2) if x.dim() == 3 else x
                    x = x.contiguous(memory_format=torch.channels_last) if cpu else x
                if cpu and layout == "shared" and x.shape[1] == 1 and w.shape[2] * w.shape[3] <= w.shape[0]:
                    x = _one_channel_conv(x, w, bias, op.conf["padding"])
                else:
                    x = F.conv2d(x, w.contiguous(memory_format=torch.channels_last) if cpu else w, bias,
                                 padding=op.conf["padding"], groups=groups)
                    if cpu:  # (a one-channel input's output comes out channels first); norms and pools keep it
                        x = x.contiguous(memory_format=torch.channels_last)
                layout = "conv"
            elif op.kind == "bn":
                args = (self.buffers[op.names["mean"]].view(-1), self.buffers[op.names["var"]].view(-1),
                        P[op.names["weight"]].reshape(-1), P[op.names["bias"]].reshape(-1), self.training,
                        op.conf["momentum"], op.conf["eps"])
                if layout == "conv":
                    x = F.batch_norm(x, *args)
                else:                                                  # [K, B, C] -> [B, K*C] and back
                    c = x.shape[-1]
                    x = F.batch_norm(x.transpose(0, 1).reshape(B, K * c), *args).view(B, K, c).transpose(0, 1)
            elif op.kind == "act":
                x = op.module(x)
            elif op.kind == "pool":
                if layout != "conv":
                    raise NotFusable("a pooling layer outside the convolution stack")
                x = op.conf["fn"](x, **op.conf["args"])                # [B, K*C, H', W'], channels last on CPU
            elif op.kind == "dropout" and self.training:
                x = x * self._masks(op.conf["pos"], tuple(x.shape[1:]), x, gens)
        if layout != "lin":
            raise NotFusable("the model does not end in a linear layer")
        return x

    def _masks(self, pos: int, shape: tuple, like: torch.Tensor, gens) -> torch.Tensor:
        """[K, B, F] inverted-dropout masks, member k's drawn from gens[k] exactly as nn.Dropout(p_k) draws its own
        (bernoulli_(1 - p) then / (1 - p)); a member without dropout there draws nothing. On a GPU, where those
        draws would be K kernels per layer and CUDA's masks differ from nn.Dropout's anyway, one draw for all
        members from the first member's generator: each element kept with its member's 1 - p, scaled by 1 / (1 - p)."""
        if like.device.type != "cpu":
            key = (pos, like.dtype, len(shape))
            if key not in self._keep:  # (a copy to the device per step would wait for the device)
                self._keep[key] = (1 - self.drop[:, pos]).to(device=like.device, dtype=like.dtype).view(
                    -1, *([1] * len(shape)))
            keep = self._keep[key]
            u = torch.rand((self.K, *shape), device=like.device, dtype=like.dtype, generator=gens[0])
            return (u < keep).to(like.dtype) / keep
        masks = []
        for k in range(self.K):
            p = float(self.drop[k, pos])
            if p > 0:
                masks.append(torch.empty(shape, device=like.device, dtype=like.dtype)
                             .bernoulli_(1 - p, generator=gens[k]).div_(1 - p))
            else:
                masks.append(torch.ones(shape, device=like.device, dtype=like.dtype))
        return torch.stack(masks)

    def step_forward_count(self) -> None:
        """A training forward pass ran: batch norm's num_batches_tracked, the same for every member."""
        if self.training:
            self.batches_tracked += 1

    # ------------------------------------------------------------------------------------------------ members

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state_dict as its own nn.Sequential names it (loadable by build_model's model)."""
        out = {}
        for name, key in self.keys[k].items():
            if name.endswith(".num_batches_tracked"):
                out[key] = torch.tensor(self.batches_tracked)
            else:
                t = self.params.get(name)
                t = (t if t is not None else self.buffers[name])[k].detach()
                out[key] = (t.t() if name in self.transposed else t).contiguous().clone()
        return out

    def keep(self, idx: list[int], states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Keep only members `idx` (in that order), with their optimizer states: finished members stop costing."""
        sel = torch.tensor(idx, device=next(iter(self.params.values())).device)
        for name, t in self.params.items():
            self.params[name] = t.detach().index_select(0, sel).requires_grad_(True)
        for name, t in self.buffers.items():
            self.buffers[name] = t.index_select(0, sel)
        for st in states.values():
            for key, t in st.items():
                st[key] = t.index_select(0, sel)
        self.keys = [self.keys[i] for i in idx]
        self.drop = self.drop[idx]
        self._keep.clear()
        self.K = len(idx)

    def to(self, device) -> FusedNet:
        for d in (self.params, self.buffers):
            for name, t in d.items():
                d[name] = t.detach().to(device).requires_grad_(t.requires_grad)
        return self


# ---------------------------------------------------------------------------------------------------- optimizer

class FusedOptimizer:
    """One vectorised step for K members: torch.optim's update (sgd, momentum, nesterov, adagrad, rmsprop, adam,
    adamw, nadam) with each member's coefficients broadcast over its row of one flat parameter buffer.

    hp: per member {lr, weight_decay, momentum, beta1, beta2, eps, rho}; weight decay applies to `net.decay`
    tensors only (the weights; biases and norm parameters are not decayed, as in components.build_optimizer).
    Coefficients are computed on the device in float64 (as torch.optim does in Python floats), then used in
    float32; nothing is read back to the host, so a step never waits for the device.

    Layout (flat=True, the default on a GPU and for small members on CPU): every fused tensor of the net becomes a
    view of one [K, P] buffer (decayed weights first), and its .grad a view of one [K, P] gradient buffer that
    backward accumulates into; so a step is a handful of kernels over two slices of it whatever the number of
    layers (on a GPU each kernel launch costs about what a small layer's arithmetic does) and zero_grad is one
    fill. For large members on CPU (flat=False) each tensor is updated on its own, as torch.optim does, so that
    backward's fresh gradients are used as they are: accumulating them into a buffer costs a pass over memory that
    a memory-bound step feels (a 512-wide MLP: ~25% slower per step)."""

    def __init__(self, net, name: str, hp: list[dict], flat: bool | None = None):
        if name not in C.OPTIMIZERS:
            raise NotFusable(f"optimizer {name!r} has no fused update")
        self.net, self.name, self.steps = net, name, 0
        self.hp = [dict(h) for h in hp]
        self.device = next(iter(net.params.values())).device
        if flat is None:
            per_member = sum(t[0].numel() for t in net.params.values())
            flat = self.device.type != "cpu" or per_member <= FLAT_MAX_PARAMS
        self.flat_layout = flat
        self.state: dict[str, dict[str, torch.Tensor]] = {}  # segment -> buf, sum, square_avg, exp_avg, exp_avg_sq
        self.mu_product: torch.Tensor | None = None  # NAdam: per member, float32 as torch keeps it
        self._limit: tuple | None = None              # clip_grad_norm's limits on the device
        if flat:
            self._flatten()
        self._vectors()

    def _flatten(self) -> None:
        """Copy net.params into one [K, P] buffer (decayed tensors first: weight decay is one slice) and make
        each of them a view of it, with its .grad a view of the gradient buffer. Tensors that do not require
        grad (frozen by the factory) stay as they are: the step never touches them, as torch.optim's would not."""
        net = self.net
        trained = [n for n, t in net.params.items() if t.requires_grad]  # (a factory's frozen tensors stay out)
        names = sorted(trained, key=lambda n: n not in net.decay)  # stable: the net's order within each part
        sizes = [net.params[n][0].numel() for n in names]
        first = net.params[names[0]]
        self.flat = torch.empty(net.K, sum(sizes), dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.flat)
        self.n_decay = sum(size for n, size in zip(names, sizes) if n in net.decay)
        offset = 0
        for n, size in zip(names, sizes):
            t = net.params[n]
            rows = self.flat[:, offset:offset + size]
            rows.copy_(t.detach().reshape(net.K, size))
            leaf = rows.view(t.shape).requires_grad_(True)
            leaf.grad = self.grad[:, offset:offset + size].view(t.shape)
            net.params[n] = leaf
            offset += size

    def _segments(self):
        """(name, parameter, gradient, decayed) for each part the step updates in one go."""
        if self.flat_layout:
            d = self.n_decay
            return [(n, self.flat[:, sl], self.grad[:, sl], decay) for n, sl, decay in
                    (("decayed", slice(0, d), True), ("rest", slice(d, None), False)) if sl.stop != sl.start]
        return [(n, p, p.grad, n in self.net.decay) for n, p in self.net.params.items() if p.grad is not None]

    def _vectors(self) -> None:
        """[K] float64 vectors of every coefficient (rebuilt when LRs change or members leave)."""
        self.v = {k: torch.tensor([h[k] for h in self.hp], dtype=torch.float64, device=self.device)
                  for k in ("lr", "weight_decay", "momentum", "beta1", "beta2", "eps", "rho")}
        v = self.v  # torch.optim computes these in Python floats, then the kernel rounds them to float32 once
        v["1-beta1"], v["1-beta2"], v["1-rho"] = 1 - v["beta1"], 1 - v["beta2"], 1 - v["rho"]
        v["1-lr*wd"] = 1 - v["lr"] * v["weight_decay"]
        self.has_momentum = any(h["momentum"] != 0 for h in self.hp)
        self.decays = any(h["weight_decay"] != 0 for h in self.hp)
        self._cache: dict = {}

    def _c(self, key: str, dim: int) -> torch.Tensor:
        """Coefficient `key` as float32 [K, 1, ...] broadcasting against a dim-dimensional tensor."""
        if (key, dim) not in self._cache:
            self._cache[(key, dim)] = self.v[key].float().view(-1, *([1] * (dim - 1)))
        return self._cache[(key, dim)]

    def keep(self, idx: list[int]) -> None:
        """Keep only members `idx` (in that order), with their optimizer states."""
        self.hp = [self.hp[i] for i in idx]
        if self.mu_product is not None:
            self.mu_product = self.mu_product[idx]
        self.net.keep(idx, self.state)  # (selects the states' rows too)
        if self.flat_layout:
            self._flatten()  # the same order of tensors: the states' columns still line up
        self._vectors()

    def zero_grad(self) -> None:
        if self.flat_layout:
            self.grad.zero_()
        else:
            for p in self.net.params.values():
                p.grad = None

    def set_lrs(self, lrs: list[float]) -> None:
        if [h["lr"] for h in self.hp] != list(lrs):
            for h, lr in zip(self.hp, lrs):
                h["lr"] = lr
            self._vectors()

    def clip_grad_norm(self, max_norms: list[float]) -> None:
        """Each member's global gradient norm clipped to its own limit (0 = off), as nn.utils.clip_grad_norm_."""
        grads = [g for _, _, g, _ in self._segments()]
        if not grads or not any(m > 0 for m in max_norms):
            return
        norms = torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads])  # [n_parts, K]
        total = torch.linalg.vector_norm(norms, dim=0)                                         # [K]
        key = tuple(max_norms)
        if self._limit is None or self._limit[0] != key:  # (a copy to the device per step would wait for it)
            self._limit = key, torch.tensor([m if m > 0 else math.inf for m in max_norms], device=total.device)
        limit = self._limit[1]
        coef = torch.where(limit.isinf(), torch.ones_like(total), (limit / (total + 1e-6)).clamp(max=1.0))
        for g in grads:
            g.mul_(coef.view(-1, *([1] * (g.dim() - 1))))

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        s, v, name, c = self.steps, self.v, self.name, self._c
        per_step = {}
        if name in ("adam", "adamw"):
            per_step["step_size"] = (v["lr"] / (1 - v["beta1"] ** s)).float()
            per_step["bc2_sqrt"] = ((1 - v["beta2"] ** s) ** 0.5).float()
        elif name == "nadam":  # the momentum schedule mu_t, per member
            mu = v["beta1"] * (1.0 - 0.5 * 0.96 ** (s * 4e-3))
            mu_next = v["beta1"] * (1.0 - 0.5 * 0.96 ** ((s + 1) * 4e-3))
            self.mu_product = (torch.ones_like(mu, dtype=torch.float32) if self.mu_product is None
                               else self.mu_product) * mu.float()
            prod = self.mu_product.double()
            per_step["c_grad"] = (-v["lr"] * (1.0 - mu) / (1.0 - prod)).float()
            per_step["c_avg"] = ((-v["lr"] * mu_next) / (1.0 - prod * mu_next)).float()
            per_step["bc2"] = (1 - v["beta2"] ** s).float()
        for part, p, g, decayed in self._segments():
            d, st = p.dim(), self.state.setdefault(part, {})
            ps = {k: t.view(-1, *([1] * (d - 1))) for k, t in per_step.items()}
            if self.decays and decayed:
                if name == "adamw":                                    # decoupled: p <- p (1 - lr wd)
                    p.mul_(c("1-lr*wd", d))
                else:                                                  # L2 through the gradient: g + wd p
                    g.addcmul_(c("weight_decay", d), p)
            # the in-place forms below compute torch.optim's expressions in its order (x + value * a / b)
            if name in ("sgd", "momentum", "nesterov"):
                if self.has_momentum:
                    if "buf" not in st:
                        st["buf"] = g.detach().clone()
                    else:
                        torch.addcmul(g, st["buf"], c("momentum", d), out=st["buf"])  # buf m + g, one pass
                    g = g.addcmul(c("momentum", d), st["buf"]) if name == "nesterov" else st["buf"]
                p.addcmul_(c("lr", d), g, value=-1)
            elif name == "adagrad":
                st.setdefault("sum", torch.zeros_like(p)).addcmul_(g, g)
                p.addcdiv_(g * c("lr", d), st["sum"].sqrt().add_(c("eps", d)), value=-1)
            elif name == "rmsprop":
                sq = st.setdefault("square_avg", torch.zeros_like(p))
                sq.mul_(c("rho", d)).addcmul_(g * c("1-rho", d), g)
                avg = sq.sqrt().add_(c("eps", d))
                if self.has_momentum:
                    buf = st.setdefault("buf", torch.zeros_like(p))
                    buf.mul_(c("momentum", d)).addcdiv_(g, avg)
                    p.addcmul_(c("lr", d), buf, value=-1)
                else:
                    p.addcdiv_(g * c("lr", d), avg, value=-1)
            else:  # adam, adamw, nadam
                m = st.setdefault("exp_avg", torch.zeros_like(p))
                sq = st.setdefault("exp_avg_sq", torch.zeros_like(p))
                m.lerp_(g, c("1-beta1", d))
                sq.mul_(c("beta2", d)).addcmul_(g * c("1-beta2", d), g)
                if name == "nadam":
                    denom = sq.div(ps["bc2"]).sqrt().add_(c("eps", d))
                    p.addcdiv_(g * ps["c_grad"], denom)
                    p.addcdiv_(m * ps["c_avg"], denom)
                else:
                    p.addcdiv_(m * ps["step_size"], (sq.sqrt() / ps["bc2_sqrt"]).add_(c("eps", d)), value=-1)


def member_hyperparameters(tr: dict) -> dict:
    """The optimizer coefficients one member's [train] table gives (the defaults components.OPTIMIZERS uses)."""
    default_momentum = 0.9 if tr["optimizer"] in ("momentum", "nesterov") else 0.0
    return {"lr": tr["lr"], "weight_decay": tr.get("weight_decay", 0.0),
            "momentum": default_momentum if tr.get("momentum") is None else tr["momentum"],
            "beta1": tr.get("beta1", 0.9), "beta2": tr.get("beta2", 0.999), "eps": tr.get("eps", 1e-8),
            "rho": tr.get("rho", 0.99)}
