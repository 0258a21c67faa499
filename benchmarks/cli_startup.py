"""How long does `foundry --help` take, next to a bare Python start?

    python benchmarks/cli_startup.py [--repeats 10]

The CLI imports torch, pandas and scikit-learn only inside the commands that need them,
so `--help` should cost little more than starting Python itself. Prints the median of
each and their difference (target: `foundry --help` under 1 s).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def median_seconds(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    bare = median_seconds([sys.executable, "-c", "pass"], args.repeats)
    helped = median_seconds([sys.executable, "-m", "foundry", "--help"], args.repeats)
    train_help = median_seconds([sys.executable, "-m", "foundry", "train", "--help"], args.repeats)
    print(f"python -c pass          {bare * 1000:7.1f} ms")
    print(f"foundry --help          {helped * 1000:7.1f} ms  (target < 1000 ms)")
    print(f"foundry train --help    {train_help * 1000:7.1f} ms")
    print(f"foundry's own share     {(helped - bare) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()
