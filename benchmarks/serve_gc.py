"""Does `gc.freeze()` after the models load (src/foundry/serve/app.py) shorten the serving
worker's tail latency? The same servers with and without it, same load, one run.

    python benchmarks/serve_gc.py                    # SQLite and PostgreSQL gates
    python benchmarks/serve_gc.py --seconds 20 --json serve_gc.json

Four `foundry serve` processes of one uvicorn worker each, batching on: the gate on SQLite
and on a throwaway PostgreSQL (group commit), each as shipped (`freeze`) and with
`gc.freeze` made a no-op in the server process (`no-freeze`). The model, load client,
cases and interleaving are serve_load.py's; the PostgreSQL database and the copy of the
model into its registry are serve_postgres.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serve_load import CLIENTS, Variant, create_key, run_cases, trained_model  # noqa: E402
from serve_postgres import copy_model, postgres_database  # noqa: E402

from foundry.serve.loadtest import Server, free_port, serve_command  # noqa: E402

NO_FREEZE_LAUNCHER = """
import gc, runpy, sys
gc.freeze = lambda: None  # the server as it was before gc.freeze
sys.argv = ["foundry", *sys.argv[1:]]
runpy.run_module("foundry", run_name="__main__")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4_000, help="most requests per case")
    parser.add_argument("--seconds", type=float, default=8.0, help="most seconds per case")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved slices per case")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="foundry-serve-gc-") as tmp,
        postgres_database(None) as pg_url,
    ):
        work = Path(tmp)
        home = work / "home"
        ref, row = trained_model(home, work)
        pg_home = work / "home-pg"
        pg_ref = copy_model(ref, home, pg_home, pg_url)
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN")
        }
        sqlite_env = {**base, "FOUNDRY_HOME": str(home)}
        pg_env = {**base, "FOUNDRY_HOME": str(pg_home), "FOUNDRY_DATABASE_URL": pg_url}
        config = work / "serve.yaml"
        config.write_text("serve:\n  batching:\n    enabled: true\n")
        variants = []
        for db, model_ref, env in (("sqlite", ref, sqlite_env), ("postgres", pg_ref, pg_env)):
            for freeze in ("freeze", "no-freeze"):
                command = serve_command(model_ref, free_port(), workers=1, config=config)
                if freeze == "no-freeze":
                    command = [sys.executable, "-c", NO_FREEZE_LAUNCHER, *command[3:]]
                name = f"{db}-{freeze}"
                server = Server(command, env=env, log=work / f"{name}.log")
                variants.append(Variant(f"full-{name}", server, model="adult"))
        try:
            for v in variants:
                v.server.start()
            for v in variants:
                v.keys = {c: create_key(v.server.env, f"bench-{v.name}-{c}") for c in CLIENTS}
            for v in variants:
                v.server.wait_ready()
            results = run_cases(variants, json.dumps(row).encode(), args)
        finally:
            for v in variants:
                v.server.stop()

    rows = []
    print(
        f"\n{'server':<20}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'p99 vs no-freeze':>18}"
    )
    for (name, clients), result in sorted(results.items()):
        name = name.removeprefix("full-")
        other = results[f"full-{name.split('-', 1)[0]}-no-freeze", clients]
        d = result.as_dict()
        ratio = d["p99_ms"] / other.as_dict()["p99_ms"]
        rows.append({"server": name, "clients": clients, **d, "p99_vs_no_freeze": ratio})
        print(
            f"{name:<20}{clients:>8}{d['rps']:>10.1f}{d['p50_ms']:>9.2f}{d['p99_ms']:>9.2f}"
            f"{ratio:>17.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
