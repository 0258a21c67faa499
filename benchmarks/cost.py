"""Does `foundry cost`'s cost per 1,000 predictions hold up against a load test of a real
server?

    python benchmarks/cost.py                         # 10 s per load case
    python benchmarks/cost.py --seconds 20 --json cost.json
    python benchmarks/cost.py --layers 1024,1024,1024 # a model heavier than HTTP

It trains the Adult-like MLP of benchmarks/serve_load.py (or reuses it from --home) and
measures its serving throughput three ways, one after the other (nothing else of ours
runs meanwhile):

1. **HTTP, independent**: this script starts `python -m foundry serve` in the model's own
   FOUNDRY_HOME with --workers worker(s), makes enterprise keys with `foundry keys
   create`, and drives it with `foundry.serve.loadtest` at 1, 8 and 32 concurrent clients
   for --seconds each, one of 300 Adult rows per request, as a user's load test would.
   The best of the three is the machine's capacity; the cost per 1k follows from it by
   `foundry.economics.cost_per_1k` with the default prices.
2. **`foundry cost` (default, `measure: server`)**: `foundry.economics.estimate` on the
   same rows: its own `foundry serve` of a temporary copy, 1/8/32 clients for
   `cost.measure_seconds` (2 s) each.
3. **`foundry cost --measure model`**: `predict_records` in process at batch 1 (its
   cost) and at the serving batch (`throughput_batch: serving`), no HTTP.

Each cost is shown ÷ the independent HTTP cost: 1.00 is perfect agreement.
`foundry cost --throughput <http>` must reproduce the HTTP cost exactly. Only ratios from
one run mean much on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import CLIENTS, adult_like, create_key, trained_model  # noqa: E402

from foundry.serve.loadtest import (  # noqa: E402
    LoadResult,
    Server,
    free_port,
    predict_request,
    run_load,
    serve_command,
)

ROWS = 300
"""Rows of the generated table sent (one per request) and timed by `foundry cost`."""


def http_throughput(
    ref: str, bodies: list[bytes], env: dict[str, str], work: Path, args: argparse.Namespace
) -> dict[int, LoadResult]:
    """Predictions per second of `foundry serve REF` at each client count in CLIENTS."""
    port = free_port()
    server = Server(
        serve_command(ref, port, workers=args.workers),
        env=env,
        log=work / "full.log",
        workers=args.workers,
    )
    model = ref.split(":")[0]
    results = {}
    server.start()
    try:
        keys = {c: create_key(env, f"bench-cost-{c}") for c in CLIENTS}  # while it loads
        server.wait_ready()
        for clients in CLIENTS:
            requests = [predict_request(port, model, body, keys[clients]) for body in bodies]
            result = run_load(
                port, requests, clients=clients, seconds=args.seconds, max_requests=args.requests
            )
            if result.errors:
                raise SystemExit(
                    f"errors at {clients} clients: {result.errors}: {result.first_error}"
                )
            results[clients] = result
            print(f"  {clients:>2} clients: {result.per_second:,.1f} predictions/s", flush=True)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per HTTP load case [10]"
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=15_000,
        help="most requests per case [15000: under the enterprise rate limit]",
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers [1]")
    parser.add_argument("--layers", default=None, help="hidden sizes of the MLP, e.g. 1024,1024")
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="FOUNDRY_HOME to train in or reuse [a temporary directory]",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    os.environ.pop("FOUNDRY_DATABASE_URL", None)  # the temporary home's own SQLite

    from foundry.config.schema import CostConfig, ServeConfig
    from foundry.economics import cost_per_1k, estimate
    from foundry.registry import Registry

    with tempfile.TemporaryDirectory(prefix="foundry-cost-") as tmp:
        work = Path(tmp)
        home = (args.home or work / "home").resolve()
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        ref, _ = trained_model(home, work, layers)
        env = {**os.environ, "FOUNDRY_HOME": str(home)}
        env.pop("FOUNDRY_ADMIN_TOKEN", None)
        # rows of the training table's generator (a reused --home's data file is gone)
        table = adult_like(3_000).tail(ROWS)
        rows_csv = work / "rows.csv"
        table.to_csv(rows_csv, index=False)
        records = json.loads(table.drop(columns=["income"]).to_json(orient="records"))
        bodies = [json.dumps(r).encode() for r in records]

        print(
            f"1. independent load on `foundry serve {ref}` ({args.workers} worker(s), "
            f"{os.cpu_count()} CPUs), {args.seconds:g} s per case",
            flush=True,
        )
        results = http_throughput(ref, bodies, env, work, args)
        best_clients = max(CLIENTS, key=lambda c: results[c].per_second)
        http = results[best_clients].per_second

        cost = CostConfig()
        serve = ServeConfig(workers=args.workers)
        registry = Registry(home)
        keys_before = _count_keys(home)
        print("2. foundry cost (measure: server) ...", flush=True)
        served = estimate(ref, cost, serve=serve, data=rows_csv, registry=registry, quiet=False)
        assert _count_keys(home) == keys_before, "foundry cost must not add keys to the home"
        print("3. foundry cost --measure model ...", flush=True)
        single = estimate(ref, cost, serve=serve, data=rows_csv, registry=registry, measure="model")
        batched = estimate(
            ref,
            cost.model_copy(update={"throughput_batch": "serving"}),
            serve=serve,
            data=rows_csv,
            registry=registry,
            measure="model",
        )
        supplied = estimate(ref, cost, serve=serve, throughput=http, registry=registry)

    http_cost = cost_per_1k(cost.serve_machine_per_hour, http, cost.serve_utilization)
    assert supplied.cost_per_1k == http_cost, "--throughput must reproduce the HTTP cost"
    best_served = max(served.throughput.server_cases, key=lambda c: c.per_second)
    rows = [
        (f"HTTP, independent load test (best: {best_clients} clients)", http, http_cost),
        (
            f"foundry cost, measure: server (best: {best_served.clients} clients)",
            served.throughput.per_machine,
            served.cost_per_1k,
        ),
        (
            "foundry cost --measure model, batch 1",
            single.throughput.per_machine,
            single.cost_per_1k,
        ),
        (
            f"foundry cost --measure model, batch {batched.throughput.serving_batch}",
            batched.throughput.per_machine,
            batched.cost_per_1k,
        ),
    ]
    print(f"\n{'throughput measured':<58}{'predictions/s':>15}{'$ per 1k':>14}{'÷ HTTP cost':>13}")
    for label, rate, per_1k in rows:
        print(f"{label:<58}{rate:>15,.1f}{per_1k:>14.3e}{per_1k / http_cost:>13.3f}")
    print(
        "\nindependent HTTP per client count: "
        + ", ".join(
            f"{c}: {results[c].per_second:,.1f}/s (p50 {results[c].p50_ms:.2f} ms)" for c in CLIENTS
        )
    )
    print(
        "foundry cost (server) per client count: "
        + ", ".join(
            f"{c.clients}: {c.per_second:,.1f}/s (p50 {c.p50_ms:.2f} ms)"
            for c in served.throughput.server_cases
        )
    )
    print(
        f"foundry cost --throughput {http:.1f}: ${supplied.cost_per_1k:.3e} per 1k "
        "(identical to the HTTP cost)"
    )
    summary = {
        "model": ref,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds_per_case": args.seconds,
        "http": {
            str(c): {
                "rps": results[c].per_second,
                "p50_ms": results[c].p50_ms,
                "p99_ms": results[c].p99_ms,
                "requests_ok": results[c].ok,
            }
            for c in CLIENTS
        },
        "http_throughput": http,
        "http_cost_per_1k": http_cost,
        "server_measured": served.throughput.per_machine,
        "server_measured_cost_per_1k": served.cost_per_1k,
        "in_process_single": single.throughput.per_machine,
        "in_process_single_cost_per_1k": single.cost_per_1k,
        "in_process_serving": batched.throughput.per_machine,
        "in_process_serving_cost_per_1k": batched.cost_per_1k,
        "ratio_server_measured_over_http_cost": served.cost_per_1k / http_cost,
        "ratio_single_over_http_cost": single.cost_per_1k / http_cost,
        "ratio_serving_over_http_cost": batched.cost_per_1k / http_cost,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")


def _count_keys(home: Path) -> int:
    """Keys in the model's home."""
    from foundry.serve.gate import Gate

    gate = Gate(home=home)
    try:
        return len(gate.list_keys())
    finally:
        gate.close()


if __name__ == "__main__":
    main()
