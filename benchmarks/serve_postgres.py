"""What does moving the gate (keys, quotas, metering) from SQLite to PostgreSQL cost one
serving worker? Loopback HTTP load against `foundry serve`, same model, same load.

    python benchmarks/serve_postgres.py                       # a throwaway PostgreSQL
    python benchmarks/serve_postgres.py --postgres-url postgresql+psycopg://u@host/db
    python benchmarks/serve_postgres.py --seconds 20 --json serve_postgres.json

It trains the Adult-like MLP of benchmarks/serve_load.py (or reuses it from --home),
registers the same package into a PostgreSQL registry too, and starts three `foundry
serve` processes of one uvicorn worker each, batching on, an enterprise key per case:

    sqlite          the default: `<FOUNDRY_HOME>/foundry.db`, WAL, synchronous=NORMAL
                    (a commit is not fsynced: an OS crash may lose the last ones)
    postgres        FOUNDRY_DATABASE_URL on PostgreSQL with its defaults: every commit
                    waits for its WAL to be flushed to disk
    postgres-async  the same with `synchronous_commit=off` for foundry's connections (set
                    in the URL: `?options=-csynchronous_commit%3Doff`), the durability
                    closest to SQLite's NORMAL
    ...-single      postgres / postgres-async admitting one request per transaction (the
                    gate before group commit on PostgreSQL: `gate_runner.PG_MAX_GROUP`
                    set to 1 in the server process), for comparison in the same run;
                    --no-single leaves them out

The load client, its cases (1, 8 and 32 concurrent keep-alive clients, one Adult row per
request) and the interleaving of slices are serve_load.py's, reused. Without
--postgres-url a PostgreSQL cluster is started in a temporary folder on 127.0.0.1 with
its default (durable) settings, from the binaries of tests/pg_support.py; with it, a new
database is created on that server and dropped at the end. Only 127.0.0.1 (and the
--postgres-url server) is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]

import serve_load  # noqa: E402  (the model, cases and report of the serving benchmark)
from serve_load import CLIENTS, Variant, create_key, run_cases, trained_model  # noqa: E402
from tests import pg_support  # noqa: E402

from foundry.serve.loadtest import Server, free_port, serve_command  # noqa: E402

VARIANTS = ("sqlite", "postgres", "postgres-async", "postgres-single", "postgres-async-single")

SINGLE_LAUNCHER = """
import runpy, sys
from foundry.serve import gate_runner
gate_runner.PG_MAX_GROUP = 1  # one admission per transaction, as before group commit
sys.argv = ["foundry", *sys.argv[1:]]
runpy.run_module("foundry", run_name="__main__")
"""
"""`python -m foundry ...` with PostgreSQL groups of one (workers=1: uvicorn serves in this
process, so the setting holds)."""


@contextlib.contextmanager
def postgres_database(server_url: str | None) -> Iterator[str]:
    """A fresh database: on --postgres-url's server, else on a throwaway durable one."""
    with contextlib.ExitStack() as stack:
        admin = server_url or stack.enter_context(pg_support.throwaway_server(durable=True))
        url = pg_support.create_database(admin)
        stack.callback(pg_support.drop_database, admin, url)
        yield url


def copy_model(ref: str, source_home: Path, home: Path, url: str) -> str:
    """Register the package of `ref` again, in the registry of (home, url): the same
    weights, manifest and metrics, served from another index."""
    from foundry.registry import Registry

    package = Registry(source_home).load(ref)
    record = Registry(home, url=url).register(
        ref.split(":")[0],
        weights=package.weights,
        manifest=package.manifest,
        metrics=package.metrics,
        card=package.card,
    )
    return record.ref


def report(results: dict[tuple[str, int], serve_load.Result]) -> dict:
    rows = []
    print()
    print(
        f"{'database':<23}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv ms/req':>12}{'vs sqlite req/s':>17}{'errors':>8}"
    )
    for variant in VARIANTS:
        for clients in CLIENTS:
            if (variant, clients) not in results:
                continue
            result = results[variant, clients]
            base = results["sqlite", clients]
            ratio = result.rps / base.rps if base.rps else float("nan")
            row = {
                "database": variant,
                "clients": clients,
                **result.as_dict(),
                "rps_vs_sqlite": round(ratio, 3),
            }
            rows.append(row)
            print(
                f"{variant:<23}{clients:>8}{row['rps']:>10.1f}{row['p50_ms']:>9.2f}"
                f"{row['p99_ms']:>9.2f}{row['server_cpu_ms_per_request']:>12.2f}"
                f"{ratio:>16.2f}x{sum(result.errors.values()):>8}"
            )
    return {"cpus": os.cpu_count(), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="a PostgreSQL server to create the benchmark's database on "
        "(SQLAlchemy URL; its user may CREATE DATABASE) [a throwaway one]",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=4_000,
        help="most requests per case (database x clients) [4000]",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="most seconds per case [8]")
    parser.add_argument(
        "--rounds", type=int, default=2, help="slices each case is split into, interleaved [2]"
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="FOUNDRY_HOME to train in or reuse [a temporary directory]",
    )
    parser.add_argument(
        "--no-single",
        action="store_true",
        help="leave out the one-request-per-transaction PostgreSQL variants",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()
    if args.requests > serve_load.ENTERPRISE_BUCKET - 1_000:
        parser.error("--requests would run into the enterprise plan's rate limit")

    with (
        tempfile.TemporaryDirectory(prefix="foundry-serve-pg-") as tmp,
        postgres_database(args.postgres_url) as pg_url,
    ):
        work = Path(tmp)
        home = (args.home or work / "home").resolve()
        ref, row = trained_model(home, work)
        pg_home = work / "home-pg"  # packages of the PostgreSQL registry (same weights)
        pg_ref = copy_model(ref, home, pg_home, pg_url)
        base_env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN")
        }
        async_url = pg_url + ("&" if "?" in pg_url else "?") + "options=-csynchronous_commit%3Doff"
        sqlite_env = {**base_env, "FOUNDRY_HOME": str(home)}
        pg_env = {**base_env, "FOUNDRY_HOME": str(pg_home), "FOUNDRY_DATABASE_URL": pg_url}
        async_env = {**pg_env, "FOUNDRY_DATABASE_URL": async_url}
        setups = {
            "sqlite": (ref, sqlite_env),
            "postgres": (pg_ref, pg_env),
            "postgres-async": (pg_ref, async_env),
            "postgres-single": (pg_ref, pg_env),
            "postgres-async-single": (pg_ref, async_env),
        }
        if args.no_single:
            setups = {k: v for k, v in setups.items() if not k.endswith("-single")}
        config = work / "serve.yaml"
        config.write_text("serve:\n  batching:\n    enabled: true\n")
        variants = []
        for name, (model_ref, env) in setups.items():
            command = serve_command(model_ref, free_port(), workers=1, config=config)
            if name.endswith("-single"):  # `python -c LAUNCHER serve ...`
                command = [sys.executable, "-c", SINGLE_LAUNCHER, *command[3:]]
            server = Server(command, env=env, log=work / f"{name}.log")
            # serve_load sends a key only to "full..." variants: all of these are.
            variants.append(Variant(f"full-{name}", server, model=model_ref.split(":")[0]))
        print(
            f"serving {ref} from SQLite and {pg_ref} from PostgreSQL, one worker each, on "
            f"{os.cpu_count()} CPUs; per case: {args.requests} requests or "
            f"{args.seconds:g} s in {args.rounds} interleaved slices",
            flush=True,
        )
        try:
            for variant in variants:
                variant.server.start()
            for variant in variants:  # keys are made while the servers load
                variant.keys = {
                    c: create_key(variant.server.env, f"bench-{variant.name}-{c}") for c in CLIENTS
                }
            for variant in variants:
                variant.server.wait_ready()
            results = run_cases(variants, json.dumps(row).encode(), args)
        finally:
            for variant in variants:
                variant.server.stop()
    summary = report({(v.removeprefix("full-"), c): r for (v, c), r in results.items()})
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
