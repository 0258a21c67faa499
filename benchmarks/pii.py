"""PII scrubbing speed: `PIIScrubber.scrub` on a generated 100k-row table, against
reading the same table from CSV with pandas in the same run (a ratio; timings on shared
machines are noisy).

    python benchmarks/pii.py [--rows 100000]

The table: ~20-word free-text comments (5% hold an email, 30% harmless numbers that the
detectors must look at and reject) plus a category column with an email among its values.
Precision and recall are measured by tests/data/test_data_scrub.py (asserted >= 0.95).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import pandas as pd

from foundry.config.schema import PIIConfig
from foundry.data.scrub import PIIScrubber

SENTENCE = (
    "the customer asked about the new plan and said the service was slow last week "
    "but support answered quickly so they will stay for another year if prices hold"
)
WORDS = SENTENCE.split(" ")


def table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        row = rng.choices(WORDS, k=20)
        if rng.random() < 0.05:
            row.insert(10, f"ana{i}@example.com")
        elif rng.random() < 0.3:
            row.insert(5, f"{rng.randint(1, 99)} items")
        texts.append(" ".join(row))
    plans = rng.choices(["free", "pro", "team", "billing@example.com"], k=n)
    return pd.DataFrame({"comment": texts, "plan": plans})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    df = table(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        df.to_csv(path, index=False)
        start = time.perf_counter()
        df = pd.read_csv(path)
        read_s = time.perf_counter() - start
    scrubber = PIIScrubber.fit(df, PIIConfig(), target=None)
    start = time.perf_counter()
    _, report = scrubber.scrub(df)
    scrub_s = time.perf_counter() - start
    print(f"rows: {args.rows}; values found: {report['total']}")
    print("| step | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| pandas read_csv | {read_s:.2f} | {args.rows / read_s:,.0f} |")
    print(f"| PIIScrubber.scrub | {scrub_s:.2f} | {args.rows / scrub_s:,.0f} |")
    print(f"scrubbing costs {scrub_s / read_s:.2f}x reading the CSV")


if __name__ == "__main__":
    main()
