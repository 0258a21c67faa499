"""A time-budgeted model search: `model: {type: auto, budget: 5m}`.

prepare   data.load_splits once: the inputs' types pick the candidates (gbm, mlp for a
          table; ngram, text CNN, text transformer for text; cnn for images), and bad
          data fails here as for any family
fit       each candidate in order is its own family's prepare + fit on a copy of the
          config with the candidate's model, in `<run>/candidates/<name>`, within
          `model.budget` (search.py); scored on the validation split; the best wins,
          unless the `ensemble` family's weighted ensemble of them beats it
evaluate  the winner's family evaluates the winner (metrics, calibration, fairness...)
package   the winner's family packages the winner: the registered package *is* a gbm /
          mlp / ... package (`config.model.type` is the winner's, so `foundry.load` and
          serving need nothing new), plus a `leaderboard` section
load      never called for a package of this family (there are none): it delegates to
          the family the package names, like `foundry.load`

The validation metric is accuracy for classification and RMSE for regression, computed
by one function on the same validation rows for every candidate; a tie goes to the
candidate tried first (the cheaper one), and to a single model over the ensemble.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from typing import Any

from foundry.errors import ConfigError, ModelError
from foundry.families.auto.search import (
    Candidate,
    WarnOnce,
    default_candidates,
    ensemble,
    rank,
    search,
)
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.registry import family_of_package, register_family

__all__ = ["AutoFamily"]


@dataclass
class AutoData:
    splits: Any
    """`data.dataset.Splits`: what every candidate is scored on (`splits.val`)."""
    names: list[str]
    """The candidates to try, in order."""
    seen: set[str]
    """The warnings printed already: a candidate reading the data does not repeat them."""


@register_family("auto")
class AutoFamily:
    """Trains the candidates that fit the data within a time budget; packages the best."""

    name = "auto"
    supports: frozenset[str] = frozenset()
    """The registered package is the winner's: its own family's hooks apply to it (the
    conformance suite and `foundry compress` read the package's family, not this one)."""

    def prepare(self, run: Run) -> AutoData:
        from foundry.data.dataset import load_splits

        cfg = run.config
        say = WarnOnce(quiet=run.say.quiet)
        splits, resolved = load_splits(run.loaded, say)
        if len(splits.val) == 0:
            raise ConfigError(
                "model.type auto picks the best candidate on the validation split, and "
                "data.split leaves it empty",
                hint="give data.split a validation share (e.g. data.split.val: 0.1)",
            )
        types = {f.type for f in resolved.inputs}
        names = list(cfg.model.candidates or default_candidates(types))
        if not names:
            raise ConfigError(
                f"model.candidates: no candidate fits inputs of type {sorted(types)}",
                hint="list the candidates to try in model.candidates",
            )
        if "compress" in cfg.model_fields_set:  # `foundry run` asks this family, not the winner's
            say.warn(
                "compress: foundry run does not compress a model search's winner; run "
                "`foundry compress NAME:VERSION` on it once registered"
            )
        run.say.info(
            f"auto: {len(names)} candidates ({', '.join(names)}) within "
            f"{cfg.model.budget:g} s; rows train/val/test = "
            f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}"
        )
        return AutoData(splits, names, say.seen)

    def fit(self, data: AutoData, train: Any, run: Run) -> Fitted:
        started = time.perf_counter()
        candidates = search(
            run, data.splits.val, data.names, data.seen, train_rows=len(data.splits.train)
        )
        goal = _goal(candidates)
        ranked = rank(candidates, goal)
        winner = ranked[0]
        if winner.fitted is None:
            why = "; ".join(f"{c.name}: {c.row.get('note')}" for c in candidates)
            raise ModelError(f"model.type auto: no candidate could be trained ({why})")
        trained = [c for c in ranked if c.fitted is not None]
        if run.config.model.ensemble != "never" and len(trained) > 1:
            combined = ensemble(run, data.splits, trained, data.seen)
            sign = 1.0 if goal == "max" else -1.0
            better = sign * (combined.row["metric"] - winner.row["metric"]) > 0
            if run.config.model.ensemble == "always" or better:
                ranked, winner = [combined, *ranked], combined
            else:  # after the candidates it does not beat (ties go to the single model)
                ranked = rank([*candidates, combined], goal)
        winner.row["status"] = "best"
        leaderboard = {
            "metric": winner.row["metric_name"],
            "goal": _goal(candidates),
            "split": "val",
            "budget_seconds": run.config.model.budget,
            "seconds": round(time.perf_counter() - started, 3),
            "winner": winner.name,
            "rows": [c.row for c in ranked],
        }
        assert winner.run is not None
        # The run's curves are the winner's: its metrics.jsonl goes where `foundry report`
        # and the dashboard look (the run directory the registry records), and its later
        # stages report, register and name the run directory as the run itself does.
        curves = winner.run.out_dir / "metrics.jsonl"
        if curves.is_file():
            shutil.copyfile(curves, run.out_dir / "metrics.jsonl")
        winner.run = replace(
            winner.run,
            out_dir=run.out_dir,
            say=run.say,
            register=run.register,
            on_epoch_end=None,
        )
        return Fitted(
            winner.fitted.model,
            winner.fitted.result,
            {"winner": winner, "leaderboard": leaderboard},
            holdout=winner.fitted.holdout,
        )

    def evaluate(self, fitted: Fitted, data: AutoData, run: Run) -> Evaluation:
        winner: Candidate = fitted.state["winner"]
        evaluation = winner.family.evaluate(winner.fitted, winner.data, winner.run)
        evaluation.sections["leaderboard"] = fitted.state["leaderboard"]
        return evaluation

    def package(
        self, fitted: Fitted, data: AutoData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        winner: Candidate = fitted.state["winner"]
        contents = winner.family.package(winner.fitted, winner.data, evaluation, winner.run)
        contents.manifest["leaderboard"] = fitted.state["leaderboard"]
        return contents

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        from foundry.evaluation.leaderboard import leaderboard_caption, leaderboard_table

        winner: Candidate = fitted.state["winner"]
        winner.family.summarize(ref, winner.fitted, evaluation, winner.run)
        if run.say.quiet:
            return
        from rich.table import Table

        section = fitted.state["leaderboard"]
        columns, rows = leaderboard_table(section)
        table = Table(title="leaderboard", caption=leaderboard_caption(section))
        # rank, model, the numbers, status; the notes go under the table (a narrow
        # terminal would wrap them into tall cells)
        for i, column in enumerate(columns[:-1]):
            justify = "right" if 1 < i < len(columns) - 2 else "left"
            table.add_column(column, justify=justify, no_wrap=i == 1)  # model names whole
        for row in rows:
            table.add_row(*row[:-1])
        run.say.table(table)
        for row in rows:
            if row[-1]:
                run.say.info(f"  {row[1]}: {row[-1]}")

    def load(self, package: Any, ref: str) -> Any:
        return family_of_package(package.manifest).load(package, ref)

    def outputs(self, model: Any, batch: Any) -> Any:
        """The winner's model is a table model (`Predictor`): its raw scores."""
        return model.outputs(batch)


def _goal(candidates: list[Candidate]) -> str:
    """max for accuracy (classification), min for RMSE: every candidate has the task."""
    names = {c.row.get("metric_name") for c in candidates} - {None}
    return "min" if names == {"rmse"} else "max"
