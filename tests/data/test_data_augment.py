from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from foundry.config.schema import AugmentConfig
from foundry.data import augment_images
from foundry.data.augment import _affine


def batch() -> torch.Tensor:
    return torch.arange(8 * 3 * 5 * 7, dtype=torch.float32).reshape(8, 3, 5, 7)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_all_off_is_identity() -> None:
    x = batch()
    assert augment_images(x, AugmentConfig(), gen()) is x


def test_flip_mirrors_some_samples_exactly() -> None:
    x = batch()
    y = augment_images(x, AugmentConfig(flip=True), gen())
    assert y.shape == x.shape
    flipped = [torch.equal(y[i], x[i].flip(-1)) for i in range(8)]
    kept = [torch.equal(y[i], x[i]) for i in range(8)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_crop_shifts_by_whole_pixels() -> None:
    x = batch()
    y = augment_images(x, AugmentConfig(crop=2), gen())
    assert y.shape == x.shape and not torch.equal(x, y)
    # every output pixel is either an input pixel (exact copy) or padding (0)
    values = set(x.flatten().tolist()) | {0.0}
    assert set(y.flatten().tolist()) <= values


def test_rotation_changes_pixels_and_is_seeded() -> None:
    x = torch.rand(4, 1, 9, 9, generator=gen(1))
    cfg = AugmentConfig(rotate=30, crop=1, flip=True)
    a = augment_images(x, cfg, gen(3))
    b = augment_images(x, cfg, gen(3))
    assert a.shape == x.shape and not torch.equal(a, x)
    assert torch.equal(a, b)


def test_rotation_keeps_the_centre_pixel() -> None:
    x = torch.rand(6, 2, 7, 7, generator=gen(2))
    y = augment_images(x, AugmentConfig(rotate=45), gen())
    torch.testing.assert_close(y[:, :, 3, 3], x[:, :, 3, 3])


@pytest.mark.parametrize("h,w", [(5, 5), (4, 6)])
def test_quarter_turn_matches_rot90(h: int, w: int) -> None:
    # the affine built for +90 degrees must be an exact rot90, also on non-square images
    # (where the content that fits is the centre; the rest is zero padding)
    x = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w) + 1
    theta = _affine(torch.tensor([math.pi / 2], dtype=torch.float64), torch.zeros(1, 2), h, w)
    grid = F.affine_grid(theta.float(), [1, 1, h, w], align_corners=False)
    y = F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    if h == w:
        assert torch.equal(y[0, 0], torch.rot90(x[0, 0], -1)) or torch.equal(
            y[0, 0], torch.rot90(x[0, 0], 1)
        )
    else:
        assert (y > 0).sum() == min(h, w) ** 2  # a rotated rectangle, not a sheared one
