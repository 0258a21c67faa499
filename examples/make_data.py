"""Write the example data sets into examples/data/ from packages that ship them.

    python examples/make_data.py            # every data set
    python examples/make_data.py digits     # just one

Everything is deterministic (fixed seeds) and offline: scikit-learn's digits,
`palmerpenguins`, and small synthetic sets drawn with numpy and Pillow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data"


def binary10(n: int = 2000) -> Path:
    """10 numeric features, 2 classes (the classic first Keras/PyTorch MLP example)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=n,
        n_features=10,
        n_informative=6,
        n_redundant=2,
        class_sep=1.2,
        random_state=7,
    )
    df = pd.DataFrame(x.round(5), columns=[f"x{i}" for i in range(10)])
    df["label"] = np.where(y == 1, "yes", "no")
    return _write_csv(df, "binary10.csv")


def line(n: int = 500) -> Path:
    """y = 2x + 1 + noise: the one-weight linear regression everyone writes first."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-5, 5, n)
    y = 2.0 * x + 1.0 + rng.normal(0, 0.5, n)
    return _write_csv(pd.DataFrame({"x": x.round(5), "y": y.round(5)}), "line.csv")


def penguins() -> Path:
    """Palmer penguins: species from measurements, island and sex (with missing values)."""
    from palmerpenguins import load_penguins

    return _write_csv(load_penguins(), "penguins.csv")


def digits() -> Path:
    """scikit-learn's 8x8 handwritten digits written out as `digits/<label>/<i>.png`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = DATA / "digits"
    if root.exists():
        return root
    bunch = load_digits()
    for i, (pixels, label) in enumerate(zip(bunch.images, bunch.target, strict=True)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        # digits are 0..16 intensities; scale to 0..255 grayscale
        Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def shapes(per_class: int = 200, size: int = 32) -> Path:
    """Coloured circles, squares and triangles on noisy backgrounds (RGB image folder)."""
    from PIL import Image, ImageDraw

    root = DATA / "shapes"
    if root.exists():
        return root
    rng = np.random.default_rng(3)
    for label in ("circle", "square", "triangle"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            bg = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            img = Image.fromarray(bg, mode="RGB")
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(6, 12))
            cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
            color = tuple(int(c) for c in rng.integers(120, 256, 3))
            box = (cx - r, cy - r, cx + r, cy + r)
            if label == "circle":
                draw.ellipse(box, fill=color)
            elif label == "square":
                draw.rectangle(box, fill=color)
            else:
                draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=color)
            img.save(root / label / f"{i}.png")
    return root


def reviews(n: int = 1200) -> Path:
    """Short product reviews with a sentiment label, composed from phrase templates."""
    rng = np.random.default_rng(11)
    good = [
        "great",
        "excellent",
        "love it",
        "works perfectly",
        "highly recommend",
        "fantastic value",
        "very happy",
        "sturdy and well made",
        "five stars",
    ]
    bad = [
        "terrible",
        "broke after a week",
        "waste of money",
        "very disappointed",
        "does not work",
        "poor quality",
        "would not buy again",
        "returned it",
        "awful",
    ]
    neutral = [
        "the box arrived on tuesday",
        "i bought it for my kitchen",
        "color is blue",
        "shipping took three days",
        "it is the second one i own",
        "fits in a drawer",
    ]
    rows = []
    for _ in range(n):
        positive = bool(rng.integers(0, 2))
        words = list(rng.choice(good if positive else bad, size=2, replace=False))
        words += list(rng.choice(neutral, size=int(rng.integers(1, 3)), replace=False))
        # a little label noise keeps the task from being trivially separable
        if rng.random() < 0.05:
            positive = not positive
        rng.shuffle(words)
        rows.append(
            {"review": ", ".join(words), "sentiment": "positive" if positive else "negative"}
        )
    return _write_csv(pd.DataFrame(rows), "reviews.csv")


def adult(n: int = 1000) -> Path:
    """A census-like table (the README's example): income class from age, work class,
    education and weekly hours. Writes adult.csv (training), adult_test.csv (labelled,
    for `foundry evaluate`) and adult_new.csv (no income column, for `foundry predict`)."""
    rng = np.random.default_rng(3)
    total = n + n // 4 + 20
    education = rng.choice(
        ["hs-grad", "some-college", "bachelors", "masters", "doctorate"],
        total,
        p=[0.35, 0.25, 0.25, 0.1, 0.05],
    )
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 80, total),
            "workclass": rng.choice(
                ["private", "self-emp", "government"], total, p=[0.7, 0.15, 0.15]
            ),
            "education": education,
            "hours": np.clip(rng.normal(40, 10, total).round(), 5, 90).astype(int),
        }
    )
    years = (
        pd.Series(education)
        .map({"hs-grad": 0, "some-college": 1, "bachelors": 3, "masters": 4, "doctorate": 5})
        .to_numpy()
    )
    # a middle-aged, educated, long-hours worker earns more; noise keeps it learnable
    score = 0.6 * years + 0.04 * (df.hours - 40) - 0.002 * (df.age - 47) ** 2
    df["income"] = np.where(score + rng.normal(0, 0.8, total) > 0.9, ">50K", "<=50K")
    _write_csv(df.iloc[n + n // 4 :].drop(columns="income"), "adult_new.csv")
    _write_csv(df.iloc[n : n + n // 4], "adult_test.csv")
    return _write_csv(df.iloc[:n], "adult.csv")


def _write_csv(df: pd.DataFrame, name: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / name
    df.to_csv(path, index=False)
    return path


MAKERS = {
    "adult": adult,
    "binary10": binary10,
    "line": line,
    "penguins": penguins,
    "digits": digits,
    "shapes": shapes,
    "reviews": reviews,
}


def main(names: list[str]) -> None:
    for name in names or MAKERS:
        if name not in MAKERS:
            raise SystemExit(f"unknown data set '{name}' (choose from {', '.join(MAKERS)})")
        print(f"{name}: {MAKERS[name]()}")


if __name__ == "__main__":
    main(sys.argv[1:])
