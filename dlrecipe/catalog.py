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
        "transfer, pre-training, test-time averaging, blocks": TECHNIQUES,
        "hidden-unit health (train: hidden_units.csv, report)": HEALTH,
    }


TECHNIQUES = [
    ("model.pretrained", "transfer learning: load the matching layers of a run or a state dict (weights_only); "
     "layers.csv says per layer loaded / new / ignored", "000 001 003"),
    ("model.pretrained_skip", "layers kept new although the file has them (e.g. 'output' for other classes)", "003"),
    ("train.freeze", "frozen layers (by number from the input, 'output', or module name): not in the optimizer, no "
     "weight decay, batch norms in eval mode", "001 003"),
    ("train.unfreeze", "staged fine-tuning: one more layer from the top at each listed epoch, at train.unfreeze_lr x "
     "the LR", "003"),
    ("data.classes_only / data.max_train", "a task made of some classes / few labels (the other training inputs "
     "stay as unlabelled inputs for [pretrain])", "003"),
    ("pretrain", "greedy layer-wise tied-weight autoencoders h = sigm(b + Wx), x_hat = sigm(c + W^T h) (cross-entropy)"
     " or c + W^T h (1/2 sum of squares), then the output layer and fine-tuning; dlrecipe pretrain", "002"),
    ("test.mc_dropout", "Monte Carlo dropout: average the probabilities of T passes with dropout on; predict adds "
     "an uncertainty column", "003"),
    ("test.tta", "test-time augmentation: average the probabilities over hflip / 5 crops of each image", "003"),
    ("model.residual", "identity skip around each hidden block, projection where widths differ", "003"),
    ("model.stochastic_depth", "drop residual blocks while training, survival 1 - (l/L) p, scaled at test "
     "(Huang et al. 2016)", "003"),
    ("model.pool = fractional", "fractional max pooling, nn.FractionalMaxPool2d with model.pool_ratio (Graham "
     "2014), 2-D only", "003"),
]

HEALTH = [
    ("sparsity", "fraction of activations within 5% of zero (relative to the layer's largest): good training has "
     "sparse units", "002"),
    ("mean_abs_corr", "mean |Pearson r| between live units across samples; a warning when over 10% of a layer's "
     "units have |r| > 0.9 with another", "002"),
    ("ignoring_units", "units whose output does not vary with the input (std < 0.1% of the layer's largest); a "
     "warning over 10%", "002"),
    ("flops_per_example", "summary: 2 x multiply-adds of the linear and conv layers per forward pass, beside the "
     "parameter counts (lecture 002: underperforming -> count FLOPs and parameters)", "002"),
]
