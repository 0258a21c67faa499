"""Training on tables bigger than memory: the streaming path at 1M, 10M and 30M rows,
and the in-memory path beside it at 1M (issue 18 item 5, tabular part).

    python benchmarks/scale.py                         # 1M (both paths, alternating) + 10M
    python benchmarks/scale.py --rows 1M,10M,30M       # the whole issue (~15 min on 2 cores)
    python benchmarks/scale.py --rows 200k --rounds 1  # a quick look
    python benchmarks/scale.py --rows 1M --same-process --rounds 3   # the epoch alone
    python benchmarks/scale.py --rows 1M --worker-cost --rounds 2    # a worker's CPU time
    python benchmarks/scale.py --rows 1M --start-up --rounds 3       # an epoch's first wait

Each table is generated once into `--dir` (default /tmp/foundry-scale): Parquet, row
groups of 128k rows, 15 columns: 8 numbers (one with 5% missing), 5 categories (3 to
5k distinct values, one with missing values), 1 binary, and a binary target that
depends on several of them. Then, each in a fresh process (so each peak RSS is its
own), `foundry.train` trains the default tabular model (`model: {type: mlp}`) for one
epoch with `data.streaming: true`, and at 1M rows also with `data.streaming: false`,
the two alternating for `--rounds` rounds.

Reported per run:
- peak RSS of the training process (`ru_maxrss`) and of its largest DataLoader worker;
- rows/s: training rows of the epoch / the epoch's seconds (validation included: the
  streamed run validates on a 100k-row sample, the in-memory one on its 100k-row split);
- time to first batch: from the call to `foundry.train` to the first forward pass of
  the model (reading, the split, fitting the preprocessing, and the workers' first
  block), caught by a global forward pre-hook. (Streaming workers start on their first
  blocks while the validation sample is encoded, `StreamedTable.prefetch`: the epoch's
  seconds, and so rows/s, no longer include that start; compare wall seconds too.)
- wall seconds of the whole call (evaluation and packaging included);
- CPU seconds of the epoch: the training process's during its training steps (from the
  first forward pass to validation's first), and the DataLoader workers' (the only
  children), which the machine's other jobs disturb far less than rows/s.

`--same-process` isolates the epoch: `foundry.training.fit` on the streamed table and
on the same training rows as in-memory tensors, in one process, alternating, one epoch
each (no start-up, no evaluation), which is far less noisy on a shared machine.

`--worker-cost` breaks a streaming worker's CPU time per million rows into reading,
selecting the training rows and encoding them, by the pandas and the Arrow route
alternating, then times the whole loop of one worker (shuffle buffer included).

The image half of item 5 is `benchmarks/scale_images.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROW_GROUP = 131_072  # rows per Parquet row group: the unit a DataLoader worker reads
CHUNK = 1_048_576  # rows generated and written at a time (bounded memory while writing)


def parse_rows(text: str) -> int:
    """ "1M" → 1_000_000, "200k" → 200_000, "5000" → 5000."""
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1].lower(), 1)
    return int(float(text[:-1] if scale != 1 else text) * scale)


def generate(path: Path, rows: int, seed: int = 0) -> None:
    """A `rows`-row Parquet table of 15 columns (see the module docstring), written
    chunk by chunk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    cities = np.array([f"city_{i}" for i in range(50)])
    products = np.array([f"p{i}" for i in range(2000)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    writer = None
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        x = rng.normal(size=(n, 8)).astype(np.float64)
        x[:, 7] = np.where(rng.random(n) < 0.05, np.nan, x[:, 7])  # a column with gaps
        channel = rng.choice(np.array(["web", "store", "phone"]), n)
        city = cities[rng.integers(0, 50, n)]
        product = products[(rng.pareto(1.2, n) * 20).astype(np.int64) % 2000]
        account = rng.integers(0, 5_000, n)  # high cardinality: 5k values
        segment = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), n)
        member = rng.random(n) < 0.3
        logit = (x[:, 0] - 0.5 * x[:, 1] + 0.8 * (channel == "web") + 0.6 * member
                 + 0.3 * np.nan_to_num(x[:, 7]) - 0.4 * (city == "city_3"))  # fmt: skip
        label = np.where(logit + rng.logistic(size=n) > 0.3, "yes", "no")
        columns = {f"x{i}": x[:, i] for i in range(8)}
        columns.update(channel=channel, city=city, product=product, account=account.astype(str),
                       segment=segment, member=member, label=label)  # fmt: skip
        table = pa.table(columns)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=ROW_GROUP)
    assert writer is not None
    writer.close()
    tmp.rename(path)


def child(args: dict[str, Any]) -> dict[str, Any]:
    """One training run in this (fresh) process; its figures as a dict."""
    import psutil
    import torch

    import foundry

    first: list[float] = []
    rss = {"first_batch": 0.0, "training": 0.0}  # MiB, sampled at forward passes
    calls = [0]
    started = time.perf_counter()
    process = psutil.Process()

    cpu: dict[str, float] = {}  # this process's CPU seconds when the epoch starts / ends

    def on_forward(module: Any, inputs: Any) -> None:
        if not first:
            first.append(time.perf_counter() - started)
            rss["first_batch"] = process.memory_info().rss / 2**20
            cpu["start"] = time.process_time()
        elif not module.training and "end" not in cpu:  # validation follows the epoch
            cpu["end"] = time.process_time()
        calls[0] += 1
        if calls[0] % 1000 == 0:  # every 1,000th module call (a few per batch)
            rss["training"] = max(rss["training"], process.memory_info().rss / 2**20)

    hook = torch.nn.modules.module.register_module_forward_pre_hook(on_forward)
    config = {
        "name": "scale",
        "data": {
            "path": args["path"],
            "streaming": args["streaming"],
            "pii": {"enabled": False},
            "stream": {"workers": args["workers"]},
        },
        "features": {"target": "label"},
        "model": {"type": "mlp"},
        "train": {
            "epochs": 1,
            "batch_size": args["batch_size"],
            "seed": 0,
            "num_threads": args["threads"],
        },  # fmt: skip
        "evaluate": {
            "explain": {"permutation_importance": False},
            "calibration": {"temperature_scaling": False},
        },
        "output_dir": args["out"],
    }
    result = foundry.train(config, register=False, quiet=True, progress=False)
    hook.remove()
    seconds = result.history[0]["seconds"]
    rows = (
        result.history
        and json.loads((result.package_path / "foundry.json").read_text())["data"]["rows"]["train"]
    )
    return {
        "streaming": args["streaming"],
        "rows": args["table_rows"],
        "train_rows": rows,
        "epoch_s": seconds,
        "rows_per_s": rows / seconds,
        "first_batch_s": first[0] if first else float("nan"),
        "wall_s": time.perf_counter() - started,
        # CPU seconds of the epoch's training steps (this process) and of the DataLoader
        # workers (the only children): far steadier than rows/s on a loaded machine
        "epoch_cpu_s": cpu.get("end", float("nan")) - cpu.get("start", float("nan")),
        "workers_cpu_s": _cpu(resource.RUSAGE_CHILDREN),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        "rss_at_first_batch_mb": rss["first_batch"],
        "rss_training_mb": rss["training"],
        "rss_end_mb": process.memory_info().rss / 2**20,
        "metrics": {k: result.metrics.get(k) for k in ("accuracy", "roc_auc")},
    }


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _streamed_splits(path: Path, workers: int, batch_size: int) -> tuple[Any, Any]:
    """The benchmark's config (the default MLP, one epoch, one training thread) over the
    table at `path`, streamed with `workers` DataLoader workers, and its splits."""
    from foundry.config import LoadedConfig
    from foundry.config.schema import FoundryConfig
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits

    cfg = FoundryConfig.model_validate({
        "name": "scale",
        "data": {"path": str(path), "streaming": True, "pii": {"enabled": False},
                 "stream": {"workers": workers}},
        "features": {"target": "label"},
        "model": {"type": "mlp"},
        "train": {"epochs": 1, "batch_size": batch_size, "num_threads": 1},
    })  # fmt: skip
    splits, _ = load_splits(LoadedConfig(cfg, path.parent), Reporter(quiet=True))
    return cfg, splits


def same_process(path: Path, rounds: int, batch_size: int, workers: int) -> list[float]:
    """`foundry.training.fit`'s two data paths in this one process, alternating: the
    streamed table, and the same training rows encoded in memory (what the in-memory
    path trains on), one epoch each, same model, one training thread. Returns each
    round's rows/s ratio (streaming / in memory)."""
    import tempfile

    import torch

    from foundry.models import build_model
    from foundry.training import fit

    cfg, splits = _streamed_splits(path, workers, batch_size)
    stream = splits.stream
    pre = stream.preprocessor
    parts = [pre.transform(b) for b in _training_frames(stream)]
    memory = {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    del parts
    ratios = []
    for r in range(rounds):
        speeds, cpu = {}, {}
        for name, train in (("streaming", stream), ("in memory", memory)):
            torch.manual_seed(0)
            model = build_model(cfg.model, pre.schema, 2)
            before = _cpu(resource.RUSAGE_SELF), _cpu(resource.RUSAGE_CHILDREN)
            with tempfile.TemporaryDirectory() as run_dir:
                result = fit(model, train, None, cfg.train, pre.task, run_dir, n_outputs=2,
                             progress=False)  # fmt: skip
            speeds[name] = stream.n_rows / result.history[0]["seconds"]
            # CPU seconds of this process and of the epoch's DataLoader workers
            cpu[name] = (_cpu(resource.RUSAGE_SELF) - before[0],
                         _cpu(resource.RUSAGE_CHILDREN) - before[1])  # fmt: skip
        ratios.append(speeds["streaming"] / speeds["in memory"])
        print(f"same process, round {r + 1}: streaming {speeds['streaming']:,.0f} rows/s, "
              f"in memory {speeds['in memory']:,.0f} rows/s, ratio {ratios[-1]:.2f}; CPU s: "
              f"streaming {cpu['streaming'][0]:.1f} + workers {cpu['streaming'][1]:.1f}, "
              f"in memory {cpu['in memory'][0]:.1f}", flush=True)  # fmt: skip
    return ratios


def worker_cost(path: Path, rounds: int) -> None:
    """CPU seconds per million training rows of a streaming DataLoader worker's work,
    by stage, measured in this process (CPU time, which the machine's other jobs
    disturb far less than wall time): reading blocks, selecting the training rows,
    encoding them, by both routes of `StreamedTable.encoded_blocks` (pandas and, where
    the tree has it, Arrow) alternating; then the whole loop one worker runs
    (`_Blocks`: the pieces, encoding, the shuffle buffer's hand-overs)."""
    import torch

    from foundry.data.stream import _Blocks

    torch.set_num_threads(1)  # as in a worker (idle OpenMP threads spin, adding CPU time)
    # the loop runs here, in this process: the worker count and batch size are not used
    _, splits = _streamed_splits(path, workers=2, batch_size=1024)
    s = splits.stream
    per_million = 1e6 / s.n_rows
    routes = ["pandas", *(["arrow"] if hasattr(s.table, "read_arrow") else [])]
    for r in range(rounds):
        for route in routes:
            cost = dict.fromkeys(("read", "select", "encode"), 0.0)
            for index, piece in enumerate(s.table.pieces):
                mask = np.unpackbits(s.masks[index]).view(bool)
                if route == "arrow":
                    blocks = s.table.read_arrow(piece, s.needed, s.stream.block_rows,
                                                dictionaries=s.keyed)  # fmt: skip
                else:
                    blocks = s.table.read(piece, s.columns, s.stream.block_rows)
                start = 0
                while True:
                    t0 = time.process_time()
                    block = next(blocks, None)
                    t1 = time.process_time()
                    if block is None:
                        break
                    keep = mask[start : start + len(block)]
                    start += len(block)
                    if route == "arrow":
                        rows = block.filter(keep)
                        t2 = time.process_time()
                        s.preprocessor.transform_arrow(rows)
                    else:
                        rows = s.scrub(block[keep]).reset_index(drop=True)
                        t2 = time.process_time()
                        s.preprocessor.transform(rows)
                    t3 = time.process_time()
                    cost["read"] += t1 - t0
                    cost["select"] += t2 - t1
                    cost["encode"] += t3 - t2
            shown = ", ".join(f"{k} {v * per_million:.2f}" for k, v in cost.items())
            total = sum(cost.values()) * per_million
            print(f"round {r + 1}, {route}: {shown}, sum {total:.2f} CPU s per 1M rows",
                  flush=True)  # fmt: skip
        t0 = time.process_time()
        held = sum(len(b["target"]) for b in _Blocks(s, list(range(len(s.table.pieces))),
                                                     (0, 0, 0), 1024))  # fmt: skip
        assert held == s.n_rows
        seconds = (time.process_time() - t0) * per_million
        print(f"round {r + 1}, one worker's whole loop (shuffle buffer included): "
              f"{seconds:.2f} CPU s per 1M rows", flush=True)  # fmt: skip


def start_up(path: Path, rounds: int, batch_size: int, workers: int) -> None:
    """Seconds from asking a streamed epoch for its batches to holding the first one,
    started then (the workers fork, read and encode their first blocks) and started
    ahead by `StreamedTable.prefetch` 2 s earlier (what the family's preparation gives
    them), alternating in this process; then the seconds to close the epoch's loader
    after its last batch."""
    _, splits = _streamed_splits(path, workers, batch_size)
    stream = splits.stream
    for r in range(rounds):
        waits = {}
        for ahead in (False, True):
            if ahead:
                stream.prefetch(1, batch_size)
                time.sleep(2.0)
            t = time.perf_counter()
            batches = stream.batches(1, batch_size)
            next(batches)
            waits[ahead] = time.perf_counter() - t
            for _ in batches:  # the rest of the epoch, untrained
                pass
            t = time.perf_counter()
            batches.close()
            closing = time.perf_counter() - t
        print(f"round {r + 1}: first batch after {waits[False]:.2f} s started then, "
              f"{waits[True]:.2f} s started ahead; closing {closing:.2f} s")  # fmt: skip


def _training_frames(stream: Any) -> Any:
    """The streamed table's training rows, piece by piece, as frames (in file order)."""
    for index, piece in enumerate(stream.table.pieces):
        mask = np.unpackbits(stream.masks[index]).view(bool)
        start = 0
        for frame in stream.table.read(piece, stream.columns, stream.stream.block_rows):
            keep = mask[start : start + len(frame)]
            start += len(frame)
            yield frame[keep].reset_index(drop=True)


def run_child(args: dict[str, Any]) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]
        ),
    }
    out = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(args)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"child failed ({args}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1M,10M", help="table sizes, e.g. 1M,10M,30M")
    parser.add_argument("--compare", default="1M", help="sizes also trained in memory")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds at --compare")
    parser.add_argument("--workers", type=int, default=2, help="data.stream.workers")
    parser.add_argument("--batch-size", type=int, default=1024, help="train.batch_size")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="train.num_threads of both paths, so that they train with the same compute "
        "(streaming's workers take the other cores)",
    )  # fmt: skip
    parser.add_argument("--dir", default="/tmp/foundry-scale", help="where tables are written")
    parser.add_argument(
        "--same-process", action="store_true",
        help="only compare the two data paths of foundry.training.fit in one process "
        "(one epoch each, alternating) on the first --rows size",
    )  # fmt: skip
    parser.add_argument(
        "--worker-cost", action="store_true",
        help="only measure a streaming worker's CPU time per million rows, by stage "
        "(read, select, encode; pandas and Arrow routes alternating), on the first --rows size",
    )  # fmt: skip
    parser.add_argument(
        "--start-up", action="store_true",
        help="only measure a streamed epoch's wait for its first batch, started then and "
        "started ahead (StreamedTable.prefetch), on the first --rows size",
    )  # fmt: skip
    parser.add_argument("--child", help=argparse.SUPPRESS)
    ns = parser.parse_args()
    if ns.child:
        print(json.dumps(child(json.loads(ns.child))))
        return
    if ns.same_process or ns.worker_cost or ns.start_up:
        rows = parse_rows(ns.rows.split(",")[0])
        path = Path(ns.dir) / f"table-{rows}.parquet"
        if not path.exists():
            generate(path, rows)
        if ns.worker_cost:
            worker_cost(path, ns.rounds)
            return
        if ns.start_up:
            start_up(path, ns.rounds, ns.batch_size, ns.workers)
            return
        ratios = same_process(path, ns.rounds, ns.batch_size, ns.workers)
        print(f"median ratio: {statistics.median(ratios):.2f}")
        return
    root = Path(ns.dir)
    compare = {parse_rows(r) for r in ns.compare.split(",") if r}
    results = []
    for text in ns.rows.split(","):
        rows = parse_rows(text)
        path = root / f"table-{rows}.parquet"
        if not path.exists():
            t = time.perf_counter()
            generate(path, rows)
            print(f"generated {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
                  f"{time.perf_counter() - t:.0f}s", flush=True)  # fmt: skip
        sides = [True, False] if rows in compare else [True]
        for _ in range(ns.rounds if rows in compare else 1):
            for streaming in sides:  # alternating: the machine's load hits both alike
                args = {"path": str(path), "streaming": streaming, "workers": ns.workers,
                        "batch_size": ns.batch_size, "table_rows": rows, "threads": ns.threads,
                        "out": str(root / "runs")}  # fmt: skip
                r = run_child(args)
                results.append(r)
                print(json.dumps(r), flush=True)
    print()
    print(
        "| rows | path | peak RSS (MiB) | worker RSS (MiB) | rows/s | epoch CPU s (training "
        "process / workers) | first batch (s) | wall (s) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['rows']:,} | {'streaming' if r['streaming'] else 'in memory'} | "
              f"{r['peak_rss_mb']:.0f} | {r['worker_rss_mb']:.0f} | {r['rows_per_s']:,.0f} | "
              f"{r['epoch_cpu_s']:.1f} / {r['workers_cpu_s']:.1f} | "
              f"{r['first_batch_s']:.1f} | {r['wall_s']:.0f} |")  # fmt: skip
    streamed = {r["rows"]: r for r in results if r["streaming"]}
    smallest, largest = min(streamed), max(streamed)
    if smallest != largest:
        ratio = streamed[largest]["peak_rss_mb"] / streamed[smallest]["peak_rss_mb"]
        print(f"\npeak RSS {largest:,} / {smallest:,} rows (streaming): {ratio:.2f}x")
    for rows in sorted(compare):
        s = [r["rows_per_s"] for r in results if r["rows"] == rows and r["streaming"]]
        m = [r["rows_per_s"] for r in results if r["rows"] == rows and not r["streaming"]]
        if s and m:  # each round's pair ran back to back: their ratio is the fairer one
            ratios = [a / b for a, b in zip(s, m, strict=False)]
            shown = ", ".join(f"{r:.2f}" for r in ratios)
            print(f"rows/s streaming / in memory at {rows:,} rows, per round: {shown} "
                  f"(median {statistics.median(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
