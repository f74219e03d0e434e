"""Training-time augmentation of batches that are already on the device (lecture 003).

Every function takes a batch `x` (B, C, H, W) and a `torch.Generator` `g` on the same device,
returns a new tensor (the input is never modified) and works on the whole batch at once, so the
same seed gives the same batch.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dlrecipe.errors import RecipeError

AUGMENTATIONS = {
    "hflip": "flip each image left-right with probability 0.5 (lecture 003: flips)",
    "crop": "zero-pad each side (default 4 pixels), then take a random crop of the original size (lecture 003: random crops)",
    "jitter": "random brightness shift and contrast scale per sample (lecture 003: colour jitter)",
    "cutout": "zero a random square patch in each image (lecture 003: cutout)",
    "mixup": "blend pairs of samples and their labels with lam ~ Beta(alpha, alpha) (lecture 003: mixup)",
}

ORDER = ["hflip", "crop", "jitter", "cutout", "mixup"]  # the order `apply` uses


def _check_images(x: torch.Tensor, name: str) -> None:
    """Raise if `x` is not an image batch (B, C, H, W)."""
    if x.dim() != 4:
        raise RecipeError(
            f"augmentation '{name}' needs image batches (B, C, H, W); got shape {tuple(x.shape)}"
        )


def _uniform(g: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    """n samples of U(low, high) drawn from g."""
    return low + (high - low) * torch.rand(n, generator=g, device=device)


def hflip(x: torch.Tensor, g: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each sample left-right with probability p."""
    _check_images(x, "hflip")
    flip = torch.rand(x.shape[0], generator=g, device=x.device) < p  # (B,)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_crop(x: torch.Tensor, g: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Zero-pad by `padding` on each side, then crop a random HxW window per sample."""
    _check_images(x, "crop")
    if padding <= 0:
        return x.clone()
    b, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))  # (B, C, H+2p, W+2p)
    top = torch.randint(0, 2 * padding + 1, (b,), generator=g, device=x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=g, device=x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (B, H) source row of each output row
    cols = left[:, None] + torch.arange(w, device=x.device)  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(b, c, h, w + 2 * padding))  # (B, C, H, W+2p)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))  # (B, C, H, W)


def jitter(x: torch.Tensor, g: torch.Generator, strength: float = 0.2) -> torch.Tensor:
    """Per sample: scale contrast by c ~ U(1-s, 1+s) around its mean, then add brightness b ~ U(-s, s)."""
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)  # broadcast one value per sample over any shape
    bright = _uniform(g, n, -strength, strength, x.device).view(shape).to(x.dtype)
    contrast = _uniform(g, n, 1 - strength, 1 + strength, x.device).view(shape).to(x.dtype)
    mean = x.reshape(n, -1).mean(dim=1).view(shape)
    return (x - mean) * contrast + mean + bright


def cutout(x: torch.Tensor, g: torch.Generator, size: int = 8) -> torch.Tensor:
    """Zero a size x size square (clipped at the borders) at a random centre per sample."""
    _check_images(x, "cutout")
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b,), generator=g, device=x.device)
    cx = torch.randint(0, w, (b,), generator=g, device=x.device)
    y0, x0 = cy - size // 2, cx - size // 2  # top-left corner, may lie outside the image
    r = torch.arange(h, device=x.device)[None, :]  # (1, H)
    k = torch.arange(w, device=x.device)[None, :]  # (1, W)
    in_rows = (r >= y0[:, None]) & (r < y0[:, None] + size)  # (B, H)
    in_cols = (k >= x0[:, None]) & (k < x0[:, None] + size)  # (B, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :]  # (B, H, W)
    return x.masked_fill(mask[:, None], 0)


def mixup(
    x: torch.Tensor, y: torch.Tensor, g: torch.Generator, alpha: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Blend each sample with a random partner: returns (lam*x + (1-lam)*x[perm], y, y[perm], lam)."""
    if alpha <= 0:
        raise RecipeError(f"mixup alpha must be > 0; got {alpha}")
    # torch's Beta sampler takes no generator: seed a numpy generator from g so lam is reproducible
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=g, device=x.device)
    return lam * x + (1 - lam) * x[perm], y, y[perm], lam


def config(data: dict) -> dict:
    """The keyword arguments of `apply` from a recipe's [data] table (recipe.section("data"))."""
    return {"padding": data["crop_padding"], "strength": data["jitter"], "cutout_size": data["cutout_size"],
            "mixup_alpha": data["mixup_alpha"]}


def apply(
    x: torch.Tensor,
    y: torch.Tensor,
    names: list[str],
    g: torch.Generator,
    *,
    padding: int = 4,
    strength: float = 0.2,
    cutout_size: int = 8,
    mixup_alpha: float = 0.2,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Apply the named augmentations in the fixed order hflip, crop, jitter, cutout, mixup.

    Returns (x, y_a, y_b, lam); the loss is lam*loss(y_a) + (1-lam)*loss(y_b), and without mixup
    y_a = y, y_b = None, lam = 1.0.
    """
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise RecipeError(
            f"unknown augmentation(s) {', '.join(unknown)}; choose from: {', '.join(AUGMENTATIONS)}"
        )
    chosen = set(names)
    if "hflip" in chosen:
        x = hflip(x, g)
    if "crop" in chosen:
        x = random_crop(x, g, padding)
    if "jitter" in chosen:
        x = jitter(x, g, strength)
    if "cutout" in chosen:
        x = cutout(x, g, cutout_size)
    if "mixup" in chosen:
        return mixup(x, y, g, mixup_alpha)
    return x, y, None, 1.0
