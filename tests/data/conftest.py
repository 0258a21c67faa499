"""Small generated data for the data-package tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_png(path: Path, value: int | tuple[int, int, int], size=(6, 4), mode="RGB") -> Path:
    """A flat-colour image of `size` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


@pytest.fixture
def png():
    """The `write_png` helper, as a fixture so test modules need not import conftest."""
    return write_png


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """root/cat/*.png (dark) and root/dog/*.png (bright), 3 of each, plus a stray file."""
    root = tmp_path / "images"
    for i in range(3):
        write_png(root / "cat" / f"c{i}.png", (10 * i, 0, 0))
        write_png(root / "dog" / f"d{i}.PNG", (200, 200, 10 * i))
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
