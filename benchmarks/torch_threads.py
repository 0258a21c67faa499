"""A matrix product on a thread that did not set PyTorch's thread count, against the
same product on the main thread and on a thread that adopted the count
(`foundry.torch_threads.adopt_torch_threads`).

    python benchmarks/torch_threads.py                 # [4, 128] x [128, 2048], 1 thread
    python benchmarks/torch_threads.py --rows 16 --rounds 3
    python benchmarks/torch_threads.py --busy 1   # another process keeps one core busy

`torch.set_num_threads(1)` is called on the main thread, as `foundry serve` does for
each worker; each side then runs the product --calls times on its thread. Reported per
call: the thread's CPU time, the process's CPU time (which includes any OpenMP helper
threads spinning) and wall time. The sides alternate --rounds times, after a warm-up.
--busy N starts N processes that spin for the duration, as the event loop, a load
client or other jobs do on a serving machine: a spinning OpenMP thread then competes
with them for a core.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import threading
import time

import torch

from foundry.torch_threads import adopt_torch_threads


def _process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _measure(x: torch.Tensor, weight: torch.Tensor, calls: int) -> tuple[float, float, float]:
    """Per call (ms): thread CPU, process CPU, wall clock, after 50 warm-up calls."""
    with torch.inference_mode():
        for _ in range(50):
            torch.nn.functional.linear(x, weight)
        thread, process, wall = time.thread_time(), _process_cpu(), time.perf_counter()
        for _ in range(calls):
            torch.nn.functional.linear(x, weight)
        return (
            1e3 * (time.thread_time() - thread) / calls,
            1e3 * (_process_cpu() - process) / calls,
            1e3 * (time.perf_counter() - wall) / calls,
        )


def _on_new_thread(adopt: bool, *args: object) -> tuple[float, float, float]:
    out: list[tuple[float, float, float]] = []

    def run() -> None:
        if adopt:
            adopt_torch_threads()
        out.append(_measure(*args))  # type: ignore[arg-type]

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out[0]


def _spin() -> None:
    while True:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--inputs", type=int, default=128)
    parser.add_argument("--outputs", type=int, default=2048)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--busy", type=int, default=0, help="busy processes beside")
    args = parser.parse_args()
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    torch.set_num_threads(1)
    x, weight = torch.randn(args.rows, args.inputs), torch.randn(args.outputs, args.inputs)
    sides = {
        "main thread": lambda: _measure(x, weight, args.calls),
        "new thread": lambda: _on_new_thread(False, x, weight, args.calls),
        "new thread, adopted": lambda: _on_new_thread(True, x, weight, args.calls),
    }
    print(f"[{args.rows}, {args.inputs}] x [{args.inputs}, {args.outputs}], ms per call")
    print(f"{'round':>5}  {'side':<20}  thread CPU  process CPU   wall")
    for r in range(args.rounds):
        order = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for name in order:
            thread, process, wall = sides[name]()
            print(f"{r + 1:>5}  {name:<20}  {thread:>10.3f}  {process:>11.3f}  {wall:>6.3f}")
    for spinner in spinners:
        spinner.terminate()


if __name__ == "__main__":
    main()
