"""PII scrubbing speed, two parts (timings on shared machines are noisy: compare within
one run).

    python benchmarks/pii.py [--rows 100000] [--chars 100000] [--guard 10]

1. `PIIScrubber.scrub` on a generated table, against reading the same table from CSV with
   pandas, and against the same scrub with the former `re` scan swapped in (alternated,
   best of 3). The table: ~20-word free-text comments (5% hold an email, 30% harmless
   numbers that the detectors must look at and reject) plus a category column with an
   email among its values. Precision and recall are measured by
   tests/data/test_data_scrub.py (asserted >= 0.95).
2. `find_pii` throughput (MB/s) on one value of `--chars` characters: ordinary text and
   the worst cases of each kind (`adversarial`, tests/data/pii_adversarial.py). Same
   value, one after the other: the Python `re` patterns the RE2 scan replaced
   (`old_find_pii`, with its per-finding overlap check), in a child process killed
   after `--guard` seconds (on several values it takes minutes), then the RE2 scan in
   this process, best of 3.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.data.pii_adversarial import adversarial, old_find_pii  # noqa: E402

from foundry.config.schema import PIIConfig  # noqa: E402
from foundry.data import pii  # noqa: E402
from foundry.data import scrub as scrub_module  # noqa: E402
from foundry.data.scrub import PIIScrubber  # noqa: E402

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


def _seconds(scan, text: str) -> float:
    start = time.perf_counter()
    scan(text)
    return time.perf_counter() - start


def _timed(scan, text: str, guard: float) -> float | None:
    """Seconds `scan(text)` took, or None when it ran past `guard` (child killed)."""
    ctx = multiprocessing.get_context("fork")
    result = ctx.Queue()

    def child() -> None:
        result.put(_seconds(scan, text))

    proc = ctx.Process(target=child)
    proc.start()
    proc.join(guard)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return None
    return result.get()


def throughput(chars: int, guard: float) -> None:
    ordinary = " ".join(table(chars // 100)["comment"])[:chars]
    values = {"ordinary text (5% emails, 30% numbers)": ordinary, **adversarial(chars)}
    print(f"\nfind_pii on one value of ~{chars:,} characters (MB/s; old killed after {guard:g} s)")
    print("| value | old `re` MB/s | RE2 MB/s | findings |")
    print("|---|---:|---:|---:|")
    for name, text in values.items():
        mb = len(text.encode()) / 1e6
        old = _timed(old_find_pii, text, guard)
        # linear by construction (asserted by the tests): timed in this process, best of 3
        new = min(_seconds(pii.find_pii, text) for _ in range(3))
        old_s = f"{mb / old:.3g}" if old else f"< {mb / guard:.2g} (> {guard:g} s)"
        print(f"| {name} | {old_s} | {mb / new:.3g} | {len(pii.find_pii(text)):,} |")


@contextlib.contextmanager
def _scan(engine: str) -> Iterator[None]:
    """`PIIScrubber` scanning with RE2 (as shipped) or with the former `re` patterns."""
    if engine == "RE2":
        yield
        return

    def old(text: str, kinds: object = None, *, patterns: object = None) -> list[pii.Finding]:
        return [pii.Finding(k, s, e, text[s:e]) for k, s, e in old_find_pii(text)]

    saved, scrub_module.find_pii = scrub_module.find_pii, old
    try:
        yield
    finally:
        scrub_module.find_pii = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chars", type=int, default=100_000)
    parser.add_argument("--guard", type=float, default=10.0)
    args = parser.parse_args()
    df = table(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "t.csv"
        df.to_csv(path, index=False)
        start = time.perf_counter()
        df = pd.read_csv(path)
        read_s = time.perf_counter() - start
    scrubber = PIIScrubber.fit(df, PIIConfig(), target=None)
    # the same scrub with the former `re` scan swapped in, alternated, best of 3 each
    times: dict[str, list[float]] = {"RE2": [], "re": []}
    for _ in range(3):
        for name in times:
            start = time.perf_counter()
            with _scan(name):
                _, report = scrubber.scrub(df)
            times[name].append(time.perf_counter() - start)
    scrub_s, old_s = min(times["RE2"]), min(times["re"])
    print(f"rows: {args.rows}; values found: {report['total']}")
    print("| step | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| pandas read_csv | {read_s:.2f} | {args.rows / read_s:,.0f} |")
    print(f"| PIIScrubber.scrub (former `re` scan) | {old_s:.2f} | {args.rows / old_s:,.0f} |")
    print(f"| PIIScrubber.scrub | {scrub_s:.2f} | {args.rows / scrub_s:,.0f} |")
    print(
        f"scrubbing costs {scrub_s / read_s:.2f}x reading the CSV "
        f"({scrub_s / old_s:.2f}x the former scan)"
    )
    throughput(args.chars, args.guard)


if __name__ == "__main__":
    main()
