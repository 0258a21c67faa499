"""What does `foundry tune` cost per trial over training the same configs directly?

    python benchmarks/tune.py                       # 10 trials x 2 rounds, wine, 5 epochs
    python benchmarks/tune.py --trials 20 --epochs 10 --rows 5000
    python benchmarks/tune.py --storage postgresql://user:pass@host/db

Each round runs a random search of `--trials` trials with `foundry.tuning.tune` (no
pruning, so every trial trains all its epochs), then trains the very configs those trials
drew, one after another, with `foundry.pipeline.train(..., register=False)` in the same
process. The difference is the tuning overhead: the sampler, the study's database writes
(trial, params, per-epoch intermediate values, heartbeat), the per-epoch report hook, the
trial folder's bookkeeping, the results tables, best.yaml and the one registration of the
best model. Rounds alternate so both sides see the same warm caches; one untimed training
warms the imports first. Data: scikit-learn's wine table (178 rows), or `--rows` rows of
a synthetic 10-feature classification table when given.

Both wall time and this process's CPU time (`time.process_time`, torch's threads
included) are reported: on a shared machine the wall clock drifts with other load, CPU
time much less; the per-trial overhead in ms is the number to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd


def write_data(folder: Path, rows: int | None) -> Path:
    if rows is None:
        from sklearn.datasets import load_wine

        df = load_wine(as_frame=True).frame
        df["target"] = "class_" + df["target"].astype(str)
    else:
        from sklearn.datasets import make_classification

        x, y = make_classification(n_samples=rows, n_features=10, n_informative=6, random_state=0)
        df = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
        df["target"] = y.astype(str)
    path = folder / "data.csv"
    df.to_csv(path, index=False)
    return path


def base_config(data: Path, out: Path, epochs: int, threads: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "data": {"path": str(data)},
        "features": {"target": "target"},
        "model": {"type": "mlp", "layers": [32]},
        "train": {
            "epochs": epochs,
            "batch_size": 32,
            "early_stopping": {"patience": None},
            "num_threads": threads,
        },
        "evaluate": {"explain": {"permutation_importance": False}},
        "output_dir": str(out),
    }


SPACE = {
    "train.optimizer.lr": {"type": "log_float", "low": 1e-4, "high": 1e-1},
    "train.batch_size": {"type": "int", "low": 16, "high": 64, "step": 16},
    "model.layers": {"type": "choice", "values": [[16], [32], [64, 32]]},
}


def one_round(
    base: dict[str, Any], trials: int, round_no: int, storage: str | None
) -> dict[str, float]:
    from foundry.pipeline import train
    from foundry.tuning import tune
    from foundry.tuning.space import apply_params

    config = {
        **base,
        "tune": {
            "sampler": "random",
            "n_trials": trials,
            "pruner": {"type": "none"},
            "study_name": f"bench-{round_no}-{time.time_ns()}",
            "seed": round_no,
            "params": SPACE,
        },
    }
    wall, cpu = time.perf_counter(), time.process_time()
    result = tune(config, storage=storage, quiet=True)
    tune_wall, tune_cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert len(result.trials) == trials and result.model_ref

    raw = {k: v for k, v in config.items() if k != "tune"}
    wall, cpu = time.perf_counter(), time.process_time()
    for i, row in enumerate(result.trials):
        cfg = apply_params(raw, row["params"])  # what the trial trained
        run_dir = Path(base["output_dir"]) / f"direct-{round_no}-{i}"
        train(cfg, run_dir=run_dir, progress=False, quiet=True, register=False)
    direct_wall, direct_cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {
        "tune_wall_s": tune_wall,
        "direct_wall_s": direct_wall,
        "tune_cpu_s": tune_cpu,
        "direct_cpu_s": direct_cpu,
        "overhead_wall_ms": 1000 * (tune_wall - direct_wall) / trials,
        "overhead_cpu_ms": 1000 * (tune_cpu - direct_cpu) / trials,
        "overhead_wall_pct": 100 * (tune_wall - direct_wall) / direct_wall,
        "overhead_cpu_pct": 100 * (tune_cpu - direct_cpu) / direct_cpu,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=None, help="synthetic rows (default: wine)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: CPU time is the work done)"
    )
    parser.add_argument("--storage", default=None, help="Optuna storage URL (default: SQLite)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rounds here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["FOUNDRY_HOME"] = str(folder / "home")
        data = write_data(folder, args.rows)
        base = base_config(data, folder / "runs", args.epochs, args.threads)

        from foundry.pipeline import train

        # untimed: imports, first-call caches
        train(
            base,
            run_dir=folder / "warm",
            progress=False,
            quiet=True,
            register=False,
        )
        rounds = [one_round(base, args.trials, r, args.storage) for r in range(args.rounds)]

    print(
        f"{args.trials} trials x {args.rounds} rounds, {args.epochs} epochs, "
        f"data: {'wine (178 rows)' if args.rows is None else f'{args.rows} synthetic rows'}, "
        f"storage: {args.storage or 'SQLite file'}, torch threads: {args.threads}; "
        f"python {sys.version.split()[0]}\n"
    )
    cols = [
        ("tune_wall_s", "tune wall (s)", ".2f"),
        ("direct_wall_s", "direct wall (s)", ".2f"),
        ("tune_cpu_s", "tune CPU (s)", ".2f"),
        ("direct_cpu_s", "direct CPU (s)", ".2f"),
        ("overhead_wall_ms", "overhead/trial wall (ms)", ".0f"),
        ("overhead_cpu_ms", "overhead/trial CPU (ms)", ".0f"),
        ("overhead_wall_pct", "overhead wall (%)", ".1f"),
        ("overhead_cpu_pct", "overhead CPU (%)", ".1f"),
    ]
    print("| round | " + " | ".join(title for _, title, _ in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    for name, row in [*((str(i), r) for i, r in enumerate(rounds)), ("median", median)]:
        print(f"| {name} | " + " | ".join(format(row[k], f) for k, _, f in cols) + " |")
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "rounds": rounds}, indent=2)
        )


if __name__ == "__main__":
    main()
