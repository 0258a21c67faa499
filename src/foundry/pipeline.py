"""`foundry train`: config → data → preprocessing → model → training → evaluation → registry.

Read top to bottom; each step is a call into the package that owns it.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from foundry.config import LoadedConfig, dump_config, load_config
from foundry.config.schema import FoundryConfig, SplitConfig
from foundry.console import Reporter
from foundry.errors import ConfigError, DataError, TrainError


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


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    pii: dict[str, Any] | None = None
    """What `data.pii` found where (None when scanning is off)."""
    scrubber: Any = None
    """The fitted `PIIScrubber`; its state goes into the package for prediction."""

    def evaluation(self, name: str) -> tuple[pd.DataFrame, str]:
        """The split `evaluate.split` names and its name; when it is empty, the first
        non-empty of val and train (what training evaluated on, and so the compress
        stage and the report too)."""
        frame = {"test": self.test, "val": self.val, "train": self.train}[name]
        if len(frame) == 0:
            frame, name = (self.val, "val") if len(self.val) else (self.train, "train")
        return frame, name


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
    if cfg.model.type == "gpt":  # a language model trained from scratch on a corpus
        from foundry.lm.gpt_pipeline import train_gpt

        return train_gpt(loaded, **options, on_epoch_end=on_epoch_end, register=register)
    if cfg.model.type == "hf":  # a pretrained Hugging Face model, fine-tuned
        from foundry.lm.hf_pipeline import train_hf

        return train_hf(loaded, **options, on_epoch_end=on_epoch_end, register=register)

    import torch

    from foundry.data import Preprocessor, fingerprint
    from foundry.evaluation import compute_metrics
    from foundry.evaluation.trust import assess
    from foundry.models import build_model
    from foundry.predictor import Predictor
    from foundry.training import fit, n_outputs_for

    quiet = quiet or not distributed.is_main()  # rank 0 alone reports a distributed run
    say = Reporter(quiet=quiet)
    started = time.perf_counter()

    splits, resolved = load_splits(loaded, say)
    # rank 0 alone: every rank reads the same rows and would print the same warnings
    leakage = check_leakage(cfg, splits, resolved, say) if distributed.is_main() else None
    image_columns = [f.name for f in resolved.inputs if f.type == "image"]
    data_fingerprint = fingerprint(
        pd.concat([splits.train, splits.val, splits.test], ignore_index=True),
        image_columns=image_columns,
        base_dir=loaded.base_dir,
    )
    say.info(
        f"features: {len(resolved.inputs)} inputs → target '{resolved.target}' "
        f"({resolved.target_type}); rows train/val/test = "
        f"{len(splits.train)}/{len(splits.val)}/{len(splits.test)}"
    )

    preprocessor = Preprocessor.fit(splits.train, resolved, base_dir=loaded.base_dir)
    train_df = preprocessor.prepare(splits.train)
    train_enc = preprocessor.transform(train_df)
    val_enc = preprocessor.transform(splits.val) if len(splits.val) else None
    task, schema = preprocessor.task, preprocessor.schema

    n_outputs = n_outputs_for(cfg.train.loss, task)
    torch.manual_seed(cfg.train.seed)  # weights are initialised from this seed
    model = build_model(cfg.model, schema, n_outputs)
    fixed_layers: list[str] = []
    if cfg.train.privacy is not None:
        from foundry.training.privacy import make_private_model

        model, fixed_layers = make_private_model(model)
        for change in fixed_layers:
            say.warn(f"differential privacy: {change} (Opacus cannot train the original)")

    # one run directory, which rank 0 of a distributed run picks and alone writes
    out_dir = Path(distributed.from_main(lambda: str(run_directory(loaded, run_dir, resume))))
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text(json.dumps(dump_config(cfg), indent=2))
    say.info(f"run directory: {out_dir}")

    fitted = fit(
        model,
        train_enc,
        val_enc,
        cfg.train,
        task,
        out_dir,
        n_outputs=n_outputs,
        resume=resume,
        progress=progress and not quiet,
        augment=image_augmenter(cfg, resolved),
        metric_fn=lambda y, out: compute_metrics(task, y, out),
        log=None if quiet else say.info,
        on_epoch_end=on_epoch_end,
    )
    if not distributed.is_main():  # rank 0 evaluates and registers; the others get
        return TrainResult("", out_dir, {}, fitted.history, fitted.best_epoch)  # its result

    eval_df, eval_name = splits.evaluation(cfg.evaluate.split)
    if eval_name != cfg.evaluate.split:
        say.warn(f"evaluate.split '{cfg.evaluate.split}' is empty; evaluating on {eval_name}")
    # The splits are scrubbed already, so this in-memory predictor has no scrubber.
    predictor = Predictor(model, preprocessor, task, {"features": resolved.to_dict()}, cfg.name)
    assessment = assess(predictor, splits.val, eval_df, cfg, say)
    metrics = assessment.metrics
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    manifest = build_manifest(
        cfg, resolved, preprocessor, n_outputs, splits, data_fingerprint, fitted
    )
    # where relative data paths start: `foundry compress` reads the same splits again
    manifest["data"]["base_dir"] = str(loaded.base_dir)
    manifest["training"]["run_dir"] = str(out_dir)  # curves for `foundry report`, dashboard
    if splits.pii is not None:
        manifest["pii"] = splits.pii
        manifest["pii_scrubber"] = splits.scrubber.state_dict()
    if leakage is not None:
        manifest["leakage"] = leakage
    if fitted.privacy is not None:
        manifest["privacy"] = {**fitted.privacy, "fixed_layers": fixed_layers}
        say.info(
            f"differential privacy: ε = {fitted.privacy['epsilon']:.3f} "
            f"(δ = {fitted.privacy['delta']:.2g}) spent"
        )
    manifest.update(assessment.sections)
    ref, path = store_package(
        cfg,
        out_dir,
        register=register,
        say=say,
        weights=fitted.state_dict,
        manifest=manifest,
        metrics=metrics,
        # registered, the card is rendered from the manifest; a trial's package needs one
        card=None if register else model_card(cfg, manifest, metrics),
    )
    say.metrics(metrics, task, title=f"{ref or cfg.name} — {cfg.evaluate.split} metrics")
    from foundry.economics import training_cost_line

    say.info(training_cost_line(fitted.seconds, cfg.cost, machines=distributed.machines()))
    return TrainResult(
        model_ref=ref,
        run_dir=out_dir,
        metrics=metrics,
        history=fitted.history,
        best_epoch=fitted.best_epoch,
        seconds=time.perf_counter() - started,
        package_path=path,
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


def load_splits(loaded: LoadedConfig, say: Reporter) -> tuple[Splits, Any]:
    """Read the data file(s), infer feature types, and split: explicit val/test files win
    over fractions. Classification targets are split stratified."""
    from foundry.data import infer_features, read_table, split_frame
    from foundry.data.preprocess import check_numbers

    data, target = loaded.config.data, loaded.config.features.target
    df = read_table(loaded.resolve(data.path), data.format, data.delimiter)
    val = (
        read_table(loaded.resolve(data.val_path), data.format, data.delimiter)
        if data.val_path
        else None
    )
    test = (
        read_table(loaded.resolve(data.test_path), data.format, data.delimiter)
        if data.test_path
        else None
    )
    split = data.split
    # Fractions of the splits that come from explicit files fold back into train.
    fractions = {
        "train": split.train
        + (split.val if val is not None else 0)
        + (split.test if test is not None else 0),
        "val": 0.0 if val is not None else split.val,
        "test": 0.0 if test is not None else split.test,
    }
    say.info(f"data: {data.path} ({len(df)} rows, {len(df.columns)} columns)")
    df, val, test, pii, scrubber = scrub_pii(loaded.config, df, val, test, say)
    # Types only (no statistics are fitted here), so looking at every row leaks nothing.
    resolved = infer_features(df, loaded.config.features)
    # before the split shuffles the rows, so a bad value is named by its row in the file
    for frame, path in ((df, data.path), (val, data.val_path), (test, data.test_path)):
        if frame is not None:
            check_numbers(frame, resolved, str(path))
    stratify_on = target if resolved.target_type != "number" else None
    train_df, val_df, test_df = split_frame(
        df, SplitConfig(**{**split.model_dump(), **fractions}), stratify_on
    )
    for name, frame in (("val_path", val), ("test_path", test)):
        if frame is not None and list(frame.columns) != list(df.columns):
            missing = sorted(set(df.columns) - set(frame.columns))
            if missing:
                raise DataError(f"data.{name}: columns {missing} of data.path are missing there")
    splits = Splits(
        train=train_df,
        val=val if val is not None else val_df,
        test=test if test is not None else test_df,
        pii=pii,
        scrubber=scrubber,
    )
    return splits, resolved


def scrub_pii(
    cfg: FoundryConfig,
    df: pd.DataFrame,
    val: pd.DataFrame | None,
    test: pd.DataFrame | None,
    say: Reporter,
) -> tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame | None, dict | None, Any]:
    """`data.pii`: find personal data in the raw tables before anything is fitted on them,
    mask / hash / drop it, and report where it was. The scrubber is fitted on the
    training file and applied unchanged to explicit val / test files."""
    from foundry.data.scrub import PIIScrubber, format_report, merge_reports

    config = cfg.data.pii
    if not config.enabled:
        return df, val, test, None, None
    target = cfg.features.target
    keep = list(cfg.evaluate.fairness.sensitive_features)
    scrubber = PIIScrubber.fit(df, config, target=target, keep=keep)
    listed = {f.name for f in cfg.features.inputs or []}
    for ident in scrubber.identifier_columns:
        if ident["action"] == "drop" and ident["column"] in listed:
            raise ConfigError(
                f"features.inputs lists '{ident['column']}', an identifier column "
                f"({ident['reason']}) that data.pii.identifiers: drop removes",
                hint="remove it from features.inputs; to use it anyway, list it in "
                "data.pii.keep_columns (or set data.pii.identifiers to 'hash' or 'report')",
            )
    df, report = scrubber.scrub(df)
    reports = [report]
    if val is not None:
        val, val_report = scrubber.scrub(val)
        reports.append(val_report)
    if test is not None:
        test, test_report = scrubber.scrub(test)
        reports.append(test_report)
    merged = merge_reports(reports)
    found = bool(merged.get("total") or merged.get("identifier_columns"))
    for line in format_report(merged):
        (say.warn if found else say.info)(line)
    return df, val, test, merged, scrubber


def check_leakage(
    cfg: FoundryConfig, splits: Splits, resolved: Any, say: Reporter
) -> dict[str, Any] | None:
    """`features.leakage`: every column of the (scrubbed) training and validation rows
    checked for target leakage; a leak that is still an input is a loud warning unless
    `allow` lists it. Returns the manifest's `leakage` section (None when off)."""
    from foundry.data.leakage import find_leakage

    settings = cfg.features.leakage
    if not settings.enabled:
        return None
    frame = pd.concat([splits.train, splits.val], ignore_index=True)
    inputs = set(resolved.input_names)
    columns = []
    for leak in find_leakage(
        frame, resolved.target, target_type=resolved.target_type,
        content=[f.name for f in resolved.inputs if f.type in ("text", "image")],
        threshold=settings.threshold, seed=cfg.data.split.seed,
    ):  # fmt: skip
        used, allowed = leak["column"] in inputs, leak["column"] in settings.allow
        columns.append({**leak, "input": used, "allowed": allowed})
        if used and not allowed:
            say.warn(
                f"LEAKAGE: input '{leak['column']}' gives the target away: {leak['reason']}. "
                "Metrics will look far better than the model can do on new cases. Remove "
                "it from features.inputs (or add it to features.exclude); if its value is "
                "known before the outcome, list it in features.leakage.allow"
            )
        else:
            why = "allowed by features.leakage.allow" if allowed else "not an input"
            say.info(f"leakage: column '{leak['column']}' ({why}): {leak['reason']}")
    return {"threshold": settings.threshold, "columns": columns}


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


def image_augmenter(cfg: FoundryConfig, resolved: Any):
    """The training-batch hook for image augmentation, or None when nothing is enabled."""
    from foundry.data import augment_images

    images = [
        f
        for f in resolved.inputs
        if f.type == "image"
        and (f.image.augment.flip or f.image.augment.crop or f.image.augment.rotate)
    ]
    if not images:
        return None

    def augment(batch: dict, generator) -> dict:
        out = dict(batch)
        for f in images:
            key = f"image:{f.name}"
            out[key] = augment_images(batch[key], f.image.augment, generator)
        return out

    return augment


def build_manifest(
    cfg: FoundryConfig,
    resolved: Any,
    preprocessor: Any,
    n_outputs: int,
    splits: Splits,
    data_fingerprint: str,
    fitted: Any,
) -> dict[str, Any]:
    import torch

    import foundry
    from foundry.training import distributed

    return {
        "format_version": 1,
        "config": dump_config(cfg),
        "features": resolved.to_dict(),
        "preprocessing": preprocessor.state_dict(),
        "schema": preprocessor.schema.to_dict(),
        "task": preprocessor.task.to_dict(),
        "n_outputs": n_outputs,
        "fingerprint": data_fingerprint,
        "data": {
            "path": cfg.data.path,
            "rows": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        },
        "training": {
            "best_epoch": fitted.best_epoch,
            "epochs_run": fitted.epochs_run,
            "seconds": round(fitted.seconds, 3),
            # what the run occupied: its cost is seconds x machines x the hourly price
            "processes": distributed.world_size(),
            "machines": distributed.machines(),
            "stopped_early": fitted.stopped_early,
            "best_metrics": fitted.best_metrics,
        },
        "versions": {
            "foundry": foundry.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "created_at": datetime.now(timezone.utc).isoformat(),
    }


def model_card(cfg: FoundryConfig, manifest: dict[str, Any], metrics: dict[str, Any]) -> str:
    """A short human-readable card; the trust issue extends it."""
    rows = manifest["data"]["rows"]
    lines = [
        f"# {cfg.name}",
        "",
        cfg.description or "_No description given (set `description` in the config)._",
        "",
        "## Data",
        f"- source: `{cfg.data.path}`",
        f"- fingerprint: `{manifest['fingerprint']}`",
        f"- rows: train {rows['train']}, val {rows['val']}, test {rows['test']}",
        f"- target: `{manifest['features']['target']}` ({manifest['task']['task']})",
        "- inputs: "
        + ", ".join(f"{f['name']} ({f['type']})" for f in manifest["features"]["inputs"]),
        "",
        "## Model",
        f"- architecture: `{cfg.model.type}`",
        f"- trained {manifest['training']['epochs_run']} epochs "
        f"(best {manifest['training']['best_epoch']}) in {manifest['training']['seconds']:.1f} s",
        "",
        f"## Metrics ({cfg.evaluate.split} split)",
    ]
    for key, value in metrics.items():
        if isinstance(value, float):
            lines.append(f"- {key}: {value:.4f}")
    return "\n".join(lines) + "\n"


def run(
    config: str | Path | dict[str, Any] | LoadedConfig,
    overrides: list[str] | None = None,
    **options: Any,
) -> TrainResult:
    """Every stage the config describes: train → evaluate → register, then compress when
    the config has a `compress:` section (tabular, image, text and GPT models)."""
    from dataclasses import replace

    loaded = config if isinstance(config, LoadedConfig) else load_config(config, overrides)
    result = train(loaded, **options)
    cfg = loaded.config
    compressible = not cfg.is_language_model or cfg.model.type == "gpt"
    from foundry.training.distributed import is_main  # under torchrun: rank 0 compresses

    if "compress" in cfg.model_fields_set and compressible and is_main():
        from foundry.compression import compress

        compressed = compress(result.model_ref, cfg.compress, quiet=options.get("quiet", False))
        result = replace(result, compression=compressed)
    return result
