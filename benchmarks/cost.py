"""Does `foundry cost`'s cost per 1,000 predictions hold up against a real server?

    python benchmarks/cost.py                         # 10 s per load case
    python benchmarks/cost.py --seconds 20 --json cost.json
    python benchmarks/cost.py --layers 1024,1024,1024 # a model heavier than HTTP

It trains the Adult-like MLP of benchmarks/serve_load.py (or reuses it from --home), starts
`python -m foundry serve` (keys, quotas, metering, batching: the full product) with
--workers worker(s), and drives it with serve_load.py's own load client (raw keep-alive
HTTP/1.1 on asyncio) at 1, 8 and 32 concurrent clients, one Adult row per request. The
machine's throughput is the best of the three (its capacity); the cost per 1k predictions
follows from it by `foundry.economics.cost_per_1k` with the default prices.

Then, with the server stopped (so nothing competes for the cores), `foundry cost` measures
the same model in process (`foundry.economics.estimate`: `predict_records` at batch 1 and
at the serving batch, no HTTP, on 300 rows of the same generated table) and the two are
compared: the ratio in-process / HTTP
throughput is how much HTTP, JSON, keys and metering cost on top of the model, and the
factor by which the in-process estimate understates the cost. `foundry cost --throughput
<http>` must reproduce the HTTP cost exactly. Only ratios from one run are meaningful on
a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import (  # noqa: E402
    CLIENTS,
    Result,
    Server,
    adult_like,
    create_key,
    drive,
    free_port,
    trained_model,
)


def http_throughput(ref: str, row: dict, env: dict[str, str], work: Path,
                    args: argparse.Namespace) -> dict[int, Result]:
    """Predictions per second of `foundry serve REF` at each client count in CLIENTS."""
    port = free_port()
    server = Server("full", [sys.executable, "-m", "foundry", "serve", ref, "--port", str(port),
                             "--workers", str(args.workers)],
                    env, work / "full.log", args.workers, port, model=ref.split(":")[0])
    results = {clients: Result() for clients in CLIENTS}
    server.start()
    try:
        server.keys = {c: create_key(env, f"bench-cost-{c}") for c in CLIENTS}
        server.wait_ready()
        body = json.dumps(row).encode()
        for clients in CLIENTS:
            asyncio.run(drive(server, clients, body, args.requests, args.seconds,
                              results[clients], "raw"))
            print(f"  {clients:>2} clients: {results[clients].rps:,.1f} predictions/s", flush=True)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per case [10]")
    parser.add_argument("--requests", type=int, default=15_000,
                        help="most requests per case [15000: under the enterprise rate limit]")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers [1]")
    parser.add_argument("--layers", default=None, help="hidden sizes of the MLP, e.g. 1024,1024")
    parser.add_argument("--home", type=Path, default=None,
                        help="FOUNDRY_HOME to train in or reuse [a temporary directory]")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    from foundry.config.schema import CostConfig, ServeConfig
    from foundry.economics import cost_per_1k, estimate
    from foundry.registry import Registry

    with tempfile.TemporaryDirectory(prefix="foundry-cost-") as tmp:
        work = Path(tmp)
        home = (args.home or work / "home").resolve()
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        ref, row = trained_model(home, work, layers)
        env = {**os.environ, "FOUNDRY_HOME": str(home)}
        for name in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN"):
            env.pop(name, None)
        print(f"load on `foundry serve {ref}` ({args.workers} worker(s), {os.cpu_count()} CPUs),"
              f" {args.seconds:g} s per case", flush=True)
        results = http_throughput(ref, row, env, work, args)
        best_clients = max(CLIENTS, key=lambda c: results[c].rps)
        http = results[best_clients].rps

        cost = CostConfig()
        serve = ServeConfig(workers=args.workers)
        registry = Registry(home)
        # rows of the training table's generator (a reused --home's data file is gone)
        rows_csv = work / "rows.csv"
        adult_like(3_000).tail(300).to_csv(rows_csv, index=False)
        print("foundry cost: measuring in process ...", flush=True)
        single = estimate(ref, cost, serve=serve, data=rows_csv, registry=registry)
        batched = estimate(ref, cost.model_copy(update={"throughput_batch": "serving"}),
                           serve=serve, data=rows_csv, registry=registry)
        supplied = estimate(ref, cost, serve=serve, throughput=http, registry=registry)

    http_cost = cost_per_1k(cost.serve_machine_per_hour, http, cost.serve_utilization)
    assert supplied.cost_per_1k == http_cost, "--throughput must reproduce the HTTP cost"
    rows = [
        ("HTTP, foundry serve (best of 1/8/32 clients)", http, http_cost),
        ("in process, batch 1 (foundry cost default)", single.throughput.per_machine,
         single.cost_per_1k),
        (f"in process, batch {batched.throughput.serving_batch} (throughput_batch: serving)",
         batched.throughput.per_machine, batched.cost_per_1k),
    ]
    print(f"\n{'throughput measured':<58}{'predictions/s':>15}{'$ per 1k':>14}"
          f"{'÷ HTTP cost':>13}")
    for label, rate, per_1k in rows:
        print(f"{label:<58}{rate:>15,.1f}{per_1k:>14.3e}{per_1k / http_cost:>13.3f}")
    print("\nHTTP per client count: " + ", ".join(
        f"{c}: {results[c].rps:,.1f}/s (p50 {results[c].pct(50):.2f} ms)" for c in CLIENTS))
    print(f"foundry cost --throughput {http:.1f}: ${supplied.cost_per_1k:.3e} per 1k "
          "(identical to the HTTP cost)")
    print(f"in-process batch-1 throughput / HTTP throughput: "
          f"{single.throughput.per_machine / http:.2f}x")
    summary = {
        "model": ref,
        "workers": args.workers,
        "cpus": os.cpu_count(),
        "seconds_per_case": args.seconds,
        "http": {str(c): results[c].as_dict() for c in CLIENTS},
        "http_throughput": http,
        "http_cost_per_1k": http_cost,
        "in_process_single": single.throughput.per_machine,
        "in_process_single_cost_per_1k": single.cost_per_1k,
        "in_process_serving": batched.throughput.per_machine,
        "in_process_serving_cost_per_1k": batched.cost_per_1k,
        "ratio_single_over_http_throughput": single.throughput.per_machine / http,
        "ratio_serving_over_http_throughput": batched.throughput.per_machine / http,
    }
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
