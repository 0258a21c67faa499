"""Does post-processing close a foundry model's demographic parity gap, and at what cost
in accuracy?

    python benchmarks/fairness.py                       # 30,000 training rows, 10 epochs
    python benchmarks/fairness.py --rows 60000 --eval-rows 40000 --check

Data: `adult_like` from serve_load.py (a census-like table with the UCI Adult columns)
with its income label drawn again from the same logit plus a direct dependence on sex:
-1.1 for everyone and a further -`--bias` for women. The default 1.85 gives the real
Adult table's base rates (31% of men and 11% of women earn >50K); the other columns do
not explain the difference. `relationship` is made to agree with `sex` (husband / wife),
a proxy as in the real table. `--bias 3` plants a stronger bias.

Steps: train the default foundry MLP on the training table with `foundry.train` in a
temporary FOUNDRY_HOME; draw separate validation and test tables from the same
generator; P(">50K") from `foundry.load(ref).predict_proba` on both; audit the test
decisions; fit the group thresholds on validation (`fit_mitigation`) for each
constraint, apply them to test (`apply_mitigation`) and audit again. The same thresholds
are fitted with Fairlearn's own `ThresholdOptimizer` over the foundry model (its
`predict_proba` on the raw frame, `sex` as the sensitive feature) and its
`predict(random_state=0)` is audited too: the numbers should agree up to the randomised
rows, which the two draw differently.

A third variant relaxes parity (`fit_mitigation(..., tolerance=)`, Fairlearn's `tol`):
the selection rates may differ by 0.4 x the unmitigated validation gap.

Target (the issue; Fairlearn's Adult example goes from 0.150 to 0.016): the
demographic parity constraint cuts the test split's demographic parity difference by
>= 50% for <= 2 points of accuracy. `--check` exits 1 if exact parity misses it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import adult_like  # noqa: E402  (a sibling script, not a package)

TARGET, POSITIVE, SENSITIVE = "income", ">50K", "sex"
EDUCATION_LEVEL = {
    "11th": 0,
    "hs": 1,
    "some-college": 2,
    "bachelors": 3,
    "masters": 4,
    "doctorate": 5,
}
ADULT_RATE_SHIFT = -1.1
"""Logit shift that brings adult_like's ~48% positives to the real table's 31% for men."""
TOLERANCE_SHARE = 0.4
"""Relaxed variant: selection rates may differ by this share of the validation gap, a
60% cut with some margin for the test split's noise."""


def biased_adult(n: int, seed: int, bias: float) -> pd.DataFrame:
    df = adult_like(n, seed)
    male = (df["sex"] == "male").to_numpy()
    # adult_like's own income logit (serve_load.py), read back from the columns; a
    # missing age (2%, blanked after adult_like drew the label) counts as the mean age.
    level = df["education"].map(EDUCATION_LEVEL).to_numpy()
    logit = (
        0.04 * (df["age"].fillna(38).to_numpy() - 38)
        + 0.04 * (df["hours_per_week"].to_numpy() - 40)
        + 0.7 * level
        + df["capital_gain"].to_numpy() / 20_000
        - 2.6
        + ADULT_RATE_SHIFT
        - bias * ~male
    )
    rng = np.random.default_rng(seed + 10_000)  # its own stream: adult_like's is untouched
    df[TARGET] = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), ">50K", "<=50K")
    df.loc[male & (df["relationship"] == "wife"), "relationship"] = "husband"
    df.loc[~male & (df["relationship"] == "husband"), "relationship"] = "wife"
    return df


class FoundryScores(BaseEstimator):
    """A foundry predictor as the sklearn estimator Fairlearn expects (already fitted)."""

    def __init__(self, predictor: object = None) -> None:
        self.predictor = predictor

    def fit(self, X: pd.DataFrame, y: object = None) -> FoundryScores:
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.predictor.predict_proba(X)  # type: ignore[union-attr]

    def __sklearn_is_fitted__(self) -> bool:
        return True


def train(train_df: pd.DataFrame, work: Path, epochs: int) -> str:
    import foundry

    csv = work / "adult_biased.csv"
    train_df.to_csv(csv, index=False)
    config = {
        "name": "adult-biased",
        "data": {"path": str(csv)},
        "features": {"target": TARGET},
        "train": {"epochs": epochs, "batch_size": 256},
        "output_dir": str(work / "runs"),
    }
    started = time.perf_counter()
    result = foundry.train(config, progress=False, quiet=True)
    print(
        f"trained {result.model_ref} on {len(train_df)} rows in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return result.model_ref


def row(name: str, report: dict, accuracy: float) -> str:
    cells = [
        report["demographic_parity_difference"],
        report["demographic_parity_ratio"],
        report["equalized_odds_difference"],
    ]
    return f"| {name} | {accuracy:.4f} | " + " | ".join(f"{c:.3f}" for c in cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=30_000, help="training rows")
    parser.add_argument(
        "--eval-rows",
        type=int,
        default=20_000,
        help="rows of the validation table and of the test table",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument(
        "--bias",
        type=float,
        default=1.85,
        help="extra income logit penalty for women (1.85: Adult's base rates)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if the target is missed")
    args = parser.parse_args()

    from fairlearn.postprocessing import ThresholdOptimizer

    import foundry
    from foundry.config.schema import MitigationConfig
    from foundry.evaluation.fairness import apply_mitigation, audit, fit_mitigation, format_audit

    train_df = biased_adult(args.rows, 0, args.bias)
    val, test = (
        biased_adult(args.eval_rows, 1, args.bias),
        biased_adult(args.eval_rows, 2, args.bias),
    )
    rates = test.groupby(SENSITIVE)[TARGET].apply(lambda s: (s == POSITIVE).mean())
    print("test base rates (>50K): " + ", ".join(f"{g} {r:.1%}" for g, r in rates.items()))
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FOUNDRY_HOME"] = str(Path(tmp) / "home")
        model = foundry.load(train(train_df, Path(tmp), args.epochs))
    classes = list(model.task.classes)
    assert classes == ["<=50K", POSITIVE], classes  # Fairlearn reads predict_proba[:, 1]
    pos = classes.index(POSITIVE)
    p_val, p_test = model.predict_proba(val)[:, pos], model.predict_proba(test)[:, pos]
    y_val01 = (val[TARGET] == POSITIVE).to_numpy().astype(int)
    y_test = test[TARGET].to_numpy()

    def decided(decisions: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(decisions).astype(bool), POSITIVE, classes[1 - pos])

    def accuracy(labels: np.ndarray) -> float:
        return float(np.mean(labels == y_test))

    plain = model.predict(test)[TARGET].to_numpy()
    before = audit(y_test, plain, test[[SENSITIVE]], classes=classes)
    print(f"\ntest split, unmitigated ({len(test)} rows):\n")
    print(format_audit(before))

    lines = [
        "| decisions | accuracy | DP difference | DP ratio | EO difference |",
        "|---|---:|---:|---:|---:|",
        row("model (argmax)", before, accuracy(plain)),
    ]
    # Relaxed parity: let the selection rates differ by up to TOLERANCE_SHARE of the
    # unmitigated validation gap (Fairlearn's `tol`) instead of forcing them equal.
    val_gap = audit(val[TARGET], model.predict(val)[TARGET], val[[SENSITIVE]], classes=classes)[
        "demographic_parity_difference"
    ]
    variants = [
        ("demographic_parity", "demographic_parity", None),
        (
            f"demographic_parity, tol {TOLERANCE_SHARE} x val gap",
            "demographic_parity",
            TOLERANCE_SHARE * val_gap,
        ),
        ("equalized_odds", "equalized_odds", None),
    ]
    results = {}
    for name, constraint, tolerance in variants:
        config = MitigationConfig(constraint=constraint)
        state = fit_mitigation(
            p_val, y_val01, val[[SENSITIVE]], config, seed=0, tolerance=tolerance
        )
        ours = decided(apply_mitigation(state, p_test, test[[SENSITIVE]]))
        reference = ThresholdOptimizer(
            estimator=FoundryScores(model),
            constraints=constraint,
            prefit=True,
            predict_method="predict_proba",
            tol=tolerance,
        ).fit(val.drop(columns=[TARGET]), y_val01, sensitive_features=val[SENSITIVE])
        theirs = decided(
            reference.predict(
                test.drop(columns=[TARGET]), sensitive_features=test[SENSITIVE], random_state=0
            )
        )
        same_thresholds = all(
            state["groups"][g]["threshold0"] == choice.operation0.threshold
            and state["groups"][g]["threshold1"] == choice.operation1.threshold
            and state["groups"][g]["p0"] == choice.p0
            for g, choice in reference.interpolated_thresholder_.interpolation_dict.items()
        )
        after = audit(y_test, ours, test[[SENSITIVE]], classes=classes)
        fairlearn_after = audit(y_test, theirs, test[[SENSITIVE]], classes=classes)
        results[name] = (after, accuracy(ours))
        lines.append(row(f"{name}, foundry", after, accuracy(ours)))
        lines.append(row(f"{name}, Fairlearn", fairlearn_after, accuracy(theirs)))
        print(
            f"\n{name}: thresholds identical to Fairlearn's: {same_thresholds}; "
            f"decisions equal to Fairlearn's on {np.mean(ours == theirs):.1%} of test rows"
        )
        for g, t in state["groups"].items():
            print(
                f"  {g}: P={t['p0']:.3f} at > {t['threshold0']}, P={t['p1']:.3f} at > "
                f"{t['threshold1']}, p_ignore {t['p_ignore']:.3f}"
            )

    print("\n" + "\n".join(lines))
    print("\ntarget: demographic parity difference cut >= 50% for <= 2 points of accuracy")
    dp0 = before["demographic_parity_difference"]
    verdicts = []
    for name, _, _ in variants[:2]:
        after, acc_after = results[name]
        dp1 = after["demographic_parity_difference"]
        cut = 1 - dp1 / dp0 if dp0 > 0 else 0.0
        drop = (accuracy(plain) - acc_after) * 100
        verdicts.append(cut >= 0.5 and drop <= 2.0)
        print(
            f"  {name}: {dp0:.3f} -> {dp1:.3f} (cut {cut:.0%}), {drop:.2f} points of "
            f"accuracy lost: {'PASS' if verdicts[-1] else 'FAIL'}"
        )
    if args.check and not verdicts[0]:
        sys.exit(1)


if __name__ == "__main__":
    main()
