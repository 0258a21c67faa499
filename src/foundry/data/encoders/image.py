"""Image features: decode files with Pillow on a thread pool, resize, normalise.

Output: float32 [N, C, H, W]. `unit` scales pixels to [0, 1]; `standard` then subtracts
the per-channel mean and divides by the per-channel std of the training images.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from PIL import Image

from foundry.config.schema import ImagePreprocessing
from foundry.data.encoders.keys import first_row
from foundry.errors import DataError

GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
"""Pillow modes that default to 1 channel; everything else becomes RGB."""
_CHUNK = 512  # images decoded at once while computing training statistics
# Pillow releases the GIL while decoding, so threads give real parallelism.
_WORKERS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class ImageEncoder:
    name: str
    channels: int
    height: int
    width: int
    normalization: str
    mean: list[float]
    """Per-channel mean of training pixels in [0, 1] units (standard normalisation)."""
    std: list[float]
    base_dir: Path | None = field(default=None, compare=False)
    """Where relative paths are resolved; machine-specific, so not part of `state()`."""

    @classmethod
    def fit(
        cls, col: pd.Series, name: str, config: ImagePreprocessing, base_dir: Path | None = None
    ) -> ImageEncoder:
        paths = resolve_paths(col, name, base_dir)
        if not paths:
            raise DataError(f"image column '{name}' has no rows to fit on")
        channels, height, width = config.channels, config.height, config.width
        if channels is None or height is None or width is None:
            with _open(paths[0]) as first:
                channels = channels or (1 if first.mode in GRAY_MODES else 3)
                height = height or first.height
                width = width or first.width
        enc = cls(
            name=name,
            channels=channels,
            height=height,
            width=width,
            normalization=config.normalization,
            mean=[0.0] * channels,
            std=[1.0] * channels,
            base_dir=base_dir,
        )
        if config.normalization == "standard":
            mean, std = enc._pixel_stats(paths)
            enc = replace(enc, mean=mean, std=std)
        return enc

    def transform(self, col: pd.Series) -> np.ndarray:
        """Column of paths [N] → float32 [N, C, H, W]."""
        return self.transform_paths(resolve_paths(col, self.name, self.base_dir))

    def transform_paths(self, paths: Sequence[Path | str], *, threads: bool = True) -> np.ndarray:
        """Resolved paths [N] → float32 [N, C, H, W]. Each image's pixels depend on that
        image alone, so any subset of rows equals those rows of the whole column
        (`foundry.data.lazy_images` decodes per batch on that promise)."""
        return self._normalized(self.decode(paths, threads=threads))

    def encode_list(self, blobs: Sequence[bytes]) -> np.ndarray:
        """PNG/JPEG file contents [N] (as the API receives them) → float32 [N, C, H, W],
        equal to `transform` on paths of files holding the same bytes."""
        bad = [i for i, b in enumerate(blobs) if not isinstance(b, bytes)]
        if bad:
            raise DataError(
                f"image input '{self.name}' needs the image file's bytes, got "
                f"{type(blobs[bad[0]]).__name__} (row {bad[0]})"
            )
        # Pillow opens file objects as it opens paths.
        return self._normalized(self.decode([io.BytesIO(b) for b in blobs]))

    def _normalized(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W, C] → float32 [N, C, H, W] in [0, 1], then standardised."""
        x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        np.divide(x, 255.0, out=x)
        if self.normalization == "standard":
            x -= np.asarray(self.mean, dtype=np.float32)[:, None, None]
            x /= np.asarray(self.std, dtype=np.float32)[:, None, None]
        return x

    def decode(self, paths: Sequence[Path | str | BinaryIO], *, threads: bool = True) -> np.ndarray:
        """Files (paths or open binary files) → uint8 [N, H, W, C], resized to (height,
        width); decoded on a thread pool unless `threads` is False or N is small."""
        out = np.empty((len(paths), self.height, self.width, self.channels), dtype=np.uint8)
        mode = "L" if self.channels == 1 else "RGB"

        def load(i: int) -> None:
            with _open(paths[i]) as img:
                if img.mode != mode:  # convert() copies even when the mode already fits
                    img = img.convert(mode)
                if img.size != (self.width, self.height):
                    img = img.resize((self.width, self.height), Image.Resampling.BILINEAR)
                out[i] = np.asarray(img, dtype=np.uint8).reshape(out.shape[1:])

        if not threads or len(paths) < 2 * _WORKERS:
            for i in range(len(paths)):
                load(i)
        else:
            with ThreadPoolExecutor(_WORKERS) as pool:
                list(pool.map(load, range(len(paths))))  # list(): re-raises a failure
        return out

    def _pixel_stats(self, paths: list[str]) -> tuple[list[float], list[float]]:
        """Per-channel mean / std over all training pixels, in [0, 1] units."""
        total = np.zeros(self.channels)
        squares = np.zeros(self.channels)
        for chunk in _chunks(paths, _CHUNK):
            px = self.decode(chunk).reshape(-1, self.channels).astype(np.float64) / 255.0
            total += px.sum(axis=0)
            squares += (px * px).sum(axis=0)
        count = len(paths) * self.height * self.width
        mean = total / count
        std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
        std[std < 1e-6] = 1.0  # a constant channel: do not divide by ~0
        return mean.tolist(), std.tolist()

    def state(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "base_dir"}

    @classmethod
    def from_state(cls, d: dict[str, Any], base_dir: Path | None = None) -> ImageEncoder:
        return cls(**d, base_dir=base_dir)


def resolve_paths(col: pd.Series, name: str, base_dir: Path | None) -> list[str]:
    """The column's paths as strings (a Path object per row costs ~400 bytes: 40 MB
    for 100k images), relative ones joined to `base_dir`."""
    missing = col.isna().to_numpy()
    if missing.any():
        raise DataError(
            f"image column '{name}' has {int(missing.sum())} missing path(s) (first at row "
            f"{first_row(missing, col.index)})"
        )
    paths = col.astype(str).tolist()
    if base_dir is not None:  # os.path.join keeps an absolute path as it is
        paths = [os.path.join(base_dir, p) for p in paths]
    return paths


def _open(path: Path | str | BinaryIO) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()  # decode now, so a truncated file fails here with its name
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}") from e
    return img


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
