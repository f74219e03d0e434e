"""Tests for dlrecipe.augment against hand-computed references."""

import pytest
import torch
import torch.nn.functional as F

from dlrecipe import augment
from dlrecipe.errors import RecipeError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(b=16, c=3, h=12, w=10, seed=123):
    """Random images whose crops / flips are all distinct from each other."""
    return torch.randn(b, c, h, w, generator=gen(seed))


def test_hflip_p1_is_flip_p0_is_identity_and_input_untouched():
    x = batch()
    before = x.clone()
    assert torch.equal(augment.hflip(x, gen(), p=1.0), torch.flip(x, dims=[-1]))
    assert torch.equal(augment.hflip(x, gen(), p=0.0), x)
    assert torch.equal(x, before)


def test_hflip_half_flips_some_samples_each_fully():
    x = batch(b=64)
    out = augment.hflip(x, gen(1))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f != k for f, k in zip(flipped, kept))  # each sample is exactly one of the two
    assert 10 < sum(flipped) < 54


def test_crop_padding_zero_is_identity():
    x = batch()
    out = augment.random_crop(x, gen(), padding=0)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()


def test_crop_is_a_window_of_the_padded_input():
    p = 3
    x = batch(b=32)
    h, w = x.shape[-2:]
    out = augment.random_crop(x, gen(2), padding=p)
    assert out.shape == x.shape
    padded = F.pad(x, (p, p, p, p))
    offsets = []
    for i in range(len(x)):
        # every output must be exactly one of the (2p+1)^2 possible windows
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[i], padded[i, :, dy:dy + h, dx:dx + w])]
        assert len(hits) == 1, f"sample {i} is not a window of the padded input"
        offsets.append(hits[0])
    assert len(set(offsets)) > 5  # offsets are per sample, not one for the batch
    assert any(dy in (0, 2 * p) or dx in (0, 2 * p) for dy, dx in offsets)  # extreme shifts happen


def test_cutout_matches_reference_and_zeros_size_squared_inside():
    size, b, h, w = 4, 64, 16, 16
    x = torch.rand(b, 2, h, w, generator=gen(5)) + 1.0  # no zeros before cutout
    out = augment.cutout(x, gen(7), size=size)
    # reference: replay the generator's centre draws (rows, then columns) and zero by slicing
    g = gen(7)
    cy = torch.randint(0, h, (b,), generator=g)
    cx = torch.randint(0, w, (b,), generator=g)
    expected = x.clone()
    interior = 0
    for i in range(b):
        y0, x0 = int(cy[i]) - size // 2, int(cx[i]) - size // 2
        expected[i, :, max(y0, 0):y0 + size, max(x0, 0):x0 + size] = 0
        zeros = int((out[i, 0] == 0).sum())
        if 0 <= y0 and y0 + size <= h and 0 <= x0 and x0 + size <= w:
            interior += 1
            assert zeros == size * size
        else:
            assert 0 < zeros < size * size
    assert torch.equal(out, expected)
    assert interior > 10


def test_jitter_strength_zero_is_identity():
    x = batch()
    torch.testing.assert_close(augment.jitter(x, gen(), strength=0.0), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(32, 3, 6, 6), (32, 5)])
def test_jitter_is_per_sample_contrast_around_mean_plus_brightness(shape):
    s = 0.5
    x = torch.randn(*shape, generator=gen(3))
    out = augment.jitter(x, gen(4), strength=s)
    xf, of = x.reshape(len(x), -1), out.reshape(len(x), -1)
    m = xf.mean(1, keepdim=True)
    b = of.mean(1, keepdim=True) - m  # brightness moves the mean
    c = ((of - of.mean(1, keepdim=True)) * (xf - m)).sum(1, keepdim=True) / ((xf - m) ** 2).sum(1, keepdim=True)
    torch.testing.assert_close(of, (xf - m) * c + m + b, atol=1e-5, rtol=0)
    assert (b.abs() <= s + 1e-6).all() and ((c - 1).abs() <= s + 1e-6).all()
    assert b.std() > 0.05 and c.std() > 0.05  # different values per sample


def test_mixup_is_convex_combination_with_a_permutation():
    b = 16
    x = batch(b=b)
    y = torch.arange(b)  # labels = indices, so y_b reveals the permutation
    xm, y_a, y_b, lam = augment.mixup(x, y, gen(8), alpha=0.4)
    assert isinstance(lam, float) and 0.0 < lam < 1.0
    assert torch.equal(y_a, y)
    assert sorted(y_b.tolist()) == list(range(b)) and not torch.equal(y_b, y)
    torch.testing.assert_close(xm, lam * x + (1 - lam) * x[y_b])


def test_same_seed_same_output_and_different_seed_differs():
    x = batch()
    y = torch.arange(len(x))
    names = ["hflip", "crop", "jitter", "cutout", "mixup"]
    a = augment.apply(x, y, names, gen(11))
    b = augment.apply(x, y, names, gen(11))
    c = augment.apply(x, y, names, gen(12))
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]
    assert not torch.equal(a[0], c[0])


def test_apply_uses_fixed_order_and_no_mixup_defaults():
    x, y = batch(), torch.arange(16)
    before = x.clone()
    out, y_a, y_b, lam = augment.apply(x, y, ["cutout", "crop", "hflip"], gen(9), padding=2, cutout_size=3)
    g = gen(9)
    expected = augment.cutout(augment.random_crop(augment.hflip(x, g), g, 2), g, 3)
    assert torch.equal(out, expected)
    assert y_a is y and y_b is None and lam == 1.0
    assert torch.equal(x, before)


def test_apply_errors():
    with pytest.raises(RecipeError, match="unknown augmentation.*rotate.*choose from: hflip"):
        augment.apply(batch(), torch.zeros(16), ["rotate"], gen())
    with pytest.raises(RecipeError, match=r"'crop' needs image batches"):
        augment.apply(torch.zeros(4, 5), torch.zeros(4), ["crop"], gen())


def test_descriptions_cite_lecture_003():
    assert set(augment.AUGMENTATIONS) == {"hflip", "crop", "jitter", "cutout", "mixup", "resized_crop", "pca_colour"}
    assert all("003" in d for d in augment.AUGMENTATIONS.values())
