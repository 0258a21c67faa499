"""`model: {type: gbm}` with its defaults against LightGBM's own defaults, on the same
rows: accuracy (R² for regression) on the test split and fit seconds, mean over split
seeds.

    python benchmarks/gbm_defaults.py [--seeds 3] [--set n_estimators=100 ...]

`--set key=value` changes a `model:` setting of foundry's side (YAML values), to compare
other defaults against the same baseline. `--threads` instead times LightGBM on
breast_cancer (188 rounds) with 1 thread, 2 threads and its default (all cores),
alternating, after a warm-up: why foundry's default is one thread per 50,000 rows.

foundry's gbm trains on the train split and stops early on the val split (up to 1,000
rounds), then refits on train + val for the round count found (`model.refit`; `--set
refit=false` measures without it); LightGBM's defaults (`LGBMClassifier()` /
`LGBMRegressor()`: 100 rounds, no early stopping) train on train + val
(`lightgbm_defaults`: what a user of LightGBM alone would fit on the same non-test rows)
and on the train split only (`lightgbm_train_only`: the rows foundry's early-stopped
booster fits). No side sees the test rows.
Both get one thread (see `threads_for` in foundry/families/gbm/booster.py); fit seconds
are the booster's training only (LightGBM's default fit on train + val).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def datasets() -> dict[str, tuple[pd.DataFrame, str]]:
    from palmerpenguins import load_penguins
    from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_wine

    out = {}
    for name, loader in (
        ("breast_cancer", load_breast_cancer),
        ("wine", load_wine),
        ("digits", load_digits),
        ("diabetes", load_diabetes),
    ):
        frame = loader(as_frame=True).frame
        out[name] = (frame, "target")
    out["penguins"] = (load_penguins().drop(columns=["year"]), "species")
    return out


def run(seeds: int, settings: dict | None = None, only: list[str] | None = None) -> list[dict]:
    import foundry
    from foundry.config.schema import SplitConfig
    from foundry.data import split_frame

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (df, target) in datasets().items():
            if only and name not in only:
                continue
            regression = name == "diabetes"
            path = Path(tmp) / f"{name}.csv"
            df.to_csv(path, index=False)
            for seed in range(seeds):
                split = {"seed": seed}
                config = {
                    "name": f"bench-{name}",
                    "data": {"path": str(path), "split": split},
                    "features": {
                        "target": target,
                        **({"target_type": "category"} if not regression else {}),
                    },
                    "model": {"type": "gbm", **(settings or {})},
                    "train": {"num_threads": 1},
                    "evaluate": {"split": "test", "explain": {"permutation_importance": False}},
                    "output_dir": str(Path(tmp) / "runs"),
                }
                result = foundry.train(config, progress=False, quiet=True, register=False)
                ours = result.metrics["r2" if regression else "accuracy"]
                manifest = json.loads((result.package_path / "foundry.json").read_text())
                fit_s = manifest["training"]["seconds"]
                train, val, test = split_frame(
                    pd.read_csv(path), SplitConfig(seed=seed), None if regression else target
                )
                base, base_s = _lightgbm(pd.concat([train, val]), test, target, regression)
                same_rows, _ = _lightgbm(train, test, target, regression)
                rows.append(
                    {
                        "dataset": name,
                        "seed": seed,
                        "foundry_gbm": ours,
                        "lightgbm_defaults": base,
                        "lightgbm_train_only": same_rows,
                        "foundry_fit_s": fit_s,
                        "lightgbm_fit_s": base_s,
                    }
                )
    return rows


def threads(repeats: int = 3) -> None:
    import lightgbm as lgb
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    cases = {"1 thread": 1, "2 threads": 2, "LightGBM default": 0}
    params = {"objective": "binary", "verbosity": -1}
    lgb.train({**params, "num_threads": 1}, lgb.Dataset(x, label=y), 20)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, n in cases.items():
            started = time.perf_counter()
            lgb.train({**params, "num_threads": n}, lgb.Dataset(x, label=y), 188)
            seconds[name].append(time.perf_counter() - started)
    for name, values in seconds.items():
        print(f"{name}: median {np.median(values):.3f} s ({', '.join(f'{v:.2f}' for v in values)})")


def _lightgbm(
    fit: pd.DataFrame, test: pd.DataFrame, target: str, regression: bool
) -> tuple[float, float]:
    """LightGBM's defaults fitted on `fit`: (accuracy or R² on `test`, fit seconds)."""
    import lightgbm as lgb

    x_cols = [c for c in fit.columns if c != target]
    model = (lgb.LGBMRegressor if regression else lgb.LGBMClassifier)(n_jobs=1, verbose=-1)
    started = time.perf_counter()
    model.fit(_native(fit[x_cols]), fit[target])
    seconds = time.perf_counter() - started
    pred = model.predict(_native(test[x_cols]))
    if regression:
        from sklearn.metrics import r2_score

        return float(r2_score(test[target], pred)), seconds
    return float(np.mean(pred == test[target].to_numpy())), seconds


def _native(x: pd.DataFrame) -> pd.DataFrame:
    """Text columns as pandas categories: LightGBM's own native categorical path."""
    return x.apply(lambda c: c if pd.api.types.is_numeric_dtype(c) else c.astype("category"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--only", action="append", default=[], metavar="DATASET")
    parser.add_argument("--threads", action="store_true")
    args = parser.parse_args()
    if args.threads:
        threads()
        return
    import yaml

    model = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    frame = pd.DataFrame(run(args.seeds, model, args.only))
    summary = frame.groupby("dataset")[
        [
            "foundry_gbm",
            "lightgbm_defaults",
            "lightgbm_train_only",
            "foundry_fit_s",
            "lightgbm_fit_s",
        ]
    ].mean()
    print(summary.round(4).to_string())


if __name__ == "__main__":
    main()
