"""`make demo`: the whole path on data that ships with our dependencies, as a user types it.

1. write the Palmer penguins table to demo-output/penguins.csv and split off new rows
2. foundry init      → a config with inferred feature types
3. foundry train     → progress, per-epoch metrics, early stopping, registry
4. foundry evaluate  → metrics on held-out rows
5. foundry predict   → predictions.csv
6. foundry compress  → int8 / ONNX / ONNX int8 variants, measured; the fastest within
                       one point of accuracy tagged penguins:compressed
7. foundry models list / show
8. foundry cost      → what a training run, 1,000 predictions and each plan cost
9. foundry report    → demo-output/report.html: curves, metrics, confusion matrix, ROC / PR,
                       calibration, fairness by sex, importance, compression, cost
10. foundry init --search 15s + foundry train → a time-budgeted model search (gbm, mlp)
                       on the same table: the leaderboard, the best registered as
                       penguins-search; its report (search-report.html) shows the leaderboard
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "demo-output"


def foundry(*args: str) -> None:
    print(f"\n$ foundry {shlex.join(args)}", flush=True)
    env = {**os.environ, "FOUNDRY_HOME": str(ROOT / ".foundry")}
    subprocess.run([sys.executable, "-m", "foundry", *args], check=True, cwd=OUT, env=env)


def main() -> None:
    from palmerpenguins import load_penguins

    OUT.mkdir(exist_ok=True)
    df = load_penguins().sample(frac=1.0, random_state=0).reset_index(drop=True)
    df.iloc[:300].to_csv(OUT / "penguins.csv", index=False)
    df.iloc[300:].to_csv(OUT / "new_penguins.csv", index=False)  # 44 rows the model never sees
    print(f"data: {OUT / 'penguins.csv'} (300 rows) and new_penguins.csv (44 rows)")

    foundry("init", "penguins.csv", "--target", "species", "--name", "penguins", "--force")
    # the config as `foundry init` wrote it, plus a fairness audit by the penguins' sex
    foundry("train", "config.yaml", "evaluate.fairness.sensitive_features=[sex]")
    foundry("evaluate", "penguins:latest", "--data", "new_penguins.csv", "-o", "metrics.json")
    foundry("predict", "penguins:latest", "new_penguins.csv", "-o", "predictions.csv")
    foundry(
        "compress", "penguins:latest", "--max-accuracy-drop", "0.01", "--data", "new_penguins.csv"
    )
    foundry("models", "list")
    foundry("models", "show", "penguins:latest")
    # the model this demo trained (penguins:latest is now its last compressed variant)
    runs = [p for p in (OUT / "runs").glob("penguins-*") if (p / "COMPLETED").is_file()]
    trained = (max(runs, key=lambda p: p.name) / "COMPLETED").read_text().strip()
    foundry("cost", trained)
    foundry("cost", "penguins:compressed")  # the variant `make dashboard` serves
    foundry("report", trained, "-o", "report.html")
    # a model search: every candidate that fits the table, within 15 s, the best registered
    foundry("init", "penguins.csv", "--target", "species", "--name", "penguins-search",
            "--search", "15s", "-o", "search.yaml", "--force")  # fmt: skip
    foundry("train", "search.yaml")
    foundry("report", "penguins-search:latest", "-o", "search-report.html")

    print("\nDone. Results:")
    print(f"  config          {OUT / 'config.yaml'}")
    print(f"  training runs   {OUT / 'runs'}  (metrics.jsonl per epoch, checkpoints)")
    print(f"  metrics         {OUT / 'metrics.json'}")
    print(f"  predictions     {OUT / 'predictions.csv'}")
    print(f"  compression     {OUT / 'runs'}/penguins-compress-*/compress.md")
    print(f"  registry        {ROOT / '.foundry'}  (foundry models list)")
    print(f"  report          {OUT / 'report.html'}  (open it in a browser; no network needed)")
    print(f"  model search    {OUT / 'search-report.html'}  (the leaderboard; penguins-search)")
    print("  dashboard       make dashboard  (serves these models; open the printed address")
    print("                  and paste the printed admin token: curves, fairness, compression,")
    print("                  costs, keys, usage and revenue)")


if __name__ == "__main__":
    main()
