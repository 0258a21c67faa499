"""PII scrubbing speed, two parts (timings on shared machines are noisy: compare within
one run).

    python benchmarks/pii.py [--rows 100000] [--chars 100000] [--guard 10]

1. `PIIScrubber.scrub` on a generated table, against reading the same table from CSV with
   pandas. The table: ~20-word free-text comments (5% hold an email, 30% harmless
   numbers that the detectors must look at and reject) plus a category column with an
   email among its values. Precision and recall are measured by
   tests/data/test_data_scrub.py (asserted >= 0.95).
2. `find_pii` throughput (MB/s) on one value of `--chars` characters: ordinary text and
   the worst cases of each kind (`adversarial`), for the Python `re` patterns the RE2
   scan replaced (`OLD_DETECTORS`, with their per-finding overlap check) and for the RE2
   scan, one after the other on the same value. The old scan runs in a child process
   killed after `--guard` seconds (on several of these values it takes minutes); the new
   one in this process, best of 3.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import re
import tempfile
import time
from pathlib import Path

import pandas as pd

from foundry.config.schema import PIIConfig
from foundry.data import pii
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


def adversarial(n: int) -> dict[str, str]:
    """Values of about `n` characters that are worst cases for the patterns: long runs a
    pattern reads without matching (what made `re` backtrack), and values packed with
    matches or near-matches (what costs a finding or a failed check each). The tests
    (tests/data/test_data_pii.py) scan them at 10 KB, 100 KB and 1 MB."""

    def fill(unit: str, prefix: str = "", suffix: str = "") -> str:
        return prefix + unit * max(1, (n - len(prefix) - len(suffix)) // len(unit)) + suffix

    return {
        "email: 'a@' + 'a.' * n": fill("a.", "a@"),
        "email: local part, no @": fill("a.") + "@",
        "email: dense": fill("a@b.cd "),
        "url: long path": fill("a", "http://"),
        "url: trailing punctuation": fill(".", "http://a"),
        "url: dense": fill("http://a.b "),
        "phone: digits and spaces": fill("1 "),
        "phone: brackets": fill("(1) "),
        "phone: dense": fill("+44 20 7946 0958, "),
        "credit_card: digits and dashes": fill("1-"),
        "credit_card: dense": fill("4111 1111 1111 1111 "),
        "iban: long groups": fill("WEST ", "GB82 "),
        "iban: dense": fill("GB82 WEST 1234 5698 7654 32 "),
        "ip_address: dotted digits": fill("1."),
        "ip_address: colons": fill("a:"),
        "ip_address: dense": fill("192.168.1.20 "),
        "other scripts": fill("é４\u00a0"),
    }


# The patterns and loop `find_pii` had before RE2 (Python `re`), kept as the "before"
# of the throughput table.
OLD_DETECTORS = [
    ("url", re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE), None),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
     None),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
     pii.iban_valid),
    ("credit_card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), pii.luhn_valid),
    ("ip_address", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), pii._ipv4_valid),
    ("ip_address", re.compile(r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}\b"), pii._ipv6_valid),
    ("phone", re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,18}\d\b"), pii._phone_valid),
]


def old_find_pii(text: str) -> int:
    taken: list[tuple[int, int]] = []
    for _, pattern, valid in OLD_DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if valid is not None and not valid(match.group()):
                continue
            taken.append((start, end))
    return len(taken)


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
        old_s = f"{mb / old:,.1f}" if old else f"< {mb / guard:.3f} (> {guard:g} s)"
        print(f"| {name} | {old_s} | {mb / new:,.1f} | {len(pii.find_pii(text)):,} |")


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
    start = time.perf_counter()
    _, report = scrubber.scrub(df)
    scrub_s = time.perf_counter() - start
    print(f"rows: {args.rows}; values found: {report['total']}")
    print("| step | seconds | rows/s |")
    print("|---|---:|---:|")
    print(f"| pandas read_csv | {read_s:.2f} | {args.rows / read_s:,.0f} |")
    print(f"| PIIScrubber.scrub | {scrub_s:.2f} | {args.rows / scrub_s:,.0f} |")
    print(f"scrubbing costs {scrub_s / read_s:.2f}x reading the CSV")
    throughput(args.chars, args.guard)


if __name__ == "__main__":
    main()
