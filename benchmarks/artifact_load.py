"""What does serving from a shared artifact store cost at load? `Registry.load` of a
package from the bucket (cold: this home has no copy) against the same load from the
home's cache (warm: the copy the first load left), in one process, alternating.

    python benchmarks/artifact_load.py                        # a moto server of its own
    python benchmarks/artifact_load.py --mb 200 --repeats 9
    FOUNDRY_TEST_S3_URL=http://127.0.0.1:9000 python benchmarks/artifact_load.py

One package of `--mb` MB (one float32 tensor) is registered from home A into a fresh
bucket on an S3-compatible server (FOUNDRY_TEST_S3_URL, else `python -m moto.server` on a
free 127.0.0.1 port, tests/s3_support.py) with the index in one SQLite file (twice: the
second registration is timed, the first also creates the tables); home B then loads it
`--repeats` times each way after one warm-up of each:

    cold    B's cached folder removed first: download, verify, rename, then load
    cached  the folder left by the previous load: what every later start of a server
            in B costs

Both clear the in-process digest cache first (`integrity.clear_cache`), as a new server
process starts with it empty, so "cached" includes hashing every byte once. moto on
loopback is a Python server, far from S3's throughput: the cold figure says what the
download path costs here, not what a given bucket will give. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import torch  # noqa: E402
from tests import s3_support  # noqa: E402

from foundry.registry import Registry  # noqa: E402
from foundry.registry.integrity import clear_cache  # noqa: E402


def _timed_load(registry: Registry, ref: str, *, cold: bool) -> float:
    """Seconds for one `load` (weights summed once: the bytes are really read)."""
    record = registry.resolve(ref)
    if cold:
        shutil.rmtree(record.path, ignore_errors=True)
    clear_cache()
    start = time.perf_counter()
    package = registry.load(ref)
    float(sum(t.sum() for t in package.weights.values()))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="package size, MB")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    with s3_support.s3_endpoint() as endpoint, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(s3_support.environment(endpoint))
        store = f"{s3_support.create_bucket()}/bench"
        index = f"sqlite:///{Path(tmp) / 'index.db'}"
        a = Registry(Path(tmp) / "a", index, artifacts=store)
        b = Registry(Path(tmp) / "b", index, artifacts=store)
        n = int(args.mb * 1e6 / 4)
        weights = {"w": torch.randn(n, generator=torch.Generator().manual_seed(0))}
        # The first registration also creates the index tables and imports the card
        # renderer and s3fs; the second one is timed.
        for _ in range(2):
            start = time.perf_counter()
            record = a.register("bench", weights=weights, manifest={"task": "binary"}, metrics={})
            upload = time.perf_counter() - start
        size_mb = record.size_bytes / 1e6
        times: dict[str, list[float]] = {"cold": [], "cached": []}
        for i in range(args.repeats + 1):  # the first round is the warm-up
            for case in ("cold", "cached"):
                seconds = _timed_load(b, record.ref, cold=case == "cold")
                if i:
                    times[case].append(seconds)

    cold, cached = (statistics.median(times[c]) for c in ("cold", "cached"))
    print(
        f"package {size_mb:.1f} MB; register (seal + upload + row; 2nd) {upload:.2f} s; "
        f"medians of {args.repeats}:"
    )
    print(f"  cold (download + verify + load)  {cold * 1000:8.1f} ms  ({size_mb / cold:.0f} MB/s)")
    print(f"  cached (verify + load)           {cached * 1000:8.1f} ms")
    print(f"  cold / cached                    {cold / cached:8.1f}x")


if __name__ == "__main__":
    main()
