"""Image folders read with Pillow, and the layout rules for image arrays (channels-last, `data.shape`).

Layouts: `root/<class>/*.png|jpg|...` (split by dlrecipe), or pre-split `root/train/<class>/...` with `val/`
(or `valid/`, `validation/`) and/or `test/` beside it, honoured as the split. A folder of images without class
sub-folders is read unlabelled (for `dlrecipe predict`). Every image is converted to `data.channels` (1: grey,
3: RGB; default: the first image's) and resized to `data.image_size` [H, W] (default: the first image's size)
with bilinear filtering; pixel values stay 0-255 (preprocessing scales them). Files that Pillow cannot open are
skipped, counted and named in a note, so one corrupt file does not stop a run; the note is printed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError, RecipeError
from .files import RawData

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_FOLDERS = {"train": ("train",), "val": ("val", "valid", "validation"), "test": ("test",)}
GREY_MODES = ("1", "L", "LA", "I", "I;16", "F", "P")  # "P" palettes are read as their own mode below


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path) -> tuple[dict[str, list[tuple[Path, str | None]]], list[str]]:
    """{split: [(file, class name)]} and the sorted class names; split "all" when the folder is not pre-split."""
    root = Path(root)
    splits: dict[str, list[tuple[Path, str | None]]] = {}
    sub = {p.name.lower(): p for p in _class_folders(root)}
    presplit = "train" in sub and any(a in sub for k in ("val", "test") for a in SPLIT_FOLDERS[k])
    for split, aliases in SPLIT_FOLDERS.items() if presplit else [("all", ())]:
        folder = next((sub[a] for a in aliases if a in sub), None) if presplit else root
        if folder is None:
            continue
        classes = _class_folders(folder)
        files = [(f, c.name) for c in classes for f in _images_in(c)]
        if not classes:
            files = [(f, None) for f in _images_in(folder)]
        splits[split] = files
    names = sorted({c for files in splits.values() for _, c in files if c is not None})
    if not any(splits.values()):
        raise DataError(f"data.source '{root}': no images ({', '.join(IMAGE_EXTENSIONS)}) in class sub-folders "
                        f"root/<class>/ or root/{{train,val,test}}/<class>/")
    return splits, names


def open_image(path: Path):
    """The image at `path`, opened by Pillow (pixels read lazily); DataError naming the file if it cannot be."""
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"image '{path}' cannot be read ({type(e).__name__}: {e})") from None


def read_image(path: Path, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image as float32 (C, H, W), 0-255, converted to `channels` and resized to `size` = (H, W)."""
    from PIL import Image

    img = open_image(path)
    try:
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != (size[1], size[0]):
            img = img.resize((size[1], size[0]), Image.BILINEAR)
        a = np.asarray(img, dtype=np.float32)
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt pixel data
        raise DataError(f"image '{path}' cannot be decoded ({type(e).__name__}: {e})") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def image_format(cfg: dict, first: Path) -> tuple[tuple[int, int], int]:
    """(H, W) and channels: the recipe's, else the first image's."""
    img = open_image(first)
    size = tuple(cfg.get("image_size") or (img.size[1], img.size[0]))
    channels = cfg.get("channels") or (1 if img.mode in GREY_MODES and not _palette_colour(img) else 3)
    return size, channels


def _palette_colour(img) -> bool:
    return img.mode == "P" and img.convert("RGB").getextrema() != img.convert("L").convert("RGB").getextrema()


class ImageFiles:
    """A map-style dataset of image files: item i is (float32 (C, H, W), label); read on demand."""

    def __init__(self, files: list[Path], labels: np.ndarray, size: tuple[int, int], channels: int):
        self.files, self.labels, self.size, self.channels = files, labels, size, channels
        self.targets = labels  # the torchvision convention: labels without reading the images

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return read_image(self.files[i], self.size, self.channels), self.labels[i]


def read_imagefolder(root: Path, cfg: dict, task: str, *, labelled: bool = True) -> RawData:
    """An image folder as RawData: arrays (data.in_memory, the default) or an `ImageFiles` stream."""
    from .stream import Examples

    if task != "classification":
        raise RecipeError("data.format = 'imagefolder' gives class labels (one sub-folder per class): "
                          "set task = 'classification'")
    splits, classes = scan(root)
    unlabelled = [s for s, files in splits.items() if any(c is None for _, c in files)]
    if labelled and (unlabelled or not classes):
        raise DataError(f"data.source '{root}': images must sit in one sub-folder per class (root/<class>/*.png); "
                        f"found images outside class folders in {', '.join(unlabelled) or 'the root'}")
    first = next(f for files in splits.values() for f, _ in files)
    size, channels = image_format(cfg, first)
    index = {c: i for i, c in enumerate(classes)}
    in_memory = cfg.get("in_memory")
    in_memory = True if in_memory is None else in_memory
    parts, ids, skipped = {}, {}, []
    for split, files in splits.items():
        good, xs = [], []
        for f, c in files:
            try:
                if in_memory:
                    xs.append(read_image(f, size, channels))
                else:
                    open_image(f).close()  # the header only: streaming decodes each image when it is needed
                good.append((f, c))
            except DataError:
                skipped.append(f)
        labels = np.array([index[c] if c is not None else -1 for _, c in good], dtype=np.int64)
        if in_memory:
            x = np.stack(xs) if xs else np.zeros((0, channels, *size), np.float32)
        else:
            x = Examples(ImageFiles([f for f, _ in good], labels, size, channels), (channels, *size))
        parts[split] = (x, labels)
        ids[split] = np.array([str(f.relative_to(root)) for f, _ in good])
    notes = [(f"{sum(len(p[1]) for p in parts.values())} images of {channels}x{size[0]}x{size[1]}"
              f" ({'in memory' if in_memory else 'streamed from disk'})")]
    if skipped:
        names = ", ".join(str(p.relative_to(root)) for p in skipped[:3])
        notes.append(f"{len(skipped)} image(s) that Pillow cannot read were skipped: {names}"
                     + (" ..." if len(skipped) > 3 else ""))
    main = parts.get("all") or parts["train"]
    ids = {("train" if k == "all" else k): v for k, v in ids.items()}
    raw = RawData(x=main[0], y=main[1], classes=classes or None, ids=ids, notes=notes)
    if "val" in parts:
        raw.x_val, raw.y_val = parts["val"]
    if "test" in parts:
        raw.x_test, raw.y_test = parts["test"]
    raw.image = {"size": list(size), "channels": channels}
    return raw


# ----------------------------------------------------------------------------- array layouts


def channels_last(shape: tuple[int, ...]) -> bool:
    """The rule for image arrays (N, H, W, C): 4 dimensions, the last 1, 3 or 4 and the second not (so (N, C, H, W)
    arrays, whose second axis is the channel, are left alone)."""
    return len(shape) == 4 and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def check_reshape(have: list[int], want: list[int]) -> None:
    """data.shape may add or remove size-1 axes, flatten, or unflatten a flat vector; it may not move pixels
    between axes (e.g. (H, W, C) -> (C, H, W), which scrambles the image: that needs a transpose)."""
    if int(np.prod(want)) != int(np.prod(have)):
        raise DataError(f"data.shape = {want} holds {int(np.prod(want))} values but each example has "
                        f"{int(np.prod(have))} (shape {have})")
    squeeze = lambda s: [d for d in s if d != 1]
    if len(squeeze(have)) <= 1 or len(squeeze(want)) <= 1 or squeeze(have) == squeeze(want):
        return
    raise DataError(f"data.shape = {want} would reorder the pixels of examples shaped {have} (a reshape is not "
                    f"a transpose): data.shape may only add or remove axes of size 1, or flatten; channels-last "
                    f"arrays (N, H, W, C) are transposed to (N, C, H, W) automatically")
