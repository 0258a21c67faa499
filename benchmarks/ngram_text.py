"""`model: {type: ngram}` against TF-IDF word 1-2 grams + LinearSVC on the same columns
and the same split: test accuracy, macro-F1 and fit seconds, in one run.

    python benchmarks/ngram_text.py [--seeds 3] [--rows 24000] [--columns description]
                                    [--set C=1.0 --set char_ngrams=[2,5] ...]
    python benchmarks/ngram_text.py --sweep    # candidate defaults on one split
    python benchmarks/ngram_text.py --count    # char n-gram counting: ours vs scikit-learn

The table is built offline from this machine's Debian package lists (`apt-cache
dumpavail`): one row per binary package, `package` (its name: `python3-foo`,
`libbar-perl`, ...), `description` (the first line of its Description), target
`section` (the 12 most common sections, `contrib/` and `non-free/` prefixes removed),
a seeded sample of `--rows` rows.

Sides, all on foundry's own split (`data.split.seed` = the seed, 80 / 10 / 10,
stratified), none seeing the test rows:

    foundry_ngram      foundry.train with `model: {type: ngram}` (+ `--set`): fitted on
                       train; val calibrates the temperature. Fit seconds: the manifest's
                       (vectorising + the head), from `prepare` to the end of `fit`
    svc_train_val      TfidfVectorizer(ngram_range=(1, 2)) + LinearSVC() with
                       scikit-learn's defaults, fitted on train + val (what a user of
                       scikit-learn alone would fit on the same non-test rows)
    svc_train          the same fitted on train only (the rows foundry's head sees)

Several text columns go to the baselines as one string (`package description`): what a
user of a single TfidfVectorizer does. Fit seconds of the baselines: vectorising the
fitted rows + LinearSVC.fit. Timings on a shared machine are noisy; the sides alternate
within each seed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = "section"


def debian_packages(rows: int | None = 24000, top: int = 12, seed: int = 0) -> pd.DataFrame:
    """package / description / section of the packages `apt-cache dumpavail` lists (one
    row per package name), the `top` most common sections, a seeded sample of `rows`."""
    text = subprocess.run(
        ["apt-cache", "dumpavail"], capture_output=True, text=True, check=True
    ).stdout
    records: dict[str, dict[str, str]] = {}
    for stanza in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", stanza, flags=re.M))
        name, section = fields.get("Package"), fields.get("Section")
        description = fields.get("Description") or fields.get("Description-en")
        if not (name and section and description) or name in records:
            continue
        section = section.split("/")[-1]  # contrib/net → net
        records[name] = {"package": name, "description": description.strip(), TARGET: section}
    df = pd.DataFrame(list(records.values()))
    common = [s for s, _ in Counter(df[TARGET]).most_common(top)]
    df = df[df[TARGET].isin(common)].reset_index(drop=True)
    if rows is not None and rows < len(df):
        df = df.sample(rows, random_state=seed).reset_index(drop=True)
    return df


def run(
    df: pd.DataFrame, columns: list[str], seeds: int, settings: dict | None = None
) -> list[dict]:
    import foundry
    from foundry.config.schema import SplitConfig
    from foundry.data import split_frame

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "packages.csv"
        df[[*columns, TARGET]].to_csv(path, index=False)
        for seed in range(seeds):
            config = {
                "name": "bench-ngram",
                "data": {"path": str(path), "split": {"seed": seed},
                         # unique package names are kept: their parts are the signal
                         "pii": {"keep_columns": columns}},
                "features": {"target": TARGET,
                             "inputs": [{"name": c, "type": "text"} for c in columns]},
                "model": {"type": "ngram", **(settings or {})},
                "evaluate": {"split": "test", "explain": {"permutation_importance": False}},
                "output_dir": str(Path(tmp) / "runs"),
            }
            started = time.perf_counter()
            result = foundry.train(config, progress=False, quiet=True, register=False)
            wall = time.perf_counter() - started
            manifest = json.loads((result.package_path / "foundry.json").read_text())
            train, val, test = split_frame(pd.read_csv(path), SplitConfig(seed=seed), TARGET)
            both = _svc(pd.concat([train, val]), test, columns)
            same = _svc(train, test, columns)
            out.append({
                "seed": seed,
                "foundry_ngram": result.metrics["accuracy"],
                "foundry_macro_f1": result.metrics["f1_macro"],
                "svc_train_val": both["accuracy"], "svc_train_val_macro_f1": both["f1_macro"],
                "svc_train": same["accuracy"], "svc_train_macro_f1": same["f1_macro"],
                "foundry_fit_s": manifest["ngram"]["fit_seconds"],
                "foundry_train_wall_s": wall,
                "svc_train_val_fit_s": both["seconds"], "svc_train_fit_s": same["seconds"],
                "columns": manifest["ngram"]["columns"],
            })
            print(json.dumps(out[-1]), flush=True)
    return out


def _svc(fit: pd.DataFrame, test: pd.DataFrame, columns: list[str]) -> dict:
    """TF-IDF word 1-2 grams + LinearSVC, scikit-learn's defaults, fitted on `fit`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.metrics import f1_score
    from sklearn.svm import LinearSVC

    def joined(frame: pd.DataFrame) -> list[str]:
        return frame[columns].fillna("").astype(str).agg(" ".join, axis=1).tolist()

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    x = vectorizer.fit_transform(joined(fit))
    model = LinearSVC().fit(x, fit[TARGET])
    seconds = time.perf_counter() - started
    pred = model.predict(vectorizer.transform(joined(test)))
    y = test[TARGET].to_numpy()
    return {"accuracy": float(np.mean(pred == y)),
            "f1_macro": float(f1_score(y, pred, average="macro")), "seconds": seconds}


def sweep(df: pd.DataFrame, columns: list[str], seed: int = 0) -> None:
    """Candidate defaults on one split, straight through the family's own pieces
    (`NGramInputs`, `fit_head`) without the rest of a run: accuracy and seconds."""
    from foundry.config.schema import FeatureConfig, NGramConfig, SplitConfig
    from foundry.data import split_frame
    from foundry.data.infer import ResolvedFeatures
    from foundry.families.ngram.inputs import NGramInputs
    from foundry.families.ngram.linear import LinearModel, fit_head

    train, val, test = split_frame(df[[*columns, TARGET]], SplitConfig(seed=seed), TARGET)
    resolved = ResolvedFeatures([FeatureConfig(name=c, type="text") for c in columns],
                                TARGET, "category")
    candidates = [
        {"char_ngrams": None},
        {"char_ngrams": [2, 4]},
        {"char_ngrams": [1, 4]},
        {"char_ngrams": [2, 5]},
        {"char_ngrams": [2, 4], "C": 0.25},
        {"char_ngrams": [2, 4], "C": 1.0},
        {"char_ngrams": [2, 4], "min_df": 1},
        {"char_ngrams": [2, 4], "head": "logistic", "C": 10.0},
        {"char_ngrams": [2, 4], "hash_features": 2**18},
    ]
    for settings in candidates:
        model = NGramConfig(**settings)
        started = time.perf_counter()
        inputs, encoded = NGramInputs.fit(train, resolved, model)
        vectorised = time.perf_counter() - started
        task = inputs.task
        w, b = fit_head(encoded["features"].matrix, encoded["target"].numpy(), model, task,
                        None, 0)
        seconds = time.perf_counter() - started
        linear = LinearModel(w, b)
        x_test = inputs.transform(test)
        pred = linear.scores(x_test["features"].matrix).argmax(1)
        accuracy = float(np.mean(pred == x_test["target"].numpy()))
        print(json.dumps({**settings, "accuracy": round(accuracy, 4),
                          "columns": inputs.n_columns, "vectorise_s": round(vectorised, 2),
                          "fit_s": round(seconds, 2)}), flush=True)
    base = _svc(pd.concat([train, val]), test, columns)
    print(json.dumps({"baseline": "tfidf 1-2 + LinearSVC, train+val", **base}))
    base = _svc(train, test, columns)
    print(json.dumps({"baseline": "tfidf 1-2 + LinearSVC, train", **base}))


def count(df: pd.DataFrame, columns: list[str], repeats: int = 3) -> None:
    """Counting the training rows' `char_wb` 2-4 grams (min_df 2): CountVectorizer's
    analyzer against `CharCounter` (the same counts), alternating after a warm-up."""
    from sklearn.feature_extraction.text import CountVectorizer

    from foundry.families.ngram.chargrams import CharCounter

    texts = df[columns].fillna("").astype(str).agg(" ".join, axis=1).tolist()
    texts = texts[: int(len(texts) * 0.8)]  # a training split's worth

    def sklearn_side() -> None:
        CountVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=2).fit_transform(texts)

    def ours() -> None:
        CharCounter.fit(texts, (2, 4), True, min_df=2, max_features=None)

    sides = {"CountVectorizer char_wb": sklearn_side, "CharCounter": ours}
    for side in sides.values():  # warm-up
        side()
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            started = time.perf_counter()
            side()
            seconds[name].append(time.perf_counter() - started)
    for name, values in seconds.items():
        print(f"{name}: median {np.median(values):.2f} s ({', '.join(f'{v:.2f}' for v in values)})")
    ratios = np.array(seconds["CountVectorizer char_wb"]) / np.array(seconds["CharCounter"])
    print(f"{len(texts)} rows; CountVectorizer / CharCounter: median {np.median(ratios):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=24000)
    parser.add_argument("--columns", action="append", default=[], metavar="COLUMN")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--sweep", action="store_true")
    parser.add_argument("--count", action="store_true")
    args = parser.parse_args()
    import yaml

    columns = args.columns or ["package", "description"]
    df = debian_packages(args.rows)
    print(f"{len(df)} packages, {df[TARGET].nunique()} sections; columns: {columns}")
    if args.sweep:
        sweep(df, columns)
        return
    if args.count:
        count(df, columns)
        return
    settings = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    rows = run(df, columns, args.seeds, settings)
    frame = pd.DataFrame(rows)
    means = frame.drop(columns=["seed"]).mean()
    print(means.round(4).to_string())
    ratio = frame["foundry_fit_s"] / frame["svc_train_val_fit_s"]
    print(f"fit seconds, foundry / svc_train_val: median {ratio.median():.2f}")


if __name__ == "__main__":
    main()
