"""What do keys, rate limits, quotas and metering cost a served model, and what does
dynamic batching buy? Loopback HTTP load against `foundry serve`.

    python benchmarks/serve_load.py                          # 5,000 requests or 10 s per case
    python benchmarks/serve_load.py --requests 5000 --seconds 20 --json serve_load.json
    python benchmarks/serve_load.py --home /tmp/bench-home   # reuse the model trained there
    python benchmarks/serve_load.py --layers 1024,1024,1024  # a model heavier than HTTP
    PYTHONPATH=old/src python benchmarks/serve_load.py --compare-src new/src   # before/after

It trains a small MLP on a generated Adult-like table (14 inputs, like the UCI Adult
census table) with `foundry.train` in a temporary FOUNDRY_HOME (or reuses `adult` from
--home), then starts four servers as subprocesses on free 127.0.0.1 ports:

    full            `python -m foundry serve adult:N` + an enterprise key from
                    `foundry keys create --plan enterprise`: auth, rate limit, quota, metering
    bare            the same app with `create_app(..., bare=True)` under uvicorn: the same
                    parsing, validation, batching and responses, no gate
    full-nobatch    full with `serve: {batching: {enabled: false}}`
    bare-nobatch    bare with the same

and drives each from one asyncio process at 1, 8 and 32 concurrent clients (keep-alive
connections, each sending its next request when the last is answered), every request one
Adult row as a JSON object. (Ludwig 0.11's `serve` answers ~56 requests/s, p50 17.6 ms,
for one Adult row on our 2-core machine.) A case stops after --requests requests or
--seconds seconds, whichever comes first; it is split into --rounds slices and the slices
of all cases are interleaved (the variant order rotating each round), so drift on a
shared machine hits every variant alike.

Each server runs --workers uvicorn workers, 1 by default so that on 2 cores the load
generator has the other core. The servers and the load generator are
`foundry.serve.loadtest` (the one `foundry cost` measures with): a minimal HTTP/1.1
client on asyncio streams, ~0.05-0.2 ms of CPU per request (httpx's AsyncClient costs
2-4 ms here and tops out near 180 requests/s at 32 connections: with it the benchmark
measured httpx, not the server). The client's CPU share is printed for that reason.
`srv ms/req` is the CPU time of the server's processes (parent and workers, from /proc)
per answered request, which other load on the machine disturbs far less than wall-clock
numbers; `batch` is the mean number of records per forward pass (from /metrics; one
worker's counters, so exact only with --workers 1).

--compare-src SRC adds a fifth server, `full-cmp`: `full` run from another checkout's
`src` (PYTHONPATH=SRC) on a copy of the trained FOUNDRY_HOME made before any server starts
(so a newer schema migrates its own copy), interleaved with the others; the report adds
the `full-cmp / full` throughput ratio per client count. Run the script itself with the
older code, so that its database is one both can open.

Targets (issue #9): full ≥ 80% of bare's throughput; auth + metering add < 1 ms at p50
(full - bare at 1 client); batching ≥ 3x throughput at 32 clients. `--check` exits 1 if
one is missed. Only 127.0.0.1 is contacted, on ports this script binds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from foundry.serve.loadtest import (
    LoadResult,
    Server,
    free_port,
    predict_request,
    run_load,
    serve_command,
)

CLIENTS = (1, 8, 32)
VARIANTS = ("bare", "full", "bare-nobatch", "full-nobatch")
LUDWIG = "Ludwig 0.11 `serve`, one Adult row: ~56 req/s, p50 17.6 ms (reference, same machine)"
ENTERPRISE_BUCKET = 20_000
"""Requests the enterprise plan's rate bucket holds (requests_per_minute)."""

BARE_LAUNCHER = """
import sys
from pathlib import Path
from foundry.config.load import load_serve_config
from foundry.serve.server import run_server
config, ref, port, workers = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
run_server(load_serve_config(config), [ref], port=port, workers=workers, bare=True)
"""


# ----------------------------------------------------------------------------- model


def adult_like(n: int, seed: int = 0) -> pd.DataFrame:
    """A census-like table with the UCI Adult columns: 6 numbers, 8 categories/binaries,
    missing values, and an income label that depends on several of them."""
    rng = np.random.default_rng(seed)

    def pick(values: list[str], p: list[float] | None = None) -> np.ndarray:
        return rng.choice(values, n, p=p)

    education = pick(["hs", "some-college", "bachelors", "masters", "doctorate", "11th"])
    level = (
        pd.Series(education)
        .map({"11th": 0, "hs": 1, "some-college": 2, "bachelors": 3, "masters": 4, "doctorate": 5})
        .to_numpy()
    )
    age = rng.integers(17, 90, n).astype(float)
    hours = rng.normal(40, 12, n).clip(1, 99).round()
    gain = np.where(rng.random(n) < 0.08, rng.integers(1_000, 99_999, n), 0).astype(float)
    df = pd.DataFrame(
        {
            "age": age,
            "workclass": pick(
                ["private", "self-emp", "local-gov", "state-gov", "federal-gov", "without-pay"]
            ),
            "fnlwgt": rng.integers(12_000, 1_500_000, n).astype(float),
            "education": education,
            "education_num": (level * 2 + 7).astype(float),
            "marital_status": pick(
                ["married", "never-married", "divorced", "widowed", "separated"]
            ),
            "occupation": pick(
                [
                    "tech-support",
                    "craft-repair",
                    "sales",
                    "exec-managerial",
                    "prof-specialty",
                    "other-service",
                    "adm-clerical",
                ]
            ),
            "relationship": pick(["husband", "wife", "own-child", "not-in-family", "unmarried"]),
            "race": pick(["white", "black", "asian-pac-islander", "other"], [0.8, 0.1, 0.05, 0.05]),
            "sex": pick(["male", "female"]),
            "capital_gain": gain,
            "capital_loss": np.where(rng.random(n) < 0.05, rng.integers(100, 4_000, n), 0).astype(
                float
            ),
            "hours_per_week": hours,
            "native_country": pick(
                ["united-states", "mexico", "india", "germany", "other"],
                [0.85, 0.05, 0.03, 0.02, 0.05],
            ),
        }
    )
    logit = 0.04 * (age - 38) + 0.04 * (hours - 40) + 0.7 * level + gain / 20_000 - 2.6
    df["income"] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    df.loc[rng.random(n) < 0.03, "workclass"] = None
    df.loc[rng.random(n) < 0.02, "age"] = np.nan
    return df


def trained_model(home: Path, work: Path, layers: list[int] | None = None) -> tuple[str, dict]:
    """`adult:N` in `home` (trained now unless there) and one input row as JSON. With
    `layers`, an MLP of those hidden sizes named `adult-<sizes>` instead of the default."""
    import foundry
    from foundry.registry import Registry

    name = "adult" if not layers else "adult-" + "x".join(map(str, layers))
    df = adult_like(3_000)
    row = json.loads(df.drop(columns=["income"]).head(1).to_json(orient="records"))[0]
    os.environ["FOUNDRY_HOME"] = str(home)
    try:
        return Registry(home).resolve(f"{name}:latest").ref, row
    except Exception:  # not trained there yet
        pass
    csv = work / "adult.csv"
    df.to_csv(csv, index=False)
    config = {
        "name": name,
        "data": {"path": str(csv)},
        "features": {"target": "income"},
        "train": {"epochs": 3, "batch_size": 128},
        **({"model": {"type": "mlp", "layers": layers}} if layers else {}),
        "output_dir": str(work / "runs"),
    }
    started = time.perf_counter()
    result = foundry.train(config, progress=False, quiet=True)
    print(
        f"trained {result.model_ref} in {time.perf_counter() - started:.1f} s "
        f"(FOUNDRY_HOME={home})",
        flush=True,
    )
    return result.model_ref, row


# ---------------------------------------------------------------------------- servers


@dataclass
class Variant:
    """One server under test (`foundry.serve.loadtest.Server`) and its keys."""

    name: str
    server: Server
    model: str = "adult"
    keys: dict[int, str] = field(default_factory=dict)
    """Bearer key per client count (full variants): each case draws on its own bucket."""

    @property
    def full(self) -> bool:
        return self.name.startswith("full")

    def requests(self, clients: int, body: bytes) -> list[bytes]:
        key = self.keys[clients] if self.full else None
        return [predict_request(self.server.port, self.model, body, key)]

    def cpu_seconds(self) -> float:
        """User + system CPU of every process of the server (parent and workers)."""
        assert self.server.proc is not None
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == self.server.proc.pid:  # process group (field 5)
                total += int(fields[11]) + int(fields[12])  # utime + stime
        return total / os.sysconf("SC_CLK_TCK")

    def batches(self) -> tuple[float, float]:
        """(records, forward passes) so far, from /metrics (one worker's counters)."""
        import httpx

        text = httpx.get(f"{self.server.url}/metrics", timeout=10).text
        values = {"sum": 0.0, "count": 0.0}
        for line in text.splitlines():
            for part in values:
                if line.startswith(f"foundry_batch_size_{part}{{"):
                    values[part] += float(line.rsplit(" ", 1)[1])
        return values["sum"], values["count"]


def make_variants(
    ref: str, env: dict[str, str], work: Path, workers: int, compare_src: Path | None = None
) -> list[Variant]:
    variants = []
    for name in VARIANTS + (("full-cmp",) if compare_src else ()):
        batching = not name.endswith("nobatch")
        config = work / f"serve-{name}.yaml"
        # metrics: public, for batches() (loopback only, a throwaway home)
        config.write_text(
            f"serve:\n  metrics: public\n  batching:\n    enabled: {str(batching).lower()}\n"
        )
        port = free_port()
        if name == "full-cmp":
            assert compare_src is not None
            home = work / "home-cmp"
            shutil.copytree(env["FOUNDRY_HOME"], home)
            cmp_env = {**env, "FOUNDRY_HOME": str(home), "PYTHONPATH": str(compare_src)}
            command = serve_command(ref, port, workers=workers, config=config)
            server = Server(
                command, env=cmp_env, log=work / f"{name}.log", port=port, workers=workers
            )
            variants.append(Variant(name, server, model=ref.split(":")[0]))
            continue
        if name.startswith("full"):
            command = serve_command(ref, port, workers=workers, config=config)
        else:
            command = [
                sys.executable,
                "-c",
                BARE_LAUNCHER,
                str(config),
                ref,
                str(port),
                str(workers),
            ]
        server = Server(command, env=env, log=work / f"{name}.log", port=port, workers=workers)
        variants.append(Variant(name, server, model=ref.split(":")[0]))
    return variants


def create_key(env: dict[str, str], name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "foundry", "keys", "create", "--name", name, "--plan", "enterprise"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise SystemExit(f"foundry keys create failed:\n{out.stderr}")
    return out.stdout.strip()


# ------------------------------------------------------------------------------- load


@dataclass
class Result:
    """One (variant, clients) case, summed over its interleaved slices."""

    ok: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    records: float = 0.0
    passes: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def batch(self) -> float:
        """Mean records per forward pass (meaningful with one worker)."""
        return self.records / self.passes if self.passes else float("nan")

    @property
    def rps(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def add(self, load: LoadResult) -> None:
        self.ok += load.ok
        self.elapsed += load.seconds
        self.client_cpu += load.client_cpu
        self.latencies += load.latencies
        for status, count in load.errors.items():
            self.errors[status] = self.errors.get(status, 0) + count

    def as_dict(self) -> dict:
        return {
            "requests_ok": self.ok,
            "errors": {str(k): v for k, v in self.errors.items()},
            "seconds": round(self.elapsed, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.pct(50), 3),
            "p99_ms": round(self.pct(99), 3),
            "client_cpu_share": round(self.client_cpu / self.elapsed, 3) if self.elapsed else 0,
            "server_cpu_ms_per_request": round(1000 * self.server_cpu / max(1, self.ok), 3),
            "mean_batch": round(self.batch, 2),
        }


def one_slice(
    variant: Variant, clients: int, body: bytes, max_requests: int, seconds: float, result: Result
) -> None:
    """`foundry.serve.loadtest.drive` on `variant`, with the server's CPU time and batch
    counters read around it."""
    records, passes = variant.batches()
    server_cpu = variant.cpu_seconds()
    load = run_load(
        variant.server.port,
        variant.requests(clients, body),
        clients=clients,
        seconds=seconds,
        max_requests=max_requests,
    )
    result.server_cpu += variant.cpu_seconds() - server_cpu
    records_after, passes_after = variant.batches()
    result.records += records_after - records
    result.passes += passes_after - passes
    result.add(load)


def run_cases(
    variants: list[Variant], body: bytes, args: argparse.Namespace
) -> dict[tuple[str, int], Result]:
    results = {(v.name, c): Result() for v in variants for c in CLIENTS}
    per_requests = max(1, args.requests // args.rounds)
    per_seconds = args.seconds / args.rounds
    for round_ in range(args.rounds):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for clients in CLIENTS:
            for variant in order:
                one_slice(
                    variant,
                    clients,
                    body,
                    per_requests,
                    per_seconds,
                    results[variant.name, clients],
                )
        print(f"  round {round_ + 1}/{args.rounds} done", flush=True)
    return results


# ------------------------------------------------------------------------------ report


def report(results: dict[tuple[str, int], Result], args: argparse.Namespace) -> dict:
    print()
    print(
        f"{'variant':<14}{'clients':>8}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'srv ms/req':>12}{'batch':>7}{'client CPU':>12}{'errors':>8}"
    )
    names = sorted({v for v, _ in results}, key=lambda v: (v not in VARIANTS, v))
    for variant in names:
        for clients in CLIENTS:
            r = results[variant, clients]
            share = r.client_cpu / r.elapsed if r.elapsed else 0.0
            print(
                f"{variant:<14}{clients:>8}{r.rps:>10.1f}{r.pct(50):>9.2f}{r.pct(99):>9.2f}"
                f"{1000 * r.server_cpu / max(1, r.ok):>12.2f}{r.batch:>7.1f}{share:>11.0%}"
                f"{sum(r.errors.values()):>8}"
            )
    print(f"\n{LUDWIG}")

    def rps(v: str, c: int) -> float:
        return results[v, c].rps

    checks: list[tuple[str, float, str, bool]] = []
    print("\nfull / bare throughput (target >= 0.80)")
    for suffix in ("", "-nobatch"):
        for clients in CLIENTS:
            ratio = rps(f"full{suffix}", clients) / max(rps(f"bare{suffix}", clients), 1e-9)
            label = f"full{suffix}/bare{suffix} @ {clients:>2} clients"
            print(f"  {label:<42}{ratio:>7.2f}")
            if not suffix:
                checks.append((label, ratio, ">= 0.80", ratio >= 0.80))
    if "full-cmp" in names:
        print("\nfull-cmp / full throughput (the other checkout against this run's code)")
        for clients in CLIENTS:
            ratio = rps("full-cmp", clients) / max(rps("full", clients), 1e-9)
            print(f"  {f'full-cmp/full @ {clients:>2} clients':<42}{ratio:>7.2f}")
    print("\nauth + metering at p50, 1 client: full - bare (target < 1 ms)")
    for suffix in ("", "-nobatch"):
        full, bare = results[f"full{suffix}", 1], results[f"bare{suffix}", 1]
        diff = full.pct(50) - bare.pct(50)
        cpu = 1000 * (full.server_cpu / max(1, full.ok) - bare.server_cpu / max(1, bare.ok))
        label = f"p50 full{suffix} - bare{suffix}"
        print(f"  {label:<42}{diff:>7.2f} ms   (server CPU per request: {cpu:+.2f} ms)")
        if not suffix:
            checks.append((label + " (ms)", diff, "< 1", diff < 1.0))
    print("\nbatching on / off throughput at 32 clients (target >= 3x)")
    for variant in ("full", "bare"):
        ratio = rps(variant, 32) / max(rps(f"{variant}-nobatch", 32), 1e-9)
        label = f"{variant} / {variant}-nobatch @ 32 clients"
        print(f"  {label:<42}{ratio:>7.2f}x")
        checks.append((label, ratio, ">= 3", ratio >= 3.0))
    print()
    for label, value, target, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {label}: {value:.2f} (target {target})")
    busy = [
        f"{v}@{c}" for (v, c), r in results.items() if r.elapsed and r.client_cpu / r.elapsed > 0.9
    ]
    if busy:
        print(
            f"\nnote: the load generator used > 90% of a core in {', '.join(busy)}; "
            "there the client, not the server, may cap req/s"
        )
    errors = {f"{v}@{c}": r.errors for (v, c), r in results.items() if r.errors}
    if errors:
        print(f"\nwarning: non-200 answers (not counted): {errors}")
    return {
        "settings": {
            "requests": args.requests,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "workers": args.workers,
            "cpus": os.cpu_count(),
        },
        "cases": [
            {"variant": v, "clients": c, **results[v, c].as_dict()} for v in names for c in CLIENTS
        ],
        "checks": [
            {"check": label, "value": round(value, 3), "target": target, "ok": ok}
            for label, value, target, ok in checks
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=5_000,
        help="most requests per case (variant x clients) [5000]",
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="most seconds per case [10]")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="slices each case is split into, interleaved with the others [3]",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn workers per server [1: the client gets the other core]",
    )
    parser.add_argument(
        "--layers",
        default=None,
        help="hidden sizes of the served MLP, e.g. 1024,1024,1024 (a model "
        "whose forward pass outweighs HTTP) [foundry's default MLP]",
    )
    parser.add_argument(
        "--home",
        type=Path,
        default=None,
        help="FOUNDRY_HOME to train in or reuse [a temporary directory]",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument(
        "--compare-src",
        type=Path,
        default=None,
        help="src folder of another checkout: adds `full-cmp`, full served "
        "from it (before / after a change, in one run)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args()
    if args.requests > ENTERPRISE_BUCKET - 1_000:
        parser.error(
            f"--requests above {ENTERPRISE_BUCKET - 1_000} would run into the "
            f"enterprise plan's rate limit ({ENTERPRISE_BUCKET} requests per minute)"
        )
    if args.rounds < 1 or args.requests < args.rounds:
        parser.error("need --rounds >= 1 and --requests >= --rounds")

    with tempfile.TemporaryDirectory(prefix="foundry-serve-load-") as tmp:
        work = Path(tmp)
        home = (args.home or work / "home").resolve()
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
        ref, row = trained_model(home, work, layers)
        env = {**os.environ, "FOUNDRY_HOME": str(home)}
        for name in ("FOUNDRY_DATABASE_URL", "FOUNDRY_ADMIN_TOKEN"):
            env.pop(name, None)
        variants = make_variants(ref, env, work, args.workers, args.compare_src)
        print(
            f"serving {ref}: {len(variants)} servers x {args.workers} worker(s) on "
            f"{os.cpu_count()} CPUs; "
            f"per case: {args.requests} requests or {args.seconds:g} s in {args.rounds} "
            "interleaved slices",
            flush=True,
        )
        try:
            for variant in variants:
                variant.server.start()
            for variant in variants:  # keys are made while the servers load
                if variant.full:
                    variant.keys = {
                        c: create_key(variant.server.env, f"bench-{variant.name}-{c}")
                        for c in CLIENTS
                    }
            for variant in variants:
                variant.server.wait_ready()
            body = json.dumps(row).encode()
            results = run_cases(variants, body, args)
        finally:
            for variant in variants:
                variant.server.stop()
    summary = report(results, args)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.check and not all(c["ok"] for c in summary["checks"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
