"""What does one huge request cost the other clients of its worker? Small requests'
latency while a 200,000-record body is read, parsed, checked, predicted and answered.

    python benchmarks/serve_hostile.py                       # 200,000 records, 3 rounds
    python benchmarks/serve_hostile.py --records 50000 --rounds 2 --json hostile.json
    python benchmarks/serve_hostile.py --baseline-src /work/main/src   # + an older build

The Adult-like MLP of serve_load.py (14 inputs; trained in a temporary FOUNDRY_HOME or
reused from --home), served by `foundry serve` processes of one uvicorn worker each, on
free 127.0.0.1 ports, with the body limit and the plan raised so the big request is
admitted:

    on-loop     `serve.offload_body_bytes` above the body's size: the body is parsed with
                json.loads, checked and its answer encoded on the event loop (the code
                path every body took before issue 14)
    off-loop    the default (64 KB): parsed a record at a time, checked and encoded on a
                worker thread (foundry.serve.request_body)
    baseline    (--baseline-src) the same command run from another source tree

Then (--slowloris N) N connections trickle one header byte every 2 s at the off-loop
server and at the baseline (serve.header_timeout_s at its default, 10 s) for at most
--slowloris-bound seconds, while one client sends a one-record request every 0.1 s on a
fresh connection: when were they closed, and what did the small requests get?

Each round, for each variant in turn (the order rotating): --clients keep-alive
connections send one-record requests back to back; after a second of that, one more
connection sends the big request. `during` is every small request that overlapped the
big one (started before its answer, ended after it was sent), `quiet` those answered
before it; p50 / p99 / max in milliseconds. Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_load import adult_like, create_key, trained_model  # noqa: E402

from foundry.serve.loadtest import (  # noqa: E402
    RawConnection,
    Server,
    free_port,
    predict_request,
    serve_command,
)

WARM_S = 1.0
"""Small requests alone before the big one: connections open, key cached, steady state."""


def serve_config(work: Path, name: str, body_bytes: int, records: int) -> Path:
    """The variant's config file (the baseline's: on-loop's settings an older build
    knows)."""
    serve: dict = {
        "max_body_bytes": body_bytes + 1_000,
        "plans": {
            "enterprise": {
                "included_units": 10**12,
                "requests_per_minute": 10**6,
                "max_records_per_request": records,
            }
        },
    }
    if name != "baseline":  # a slow machine may take longer than 30 s to send 60 MB
        serve["body_timeout_s"] = 600
    if name == "on-loop":
        serve["offload_body_bytes"] = body_bytes * 2
    elif name == "off-loop":
        serve["offload_body_bytes"] = 65_536  # the default, said aloud
    path = work / f"serve-{name}.json"
    path.write_text(json.dumps({"serve": serve}))  # JSON is YAML
    return path


async def one_round(
    port: int, key: str, model: str, small: bytes, big: bytes, clients: int
) -> dict:
    small_request = predict_request(port, model, small, key)
    big_request = predict_request(port, model, big, key)
    connections = [await RawConnection.open(port) for _ in range(clients)]
    big_connection = await RawConnection.open(port)
    timings: list[tuple[float, float, int]] = []  # (start, seconds, status)
    stop = False

    async def client(connection: RawConnection) -> None:
        while not stop:
            started = time.perf_counter()
            status, _ = await connection.send(small_request)
            timings.append((started, time.perf_counter() - started, status))

    begin = time.perf_counter()
    tasks = [asyncio.create_task(client(c)) for c in connections]
    await asyncio.sleep(WARM_S)
    sent = time.perf_counter()
    status, body = await big_connection.send(big_request)
    answered = time.perf_counter()
    stop = True
    await asyncio.gather(*tasks)
    for connection in [*connections, big_connection]:
        await connection.close()
    if status != 200:
        raise SystemExit(f"the big request got {status}: {body[:300]!r}")
    during = [s for start, s, code in timings if start < answered and start + s > sent]
    quiet = [s for start, s, code in timings if start + s <= sent and start > begin + WARM_S / 2]
    errors = sum(code != 200 for *_, code in timings)
    return {
        "big_s": answered - sent,
        "during": during,
        "quiet": quiet,
        "errors": errors,
        "stalls": sorted(set(round(s, 2) for s in during), reverse=True)[:3],
    }


def baseline_home(src: Path, env: dict[str, str], work: Path) -> tuple[dict[str, str], str]:
    """The same model trained by the build in `src` (a manifest written by a newer build
    may hold settings an older one refuses), in its own home: (its env, its ref)."""
    home = work / "home-baseline"
    base_env = {**env, "FOUNDRY_HOME": str(home), "PYTHONPATH": str(src.resolve())}
    code = (
        "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "from serve_load import trained_model; "
        "print(trained_model(Path(sys.argv[2]), Path(sys.argv[3]))[0])"
    )
    (work / "baseline").mkdir()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(Path(__file__).resolve().parent),
            str(home),
            str(work / "baseline"),
        ],
        env=base_env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if out.returncode != 0:
        raise SystemExit(f"training with {src} failed:\n{out.stderr[-2000:]}")
    return base_env, out.stdout.strip().splitlines()[-1]


async def slowloris(
    port: int, key: str, model: str, small: bytes, connections: int, bound_s: float
) -> dict:
    """`connections` clients trickling one header byte every 2 s, for at most `bound_s`
    seconds; meanwhile one client sends a one-record request every 0.1 s on a fresh
    connection. Returns when each trickling connection was closed by the server (seconds
    after it opened; None: still open at the bound) and the small requests' statuses."""
    head = b"POST /v1/models/" + model.encode() + b"/predict HTTP/1.1\r\nhost: x\r\nx-slow: "
    started = time.perf_counter()

    async def trickle() -> float | None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return 0.0  # refused at once
        opened = time.perf_counter()
        writer.write(head)
        try:
            while time.perf_counter() - started < bound_s:
                try:
                    if not await asyncio.wait_for(reader.read(4096), 2.0):
                        return time.perf_counter() - opened
                except asyncio.TimeoutError:
                    writer.write(b"a")
            return None
        except OSError:
            return time.perf_counter() - opened
        finally:
            writer.close()

    statuses: list[int] = []

    async def legit() -> None:
        request = predict_request(port, model, small, key)
        while time.perf_counter() - started < bound_s:
            try:
                connection = await RawConnection.open(port)
                statuses.append((await connection.send(request))[0])
                await connection.close()
            except (OSError, asyncio.IncompleteReadError):
                statuses.append(0)
            await asyncio.sleep(0.1)

    closed, _ = await asyncio.gather(
        asyncio.gather(*(trickle() for _ in range(connections))), legit()
    )
    done = [c for c in closed if c is not None]
    return {
        "connections": connections,
        "closed": len(done),
        "closed_after_s_median": float(np.median(done)) if done else None,
        "closed_after_s_max": max(done) if done else None,
        "small_statuses": {str(k): statuses.count(k) for k in sorted(set(statuses))},
    }


def percentiles(seconds: list[float]) -> dict[str, float]:
    if not seconds:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    ms = np.array(seconds) * 1000
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "max_ms": float(ms.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000, help="records in the big body")
    parser.add_argument("--rounds", type=int, default=3, help="big requests per variant")
    parser.add_argument("--clients", type=int, default=4, help="small-request connections")
    parser.add_argument(
        "--home", type=Path, default=None, help="FOUNDRY_HOME to reuse (default: a temporary one)"
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also serve from this source tree (e.g. an older checkout)",
    )
    parser.add_argument(
        "--slowloris",
        type=int,
        default=1000,
        help="then this many header-trickling connections (0: skip)",
    )
    parser.add_argument(
        "--slowloris-bound",
        type=float,
        default=30.0,
        help="seconds the trickling clients keep trying",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="foundry-serve-hostile-") as tmp:
        work = Path(tmp)
        home = args.home or work / "home"
        ref, row = trained_model(home, work)
        model = ref.split(":")[0]
        frame = adult_like(args.records, seed=1).drop(columns=["income"])
        big = frame.to_json(orient="records").encode()
        small = json.dumps(row).encode()
        print(f"big body: {args.records} records, {len(big) / 1e6:.1f} MB", flush=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN")
        }
        env["FOUNDRY_HOME"] = str(home)
        keys = {"on-loop": create_key(env, "hostile-bench")}
        keys["off-loop"] = keys["on-loop"]
        names = ["on-loop", "off-loop"] + (["baseline"] if args.baseline_src else [])
        servers = {}
        for name in names:
            port = free_port()
            config = serve_config(work, name, len(big), args.records)
            server_env, server_ref = env, ref
            if name == "baseline":
                assert args.baseline_src is not None
                server_env, server_ref = baseline_home(args.baseline_src, env, work)
                keys[name] = create_key(server_env, "hostile-bench")
            servers[name] = Server(
                serve_command(server_ref, port, config=config),
                env=server_env,
                log=work / f"{name}.log",
                port=port,
            )
        results: dict[str, list[dict]] = {name: [] for name in names}
        slow: dict[str, dict] = {}
        try:
            for server in servers.values():
                server.start()
            for server in servers.values():
                server.wait_ready()
            for r in range(args.rounds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    out = asyncio.run(
                        one_round(servers[name].port, keys[name], model, small, big, args.clients)
                    )
                    results[name].append(out)
                    print(
                        f"round {r + 1} {name:9s} big request {out['big_s']:.2f} s, "
                        f"{len(out['during'])} small requests meanwhile, longest "
                        f"{out['stalls']} s",
                        flush=True,
                    )
            for name in names if args.slowloris else []:
                if name == "on-loop":
                    continue  # the same protocol as off-loop
                out = asyncio.run(
                    slowloris(
                        servers[name].port,
                        keys[name],
                        model,
                        small,
                        args.slowloris,
                        args.slowloris_bound,
                    )
                )
                slow[name] = out
                print(f"slowloris {name:9s} {out}", flush=True)
        finally:
            for server in servers.values():
                server.stop()

    report = {}
    print(
        f"\n{'variant':10s} {'big s':>6s} | {'during: n':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
        f"{'max ms':>8s} | {'quiet p50':>9s} {'p99':>6s} | errors"
    )
    for name, rounds in results.items():
        during = percentiles([s for out in rounds for s in out["during"]])
        quiet = percentiles([s for out in rounds for s in out["quiet"]])
        big_s = float(np.median([out["big_s"] for out in rounds]))
        errors = sum(out["errors"] for out in rounds)
        report[name] = {"big_s_median": big_s, "during": during, "quiet": quiet, "errors": errors}
        print(
            f"{name:10s} {big_s:6.2f} | {during['n']:9d} {during['p50_ms']:8.1f} "
            f"{during['p99_ms']:8.1f} {during['max_ms']:8.1f} | {quiet['p50_ms']:9.2f} "
            f"{quiet['p99_ms']:6.2f} | {errors}"
        )
    if "on-loop" in report and "off-loop" in report:
        on, off = report["on-loop"]["during"], report["off-loop"]["during"]
        print(
            f"\nsmall requests during the big one, on-loop / off-loop: p50 "
            f"{on['p50_ms'] / off['p50_ms']:.0f}x, p99 {on['p99_ms'] / off['p99_ms']:.0f}x"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "results": report,
                    "slowloris": slow,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
