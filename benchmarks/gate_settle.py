"""What do usage reservations cost the per-request path? authenticate + admit + complete
of a plain request in a loop (SQLite, one process), this tree against another checkout
(before reservations), interleaved in one run.

    python benchmarks/gate_settle.py --other /path/to/old/checkout/src --rounds 6

Each round runs both trees for --seconds each, in separate subprocesses (both are the
package `foundry`), alternating which goes first; a fresh database per tree per round.
It prints each tree's sequences per second per round and the median ratio new / old.
Settlement (this tree) is the buffered `complete` written by the next admission.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import sys, time
from foundry.config.schema import PlanConfig
from foundry.serve.gate import Gate
g = Gate({"big": PlanConfig(included_units=10**9, requests_per_minute=10**9)})
key = g.create_key("bench", "big").key
header = "Bearer " + key
for _ in range(200):  # warm-up
    a = g.admit(g.authenticate(header), model="m", units=1, request_id="w")
    g.complete(a, status=200, latency_ms=1.0)
n, end = 0, time.perf_counter() + float(sys.argv[1])
while time.perf_counter() < end:
    a = g.admit(g.authenticate(header), model="m", units=1, request_id="r")
    g.complete(a, status=200, latency_ms=1.0)
    n += 1
g.close()
print(n / float(sys.argv[1]))
"""


def _run(src: str, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PYTHONPATH": src, "FOUNDRY_HOME": home}
        env.pop("FOUNDRY_DATABASE_URL", None)
        out = subprocess.run(
            [sys.executable, "-c", _CHILD, str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="src folder of the tree to compare")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parents[1] / "src")
    new, old = [], []
    for r in range(args.rounds):
        order = [(here, new), (args.other, old)]
        for src, out in order if r % 2 == 0 else order[::-1]:
            out.append(_run(src, args.seconds))
        print(
            f"round {r + 1}: new {new[-1]:,.0f}/s  old {old[-1]:,.0f}/s  "
            f"ratio {new[-1] / old[-1]:.2f}",
            flush=True,
        )
    ratios = [n / o for n, o in zip(new, old, strict=True)]
    print(
        f"median: new {statistics.median(new):,.0f}/s, old {statistics.median(old):,.0f}/s,"
        f" ratio new/old {statistics.median(ratios):.2f} "
        f"(range {min(ratios):.2f}-{max(ratios):.2f})"
    )


if __name__ == "__main__":
    main()
