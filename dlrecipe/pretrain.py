"""Greedy layer-wise autoencoder pre-training (lecture 002, "Unsupervised Pre-training"), `dlrecipe pretrain`.

Each hidden layer of an MLP is trained, one at a time, as a tied-weight autoencoder of its own inputs:
    encoder   h = g(b + W x)            g = the layer's activation (the lecture's sigm: model.activation = "sigmoid")
    decoder   x_hat = sigm(c + W^T h)   for inputs in [0, 1], loss -sum_k (x_k log x_hat_k + (1 - x_k) log(1 - x_hat_k))
              x_hat = c + W^T h         for real-valued inputs (linear output), loss 1/2 sum_k (x_hat_k - x_k)^2
The losses are summed over the input units and averaged over the examples. The earlier layers stay fixed (they are
the feature extractor), and each layer's codes h are the next layer's inputs. Afterwards the output layer is added
and the whole network is fine-tuned by ordinary supervised training (`train`, `run`: [pretrain] epochs > 0).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .atomic import replace as replace_file
from .errors import RecipeError


class TiedAutoencoder(nn.Module):
    """One hidden layer's autoencoder: the encoder is the layer itself (W, b), the decoder shares W (as W^T) and has
    its own bias c (zeros at the start)."""

    def __init__(self, linear: nn.Linear, activation: nn.Module, binary: bool):
        super().__init__()
        self.linear, self.activation, self.binary = linear, activation, binary
        self.c = nn.Parameter(torch.zeros(linear.in_features, device=linear.weight.device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(F.linear(x, self.linear.weight, self.linear.bias))  # h = g(b + Wx), (B, H)

    def decode_preactivation(self, h: torch.Tensor) -> torch.Tensor:
        return F.linear(h, self.linear.weight.t(), self.c)  # c + W^T h, (B, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction x_hat."""
        a = self.decode_preactivation(self.encode(x))
        return torch.sigmoid(a) if self.binary else a

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        a = self.decode_preactivation(self.encode(x))
        if self.binary:  # cross-entropy of sigm(a) against x, from the logits for numerical safety
            return F.binary_cross_entropy_with_logits(a, x, reduction="none").sum(1).mean()
        return 0.5 * ((a - x) ** 2).sum(1).mean()


def hidden_pairs(model: nn.Module) -> list[tuple[nn.Linear, nn.Module]]:
    """(linear layer, its activation) of each hidden layer of an MLP built by dlrecipe, from the input."""
    children = list(model.children())
    linear_at = [i for i, m in enumerate(children) if isinstance(m, nn.Linear)]
    pairs = []
    for i in linear_at[:-1]:  # the last linear layer is the output layer: it is added after pre-training
        act = children[i + 1] if i + 1 < len(children) else None
        if act is None or isinstance(act, (nn.Linear, nn.Dropout)):
            raise RecipeError("layer-wise pre-training needs each hidden linear layer followed by its activation")
        pairs.append((children[i], act))
    return pairs


def is_binary(x: torch.Tensor) -> bool:
    """Inputs in [0, 1] are treated as binary (probabilities of on): cross-entropy; anything else is real-valued."""
    return bool(x.numel()) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def pretrain_layers(model: nn.Module, x_train: torch.Tensor, x_val: torch.Tensor, cfg: dict, tr: dict, *,
                    seed: int = 0, on_epoch=None) -> list[dict]:
    """Train each hidden layer of `model` in place, greedily; returns one row per layer and epoch:
    {layer, epoch, loss, train_loss, val_loss, seconds} (loss: cross_entropy or squared)."""
    from . import components as C
    from .data.prepare import batches

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    batch_size = cfg.get("batch_size") or 64
    codes, codes_val = x_train.flatten(1), x_val.flatten(1)
    rows = []
    for layer, (linear, act) in enumerate(hidden_pairs(model)):
        choice = cfg.get("loss", "auto")
        binary = is_binary(codes) if choice == "auto" else choice == "cross_entropy"
        if binary and not is_binary(codes):
            raise RecipeError(f"pretrain.loss = 'cross_entropy' needs inputs in [0, 1]; layer {layer}'s inputs lie "
                              f"in [{float(codes.min()):.3g}, {float(codes.max()):.3g}]: use 'squared' or 'auto'")
        ae = TiedAutoencoder(linear, act, binary)
        opt = C.OPTIMIZERS[cfg.get("optimizer", "adam")].build(
            [{"params": [linear.weight, *([linear.bias] if linear.bias is not None else []), ae.c]}],
            {**tr, "lr": cfg.get("lr", 1e-3)})
        for epoch in range(1, cfg["epochs"] + 1):
            t0 = time.perf_counter()
            total, seen = 0.0, 0
            for idx in batches(len(codes), batch_size, g, codes.device):
                xb = codes[idx]
                loss = ae.loss(xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                seen += len(idx)
            with torch.no_grad():
                val = float(ae.loss(codes_val)) if len(codes_val) else float("nan")
            row = {"layer": layer, "epoch": epoch, "loss": "cross_entropy" if binary else "squared",
                   "train_loss": total / max(seen, 1), "val_loss": val, "seconds": time.perf_counter() - t0}
            rows.append(row)
            if on_epoch is not None:
                on_epoch(row)
        with torch.no_grad():  # this layer's codes are the next layer's inputs; it stays fixed from now on
            codes, codes_val = ae.encode(codes), ae.encode(codes_val)
    return rows


def hidden_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The pre-trained part of the state dict: the hidden layers' weights and biases (no output layer)."""
    keep = {id(linear) for linear, _ in hidden_pairs(model)}
    names = {name for name, m in model.named_modules() if id(m) in keep}
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.rsplit(".", 1)[0] in names}


def pretrain_in(run_dir: Path, recipe, data, model: nn.Module, *, seed: int | None = None, say=None) -> list[dict]:
    """Pre-train `model`'s hidden layers on the training split's inputs (with data.max_train: also the ones whose
    labels it leaves out; pre-training needs no labels); write pretrain.csv, pretrain.pt and pretrain.png."""
    from .runs import CsvLog

    cfg = recipe.section("pretrain")
    cfg["batch_size"] = cfg["batch_size"] or recipe["data.batch_size"]
    seed = recipe["seed"] if seed is None else seed
    with CsvLog(Path(run_dir) / "pretrain.csv", ["layer", "epoch", "loss", "train_loss", "val_loss", "seconds"]) as log:
        def on_epoch(row):
            log.write(row)
            if say is not None and row["epoch"] == cfg["epochs"]:
                say(f"pre-trained hidden layer {row['layer']}: {row['loss']} reconstruction loss "
                    f"{row['train_loss']:.4g} (validation {row['val_loss']:.4g})")

        x = data.x_train if data.x_unlabelled is None else torch.cat([data.x_train, data.x_unlabelled])
        rows = pretrain_layers(model, x, data.x_val, cfg, recipe.section("train"), seed=seed, on_epoch=on_epoch)
    state = hidden_state(model)
    replace_file(Path(run_dir) / "pretrain.pt", lambda tmp: torch.save(state, tmp))  # atomic, synced
    plot_pretrain(rows, Path(run_dir) / "pretrain.png")
    return rows


def plot_pretrain(rows: list[dict], path: Path) -> None:
    """One reconstruction curve (training and validation) per hidden layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted({r["layer"] for r in rows})
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False)
    for ax, layer in zip(axes[0], layers):
        rs = [r for r in rows if r["layer"] == layer]
        ax.plot([r["epoch"] for r in rs], [r["train_loss"] for r in rs], label="train")
        ax.plot([r["epoch"] for r in rs], [r["val_loss"] for r in rs], label="validation")
        ax.set_title(f"hidden layer {layer} ({rs[0]['loss']})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("reconstruction loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@dataclass
class PretrainResult:
    run_dir: Path
    summary: dict
    rows: list[dict]


def pretrain(recipe, *, device: str = "auto", runs_dir: str | Path = "runs", folder: str | None = None,
             say=None) -> PretrainResult:
    """`dlrecipe pretrain`: pre-train the recipe's MLP layer by layer into a run folder whose pretrain.pt the
    recipe's model.pretrained can name (then only the output layer is new)."""
    from .data import load_data
    from .models import build_model
    from .runs import resolve_device, start_run, write_json

    if recipe["pretrain.epochs"] < 1:
        raise RecipeError("dlrecipe pretrain needs pretrain.epochs >= 1 (epochs per hidden layer), e.g. "
                          "--set pretrain.epochs=10")
    device = resolve_device(device)
    data = load_data(recipe, device)
    run_dir = start_run(recipe, runs_dir, "pretrain", device, folder=folder)
    t0 = time.perf_counter()
    model = build_model(recipe, data).to(device)
    rows = pretrain_in(run_dir, recipe, data, model, say=say)
    last = {}
    for r in rows:
        last[r["layer"]] = r
    summary = {"name": recipe.name, "command": "pretrain", "status": "completed",
               "reason": f"pre-trained {len(last)} hidden layers x {recipe['pretrain.epochs']} epochs",
               "layers": [{"layer": k, "loss": r["loss"], "train_loss": r["train_loss"], "val_loss": r["val_loss"]}
                          for k, r in last.items()],
               "weights": "pretrain.pt", "seconds": time.perf_counter() - t0,
               "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(run_dir / "summary.json", summary)
    return PretrainResult(run_dir, summary, rows)
