"""Write a folder of PNG images for recipes/shapes_cnn.toml: circles, squares and triangles, 3 classes.

    python recipes/make_shapes.py shapes            # shapes/<class>/<n>.png, 200 per class, 24x24 RGB
    python recipes/make_shapes.py new_shapes --per-class 10 --seed 1   # new images for dlrecipe predict

Each image has one shape of random size, position and colour on a noisy background of another colour: the class
is the shape, not the colour. Generated, never committed.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(kind: str, rng: np.random.Generator, size: int = 24) -> Image.Image:
    back, fore = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    while np.abs(back - fore).sum() < 200:  # the shape must stand out
        fore = rng.integers(0, 256, 3)
    pixels = np.clip(back + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    r = rng.uniform(0.22, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    box = [cx - r, cy - r, cx + r, cy + r]
    pen = ImageDraw.Draw(img)
    colour = tuple(int(c) for c in fore)
    if kind == "circle":
        pen.ellipse(box, fill=colour)
    elif kind == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def write(folder: Path, per_class: int = 200, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            draw(kind, rng).save(folder / kind / f"{i:04d}.png")
    return folder


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--per-class", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    write(a.folder, a.per_class, a.seed)
    print(f"wrote {a.per_class * len(CLASSES)} images to {a.folder}/")
