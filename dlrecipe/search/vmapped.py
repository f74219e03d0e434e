"""K copies of a python factory's nn.Module trained as one program through torch.func (stack_module_state,
functional_call, vmap): the fused form for models that are not dlrecipe's own nn.Sequential mlp / cnn.

VmapNet has FusedNet's interface (dlrecipe.search.fused), so FusedOptimizer and train_population drive it
unchanged: `params` (name -> leaf [K, ...], the members' parameters stacked), `buffers` (batch norm running
statistics and every other buffer, stacked [K, ...] and updated in place per member by the member's own module
code under vmap), `decay` (what components.build_optimizer decays for one model: trained tensors with ndim > 1 in
the member; L1 applies to the same ones, as components.weight_penalty), `K`, `net(x) -> [K, B, out]` with x shared
by every member (in_dims None: nothing is copied K times).

Equality with training alone: the same updates up to float rounding (vmap's batched kernels round in another order,
as FusedNet's). Randomness: a model that draws random numbers in training (dropout, noise) runs with
`randomness="different"`: each member gets its own masks, drawn from the global generator for all members at once,
so they are not the masks the member draws trained alone (the same distribution, not the same numbers).

Where vmap does not apply, construction raises NotFusable before anything trains, with the reason (these trials
then train one at a time, said once in the log): a probe forward and backward on a few training rows under vmap
must run (data-dependent Python control flow, .item(), in-place writes into unbatched tensors and ops without a
batching rule raise there) and give each member the outputs and gradients its own module gives, and no module may
keep state vmap cannot stack (a tensor attribute outside its parameters and buffers, get_extra_state).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .fused import NotFusable

PROBE_ROWS = 4  # training rows the probe runs (>= 2: batch norm in training needs two rows per channel)


def _why(e: BaseException) -> str:
    """An exception as one short line for the log (the first line of its message)."""
    words = str(e).strip().splitlines()[0] if str(e).strip() else ""
    words = words if len(words) <= 160 else words[:157] + "..."
    return f"{type(e).__name__}: {words}" if words else type(e).__name__


def _tensor_attributes(model: nn.Module) -> dict[str, int]:
    """Tensors kept as plain module attributes (not parameters or buffers): vmap cannot stack them per member."""
    return {f"{name}.{k}".lstrip("."): id(v) for name, mod in model.named_modules()
            for k, v in vars(mod).items() if isinstance(v, torch.Tensor)}


class VmapNet:
    """K members of one architecture (built by the same factory) as stacked tensors run by one vmapped forward."""

    def __init__(self, models: list[nn.Module], probe: torch.Tensor, *, what: str = "model.kind = 'python'"):
        """models: the members as build_model made them (on the data's device); probe: a few training rows."""
        self.K, self.what = len(models), what
        template = models[0]
        keys = [list(m.state_dict(keep_vars=True)) for m in models]
        if any(k != keys[0] for k in keys):
            raise NotFusable(f"{what}: the members' state_dict keys differ")
        for mod in template.modules():
            if type(mod).get_extra_state is not nn.Module.get_extra_state:
                raise NotFusable(f"{what}: {type(mod).__name__} keeps extra state (get_extra_state), which vmap "
                                 f"cannot stack")
        try:
            params, buffers = torch.func.stack_module_state(models)
        except Exception as e:  # e.g. members differ in a shape or in what they train
            raise NotFusable(f"{what}: the members cannot be stacked ({_why(e)})") from e
        if not any(p.requires_grad for p in params.values()):
            raise NotFusable(f"{what}: the model has no trained parameters")
        self.params: dict[str, torch.Tensor] = params      # name -> leaf [K, ...]; frozen ones without grad
        self.buffers: dict[str, torch.Tensor] = buffers    # name -> [K, ...]
        trained = dict(template.named_parameters())
        # components.build_optimizer: weight decay (and weight_penalty's L1) on trained tensors with ndim > 1
        self.decay = {n for n, p in trained.items() if p.requires_grad and p.ndim > 1}
        # member_state: each state_dict key (tied weights: several keys) -> the stacked tensor that holds it
        ids = {id(t): n for n, t in [*template.named_parameters(), *template.named_buffers()]}
        sd = template.state_dict(keep_vars=True)
        self.keys = {key: ids[id(t)] for key, t in sd.items() if id(t) in ids}
        if len(self.keys) != len(sd):
            missing = sorted(set(sd) - set(self.keys))
            raise NotFusable(f"{what}: state_dict entries {missing[:3]} are not parameters or buffers")
        self.template = template
        self.training = True
        self.randomness = self._probe(models, probe)
        self._forward = torch.func.vmap(self._call, in_dims=(0, 0, None), randomness=self.randomness)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.template, (params, buffers), (x,))

    # ------------------------------------------------------------------------------------------------ the probe

    def _probe(self, models: list[nn.Module], x: torch.Tensor) -> str:
        """Run the members under vmap on copies (no state, RNG or Python attribute of the real ones moves) and
        compare with their own modules; the randomness vmap needs ("error": none, "different": dropout or noise).
        Raises NotFusable naming what failed."""
        try:
            return self._probe_copies(models, x)
        except NotFusable:
            raise
        except Exception as e:  # e.g. a module deepcopy cannot copy: never an error, one at a time
            raise NotFusable(f"{self.what}: the vmap probe failed ({_why(e)})") from e

    def _probe_copies(self, models: list[nn.Module], x: torch.Tensor) -> str:
        what = self.what
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            probe_model = copy.deepcopy(self.template)
            before = _tensor_attributes(probe_model)
            params = {n: t.detach().clone().requires_grad_(t.requires_grad) for n, t in self.params.items()}

            def run(mode: str, training: bool) -> torch.Tensor:
                buffers = {n: t.clone() for n, t in self.buffers.items()}  # batch norm statistics move in training
                probe_model.train(training)
                fwd = torch.func.vmap(lambda p, b, xb: torch.func.functional_call(probe_model, (p, b), (xb,)),
                                      in_dims=(0, 0, None), randomness=mode)
                return fwd(params, buffers, x)

            randomness = "error"
            try:
                try:
                    out = run(randomness, True)
                except RuntimeError as e:
                    if "randomness" not in str(e):
                        raise
                    randomness = "different"  # the model draws random numbers in training: each member its own
                    out = run(randomness, True)
                if not isinstance(out, torch.Tensor) or out.shape[:2] != (self.K, len(x)):
                    raise NotFusable(f"{what}: the forward under vmap does not return one [batch, outputs] tensor")
                out.float().sum().backward()
                with torch.no_grad():
                    evaluated = run(randomness, False)
            except NotFusable:
                raise
            except Exception as e:  # whatever vmap cannot run means: one at a time
                raise NotFusable(f"{what}: torch.func.vmap cannot run this model ({_why(e)})") from e
            if _tensor_attributes(probe_model) != before:
                raise NotFusable(f"{what}: the forward keeps tensors as module attributes (state outside its "
                                 f"parameters and buffers), which vmap cannot stack")
            # the members' own modules on the same rows: vmap must give each its outputs and its gradients
            alone = copy.deepcopy(models[0]).train()
            alone(x).float().sum().backward()
            grads = {n for n, p in alone.named_parameters() if p.grad is not None}
            if grads != {n for n, p in params.items() if p.grad is not None}:
                raise NotFusable(f"{what}: under vmap other parameters get gradients than in the model itself")
            with torch.no_grad():
                for k, m in enumerate(models):
                    own = copy.deepcopy(m).eval()(x)  # (loose: on CUDA, TF32 convolutions round to ~1e-3)
                    if own.shape != evaluated[k].shape or \
                            float((evaluated[k] - own).abs().max()) > 1e-2 * float(own.abs().max()) + 1e-5:
                        raise NotFusable(f"{what}: under vmap member {k}'s outputs differ from its own model's "
                                         f"(state vmap does not see)")
        return randomness

    # ------------------------------------------------------------------------------------------------ running

    def train(self, mode: bool = True) -> VmapNet:
        self.training = mode
        self.template.train(mode)
        return self

    def eval(self) -> VmapNet:
        return self.train(False)

    def __call__(self, x: torch.Tensor, gens: list | None = None) -> torch.Tensor:
        """x: [B, ...] shared by every member -> [K, B, n_out]. gens: unused (vmap draws from the global generator
        for all members at once: see the module docstring)."""
        out = self._forward(self.params, self.buffers, x)
        return out.unsqueeze(-1) if out.dim() == 2 else out  # a regression model's [B] output: [K, B, 1]

    def step_forward_count(self) -> None:
        """Nothing to count: the members' own batch norm code updates num_batches_tracked in their buffers."""

    # ------------------------------------------------------------------------------------------------ members

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's state_dict under its own module's keys (loadable by the factory's model)."""
        out = {}
        for key, name in self.keys.items():
            t = self.params.get(name)
            out[key] = (t if t is not None else self.buffers[name])[k].detach().clone()
        return out

    def keep(self, idx: list[int], states: dict[str, dict[str, torch.Tensor]]) -> None:
        """Keep only members `idx` (in that order), with their optimizer states: finished members stop costing."""
        sel = torch.tensor(idx, device=next(iter(self.params.values())).device)
        for name, t in self.params.items():
            self.params[name] = t.detach().index_select(0, sel).requires_grad_(t.requires_grad)
        for name, t in self.buffers.items():
            self.buffers[name] = t.index_select(0, sel)
        for st in states.values():
            for key, t in st.items():
                st[key] = t.index_select(0, sel)
        self.K = len(idx)

    def to(self, device) -> VmapNet:
        for d in (self.params, self.buffers):
            for name, t in d.items():
                d[name] = t.detach().to(device).requires_grad_(t.requires_grad)
        self.template.to(device)
        return self
