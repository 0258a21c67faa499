"""A weighted ensemble of a model search's candidates: `model.type: ensemble`, written by
`model: {type: auto}` when the ensemble beats the best single candidate on validation
(or always, with `model.ensemble: always`); not trained from a config of its own.

fit       Caruana's greedy selection (with replacement) on the members' validation
          probabilities (values for regression): each member's weight is the share of
          rounds it was picked; members never picked are left out
evaluate  evaluation.trust.assess, as for any table model (calibration, fairness)
package   every member's own package, copied whole into `members/<i>-<name>/`, plus
          foundry.json's `ensemble` section (members, folders, weights)
load      each member through its own family (`family_of_package`), then
          Predictor(EnsembleNet, EnsembleInputs): predict / probabilities / serving
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundry.errors import ConfigError, ModelError
from foundry.families.interface import Evaluation, Fitted, PackageContents, Run
from foundry.families.manifest import provenance, table_card
from foundry.families.registry import family_of_package, register_family
from foundry.families.table import evaluate_table

__all__ = ["EnsembleData", "EnsembleFamily"]

ROUNDS = 20
"""Selection rounds: weights in steps of 1/20 (Caruana et al. found the curve flat past
a few dozen rounds on far larger libraries; two to six members need no more)."""


@dataclass
class EnsembleData:
    """What a model search hands the ensemble: its trained candidates and the splits."""

    members: list[tuple[str, Any, Path]]
    """(candidate name, its in-memory `Predictor`, its written package folder)."""
    splits: Any
    """`data.dataset.Splits`: selection on `splits.val`, evaluation as configured."""
    manifest: dict[str, Any]
    """The first member's foundry.json: the features, task and data sections it shares."""
    holdouts: list[Any] | None = None
    """Per member, its `Fitted.holdout` (the fit that never saw the validation rows: gbm
    before its refit on train + val) or None; the weights are chosen on those, since a
    refitted member's validation outputs are in-sample and would win every round."""


@register_family("ensemble")
class EnsembleFamily:
    """Averages the probabilities (or values) of other families' models."""

    name = "ensemble"
    supports = frozenset({"calibration", "fairness"})
    """No `explain`: its members' explanations are of different kinds (TreeSHAP,
    integrated gradients, n-gram weights) and are not averaged; no `compress`."""

    def prepare(self, run: Run) -> Any:
        raise ConfigError(
            "model.type ensemble is written by a model search, not trained on its own",
            hint="use model: {type: auto, candidates: [...], ensemble: always}",
        )

    def fit(self, data: EnsembleData, train: Any, run: Run) -> Fitted:
        from foundry.families.ensemble.model import member_scores, select_weights

        started = time.perf_counter()
        members = [predictor for _, predictor, _ in data.members]
        held = [h if h is not None else m
                for m, h in zip(members, data.holdouts or [None] * len(members), strict=True)]
        scored = [member_scores(m, data.splits.val) for m in held]
        y = scored[0][0]
        weights = select_weights(y, [s for _, s in scored], members[0].task, ROUNDS)
        kept = [i for i, w in enumerate(weights) if w > 0]
        chosen = [data.members[i] for i in kept]
        predictor = _predictor(
            [members[i] for i in kept], [weights[i] for i in kept], data.manifest, run.config.name
        )
        holdout = None  # the same weights over the held-out fits, for what val scores
        if any(held[i] is not members[i] for i in kept):
            holdout = _predictor(
                [held[i] for i in kept], [weights[i] for i in kept], data.manifest,
                run.config.name,
            )
        state = {
            "members": chosen,
            "weights": [weights[i] for i in kept],
            "seconds": time.perf_counter() - started,
        }
        return Fitted(predictor, None, state, holdout=holdout)

    def evaluate(self, fitted: Fitted, data: EnsembleData, run: Run) -> Evaluation:
        return evaluate_table(fitted, data.splits, run)

    def package(
        self, fitted: Fitted, data: EnsembleData, evaluation: Evaluation, run: Run
    ) -> PackageContents:
        from foundry.config.schema import EnsembleConfig

        names = [name for name, _, _ in fitted.state["members"]]
        weights = fitted.state["weights"]
        model = EnsembleConfig(members=names, weights=weights)
        cfg = run.config.model_copy(update={"model": model})
        folders = [f"members/{i}-{name}" for i, name in enumerate(names)]
        shared = {k: data.manifest[k] for k in ("features", "task", "fingerprint", "data")
                  if k in data.manifest}  # fmt: skip
        manifest = {
            **provenance(cfg),
            **shared,
            "n_outputs": int(fitted.model.task.n_classes or 1)
            if fitted.model.task.is_classification
            else 1,
            "training": {
                "best_epoch": 0,
                "epochs_run": 0,
                "seconds": round(fitted.state["seconds"], 3),
                "stopped_early": False,
                "best_metrics": {},
                "run_dir": str(run.out_dir),
            },
            "ensemble": {
                "members": [
                    {"name": n, "dir": d, "weight": w}
                    for n, d, w in zip(names, folders, weights, strict=True)
                ],
                "selection": f"Caruana greedy selection, {ROUNDS} rounds, validation split",
            },
        }
        manifest.update(evaluation.sections)
        files = {folder: path for folder, (_, _, path) in
                 zip(folders, fitted.state["members"], strict=True)}  # fmt: skip
        return PackageContents(
            weights={},
            manifest=manifest,
            card=None if run.register else table_card(cfg, manifest, evaluation.metrics),
            files=files,
        )

    def summarize(self, ref: str, fitted: Fitted, evaluation: Evaluation, run: Run) -> None:
        cfg, say = run.config, run.say
        title = f"{ref or cfg.name} — {cfg.evaluate.split} metrics"
        say.metrics(evaluation.metrics, fitted.model.task, title=title)
        shares = ", ".join(
            f"{name} {w:.2f}"
            for (name, _, _), w in zip(
                fitted.state["members"], fitted.state["weights"], strict=True
            )
        )
        say.info(f"ensemble weights: {shares}")

    def load(self, package: Any, ref: str) -> Any:
        from foundry.registry.integrity import Confinement
        from foundry.registry.package import read_package

        manifest = package.manifest
        try:
            entries = manifest["ensemble"]["members"]
            weights = [float(e["weight"]) for e in entries]
            folders = [str(e["dir"]) for e in entries]
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{package.path}/foundry.json is not an ensemble manifest ({exc})"
            ) from None
        members = []
        confinement = Confinement([package.path])
        for entry, folder in zip(entries, folders, strict=True):
            path = confinement.require(
                package.path / folder, what="a member folder ensemble.members names,"
            )
            member = read_package(path)
            members.append(
                family_of_package(member.manifest).load(member, f"{ref}/{entry['name']}")
            )
        name = manifest.get("name") or (manifest.get("config") or {}).get("name", "model")
        return _predictor(
            members, weights, manifest, ref or f"{name}:{manifest.get('version')}", trust=True
        )

    def outputs(self, model: Any, batch: Any) -> Any:
        return model.outputs(batch)


def _predictor(
    members: list[Any],
    weights: list[float],
    manifest: dict[str, Any],
    ref: str,
    *,
    trust: bool = False,
) -> Any:
    """A `Predictor` over the members (with the package's calibration and fairness
    thresholds when `trust`: a loaded package)."""
    from foundry.families.ensemble.model import EnsembleInputs, EnsembleNet
    from foundry.predictor import Predictor, trust_state

    inputs = EnsembleInputs(members)
    state = trust_state(manifest, ref=ref) if trust else {}
    state.pop("scrubber", None)  # each member scrubs its inputs itself
    return Predictor(EnsembleNet(members, weights), inputs, inputs.task, manifest, ref, **state)
