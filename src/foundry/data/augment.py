"""Random image augmentation of a whole training batch at once, on the batch's device.

Flips are a per-sample `torch.where`; crop (shift after padding) and rotation are folded
into one affine transform per sample and applied with a single `grid_sample` call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from foundry.config.schema import AugmentConfig


def augment_images(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Augment x: float [N, C, H, W] → float [N, C, H, W] (a new tensor unless all off).

    flip: each sample mirrored left-right with p = 0.5. crop: each sample shifted by a
    whole number of pixels in [-crop, crop] per axis, uncovered pixels are 0 (the same as
    padding by `crop` then cropping back to H x W). rotate: each sample rotated by a
    uniform angle in [-rotate, rotate] degrees around its centre. Random draws come from
    `generator` (on its own device) so a seeded run repeats exactly.
    """
    if not (cfg.flip or cfg.crop > 0 or cfg.rotate > 0):
        return x
    n, _, h, w = x.shape
    gen_device = generator.device

    if cfg.flip:
        flip = torch.rand(n, generator=generator, device=gen_device) < 0.5
        x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)

    if cfg.crop > 0 or cfg.rotate > 0:
        angle = torch.zeros(n, dtype=torch.float64)
        shift = torch.zeros(n, 2, dtype=torch.float64)  # (dx, dy) in pixels
        if cfg.rotate > 0:
            u = torch.rand(n, generator=generator, device=gen_device).cpu().double()
            angle = (2 * u - 1) * math.radians(cfg.rotate)
        if cfg.crop > 0:
            shift = (
                torch.randint(
                    -cfg.crop, cfg.crop + 1, (n, 2), generator=generator, device=gen_device
                )
                .cpu()
                .double()
            )
        theta = _affine(angle, shift, h, w).to(device=x.device, dtype=x.dtype)  # [N, 2, 3]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # [N, H, W, 2]
        # Pure shifts land exactly on pixel centres: "nearest" copies pixels bit for bit.
        mode = "bilinear" if cfg.rotate > 0 else "nearest"
        x = F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return x


def _affine(angle: torch.Tensor, shift: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """theta [N, 2, 3] mapping output to input coordinates in grid_sample's [-1, 1] units.

    A rotation is isotropic in pixels, not in normalised units, so it is conjugated by
    the scale diag(2/W, 2/H): off-diagonal terms pick up the aspect ratio.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(angle.shape[0], 2, 3, dtype=torch.float64)
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = -sin * h / w
    theta[:, 1, 0] = sin * w / h
    theta[:, 1, 1] = cos
    # Sampling the input at (x - dx) moves the content by +dx pixels; 1 pixel = 2/W.
    theta[:, 0, 2] = -shift[:, 0] * 2.0 / w
    theta[:, 1, 2] = -shift[:, 1] * 2.0 / h
    return theta
