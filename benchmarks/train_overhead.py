"""How much does foundry's training loop cost over a hand-written PyTorch loop?

    python benchmarks/train_overhead.py                 # both parts
    python benchmarks/train_overhead.py --part train    # loop overhead only
    python benchmarks/train_overhead.py --part preprocess --rows 1000000

Part 1 trains the same MLP (same module class, same initial weights, same tensors, same
batch size and optimizer) with `foundry.training.fit` and with the loop every PyTorch
tutorial writes, alternating them in one process, and prints the ratio of median
per-epoch times. Both do a validation pass each epoch; foundry also writes its
per-epoch checkpoint and metrics line, which is part of what it costs.

Part 2 writes a 1M-row, 15-column CSV (10 numeric, 5 categorical) and times
read → infer → fit preprocessing → transform.

Timings on shared machines are noisy; only the ratio from one run is meaningful.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def make_tensors(n: int, d: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    y = ((x @ w + 0.5 * torch.randn(n, generator=g)) > 0).long()
    return x, y


def raw_loop(model, x, y, xv, yv, epochs: int, batch_size: int, lr: float) -> list[float]:
    """The loop from the PyTorch tutorials, with a validation pass per epoch."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model({"numeric": x[idx]}), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            F.cross_entropy(model({"numeric": xv}), yv).item()
        times.append(time.perf_counter() - start)
    return times


def foundry_loop(model, x, y, xv, yv, epochs: int, batch_size: int, lr: float) -> list[float]:
    from foundry.config.schema import TrainConfig
    from foundry.data.schema import TaskInfo
    from foundry.training import fit

    config = TrainConfig.model_validate(
        {
            "epochs": epochs,
            "batch_size": batch_size,
            "optimizer": {"type": "adam", "lr": lr},
            "early_stopping": {"patience": None},
        }
    )
    task = TaskInfo(target="y", task="binary", classes=["0", "1"])
    with tempfile.TemporaryDirectory() as run_dir:
        result = fit(
            model,
            {"numeric": x, "target": y},
            {"numeric": xv, "target": yv},
            config,
            task,
            Path(run_dir),
            n_outputs=2,
            progress=True,  # the progress bar is part of what users pay for
            log=lambda line: None,  # keep the benchmark output readable
        )
    return [h["seconds"] for h in result.history]


def bench_train(rows: int, features: int, epochs: int, batch_size: int, repeats: int) -> None:
    from foundry.config.schema import MLPConfig
    from foundry.data.schema import InputSchema
    from foundry.models import build_model

    torch.set_num_threads(max(1, torch.get_num_threads()))
    x, y = make_tensors(rows, features)
    xv, yv = make_tensors(rows // 10, features, seed=1)
    schema = InputSchema(numeric=[f"x{i}" for i in range(features)])
    torch.manual_seed(0)
    base = build_model(MLPConfig(layers=[64, 32]), schema, n_outputs=2)
    raw_times, foundry_times = [], []
    for r in range(repeats):
        # alternate the order so drift on a shared machine hits both sides alike
        runs = [("raw", raw_loop), ("foundry", foundry_loop)]
        for name, loop in runs if r % 2 == 0 else runs[::-1]:
            times = loop(copy.deepcopy(base), x, y, xv, yv, epochs, batch_size, 1e-3)
            (raw_times if name == "raw" else foundry_times).extend(times[1:])  # skip warm-up
    raw_med, fdy_med = statistics.median(raw_times), statistics.median(foundry_times)
    steps = (rows + batch_size - 1) // batch_size
    print(
        f"\nMLP {features}→64→32→2, {rows} rows, batch {batch_size} ({steps} steps/epoch), "
        f"{epochs} epochs x {repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    print(f"  raw PyTorch loop   median epoch {raw_med * 1000:8.1f} ms")
    print(f"  foundry fit()      median epoch {fdy_med * 1000:8.1f} ms")
    print(f"  ratio foundry/raw  {fdy_med / raw_med:.3f}  (target <= 1.10)")


def bench_preprocess(rows: int) -> None:
    from foundry.config.schema import FeaturesConfig
    from foundry.data import Preprocessor, infer_features, read_table

    rng = np.random.default_rng(0)
    frame = {f"num{i}": rng.normal(size=rows).round(4) for i in range(10)}
    for i in range(5):
        vocab = np.array([f"c{i}_{k}" for k in range(5 + 10 * i)])
        frame[f"cat{i}"] = vocab[rng.integers(0, len(vocab), rows)]
    frame["label"] = np.where(rng.random(rows) < 0.3, "yes", "no")
    df = pd.DataFrame(frame)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        df.to_csv(path, index=False)
        size_mb = path.stat().st_size / 1e6
        t0 = time.perf_counter()
        table = read_table(path)
        t1 = time.perf_counter()
        resolved = infer_features(table, FeaturesConfig(target="label"))
        t2 = time.perf_counter()
        pre = Preprocessor.fit(table, resolved)
        t3 = time.perf_counter()
        encoded = pre.transform(pre.prepare(table))
        t4 = time.perf_counter()
    shapes = {k: tuple(v.shape) for k, v in encoded.items()}
    print(f"\npreprocessing {rows} rows x 15 columns ({size_mb:.0f} MB CSV) → {shapes}")
    print(
        f"  read {t1 - t0:.2f} s, infer {t2 - t1:.2f} s, fit {t3 - t2:.2f} s, "
        f"transform {t4 - t3:.2f} s"
    )
    print(f"  total {t4 - t0:.2f} s  (target < 15 s on 2 cores), {rows / (t4 - t0):,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["all", "train", "preprocess"], default="all")
    parser.add_argument("--rows", type=int, default=1_000_000, help="preprocessing rows")
    parser.add_argument("--train-rows", type=int, default=50_000)
    parser.add_argument("--features", type=int, default=14)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.part in ("all", "train"):
        bench_train(args.train_rows, args.features, args.epochs, args.batch_size, args.repeats)
    if args.part in ("all", "preprocess"):
        bench_preprocess(args.rows)


if __name__ == "__main__":
    main()
