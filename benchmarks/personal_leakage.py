"""What the personal-column and leakage checks add to `foundry init` / `train`: seconds
for `find_personal_columns` and `find_leakage` on a COMPAS-sized table and on a wide
100k-row one, against reading the same table from CSV with pandas in the same run (a
ratio; medians of alternating rounds, as timings on shared machines are noisy).

    PYTHONPATH=. python benchmarks/personal_leakage.py [--rows 100000] [--repeats 3]

The COMPAS-shaped table (7,214 rows, as ProPublica's two-year file) comes from
tests/data/compas_like.py; the wide one has 24 numeric and 6 category columns.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from tests.data.compas_like import PERSONAL, compas_like

from foundry.data.leakage import find_leakage
from foundry.data.personal import find_personal_columns


def wide(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, 24)), columns=[f"x{i}" for i in range(24)])
    for i in range(6):
        df[f"c{i}"] = rng.choice([f"level{j}" for j in range(20)], n)
    df["y"] = (df["x0"] + df["x1"] + rng.normal(size=n) > 0).astype(int)
    return df


def measure(name: str, df: pd.DataFrame, target: str, repeats: int) -> None:
    """Median seconds of `repeats` rounds, the three steps alternating within a round."""
    times: dict[str, list[float]] = {"read": [], "personal": [], "leakage": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        df.to_csv(path, index=False)
        find_personal_columns(df.head(200))  # warm-up: imports, regex compilation
        find_leakage(df.head(200), target, target_type="binary")
        for _ in range(repeats):
            start = time.perf_counter()
            df = pd.read_csv(path)
            times["read"].append(time.perf_counter() - start)
            start = time.perf_counter()
            personal = find_personal_columns(df, skip=[target])
            times["personal"].append(time.perf_counter() - start)
            rest = df.drop(columns=[d["column"] for d in personal])
            start = time.perf_counter()
            leaks = find_leakage(rest, target, target_type="binary")
            times["leakage"].append(time.perf_counter() - start)
    read_s, personal_s, leak_s = (float(np.median(times[k])) for k in times)
    print(f"| {name} ({len(df):,} rows, {len(df.columns)} columns) | {read_s:.2f} | "
          f"{personal_s:.2f} ({len(personal)} found) | {leak_s:.2f} ({len(leaks)} found) | "
          f"{(personal_s + leak_s) / read_s:.1f}x |")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print("| table | read_csv s | find_personal_columns s | find_leakage s | both / read |")
    print("|---|---:|---:|---:|---:|")
    compas = compas_like(n=7214)
    assert set(compas.columns) >= PERSONAL
    measure("COMPAS-shaped", compas, "two_year_recid", args.repeats)
    measure("wide", wide(args.rows), "y", args.repeats)


if __name__ == "__main__":
    main()
