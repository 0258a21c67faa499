"""`foundry tune`: hyper-parameter search over any config key, with Optuna.

    result = tune("penguins.yaml")        # the config's `tune:` section says what to search
    result.best_params, result.model_ref  # {"train.optimizer.lr": 0.0042, ...}, "penguins:4"

Read top to bottom: the config and its `tune:` section are resolved, the study is opened
(or joined) in its storage, trials run (here, in worker processes, or both), and then the
trials table and the best config are written and the best trial's model is registered.

Each trial is `foundry.pipeline.train` of the config with the trial's params applied as
`key=value` overrides, `register=False` (its package stays in its run directory) and an
`on_epoch_end` hook that reports the validation metric to Optuna and raises
`optuna.TrialPruned` when the pruner says so. The best trial's package is registered as
it is, without training again, when its run directory is on this machine; a best trial
run on another machine is trained once more here from the best config (same seed, so
the same weights on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundry.config import LoadedConfig, dump_config
from foundry.config.load import read_yaml, validate_config
from foundry.config.schema import FoundryConfig, HFModelConfig, TuneConfig
from foundry.console import Reporter
from foundry.errors import ConfigError, FoundryError, ModelError

__all__ = ["TuneResult", "tune"]


@dataclass(frozen=True)
class TuneResult:
    """What `foundry.tuning.tune` returns."""

    study_name: str
    storage: str
    """The study's storage URL (password hidden)."""
    output_dir: Path
    """trials.csv / .json / .md, best.yaml, study.db (default storage) and trials/."""
    metric: str
    """The per-epoch metric optimised, e.g. `val_loss`."""
    direction: str
    """`minimize` or `maximize`."""
    trials: list[dict[str, Any]]
    """Every trial of the study (all processes): trial, state, value, seconds, params,
    best_epoch, run_dir, error."""
    best_trial: int | None = None
    """Number of the best completed trial; None when none completed (or a worker)."""
    best_value: float | None = None
    best_params: dict[str, Any] = field(default_factory=dict)
    """`{dotted config key: value}` of the best trial."""
    best_config: Path | None = None
    """best.yaml: the config with the best params applied and no tune section."""
    model_ref: str | None = None
    """Registry reference of the best trial's model."""
    seconds: float = 0.0


@dataclass(frozen=True)
class Plan:
    """Everything resolved before the first trial."""

    raw: dict[str, Any]
    """The config as written (overrides applied), without its tune section."""
    base_dir: Path
    config: FoundryConfig
    settings: TuneConfig
    study_name: str
    storage: str
    output_dir: Path
    metric: str
    direction: str


def tune(
    config: str | Path | dict[str, Any] | LoadedConfig,
    overrides: list[str] | None = None,
    *,
    n_trials: int | None = None,
    timeout: float | None = None,
    jobs: int | None = None,
    storage: str | None = None,
    study_name: str | None = None,
    worker: bool = False,
    worker_index: int = 0,
    threads: int | None = None,
    quiet: bool = False,
) -> TuneResult:
    """Search the config's `tune.params`; returns the trials and the best one.

    `n_trials`, `timeout`, `jobs`, `storage` and `study_name` replace the `tune:`
    settings of the same names. `worker=True` only runs trials in the shared study (no
    tables, best config or registration): what `--jobs` starts, and what extra machines
    run. `worker_index` offsets the sampler seed so workers draw different trials;
    `threads` sets torch's CPU threads for this process's trials.
    """
    from foundry.extras import require

    optuna = require("tune", "optuna", "hyper-parameter search (foundry tune)")

    from foundry.tuning.storage import open_storage

    started = time.perf_counter()
    say = Reporter(quiet=quiet)
    plan = _plan(
        config,
        overrides,
        {"n_trials": n_trials, "timeout": timeout, "n_jobs": jobs, "study_name": study_name},
        storage,
    )
    settings = plan.settings
    rdb = open_storage(plan.storage)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported below instead
    try:
        study = _open_study(plan, rdb, worker_index)
        if not worker:
            say.info(
                f"study '{plan.study_name}' in {_safe_url(plan.storage)}: {settings.sampler} "
                f"sampler, {settings.pruner.type} pruner, {plan.direction} {plan.metric}"
            )
        jobs_here = 1 if worker else settings.n_jobs
        if jobs_here == 1:
            _optimize(study, plan, settings.n_trials, threads, say)
        else:
            _optimize_in_parallel(study, plan, jobs_here, worker_index, quiet, say)
        if worker:
            return _result(plan, study, started)
        return _finish(plan, study, started, say)
    finally:
        optuna.logging.set_verbosity(verbosity)
        rdb.engine.dispose()  # no pooled connection outlives the call


# ---------------------------------------------------------------------------- plan


def _plan(
    config: str | Path | dict[str, Any] | LoadedConfig,
    overrides: list[str] | None,
    options: dict[str, Any],
    storage: str | None,
) -> Plan:
    from foundry.config import apply_override
    from foundry.training.early_stopping import resolve_mode
    from foundry.tuning.space import check_space

    if isinstance(config, LoadedConfig):
        raw, base_dir = dump_config(config.config), config.base_dir
    elif isinstance(config, dict):
        raw, base_dir = copy.deepcopy(config), Path.cwd()
    else:
        raw, base_dir = read_yaml(Path(config)), Path(config).resolve().parent
    for item in overrides or []:
        apply_override(raw, item)
    section = raw.get("tune")
    if not isinstance(section, dict):
        raise ConfigError(
            "the config has no tune: section",
            hint="add tune.params, e.g. train.optimizer.lr: {type: log_float, low: 1e-4, "
            "high: 1e-1}; see docs/CONFIG.md",
        )
    # Command-line settings go in before validation, so they are checked like the rest.
    raw["tune"] = {**section, **{k: v for k, v in options.items() if v is not None}}
    cfg = validate_config(raw, origin=str(config) if isinstance(config, str | Path) else "config")
    settings = cfg.tune
    assert settings is not None
    if isinstance(cfg.model, HFModelConfig) and cfg.model.task == "embedding":
        raise ConfigError(
            "model.task embedding trains nothing (the pretrained encoder is packaged as it "
            "is), so there is nothing to tune",
            hint="tune a classification, regression or causal_lm model; package an "
            "embedder with foundry train",
        )
    raw = {k: v for k, v in raw.items() if k != "tune"}
    check_space(raw, settings.params)

    study_name = settings.study_name or cfg.name
    folder = "tune-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)
    output_dir = LoadedConfig(cfg, base_dir).resolve(cfg.output_dir) / folder
    assert output_dir is not None
    metric = settings.metric or "val_loss"
    if not metric.startswith("val_") and metric != "train_loss":
        metric = f"val_{metric}"  # the per-epoch records name validation metrics val_<name>
    direction = settings.direction
    if direction == "auto":
        direction = "minimize" if resolve_mode(metric) == "min" else "maximize"
    return Plan(
        raw=raw,
        base_dir=base_dir,
        config=cfg,
        settings=settings,
        study_name=study_name,
        storage=storage or settings.storage or f"sqlite:///{(output_dir / 'study.db').as_posix()}",
        output_dir=output_dir.resolve(),
        metric=metric,
        direction=direction,
    )


# ---------------------------------------------------------------------------- study


def _open_study(plan: Plan, storage: Any, worker_index: int) -> Any:
    """Create the study, or load it when another process created it first."""
    import optuna

    from foundry.tuning.space import check_compatible

    for attempt in range(5):
        try:
            study = optuna.create_study(
                storage=storage,
                study_name=plan.study_name,
                direction=plan.direction,
                sampler=_sampler(plan, worker_index),
                pruner=_pruner(plan),
                load_if_exists=True,  # two processes started at once share one study
            )
            break
        except optuna.exceptions.StorageInternalError:  # SQLite busy under contention
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))
    check_compatible(study, plan.settings.params, _safe_url(plan.storage))
    if study.direction.name.lower() != plan.direction:
        raise ConfigError(
            f"tune.direction: study '{plan.study_name}' in {_safe_url(plan.storage)} already "
            f"exists and maximises/minimises the other way ({study.direction.name.lower()})",
            hint="set tune.study_name to start a new study",
        )
    return study


def _sampler(plan: Plan, worker_index: int) -> Any:
    """Seeded from `tune.seed` or `train.seed`, plus the worker index."""
    import optuna

    from foundry.tuning.space import TrialSeededRandomSampler, TrialSeededTPESampler, grid_space

    seed = plan.settings.seed if plan.settings.seed is not None else plan.config.train.seed
    seed += worker_index
    if plan.settings.sampler == "grid":
        return optuna.samplers.GridSampler(grid_space(plan.settings.params), seed=seed)
    if plan.settings.sampler == "random":
        return TrialSeededRandomSampler(seed)
    return TrialSeededTPESampler(seed)


def _pruner(plan: Plan) -> Any:
    import optuna

    p = plan.settings.pruner
    if p.type == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs
        )
    if p.type == "hyperband":  # budgets in epochs: min_epochs .. the epochs trials run
        epochs = trial_epochs(plan.config)
        return optuna.pruners.HyperbandPruner(
            min_resource=min(p.min_epochs, epochs),
            max_resource=epochs,
            reduction_factor=p.reduction_factor,
        )
    return optuna.pruners.NopPruner()


def trial_epochs(cfg: FoundryConfig) -> int:
    """Epochs a trial of `cfg` trains: `train.epochs`, except that Hugging Face fine-tuning
    fills its own default (3) when the config leaves the key unset."""
    if isinstance(cfg.model, HFModelConfig):
        from foundry.lm.hf_finetune import finetune_defaults

        return finetune_defaults(cfg.train, lora=cfg.model.lora is not None)[0].epochs
    return cfg.train.epochs


# --------------------------------------------------------------------------- trials


def _optimize(
    study: Any, plan: Plan, n_trials: int | None, threads: int | None, say: Reporter
) -> None:
    """Run trials in this process until `n_trials`, the timeout, or the grid's end."""
    import torch

    from foundry.progress import progress_bar
    from foundry.tuning.trial import run_trial, trial_line

    def finished(_study: Any, trial: Any) -> None:
        say.info(trial_line(trial, plan))
        bar.advance()

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        with progress_bar(
            f"tuning {plan.study_name}", n_trials, unit="trials",
            enabled=False if say.quiet else None,
        ) as bar:
            study.optimize(
                lambda trial: run_trial(trial, plan, say),
                n_trials=n_trials,
                timeout=plan.settings.timeout,
                callbacks=[finished],
            )
    finally:
        torch.set_num_threads(previous)


def _optimize_in_parallel(
    study: Any, plan: Plan, jobs: int, worker_index: int, quiet: bool, say: Reporter
) -> None:
    """This process runs the first share of the trials; `jobs - 1` worker processes run
    the rest, all in the same study."""
    from foundry.tuning.results import write_config
    from foundry.tuning.workers import available_cores, run_workers, split_trials, wait_workers

    shares = split_trials(plan.settings.n_trials, jobs)
    threads = max(1, available_cores() // jobs)
    say.info(
        f"{jobs} processes × {threads} torch thread(s); trials per process: "
        f"{', '.join('until done' if s is None else str(s) for s in shares)}"
    )
    # Workers read the resolved config (overrides applied, paths rebased) from here.
    tune_section = plan.settings.model_dump(mode="json", exclude={"storage"})
    config_path = write_config(
        plan.output_dir / "tune-config.yaml",
        {**plan.raw, "tune": {**tune_section, "n_jobs": 1}},
        plan.base_dir,
        header="written by foundry tune --jobs for its worker processes",
    )
    procs = run_workers(
        config_path,
        shares[1:],
        storage=plan.storage,
        study_name=plan.study_name,
        threads=threads,
        timeout=plan.settings.timeout,
        quiet=quiet,
        first_index=worker_index + 1,
    )
    try:
        if shares[0] != 0:
            _optimize(study, plan, shares[0], threads, say)
    except BaseException:
        for p in procs:
            p.terminate()
        raise
    wait_workers(procs)


# --------------------------------------------------------------------------- results


def _result(plan: Plan, study: Any, started: float, **best: Any) -> TuneResult:
    from foundry.tuning.results import trial_rows

    return TuneResult(
        study_name=plan.study_name,
        storage=_safe_url(plan.storage),
        output_dir=plan.output_dir,
        metric=plan.metric,
        direction=plan.direction,
        trials=trial_rows(study.get_trials(deepcopy=False), plan.settings.params),
        seconds=time.perf_counter() - started,
        **best,
    )


def _finish(plan: Plan, study: Any, started: float, say: Reporter) -> TuneResult:
    """The trials table, best.yaml and the registered best model."""
    from optuna.trial import TrialState

    from foundry.tuning.results import write_config, write_tables
    from foundry.tuning.space import apply_params, config_values

    result = _result(plan, study, started)
    write_tables(
        plan.output_dir,
        result.trials,
        list(plan.settings.params),
        {
            "study_name": plan.study_name,
            "storage": result.storage,
            "metric": plan.metric,
            "direction": plan.direction,
        },
    )
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        say.warn(f"no trial of study '{plan.study_name}' completed; nothing to register")
        return result
    best = study.best_trial
    params = config_values(plan.settings.params, best.params)
    best_raw = apply_params(plan.raw, params)
    best_path = write_config(
        plan.output_dir / "best.yaml",
        best_raw,
        plan.base_dir,
        header=(
            f"best of study '{plan.study_name}': trial {best.number}, "
            f"{plan.metric} = {best.value:.6g}\n"
            + "".join(f"{k}: {v}\n" for k, v in params.items())
        ),
    )
    model_ref = _register_best(plan, study, best, params, best_raw, say)
    say.info(
        f"best: trial {best.number}, {plan.metric} = {best.value:.4g}; config {best_path}; "
        f"registered {model_ref}"
    )
    return _result(
        plan,
        study,
        started,
        best_trial=best.number,
        best_value=best.value,
        best_params=params,
        best_config=best_path,
        model_ref=model_ref,
    )


def _register_best(
    plan: Plan,
    study: Any,
    best: Any,
    params: dict[str, Any],
    best_raw: dict[str, Any],
    say: Reporter,
) -> str:
    """Register the best trial's package (once per study, whichever process gets here
    first); retrain the best config when its package is on another machine."""
    from foundry.pipeline import train
    from foundry.registry import Registry, read_package

    with contextlib.closing(Registry()) as registry:  # its database engine, closed after
        done_key = f"model_ref:trial-{best.number}"
        if done_key in study.user_attrs:
            try:
                return registry.resolve(study.user_attrs[done_key]).ref
            except ModelError:
                pass  # registered into another store: register it in this one as well
        package = Path(best.user_attrs.get("package") or "")
        if not (package / "model.safetensors").is_file():
            say.info(
                f"trial {best.number} ran on {best.user_attrs.get('host')}: training the "
                "best config once more here to register it"
            )
            run_dir = plan.output_dir / "trials" / f"trial-{best.number:04d}-retrained"
            shutil.rmtree(run_dir, ignore_errors=True)
            loaded = LoadedConfig(validate_config(best_raw, origin="best config"), plan.base_dir)
            package = train(
                loaded, run_dir=run_dir, progress=False, quiet=True, register=False
            ).package_path
        try:
            stored = read_package(package)
        except FoundryError as exc:
            raise ModelError(f"cannot register the best trial {best.number}: {exc}") from None
        tuning = {
            "study": plan.study_name,
            "storage": _safe_url(plan.storage),
            "trial": best.number,
            "params": params,
            "metric": plan.metric,
            "direction": plan.direction,
            "value": best.value,
            "trials": len(study.get_trials(deepcopy=False)),
        }
        files = _extra_files(package)
        record = registry.register(
            plan.config.name,
            weights=stored.weights,
            manifest={**stored.manifest, "tuning": tuning},
            metrics=stored.metrics,
            # language models bring their own card, as when `foundry train` registers
            # them; the registry renders the others' from the manifest, tuning included
            card=stored.card if files else None,
            description=plan.config.description,
            files=files,
            run_dir=package.parent,  # the trial's run folder: curves for report, dashboard
        )
        study.set_user_attr(done_key, record.ref)
        (package.parent / "REGISTERED").write_text(record.ref + "\n")
        return record.ref


def _extra_files(package: Path) -> dict[str, Path]:
    """The package's model-specific files (a GPT's tokenizer.json, a Hugging Face model's
    hf/ or adapter/ folder): without them a registered language model cannot load. The
    registry writes card.json itself."""
    from foundry.registry.refs import PACKAGE_FILES

    standard = {*PACKAGE_FILES, "card.json"}
    return {p.name: p for p in sorted(package.iterdir()) if p.name not in standard}


def _safe_url(url: str) -> str:
    # imported here: foundry.db brings SQLAlchemy, which `foundry --help` need not load
    from foundry.db import safe_url

    return safe_url(url)
