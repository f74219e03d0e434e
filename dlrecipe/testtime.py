"""Test-time averaging (lecture 003's evaluation stage): Monte Carlo dropout and test-time augmentation.

Both average *probabilities* (softmax of each pass), never logits: `test.mc_dropout = T` runs T passes with the
dropout (and DropConnect) layers in training mode and everything else, batch norm included, in eval mode (the
lecture's "aggregate predictions over random sub-networks"); `test.tta` runs each pass over augmented copies of
every test image (hflip: the original and its mirror; crops: the centre and the 4 corner crops of the image
zero-padded by data.crop_padding, the ResNet recipe's fixed crops). Regression averages the outputs.
The spread over the T passes (the std of the predicted class's probability, or of the regression output) is the
per-example uncertainty that `dlrecipe predict` writes.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .errors import DataError

TTA = {"hflip": "the image and its left-right mirror",
       "crops": "the centre and 4 corner crops of the zero-padded image (padding data.crop_padding)"}


def _stochastic(module: nn.Module) -> bool:
    from .models import DropConnectLinear

    return isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                               DropConnectLinear))


def has_dropout(model: nn.Module) -> bool:
    return any(_stochastic(m) and getattr(m, "p", 0) > 0 for m in model.modules())


@contextlib.contextmanager
def mc_mode(model: nn.Module, on: bool):
    """Eval mode, with the dropout layers switched to training mode when `on`; the modes are restored after."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    if on:
        for m in model.modules():
            if _stochastic(m):
                m.train()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.train(mode)


def tta_views(x: torch.Tensor, names: list[str], padding: int = 4) -> list[torch.Tensor]:
    """The augmented copies of a batch, each the batch's shape: crops (5) x flips (2) when both are named."""
    if not names:
        return [x]
    if x.dim() != 4:
        raise DataError(f"test.tta {names} needs images (C, H, W); the data has shape {list(x.shape[1:])}")
    views = [x]
    if "crops" in names and padding > 0:
        h, w = x.shape[-2:]
        p = F.pad(x, (padding, padding, padding, padding))
        offsets = [(padding, padding), (0, 0), (0, 2 * padding), (2 * padding, 0), (2 * padding, 2 * padding)]
        views = [p[..., top:top + h, left:left + w] for top, left in offsets]  # centre first: equals x
    if "hflip" in names:
        views = views + [v.flip(-1) for v in views]
    return views


@torch.no_grad()
def averaged_outputs(model: nn.Module, x, task: str, *, mc_dropout: int = 0, tta: list[str] | None = None,
                     padding: int = 4, batch_size: int = 1024,
                     seed: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(mean probabilities (N, C) or mean regression outputs (N,), spread over the MC passes (N,) or None).

    T = max(mc_dropout, 1) passes, each over every TTA view; with mc_dropout = 0 or 1 and no dropout layers this is
    exactly the plain evaluation. Dropout masks come from a generator seeded with `seed` (the global one is left
    as it was)."""
    from .data.prepare import eval_batches

    passes = max(mc_dropout, 1)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    means, spreads = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), mc_mode(model, mc_dropout > 0):
        torch.manual_seed(seed)
        for xb in eval_batches(x, batch_size):
            per_pass = []
            for _ in range(passes):
                outs = []
                for view in tta_views(xb, tta or [], padding):
                    out = model(view)
                    outs.append(out.softmax(dim=1) if task == "classification" else out.reshape(-1))
                per_pass.append(torch.stack(outs).mean(0))  # average over the views
            stacked = torch.stack(per_pass)                  # (T, B, C) or (T, B)
            mean = stacked.mean(0)
            means.append(mean)
            if passes > 1:
                if task == "classification":
                    top = mean.argmax(1)
                    chosen = stacked.gather(2, top[None, :, None].expand(passes, -1, 1)).squeeze(2)  # (T, B)
                    spreads.append(chosen.std(0))
                else:
                    spreads.append(stacked.std(0))
    return torch.cat(means), (torch.cat(spreads) if spreads else None)


def evaluate_averaged(model: nn.Module, x, y: torch.Tensor, task: str, loss_fn: nn.Module, cfg: dict, *,
                      padding: int = 4, batch_size: int = 1024, seed: int = 0) -> dict[str, float]:
    """Test loss (classification: the NLL of the averaged probabilities) and accuracy with cfg's averaging."""
    mean, _ = averaged_outputs(model, x, task, mc_dropout=cfg.get("mc_dropout", 0), tta=cfg.get("tta", []),
                               padding=padding, batch_size=batch_size, seed=seed)
    if task == "classification":
        loss = F.nll_loss(mean.clamp_min(1e-12).log(), y)
        return {"loss": float(loss), "acc": float((mean.argmax(1) == y).float().mean())}
    return {"loss": float(loss_fn(mean, y))}


def describe(cfg: dict) -> str:
    """'mc_dropout x20, tta hflip+crops' for the summary; '' when nothing is averaged."""
    parts = []
    if cfg.get("mc_dropout", 0) > 0:
        parts.append(f"mc_dropout x{cfg['mc_dropout']}")
    if cfg.get("tta"):
        parts.append("tta " + "+".join(cfg["tta"]))
    return ", ".join(parts)
