"""What verifying a package's checksums costs at load (foundry.registry.integrity).

    python benchmarks/package_verify.py                 # ~50 MB and ~50 KB packages
    python benchmarks/package_verify.py --mb 500 --repeats 5

Each package is registered once in a temporary registry (random float32 weights), then
read three ways, alternating, after one warm-up round (the files are in the page cache on
every side, so this times hashing, not the disk):
  - unverified: `Registry.load` of a second version of the same weights made to look as
    registered before checksums (no `files` list, no sha256 in the index): the index
    lookup, safetensors and JSON only;
  - unverified + use: the same, then every tensor summed once (what building the network
    from the weights costs at least: each page read);
  - verified, cold: `Registry.load` with the process's digest cache cleared first (the
    first load in a process: every file hashed);
  - verified, warm: `Registry.load` again (the digest cache answers from size, mtime,
    ctime and inode: what a process that loads a package again pays).
Medians of `--repeats` rounds, and what verifying adds. safetensors maps the weights
without reading them, so "unverified" hardly touches the file; hashing reads it all once
(sha256 in OpenSSL: ~200-600 MB/s on CPUs without SHA instructions, several GB/s with
them), and a warm process only stats the files.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from sqlalchemy import text

from foundry.registry import Registry
from foundry.registry.integrity import clear_cache


def _register(registry: Registry, name: str, megabytes: float) -> Path:
    n = max(1, int(megabytes * 1e6 / 4))  # float32: 4 bytes a value
    side = int(n**0.5)
    weights = {"w": torch.randn(side, side), "b": torch.randn(side)}
    record = registry.register(
        name, weights=weights, manifest={"task": "binary"}, metrics={"accuracy": 0.5}
    )
    return record.path


def _make_legacy(registry: Registry, name: str) -> None:
    """`name:1` as a package registered before checksums: no `files`, no index sha256."""
    package = registry.resolve(f"{name}:1").path
    manifest = json.loads((package / "foundry.json").read_text())
    del manifest["files"]
    (package / "foundry.json").write_text(json.dumps(manifest))
    with registry._get_engine().begin() as conn:  # a benchmark may reach inside
        conn.execute(
            text(
                "UPDATE model_versions SET manifest_sha256 = NULL "
                "WHERE name = :name AND version = 1"
            ),
            {"name": name},
        )


def _time(fn) -> float:
    gc.collect()  # the previous side's 50 MB of tensors are freed here, not in this timing
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50.0, help="size of the large package")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    logging.getLogger("foundry.registry").setLevel(logging.ERROR)  # the legacy note
    with tempfile.TemporaryDirectory() as tmp:
        registry = Registry(Path(tmp) / "home")
        print(
            "| package | unverified | unverified + use | verified, cold | verified, warm "
            "| cold − (unverified + use) | warm − unverified |"
        )
        print("|---|---|---|---|---|---|---|")
        for name, mb in (("large", args.mb), ("small", 0.05)):
            _register(registry, f"{name}-legacy", mb)
            _make_legacy(registry, f"{name}-legacy")
            package = _register(registry, name, mb)
            size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())

            def cold(name=name):
                clear_cache()
                registry.load(f"{name}:1")

            sides = {
                "unverified": lambda name=name: registry.load(f"{name}-legacy:1"),
                "used": lambda name=name: [
                    t.sum() for t in registry.load(f"{name}-legacy:1").weights.values()
                ],
                # warm before cold: right after hashing 50 MB the next read of the same
                # file ran ~20 ms slower (allocator and page-cache effects, measured),
                # which is not what a process that loaded the package earlier pays
                "warm": lambda name=name: registry.load(f"{name}:1"),
                "cold": cold,
            }
            for fn in sides.values():  # warm-up: page cache, imports
                fn()
            times: dict[str, list[float]] = {k: [] for k in sides}
            for _ in range(args.repeats):
                for key, fn in sides.items():
                    times[key].append(_time(fn))
            med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
            print(
                f"| {name} ({size / 1e6:.2f} MB) | {med['unverified']:.1f} ms "
                f"| {med['used']:.1f} ms | {med['cold']:.1f} ms | {med['warm']:.1f} ms "
                f"| {med['cold'] - med['used']:+.1f} ms "
                f"| {med['warm'] - med['unverified']:+.1f} ms |"
            )
        registry.close()


if __name__ == "__main__":
    main()
