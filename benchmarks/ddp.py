"""Throughput of data-parallel training: 2 DDP processes vs 1 process, same global batch.

    python benchmarks/ddp.py                           # 200k rows, MLP 64→256→256→2
    python benchmarks/ddp.py --rows 50000 --epochs 2   # quicker

The same `foundry.training.fit` call (same data, model, seed and global batch) runs
three ways, one after the other in this one command:

- 1 process using every core (`torch.set_num_threads(cores)`), what `foundry train`
  does without `--nproc`;
- 1 process on 1 thread: the per-core baseline for scaling efficiency;
- N processes (`--nproc`, default 2) launched by torch's elastic launcher (what
  `foundry train --nproc N` uses), each on cores / N threads: torchrun's own default of
  OMP_NUM_THREADS=1 per process is the same rule on a 2-core machine; more threads than
  cores would make the processes compete for them.

With `--accumulation K` (K > 1) each optimizer step sums K micro-batches of the global
batch, and the N-process run is made twice: as shipped (the step's earlier micro-batches
under DDP's `no_sync`, one all-reduce per step) and with `no_sync` disabled (an
all-reduce after every micro-batch, what foundry did before).

Reported: median seconds per epoch (training only, no validation: rank 0 alone would
validate), samples per second, and the ratio to the 1-process run. The process start and
process-group set-up are not in the per-epoch numbers; the wall time of each launch is
printed beside them. Timings on shared machines are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from typing import Any

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, d: int, width: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 2)
        )

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(inputs["numeric"])  # [batch, 2]


def train_once(args: dict[str, Any]) -> dict[str, float]:
    """One `fit` run (a whole run, or this rank's part of one); per-epoch seconds."""
    from foundry.config.schema import TrainConfig
    from foundry.data.schema import TaskInfo
    from foundry.training import distributed, fit

    if args.get("sync_every_batch"):  # the A/B's "before": no_sync does nothing
        import contextlib

        from torch.nn.parallel import DistributedDataParallel

        DistributedDataParallel.no_sync = lambda self: contextlib.nullcontext()

    def run() -> dict[str, float]:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args["rows"], args["features"], generator=g)
        y = (x[:, 0] * x[:, 1] + x[:, 2] > 0).long()
        torch.manual_seed(0)
        model = MLP(args["features"], args["width"])
        config = TrainConfig(
            epochs=args["epochs"],
            batch_size=args["batch_size"],
            gradient_accumulation=args["accumulation"],
            num_threads=args["threads"],
            optimizer={"type": "adam", "lr": 1e-3},
            early_stopping={"patience": None},
        )
        task = TaskInfo(target="y", task="binary", classes=["a", "b"])
        with tempfile.TemporaryDirectory() as run_dir:
            result = fit(
                model, {"numeric": x, "target": y}, None, config, task, run_dir,
                n_outputs=2, progress=False,
            )  # fmt: skip
        seconds = [r["seconds"] for r in result.history]
        # the first epoch warms up allocators and thread pools: the median skips it
        return {"epoch_s": statistics.median(seconds[1:] or seconds)}

    if distributed.launched():
        return distributed.run_in_group(run, device="cpu")
    return run()


def launch(nproc: int, args: dict[str, Any]) -> dict[str, float]:
    """`train_once` in `nproc` processes through torch's elastic launcher."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
    )
    results = elastic_launch(config, train_once)(args)
    return results[0]  # rank 0's epoch times (every rank waits for the slowest anyway)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument(
        "--accumulation",
        type=int,
        default=1,
        help="micro-batches per optimizer step (>1 adds the no_sync A/B)",
    )
    opts = parser.parse_args()
    cores = os.cpu_count() or 1
    base = {
        "rows": opts.rows,
        "features": opts.features,
        "width": opts.width,
        "batch_size": opts.batch_size,
        "epochs": opts.epochs,
        "accumulation": opts.accumulation,
    }
    print(
        f"{opts.rows} rows x {opts.features} features, MLP {opts.features}→{opts.width}→"
        f"{opts.width}→2, global batch {opts.batch_size}, {opts.epochs} epochs, {cores} cores"
        + (f", {opts.accumulation} micro-batches per step" if opts.accumulation > 1 else "")
    )

    per_proc = max(1, cores // opts.nproc)
    ddp = f"{opts.nproc} processes x {per_proc} threads (DDP, gloo)"
    setups = [
        (f"1 process x {cores} threads", 1, cores, False),
        ("1 process x 1 thread", 1, 1, False),
        (ddp + (", no_sync" if opts.accumulation > 1 else ""), opts.nproc, per_proc, False),
    ]
    if opts.accumulation > 1:
        setups.append((ddp + ", all-reduce every micro-batch", opts.nproc, per_proc, True))
    runs: list[tuple[str, int, dict[str, float], float]] = []
    for label, nproc, threads, sync_every_batch in setups:
        start = time.perf_counter()
        args = {**base, "threads": threads, "sync_every_batch": sync_every_batch}
        result = train_once(args) if nproc == 1 else launch(nproc, args)
        runs.append((label, nproc, result, time.perf_counter() - start))

    reference = runs[0][2]["epoch_s"]
    print()
    print("| setup | s / epoch | samples / s | vs 1 process (all cores) | wall s (launch incl.) |")
    print("|---|---:|---:|---:|---:|")
    for label, _, result, wall in runs:
        epoch_s = result["epoch_s"]
        print(
            f"| {label} | {epoch_s:.2f} | {opts.rows / epoch_s:,.0f} | "
            f"{reference / epoch_s:.2f}x | {wall:.1f} |"
        )


if __name__ == "__main__":
    main()
