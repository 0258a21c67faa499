"""Target leakage: columns that record the outcome instead of predicting it.

    find_leakage(df, "two_year_recid", target_type="binary")
    # [{"column": "is_recid", "rule": "name", "reason": "...", "score": 0.97}, ...]

Why: a criminal-justice table trained on `is_recid`, `r_charge_desc` (the charge of the
re-offence) and the like when the target was `two_year_recid`, and reported 97.8%
accuracy where honest models reach 65-70%, without a word. A model trained that way is
useless on new cases, whose outcome is not known yet.

Two rules, and a column is a leak when either holds:

- alone: a one-column model predicts the target almost perfectly on rows it did not see
  (`threshold`, 0.98 by default): ROC AUC for two classes, balanced accuracy for more,
  R² for numbers. The model is a depth-4 decision tree for numbers (missing values get
  their own branch), the target rate per category for anything else, scored out of fold
  (3 folds) on at most `SAMPLE_ROWS` rows. It needs `MIN_ROWS` rows and at least
  `MIN_COLUMNS` candidate columns: with one or two columns a strong column *is* the model
  (`y = 2x + 1 + noise` must not be called a leak).
- name: the column's name marks it as an outcome: it ends in or contains the target's
  head word (`is_recid`, `recid_date` for `two_year_recid`; a word and its stem count,
  `churn` / `churned`), holds an outcome word (`outcome`, `resultat`, `ergebnis`,
  `resultado`, `esito`, `uitkomst`) or is entirely `target`, `label`, `result`; or it
  carries a short prefix shared by several columns that abbreviates the target's head
  word (`r_charge_desc`, `r_offense_date`, `vr_charge_desc` for `..._recid`: ProPublica's
  "r_" = recidivism), or it is the event or the time of a survival-analysis layout
  (`event` next to `end`, `stop` or `duration`). Generic words (`count`, `date`, `type`,
  `score`, `value`...) never make a match on their own, so `house_age` is no leak of
  `median_house_value`.

Measured false positives (tests/data/test_data_leakage.py): none on iris, wine, breast
cancer, digits, diabetes, penguins and the examples' tables. Reasons name the rule and the
score, never a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from foundry.data.personal import column_tokens

__all__ = ["find_leakage"]

THRESHOLD = 0.98
"""Default score from which a single column is a leak (`features.leakage.threshold`)."""
MIN_ROWS = 50
"""Fewer rows than this: scores are too noisy to call anything a leak by values."""
MIN_COLUMNS = 3
"""Fewer candidate columns than this: a strong column is the model, not a leak."""
SAMPLE_ROWS = 20_000
"""The values rule reads at most this many rows (seeded sample), so its cost per column
does not grow with the table."""
FOLDS = 3

_GENERIC = {
    "is", "has", "was", "had", "did", "the", "of", "a", "an", "in", "on", "at", "to",
    "from", "by", "for", "and", "or", "not", "no", "nr", "num", "number", "n", "count",
    "total", "sum", "date", "dt", "time", "year", "years", "yr", "month", "months", "day",
    "days", "week", "type", "kind", "id", "score", "rate", "ratio", "flag", "value", "val",
    "amount", "level", "code", "cat", "category", "group", "desc", "description", "status",
    "one", "two", "three", "first", "last", "new", "old", "mean", "median", "std", "min",
    "max", "avg", "pct", "percent", "per", "x", "y", "z", "yes", "true", "false",
}  # fmt: skip
_OUTCOME_TOKENS = {"outcome", "outcomes", "resultat", "ergebnis", "resultado", "esito",
                   "uitkomst", "uitslag"}  # fmt: skip
_OUTCOME_WHOLE = {"target", "targets", "label", "labels", "result", "results"}
# survival-analysis layout (`start`, `end`, `event`, as in ProPublica's COMPAS file): the
# event indicator and the time to it are the outcome, whatever the target is called
_SURVIVAL_EVENT = {"event"}
_SURVIVAL_TIME = {"end", "stop", "tstop", "duration", "timetoevent", "survivaltime"}


def find_leakage(
    df: pd.DataFrame,
    target: str,
    *,
    target_type: str,
    columns: Iterable[str] | None = None,
    content: Iterable[str] = (),
    threshold: float = THRESHOLD,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """The columns among `columns` (default: every column but the target) that leak the
    target, in column order: `[{"column", "rule": "name" | "alone", "reason", "score"}]`
    (`score`: the one-column model's held-out score, None when not measured).
    `target_type` is binary, category or number, as `foundry.data.infer` resolves it.
    `content`: text and image columns, held to the name rule only: reading the target
    from a review's words or a photo's pixels is the task a text or image model is for,
    not a leak (a sentiment table's text alone predicts its label almost perfectly)."""
    content = {str(c) for c in content}
    names = [str(c) for c in (columns if columns is not None else df.columns) if c != target]
    frame = df[[*names, target]]
    frame = frame[frame[target].notna()]
    if len(frame) > SAMPLE_ROWS:
        frame = frame.sample(SAMPLE_ROWS, random_state=seed)
    measure = len(frame) >= MIN_ROWS and len(names) >= MIN_COLUMNS
    y = _encode_target(frame[target], target_type) if measure else None
    folds = _folds(y, target_type, seed) if y is not None else []  # the same for every column
    found = []
    for name in names:
        by_name = _name_rule(name, target, [str(c) for c in df.columns])
        measured = y is not None and name not in content
        score = _alone_score(frame[name], y, target_type, folds) if measured else None
        if score is not None and score >= threshold:
            metric = {"binary": "ROC AUC", "category": "balanced accuracy"}.get(
                target_type, "R²"
            )
            reason = f"alone it predicts '{target}' with {metric} {score:.3f} on held-out rows"
            if by_name:
                reason += f"; {by_name}"
            found.append({"column": name, "rule": "alone", "reason": reason, "score": score})
        elif by_name:
            found.append({"column": name, "rule": "name", "reason": by_name, "score": score})
    return found


# ------------------------------------------------------------------------ name rule


def _related(a: str, b: str) -> bool:
    """The same word, or one the stem of the other (churn / churned, recid / recidivism)."""
    short, long = sorted((a, b), key=len)
    return short == long or (len(short) >= 4 and long.startswith(short))


def _name_rule(name: str, target: str, all_columns: list[str]) -> str | None:
    tokens, target_tokens = column_tokens(name), column_tokens(target)
    if not tokens or tokens == target_tokens:
        return None
    if "".join(tokens) in _OUTCOME_WHOLE:
        return f"its name '{name}' marks it as an outcome"
    word = next((t for t in tokens if t in _OUTCOME_TOKENS), None)
    if word is not None:
        return f"its name holds the outcome word '{word}'"
    compact = {"".join(column_tokens(c)): c for c in all_columns}
    event = next((compact[k] for k in _SURVIVAL_EVENT if k in compact), None)
    time = next((compact[k] for k in _SURVIVAL_TIME if k in compact), None)
    if event is not None and time is not None and name in (event, time):
        return (
            f"'{event}' and '{time}' are a survival-analysis layout (event indicator, time "
            "to it): they record the outcome"
        )
    head = target_tokens[-1] if target_tokens else ""
    if head and head not in _GENERIC and len(head) >= 3 and not head.isdigit():
        same = next((t for t in tokens if t not in _GENERIC and _related(t, head)), None)
        if same is not None:
            return f"its name shares '{same}' with the target '{target}'"
        prefix = tokens[0]
        if len(tokens) >= 2 and len(prefix) <= 2 and prefix[-1] == head[0]:
            group = [c for c in all_columns if (t := column_tokens(c)) and t[0] == prefix]
            if len(group) >= 2:
                return (
                    f"its prefix '{prefix}_' (shared by {len(group)} columns) abbreviates "
                    f"the target's '{head}'"
                )
    elif len(target_tokens) >= 2:
        # a target ending in a generic word (`median_house_value`) leaks only through its
        # whole name (`median_house_value_2020`), never through one of its words
        n = len(target_tokens)
        if any(tokens[i : i + n] == target_tokens for i in range(len(tokens) - n + 1)):
            return f"its name contains the target's name '{target}'"
    return None


# ------------------------------------------------------------------------ values rule


def _encode_target(col: pd.Series, target_type: str) -> np.ndarray | None:
    if target_type == "number":
        y = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
        return None if np.isnan(y).any() or np.std(y) == 0 else y
    codes, uniques = pd.factorize(col)
    return codes if len(uniques) >= 2 else None


def _folds(y: np.ndarray, target_type: str, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import KFold, StratifiedKFold

    if target_type != "number" and np.bincount(y).min() >= FOLDS:
        splitter: Any = StratifiedKFold(FOLDS, shuffle=True, random_state=seed)
    else:
        splitter = KFold(FOLDS, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(y)), y))


def _alone_score(col: pd.Series, y: np.ndarray, target_type: str, folds: list) -> float | None:
    """Held-out score of a model that sees only `col`, or None when it cannot be judged
    (constant, free text or near-unique strings, images)."""
    numeric = pd.api.types.is_numeric_dtype(col.dtype) or pd.api.types.is_bool_dtype(col.dtype)
    if numeric:
        x = col.astype(np.float64).to_numpy()
        # infinities count as missing here (the data stage reports them by row), and the
        # tree works in float32: huge values are clipped to what it can hold
        missing = ~np.isfinite(x)
        observed = np.clip(x[~missing], -1e30, 1e30)
        if len(observed) == 0:
            return None
        # missing values below every observed one: the tree can split them off
        x = np.clip(x, -1e30, 1e30)
        x = np.where(missing, observed.min() - 1.0, x).reshape(-1, 1)
        if np.all(x == x[0]):
            return None
    else:
        strings = col.astype("string").fillna("\0missing")
        codes, uniques = pd.factorize(strings)
        if len(uniques) < 2 or len(uniques) > len(col) / 2:
            return None  # one value, or free text / identifiers: no per-category rate
    k = int(y.max()) + 1 if target_type != "number" else 0
    oof = np.zeros((len(y), max(k, 1)))
    for fit_rows, held_rows in folds:
        if numeric:
            oof[held_rows] = _tree(x[fit_rows], y[fit_rows], x[held_rows], target_type, k)
        else:
            oof[held_rows] = _rates(codes[fit_rows], y[fit_rows], codes[held_rows], k)
    return _score(y, oof, target_type)


def _tree(x_fit, y_fit, x_held, target_type: str, k: int) -> np.ndarray:
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    # depth 4 = up to 16 intervals of the column: enough for a recoded outcome, too
    # coarse to memorise rows; 1% of the rows per leaf keeps one leaf from being a row
    leaf = max(5, len(y_fit) // 100)
    if target_type == "number":
        reg = DecisionTreeRegressor(max_depth=4, min_samples_leaf=leaf, random_state=0)
        return reg.fit(x_fit, y_fit).predict(x_held).reshape(-1, 1)
    clf = DecisionTreeClassifier(max_depth=4, min_samples_leaf=leaf, random_state=0)
    clf.fit(x_fit, y_fit)
    out = np.zeros((len(x_held), k))
    out[:, clf.classes_] = clf.predict_proba(x_held)
    return out


def _rates(codes_fit, y_fit, codes_held, k: int) -> np.ndarray:
    """Per category: the class shares (classification, k > 0) or the mean (numbers) seen
    in the fitting rows; a category unseen there gets the overall figure."""
    n_cat = int(max(codes_fit.max(initial=0), codes_held.max(initial=0))) + 1
    if k:
        counts = np.bincount(codes_fit * k + y_fit, minlength=n_cat * k).reshape(n_cat, k)
        overall = np.bincount(y_fit, minlength=k) / len(y_fit)
        totals = counts.sum(axis=1, keepdims=True)
        table = np.where(totals > 0, counts / np.maximum(totals, 1), overall)
        return table[codes_held]
    sums = np.bincount(codes_fit, weights=y_fit, minlength=n_cat)
    totals = np.bincount(codes_fit, minlength=n_cat)
    means = np.where(totals > 0, sums / np.maximum(totals, 1), y_fit.mean())
    return means[codes_held].reshape(-1, 1)


def _score(y: np.ndarray, oof: np.ndarray, target_type: str) -> float:
    from sklearn.metrics import balanced_accuracy_score, r2_score

    if target_type == "number":
        return round(float(r2_score(y, oof[:, 0])), 4)
    if oof.shape[1] == 2:
        return round(_auc(y == 1, oof[:, 1]), 4)
    return round(float(balanced_accuracy_score(y, oof.argmax(axis=1))), 4)


def _auc(positive: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): sklearn's value, without
    its input validation, which cost more than the trees here (cProfile)."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
