"""The search itself: each candidate is an ordinary run of its own family, on a copy of the
config whose `model` is the candidate's, in its own folder of the run directory.

    for name in candidates (cheapest / strongest first):
        skip it if the budget is spent (the first candidate always runs)
        family = family_for(type); data = family.prepare(copy); fitted = family.fit(...)
            (an `on_epoch_end` guard ends a network or booster at its best epoch / round
             when the next one would not fit in the budget: `StopTraining`)
        score it on the validation split; time its predictions; write its package
    rank them; the best is registered as what it is (the leaderboard rides along)

Every candidate reads the same data with the same `data.split` settings, so they share
one train / validation split (`data.load_splits` is seeded), and every one is scored by
the same function on the same validation rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.config import LoadedConfig, dump_config
from foundry.config.schema import AUTO_CANDIDATES
from foundry.console import Reporter
from foundry.errors import FoundryError
from foundry.families.interface import Evaluation, Fitted, Run
from foundry.families.registry import family_for, registered_families

__all__ = ["Candidate", "WarnOnce", "default_candidates", "ensemble", "rank", "search"]


@dataclass
class Candidate:
    name: str
    """The candidate's name (`AUTO_CANDIDATES`): gbm, mlp, text-transformer..."""
    row: dict[str, Any] = field(default_factory=dict)
    """Its leaderboard row (evaluation.leaderboard describes the keys)."""
    family: Any = None
    run: Run | None = None
    """Its own run: the config copy with its model, its folder, a quiet reporter."""
    data: Any = None
    fitted: Fitted | None = None


@dataclass
class WarnOnce(Reporter):
    """A reporter that prints each warning once: every candidate reads the same data and
    would repeat the data stage's warnings (PII found, a leaking column) after the
    search's own reading of it. `seen` is shared by the search and its candidates."""

    seen: set[str] = field(default_factory=set)

    def warn(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            super().warn(message)


def default_candidates(input_types: set[str]) -> list[str]:
    """The candidates that fit inputs of these types, cheapest / strongest first (an
    unregistered family, e.g. ngram in a build without it, is left out)."""
    if "image" in input_types:
        names = ["cnn"]
    elif "text" in input_types:
        names = ["ngram", "text", "text-transformer"]
    else:
        names = ["gbm", "mlp"]
    available = {t for types in registered_families().values() for t in types}
    return [n for n in names if AUTO_CANDIDATES[n]["type"] in available]


def search(
    run: Run, val: Any, names: list[str], seen: set[str], train_rows: int = 0
) -> list[Candidate]:
    """Train `names` in order within `model.budget` seconds and score each on `val` (the
    validation rows); every candidate gets a leaderboard row. `seen`: the warnings
    printed already (`WarnOnce`); `train_rows`: the training split's size, what a
    network's first epoch is estimated from."""
    budget = run.config.model.budget
    deadline = time.perf_counter() + budget
    out: list[Candidate] = []
    for i, name in enumerate(names):
        cand = Candidate(name, {"model": name, "type": AUTO_CANDIDATES[name]["type"]})
        out.append(cand)
        left = deadline - time.perf_counter()
        if i > 0 and left <= 0:  # the first always runs: a search must have a winner
            _not_trained(run.say, cand, "skipped", f"the {budget:g} s budget was spent")
            continue
        # Its share of what is left, so that every candidate gets a turn: one that ends
        # sooner leaves more to the next. The last one may use all that is left.
        share = max(left, 0) / (len(names) - i)
        epoch = _first_epoch_seconds(cand.row["type"], train_rows)
        if i > 0 and epoch > share:
            # the budget can stop a network only between epochs: one whose first epoch
            # alone would overrun its share is not started (a text CNN on 10,000
            # docstrings took 200 s of a 30 s search before this)
            _not_trained(
                run.say, cand, "skipped",
                f"one epoch of {train_rows:,} rows would take ~{epoch:.0f} s on 2 CPU "
                f"cores, more than its {share:.0f} s share of the budget",
            )  # fmt: skip
            continue
        run.say.info(
            f"auto: training {name} ({i + 1}/{len(names)}, {share:.0f} s of "
            f"{max(left, 0):.0f} s left)"
        )
        _train(run, cand, val, time.perf_counter() + share, seen)
    return out


def _first_epoch_seconds(model_type: str, train_rows: int) -> float:
    """A network's first epoch at the measured rows per second of its default model on 2
    CPU cores (`foundry.config.init.NEURAL_ROWS_PER_S`, what init sizes epochs by); 0
    for the families the budget can stop at any round (gbm) or that fit in one pass."""
    from foundry.config.init import NEURAL_ROWS_PER_S

    rate = NEURAL_ROWS_PER_S.get(model_type)
    return train_rows / rate if rate else 0.0


def rank(candidates: list[Candidate], goal: str) -> list[Candidate]:
    """Trained candidates best first by `row["metric"]`, then the others, each group in
    the order they were tried: a tie goes to the candidate tried first, the cheaper one
    (a tie is common on a small validation split; the log loss would break it for the
    networks, whose probabilities are trained for it, over a linear SVM's)."""
    trained = [c for c in candidates if c.row.get("metric") is not None]
    sign = -1.0 if goal == "max" else 1.0
    trained.sort(key=lambda c: sign * c.row["metric"])  # stable: ties keep their order
    return trained + [c for c in candidates if c.row.get("metric") is None]


def _train(run: Run, cand: Candidate, val: Any, deadline: float, seen: set[str]) -> None:
    """Prepare, fit, score and package one candidate, filling its row."""
    from foundry.config import load_config

    cfg, say = run.config, run.say
    guard = _BudgetGuard(deadline)
    began = time.perf_counter()
    try:
        raw = dump_config(cfg)
        raw["model"] = {**AUTO_CANDIDATES[cand.name], **cfg.model.overrides.get(cand.name, {})}
        loaded = LoadedConfig(load_config(raw).config, run.loaded.base_dir)
        cand.family = family_for(loaded.config.model.type)
    except FoundryError as exc:  # not registered in this build; train.privacy with gbm
        _not_trained(say, cand, "skipped", exc.message)
        return
    cand.run = Run(
        loaded,
        run.out_dir / "candidates" / cand.name,
        WarnOnce(quiet=True, seen=seen),  # one line per candidate here; new warnings print
        progress=False,
        on_epoch_end=guard,
        register=False,
    )
    try:
        cand.data = cand.family.prepare(cand.run)
    except FoundryError as exc:  # its inputs do not suit it (text for gbm, ...)
        _not_trained(say, cand, "skipped", f"does not fit the data: {exc.message}")
        return
    try:
        cand.fitted = cand.family.fit(cand.data, cand.run.config.train, cand.run)
        fit_seconds = time.perf_counter() - began
        # a refitted gbm trained on val too: it is ranked by its fit before the refit
        fitted = cand.fitted
        scores = _score(fitted.model if fitted.holdout is None else fitted.holdout, val)
    except FoundryError as exc:
        _not_trained(say, cand, "failed", exc.message)
        return
    result = cand.fitted.result
    epochs = result.epochs_run if result is not None else None
    unit = ("round" if cand.row["type"] == "gbm" else "epoch") + ("" if epochs == 1 else "s")
    cand.row.update(
        status="trained",
        note=f"stopped by the budget after {epochs} {unit}" if guard.stopped else "",
        fit_seconds=round(fit_seconds, 3),
        epochs=epochs,
        **scores,
    )
    cand.row["package_bytes"] = _package_size(cand, scores)
    say.info(
        f"auto: {cand.name}: validation {scores['metric_name']} {scores['metric']:.4f}, "
        f"fit {fit_seconds:.1f} s" + (f" ({cand.row['note']})" if cand.row["note"] else "")
    )


def ensemble(run: Run, splits: Any, trained: list[Candidate], seen: set[str]) -> Candidate:
    """A weighted ensemble of the `trained` candidates (the `ensemble` family: Caruana
    selection on the validation split), scored and packaged as a candidate."""
    import json
    from types import SimpleNamespace

    from foundry.config import load_config

    cand = Candidate("ensemble", {"model": "ensemble", "type": "ensemble"})
    began = time.perf_counter()
    raw = dump_config(run.config)
    raw["model"] = {"type": "ensemble", "members": [c.name for c in trained]}
    loaded = LoadedConfig(load_config(raw).config, run.loaded.base_dir)
    cand.family = family_for("ensemble")
    cand.run = Run(
        loaded,
        run.out_dir / "candidates" / "ensemble",
        WarnOnce(quiet=True, seen=seen),
        progress=False,
        register=False,
    )
    packages = [c.run.out_dir / "package" for c in trained if c.run is not None]
    # what `ensemble.EnsembleData` holds (a family does not import another family)
    cand.data = SimpleNamespace(
        members=[
            (c.name, c.fitted.model, p)
            for c, p in zip(trained, packages, strict=True)
            if c.fitted is not None
        ],  # fmt: skip
        splits=splits,
        manifest=json.loads((packages[0] / "foundry.json").read_text()),
        holdouts=[c.fitted.holdout for c in trained if c.fitted is not None],
    )
    cand.fitted = cand.family.fit(cand.data, loaded.config.train, cand.run)
    fitted = cand.fitted  # ranked by its held-out fit, as a refitted gbm is
    scores = _score(fitted.model if fitted.holdout is None else fitted.holdout, splits.val)
    shares = ", ".join(
        f"{name} {w:.2f}"
        for (name, _, _), w in zip(cand.fitted.state["members"], cand.fitted.state["weights"],
                                   strict=True)
    )  # fmt: skip
    cand.row.update(
        status="trained",
        note=f"weights {shares}",
        fit_seconds=round(time.perf_counter() - began, 3),
        epochs=None,
        **scores,
    )
    cand.row["package_bytes"] = _package_size(cand, scores)
    run.say.info(
        f"auto: ensemble ({shares}): validation {scores['metric_name']} {scores['metric']:.4f}"
    )
    return cand


def _score(model: Any, val: Any) -> dict[str, Any]:
    """The validation metric (accuracy, or RMSE for a number target), the log loss of a
    classifier and the time to predict 1,000 validation rows (repeated as needed) in one
    batch, encoding included, after the scoring pass has warmed the model up."""
    import numpy as np

    from foundry.evaluation import compute_metrics

    y, out = model.labelled_outputs(val)
    metrics = compute_metrics(model.task, y, out)
    rows = val.iloc[np.arange(1000) % len(val)]
    started = time.perf_counter()
    model.outputs(rows)
    seconds = time.perf_counter() - started
    name = "accuracy" if model.task.is_classification else "rmse"
    return {
        "metric_name": name,
        "metric": float(metrics[name]),
        "log_loss": float(metrics["log_loss"]) if "log_loss" in metrics else None,
        "predict_ms_per_1k": round(seconds * 1000, 3),
    }


def _package_size(cand: Candidate, scores: dict[str, Any]) -> int | None:
    """Bytes of the candidate's package, written to its folder (`package/`, loadable with
    `foundry.load(path)`); the winner's registered package holds the same files plus
    its evaluation's sections."""
    from foundry.registry import write_package

    assert cand.run is not None and cand.fitted is not None
    contents = cand.family.package(cand.fitted, cand.data, Evaluation(dict(scores)), cand.run)
    path = cand.run.out_dir / "package"
    try:
        write_package(
            path,
            weights=contents.weights,
            manifest=contents.manifest,
            metrics=dict(scores),
            card=contents.card or "",
            **({"files": contents.files} if contents.files else {}),
        )
    finally:
        if contents.cleanup is not None:
            contents.cleanup()
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _not_trained(say: Reporter, cand: Candidate, status: str, why: str) -> None:
    cand.row.update(status=status, note=why, metric=None)
    say.info(f"auto: {cand.name} {status}: {why}")


class _BudgetGuard:
    """`on_epoch_end` for a candidate: ends training (`StopTraining`, the best epoch is
    kept) when the next epoch, taking as long as the last, would end past the deadline."""

    def __init__(self, deadline: float) -> None:
        self.deadline, self.last, self.stopped = deadline, time.perf_counter(), False

    def __call__(self, record: dict[str, Any]) -> None:
        from foundry.training.epochs import StopTraining

        now = time.perf_counter()
        step, self.last = now - self.last, now
        if now + step > self.deadline:
            self.stopped = True
            raise StopTraining("model.budget would run out during the next epoch")
