"""`foundry train`: config → run directory → the model family's stages → registry.

Read top to bottom. What differs between kinds of model (how data is prepared, how a
model is fitted, evaluated and packaged) is the family's (`foundry.families`, picked by
`model.type`); this module knows no model type by name. Nothing below it imports it
back: the helpers families share live in `foundry.families` and `foundry.data.dataset`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from foundry.config import LoadedConfig, dump_config, load_config
from foundry.config.schema import FoundryConfig
from foundry.console import Reporter
from foundry.errors import TrainError
from foundry.families import Run, family_for
from foundry.tracking import flatten, start_tracking

__all__ = ["TrainResult", "run", "run_directory", "store_package", "train"]


@dataclass(frozen=True)
class TrainResult:
    """What `foundry.train` returns."""

    model_ref: str
    """Registry reference of the new version, e.g. `adult:3` (empty when not registered)."""
    run_dir: Path
    """Checkpoints, `metrics.jsonl` (per epoch) and `metrics.json` (final)."""
    metrics: dict[str, Any]
    """Metrics on the evaluation split (`evaluate.split`, test by default)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    package_path: Path | None = None
    compression: Any = None
    """`foundry run` with a `compress:` section: the `CompressResult`."""
    model: Any = None
    """The trained model in memory, the same kind of object `foundry.load` (or
    `foundry.lm.load`) returns for the package: `Predictor`, `HFTextPredictor`, a
    language model or an embedder. None on the non-zero ranks of a distributed run."""


def train(
    config: str | Path | dict[str, Any] | LoadedConfig,
    overrides: list[str] | None = None,
    *,
    resume: bool = False,
    run_dir: str | Path | None = None,
    progress: bool = True,
    quiet: bool = False,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    register: bool = True,
) -> TrainResult:
    """Train, evaluate and register the model a config describes.

    `resume=True` continues the newest unfinished run of this config (or `run_dir`)
    from its last checkpoint. `on_epoch_end(record)` gets each epoch's metrics (what
    `foundry tune` prunes on); an exception it raises stops the run. `register=False`
    writes the package to `<run_dir>/package` instead of the registry (`model_ref` is
    then empty): tuning trials register only the best one.

    The model's family (`foundry.families`, picked by `model.type`) does the stages
    that differ: prepare the data, fit, evaluate, say what goes into the package.
    """
    loaded = config if isinstance(config, LoadedConfig) else load_config(config, overrides)
    cfg = loaded.config
    options = {"resume": resume, "run_dir": run_dir, "progress": progress, "quiet": quiet}
    from foundry.training import distributed

    if distributed.launched():  # one of several torchrun workers (or `foundry train --nproc`)
        distributed.check_config(cfg, distributed.world_size())
        if not distributed.active():  # join the process group, train in it, leave it
            return distributed.run_in_group(
                lambda: train(loaded, **options, on_epoch_end=on_epoch_end, register=register),
                device=cfg.train.device,
                share=("model_ref", "metrics", "package_path"),
            )
    family = family_for(cfg.model.type)
    # optional libraries a config asks for: a missing one fails here, before any work
    from foundry.extras import require

    if cfg.train.privacy is not None:
        require("trust", "opacus", "differentially private training (train.privacy)")
    if cfg.evaluate.fairness.sensitive_features:  # the audit runs last, after training
        require("trust", "fairlearn", "the fairness audit (evaluate.fairness)")
    quiet = quiet or not distributed.is_main()  # rank 0 alone reports a distributed run
    say = Reporter(quiet=quiet)
    started = time.perf_counter()

    # one run directory, which rank 0 of a distributed run picks and alone writes
    out_dir = Path(distributed.from_main(lambda: str(run_directory(loaded, run_dir, resume))))
    # MLflow / TensorBoard (the `track:` section): rank 0 reports, from each epoch's record
    tracker = start_tracking(cfg.track, name=cfg.name) if distributed.is_main() else None
    if tracker is not None:
        on_epoch_end = tracker.hook(on_epoch_end)
    run_ = Run(loaded, out_dir, say, resume, progress, on_epoch_end, register)
    data = family.prepare(run_)  # bad data fails here, before a run directory exists
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(dump_config(cfg), indent=2))
        if tracker is not None:
            tracker.begin(out_dir, flatten(dump_config(cfg)))
    say.info(f"run directory: {out_dir}")

    fitted = family.fit(data, cfg.train, run_)
    history = fitted.result.history if fitted.result is not None else []
    best_epoch = fitted.result.best_epoch if fitted.result is not None else 0
    if not distributed.is_main():  # rank 0 evaluates and registers; the others get
        return TrainResult("", out_dir, {}, history, best_epoch)  # its result

    evaluation = family.evaluate(fitted, data, run_)
    (out_dir / "metrics.json").write_text(json.dumps(evaluation.metrics, indent=2))
    contents = family.package(fitted, data, evaluation, run_)
    try:
        ref, path = store_package(
            cfg,
            out_dir,
            register=register,
            say=say,
            weights=contents.weights,
            manifest=contents.manifest,
            metrics=evaluation.metrics,
            card=contents.card,
            **({"files": contents.files} if contents.files else {}),
        )
    finally:
        if contents.cleanup is not None:
            contents.cleanup()
    family.summarize(ref, fitted, evaluation, run_)
    if tracker is not None:
        run_files = [out_dir / n for n in ("config.json", "metrics.json", "metrics.jsonl")]
        tracker.finish(evaluation.metrics, [*run_files, path / "card.md", path / "card.json"])
    return TrainResult(
        model_ref=ref,
        run_dir=out_dir,
        metrics=evaluation.metrics,
        history=history,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        package_path=path,
        model=evaluation.model if evaluation.model is not None else fitted.model,
    )


def store_package(
    cfg: FoundryConfig, out_dir: Path, *, register: bool, say: Reporter, **contents: Any
) -> tuple[str, Path]:
    """Register a run's package as the next version of `cfg.name` or, with
    `register=False` (a `foundry tune` trial: only the best is registered, later), write it
    to `out_dir/package`; then mark the run COMPLETED, which resuming skips. `contents`:
    the package (weights, manifest, metrics, card, files). Returns the registry reference
    (empty when not registered) and the package's path."""
    from foundry.registry import Registry, write_package

    if register:
        record = Registry().register(
            cfg.name, description=cfg.description, run_dir=out_dir, **contents
        )
        ref, path = record.ref, record.path
    else:
        ref, path = "", out_dir / "package"
        write_package(path, **contents)
    (out_dir / "COMPLETED").write_text((ref or "unregistered: package/") + "\n")
    say.info(f"registered {ref} at {path}" if ref else f"package written to {path}")
    return ref, path


def run_directory(loaded: LoadedConfig, run_dir: str | Path | None, resume: bool) -> Path:
    """Where this run writes: `run_dir`, or `<output_dir>/<name>-<UTC time>`; on resume the
    newest run of this name that has a checkpoint and did not complete."""
    if run_dir is not None:
        path = Path(run_dir)
        if resume and not (path / "checkpoint" / "state.json").exists():
            raise TrainError(f"nothing to resume in {path}: it has no checkpoint/state.json")
        return path
    root = loaded.resolve(loaded.config.output_dir)
    assert root is not None
    name = loaded.config.name
    if resume:
        candidates = sorted(
            (p for p in root.glob(f"{name}-*") if (p / "checkpoint" / "state.json").exists()),
            key=lambda p: p.name,
        )
        unfinished = [p for p in candidates if not (p / "COMPLETED").exists()]
        if not unfinished:
            raise TrainError(
                f"nothing to resume: no unfinished run of '{name}' with a checkpoint in {root}"
            )
        return unfinished[-1]
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return root / f"{name}-{stamp}"


def run(
    config: str | Path | dict[str, Any] | LoadedConfig,
    overrides: list[str] | None = None,
    **options: Any,
) -> TrainResult:
    """Every stage the config describes: train → evaluate → register, then compress when
    the config has a `compress:` section and the model's family supports it (neural
    networks and GPT)."""
    from dataclasses import replace

    loaded = config if isinstance(config, LoadedConfig) else load_config(config, overrides)
    result = train(loaded, **options)
    cfg = loaded.config
    compressible = "compress" in getattr(family_for(cfg.model.type), "supports", ())
    from foundry.training.distributed import is_main  # under torchrun: rank 0 compresses

    if "compress" in cfg.model_fields_set and compressible and is_main():
        from foundry.compression import compress

        compressed = compress(result.model_ref, cfg.compress, quiet=options.get("quiet", False))
        result = replace(result, compression=compressed)
    return result
