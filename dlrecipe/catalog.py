"""Everything a recipe can name, grouped, for `dlrecipe components` and the README."""
from __future__ import annotations


def catalog() -> dict[str, list[tuple[str, str, str]]]:
    """{group: [(name, one-line summary, lecture files)]} over every registry."""
    from . import augment
    from .data import files as datafiles
    from . import components as C
    from .data import DATASETS
    from .models import MODEL_KINDS

    def rows(registry: dict) -> list[tuple[str, str, str]]:
        return [(name, c.summary, c.lecture) for name, c in registry.items()]

    return {
        "model kinds (model.kind)": rows(MODEL_KINDS),
        "activations (model.activation)": rows(C.ACTIVATIONS),
        "inits (model.init)": rows(C.INITS),
        "norms (model.norm)": rows(C.NORMS),
        "output bias (model.output_bias)": rows(C.OUTPUT_BIASES),
        "regularisers": rows(C.REGULARISERS),
        "optimizers (train.optimizer)": rows(C.OPTIMIZERS),
        "schedules (train.schedule)": rows(C.SCHEDULES),
        "losses (train.loss)": rows(C.LOSSES),
        "preprocessing (data.preprocess)": rows(C.PREPROCESS),
        "augmentation (data.augment)": [(n, s, "001 003") for n, s in augment.AUGMENTATIONS.items()],
        "datasets (data.source)": [(n, f"{d.summary} [{d.task}]", d.lecture) for n, d in DATASETS.items()],
        "file formats (data.format)": [(n, s, "-") for n, s in datafiles.FORMATS.items()],
    }
