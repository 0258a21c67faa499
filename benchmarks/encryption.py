"""What encryption at rest (FOUNDRY_ENCRYPTION_KEY, foundry.crypto) costs: package load
and serving latency, encrypted and plain, in one process, alternating.

    python benchmarks/encryption.py                     # 20 MB package, 300 requests
    python benchmarks/encryption.py --mb 100 --repeats 7 --requests 1000

Load: the same random float32 weights registered in two registries, one written with a
key; `Registry.load` of each in turn after a warm-up round, with the digest cache
cleared first (the first load in a process: every file checksummed; the plain side
hashes the file and memory-maps it, the encrypted side reads, decrypts and hashes it
into memory). Then the model load: the weights copied into a network's tensors, as
load_state_dict does (the plain side's memory map is read only here). Files are in the
page cache on both sides: this times the CPU, not the disk.

Serve: a small tabular model trained twice (with and without the key), each served by an
in-process app (ASGI, no sockets) with its own keys database; requests alternate between
the two, each with an Idempotency-Key, so the stored answer is encrypted on one side.
Medians, and the encrypted / plain ratio. The model load is also given in CPU time
(time.process_time, both threads): on a machine whose cores other work keeps busy the
wall-clock figures swing by tens of percent between runs, CPU time much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import foundry.crypto as crypto
from foundry.registry import Registry
from foundry.registry.integrity import clear_cache


def _with_key(key: str | None) -> None:
    if key is None:
        os.environ.pop(crypto.ENV_KEY, None)
    else:
        os.environ[crypto.ENV_KEY] = key


def bench_load(root: Path, key: str, megabytes: float,
               repeats: int) -> dict[str, dict[str, float]]:
    side = int((megabytes * 1e6 / 4) ** 0.5)
    weights = {"w": torch.randn(side, side), "b": torch.randn(side)}
    homes = {"plain": (root / "plain", None), "encrypted": (root / "enc", key)}
    for home, k in homes.values():
        _with_key(k)
        Registry(home).register("m", weights=weights, manifest={"task": "binary"},
                                metrics={"accuracy": 0.5})
    network = {name: torch.empty_like(t) for name, t in weights.items()}
    times: dict[str, dict[str, list[float]]] = {"load": {}, "model": {}, "cpu": {}}
    for round_ in range(repeats + 1):  # round 0: warm-up
        for name, (home, k) in homes.items():
            _with_key(k)
            clear_cache()
            start, cpu = time.perf_counter(), time.process_time()
            package = Registry(home).load("m:1")
            loaded = time.perf_counter()
            # What load_state_dict then does: copy every tensor into the network's own
            # parameters (a plain package's weights are a lazy memory map until here).
            for tensor_name, tensor in package.weights.items():
                network[tensor_name].copy_(tensor)
            used, cpu = time.perf_counter(), time.process_time() - cpu
            assert torch.equal(network["b"], weights["b"])
            if round_:
                times["load"].setdefault(name, []).append(loaded - start)
                times["model"].setdefault(name, []).append(used - start)
                times["cpu"].setdefault(name, []).append(cpu)
    return {what: {name: statistics.median(t) * 1e3 for name, t in sides.items()}
            for what, sides in times.items()}


def _train(root: Path, key: str | None) -> tuple[str, Path, list[dict]]:
    import foundry

    _with_key(key)
    rng = np.random.default_rng(0)
    n = 400
    df = pd.DataFrame({"age": rng.normal(40, 10, n).round(1),
                       "color": rng.choice(["red", "green", "blue"], n)})
    df["tier"] = np.where(df.age + (df.color == "red") * 10 > 45, "high", "low")
    root.mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "toy.csv", index=False)
    os.environ["FOUNDRY_HOME"] = str(root / "home")
    result = foundry.train({"name": "toy", "data": {"path": str(root / "toy.csv")},
                            "features": {"target": "tier"}, "train": {"epochs": 1},
                            "output_dir": str(root / "runs")}, progress=False, quiet=True)
    records = df.drop(columns=["tier"]).head(8).to_dict(orient="records")
    return result.model_ref, root / "home", records


async def _serve(sides: dict, requests: int) -> dict[str, float]:
    import httpx

    from foundry.config.schema import PlanConfig, ServeConfig
    from foundry.serve.app import create_app
    from foundry.serve.gate import Gate

    clients, contexts = {}, []
    for name, (ref, home, records, key) in sides.items():
        _with_key(key)
        config = ServeConfig(plans={"bench": PlanConfig(included_units=10**9,
                                                         requests_per_minute=10**9)})
        gate = Gate(config.all_plans(), home=home)
        secret = gate.create_key(name="acme@example.com", plan="bench").key
        app = create_app(config, [ref], gate=gate, home=home)
        context = app.router.lifespan_context(app)
        await context.__aenter__()
        contexts.append(context)
        transport = httpx.ASGITransport(app=app)
        client = httpx.AsyncClient(transport=transport, base_url="http://bench",
                                   headers={"Authorization": f"Bearer {secret}"})
        clients[name] = (client, ref.split(":")[0], records, key)
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(requests + 20):  # the first 20 of each side: warm-up
        for name, (client, model, records, key) in clients.items():
            _with_key(key)
            start = time.perf_counter()
            answer = await client.post(f"/v1/models/{model}/predict",
                                       json={"records": records},
                                       headers={"Idempotency-Key": f"r{i}"})
            elapsed = time.perf_counter() - start
            assert answer.status_code == 200, answer.text
            if i >= 20:
                times[name].append(elapsed)
    for client, *_ in clients.values():
        await client.aclose()
    for context in contexts:
        await context.__aexit__(None, None, None)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=20.0, help="package weights, MB")
    parser.add_argument("--repeats", type=int, default=5, help="load rounds")
    parser.add_argument("--requests", type=int, default=300, help="requests per side")
    args = parser.parse_args()
    key = crypto.new_key()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        load = bench_load(root, key, args.mb, args.repeats)
        for what, label in (("load", "Registry.load"), ("model", "+ weights into a network"),
                            ("cpu", "the same, CPU time of both threads")):
            side = load[what]
            print(f"{label} of a {args.mb:g} MB package (median of {args.repeats}): plain "
                  f"{side['plain']:.1f} ms, encrypted {side['encrypted']:.1f} ms, ratio "
                  f"{side['encrypted'] / side['plain']:.3f}")
        sides = {}
        for name, k in (("plain", None), ("encrypted", key)):
            ref, home, records = _train(root / f"toy-{name}", k)
            sides[name] = (ref, home, records, k)
        serve = asyncio.run(_serve(sides, args.requests))
        print(f"serve /predict of 8 records (median of {args.requests}): plain "
              f"{serve['plain']:.2f} ms, encrypted {serve['encrypted']:.2f} ms, ratio "
              f"{serve['encrypted'] / serve['plain']:.3f}")


if __name__ == "__main__":
    main()
