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
    "resized_crop": "crop a random square covering data.scale = [min, max] of the area (default 0.22-0.77), resize "
                    "it back to the full size (lecture 003: random crops and scales)",
    "pca_colour": "add an offset along the training split's RGB principal components, alpha_i ~ N(0, data.pca_std) "
                  "times each eigenvalue (AlexNet lighting noise; lecture 003: PCA colour offset)",
}

ORDER = ["hflip", "resized_crop", "crop", "jitter", "pca_colour", "cutout", "mixup"]  # the order `apply` uses


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


def resized_crop(x: torch.Tensor, g: torch.Generator, scale: tuple[float, float] = (0.22, 0.77)) -> torch.Tensor:
    """Per sample: a square window covering s ~ U(scale) of the image area at a random position, resized back to
    H x W with bilinear interpolation (one affine grid for the whole batch)."""
    _check_images(x, "resized_crop")
    b = x.shape[0]
    side = _uniform(g, b, scale[0], scale[1], x.device).sqrt()  # window side / image side
    # affine_grid maps output coordinates in [-1, 1] to input ones: scale by `side`, shift within what stays inside
    shift = (1 - side)[:, None] * (2 * torch.rand(b, 2, generator=g, device=x.device) - 1)  # (B, 2) x, y
    theta = torch.zeros(b, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = side.to(x.dtype)
    theta[:, :, 2] = shift.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def fit_pca_colour(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues (3,), eigenvectors (3, 3) as columns) of the 3x3 covariance of every RGB pixel of the training
    split (AlexNet, Krizhevsky et al. 2012)."""
    if not isinstance(x_train, torch.Tensor):
        raise RecipeError("augmentation 'pca_colour' needs the training images in memory (data.in_memory = true)")
    if x_train.dim() != 4 or x_train.shape[1] != 3:
        raise RecipeError(f"augmentation 'pca_colour' needs RGB images (B, 3, H, W); the training data has shape "
                          f"{list(x_train.shape)}")
    pixels = x_train.permute(1, 0, 2, 3).reshape(3, -1).double()  # (3, N*H*W)
    eigvals, eigvecs = torch.linalg.eigh(torch.cov(pixels))
    return eigvals.clamp_min(0).to(x_train.dtype), eigvecs.to(x_train.dtype)


def pca_colour(x: torch.Tensor, g: torch.Generator, pca: tuple[torch.Tensor, torch.Tensor],
               std: float = 0.1) -> torch.Tensor:
    """Add to every pixel of image i the offset sum_j p_j * alpha_ij * lambda_j, alpha_ij ~ N(0, std) drawn once per
    image, p_j / lambda_j the RGB principal directions / eigenvalues of the training split."""
    eigvals, eigvecs = (t.to(x.device, x.dtype) for t in pca)
    alpha = torch.randn(x.shape[0], 3, generator=g, device=x.device, dtype=x.dtype) * std  # (B, 3)
    offset = (alpha * eigvals) @ eigvecs.T  # (B, 3): each row is eigvecs @ (alpha_i * eigvals)
    return x + offset[:, :, None, None]


def config(data: dict) -> dict:
    """The keyword arguments of `apply` from a recipe's [data] table (recipe.section("data"))."""
    return {"padding": data["crop_padding"], "strength": data["jitter"], "cutout_size": data["cutout_size"],
            "mixup_alpha": data["mixup_alpha"], "scale": tuple(data.get("scale", (0.22, 0.77))),
            "pca_std": data.get("pca_std", 0.1)}


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
    scale: tuple[float, float] = (0.22, 0.77),
    pca: tuple[torch.Tensor, torch.Tensor] | None = None,
    pca_std: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, float]:
    """Apply the named augmentations in the fixed order of ORDER (hflip, resized_crop, crop, jitter, pca_colour,
    cutout, mixup); pca_colour needs `pca` = fit_pca_colour(training images).

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
    if "resized_crop" in chosen:
        x = resized_crop(x, g, scale)
    if "crop" in chosen:
        x = random_crop(x, g, padding)
    if "jitter" in chosen:
        x = jitter(x, g, strength)
    if "pca_colour" in chosen:
        if pca is None:
            raise RecipeError("augmentation 'pca_colour' needs the training split's colour PCA (fit_pca_colour)")
        x = pca_colour(x, g, pca, pca_std)
    if "cutout" in chosen:
        x = cutout(x, g, cutout_size)
    if "mixup" in chosen:
        return mixup(x, y, g, mixup_alpha)
    return x, y, None, 1.0
