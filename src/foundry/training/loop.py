"""`fit`: the training loop, meant to be read top to bottom.

setup (device, precision, loss, optimizer, schedule, seeds) → resume? → for each epoch:
shuffle, train on slices of pre-built tensors, validate, log, keep the best weights,
checkpoint, maybe stop early → load the best weights into the model.

Speed matters as much as clarity here: an epoch should cost what a hand-written
`for i in range(0, n, bs)` loop costs. So each batch is one index operation per input
tensor (no DataLoader, no per-row work), and nothing reads a GPU value back per batch:
the loss is summed as a tensor and read once per epoch.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text
from torch import Tensor, nn

from foundry.config.schema import TrainConfig
from foundry.data.schema import TaskInfo
from foundry.errors import TrainError
from foundry.training.checkpoint import (
    capture_rng,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
)
from foundry.training.early_stopping import EarlyStopping
from foundry.training.losses import LossFn, build_loss
from foundry.training.optim import build_optimizer, build_scheduler

__all__ = ["AugmentFn", "FitResult", "MetricFn", "fit"]

Encoded = dict[str, Tensor]
AugmentFn = Callable[[Encoded, torch.Generator], Encoded]
"""`augment(inputs, generator) -> inputs`: changes a training batch (inputs only, no
"target"); draws its randomness from `generator` (on the training device)."""
MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]
"""`metric_fn(y_true [N], outputs [N, n_outputs]) -> {name: value}` on the validation
split. `y_true` is the Encoded "target" (class index, or the standardised number) and
`outputs` the raw model outputs."""


@dataclass(frozen=True)
class FitResult:
    history: list[dict[str, Any]]
    """One dict per epoch (the lines of metrics.jsonl): epoch, train_loss, val_loss,
    val_<metric>..., lr, seconds."""
    best_epoch: int
    """1-based epoch whose weights were kept."""
    best_metrics: dict[str, Any]
    """`history[best_epoch - 1]`."""
    stopped_early: bool
    state_dict: dict[str, Tensor]
    """The best epoch's weights, on CPU (also loaded into the model)."""
    seconds: float
    """Wall time of this call (a resumed run counts only its own part)."""
    epochs_run: int
    """Epochs completed in total, including those before a resume."""


def fit(
    model: nn.Module,
    train: Encoded,
    val: Encoded | None,
    config: TrainConfig,
    task: TaskInfo,
    run_dir: Path | str,
    *,
    n_outputs: int,
    resume: bool = False,
    progress: bool = True,
    augment: AugmentFn | None = None,
    metric_fn: MetricFn | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train `model` on `train` (an Encoded dict with "target"), validating on `val`.

    Writes `run_dir/metrics.jsonl` (one JSON line per epoch) and `run_dir/checkpoint/`
    (after every epoch). `resume=True` continues from that checkpoint and ends with the
    same weights as a run that was never interrupted. Early stopping watches
    `config.early_stopping.metric`, or `train_loss` when there is no validation data.

    `metric_fn` computes the validation metrics (each is logged as `val_<name>`; values
    that are not single numbers are left out); without it: `val_accuracy` for
    classification, `val_rmse` (original units) for regression. `log` receives the
    per-epoch lines instead of the console; `progress=False` prints nothing.
    `on_epoch_end(record)` is called after each epoch's checkpoint is written.

    The caller seeds and builds the model; the model's weights end as the best epoch's.
    Raises `TrainError` when the loss diverges, the device or precision is unavailable,
    the monitored metric does not exist, or there is nothing to resume.
    """
    with _torch_settings(config):
        return _fit(
            model,
            train,
            val,
            config,
            task,
            Path(run_dir),
            n_outputs=n_outputs,
            resume=resume,
            progress=progress,
            augment=augment,
            metric_fn=metric_fn,
            log=log,
            on_epoch_end=on_epoch_end,
        )


def _fit(
    model: nn.Module,
    train: Encoded,
    val: Encoded | None,
    config: TrainConfig,
    task: TaskInfo,
    run_dir: Path,
    *,
    n_outputs: int,
    resume: bool,
    progress: bool,
    augment: AugmentFn | None,
    metric_fn: MetricFn | None,
    log: Callable[[str], None] | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> FitResult:
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- data: moved to the device once; a batch is one index op per tensor
    device = _resolve_device(config.device)
    model.to(device)
    input_keys = [k for k in train if k != "target"]
    train = {k: v.to(device) for k, v in train.items()}
    if val is not None and len(val["target"]) == 0:
        val = None
    if val is not None:
        val = {k: v.to(device) for k, v in val.items()}
    n_rows, batch_size = len(train["target"]), config.batch_size
    if n_rows == 0:
        raise TrainError("the training split has no rows")
    n_batches = math.ceil(n_rows / batch_size)
    if n_rows > 1 and n_rows % batch_size == 1:
        n_batches -= 1  # BatchNorm cannot train on a last batch of one row: skip it
    total_steps = config.epochs * n_batches

    # ---- what is optimised, and how
    autocast, scaler = _precision(config.precision, device)
    loss_fn = build_loss(config.loss, task, n_outputs)
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = build_scheduler(optimizer, config.scheduler, n_batches, total_steps)
    es = config.early_stopping
    monitor = es.metric if val is not None else "train_loss"
    stopper = EarlyStopping(monitor, es.mode, es.patience, es.min_delta)

    # ---- randomness: the global RNG (dropout) plus one generator each for shuffling
    # and augmentation, so that adding augmentation does not change the batch order
    torch.manual_seed(config.seed)
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator(device).manual_seed(config.seed + 1),
    }

    bar = _EpochBar(enabled=progress, n_batches=n_batches, epochs=config.epochs)
    say = log if log is not None else (bar.console.print if progress else None)

    # ---- state carried from epoch to epoch (and through checkpoints)
    history: list[dict[str, Any]] = []
    best_state: dict[str, Tensor] | None = None
    best_epoch, step, stopped_early = 0, 0, False
    if resume:
        ckpt = load_checkpoint(run_dir, model=model, optimizer=optimizer)
        step = ckpt.state["step"]
        scheduler.last_epoch = ckpt.state["scheduler_last_epoch"]
        stopper.load_state_dict(ckpt.state["early_stopping"])
        scaler.load_state_dict(ckpt.state["grad_scaler"])
        history = ckpt.state["history"]
        best_epoch = ckpt.state["best_epoch"]
        stopped_early = ckpt.state["stopped_early"]
        best_state = ckpt.best_state
        restore_rng(ckpt.rng, generators)
        changed = _changed_keys(ckpt.state["train_config"], config.model_dump(mode="json"))
        if changed and say is not None:
            say(f"resuming with changed train settings: {', '.join(changed)}")

    # metrics.jsonl is rewritten from the (restored) history, so no epoch appears twice
    with open(run_dir / "metrics.jsonl", "w", encoding="utf-8") as metrics_file, bar:
        for record in history:
            metrics_file.write(json.dumps(record) + "\n")

        for epoch in range(len(history) + 1, config.epochs + 1):
            if stopped_early:  # also set by a resumed run that had stopped early
                break
            epoch_start = time.perf_counter()

            # ---- train one epoch
            model.train()
            bar.start_epoch(epoch)
            perm = torch.randperm(n_rows, generator=generators["shuffle"]).to(device)
            batch_losses: list[Tensor] = []  # read once per epoch: no GPU→CPU sync per batch
            for b in range(n_batches):
                idx = perm[b * batch_size : (b + 1) * batch_size]
                inputs = {k: train[k][idx] for k in input_keys}
                target = train["target"][idx]
                if augment is not None:
                    inputs = augment(inputs, generators["augment"])

                with autocast():
                    outputs = model(inputs)  # [batch, n_outputs]
                    loss = loss_fn(outputs, target)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()  # the scaler is a no-op unless fp16
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()

                batch_losses.append(loss.detach())
                bar.advance(b + 1)
            step += n_batches

            train_loss = torch.stack(batch_losses).mean().item()
            if not math.isfinite(train_loss):
                raise TrainError(
                    f"training diverged at epoch {epoch}: loss is {train_loss}; "
                    "lower train.optimizer.lr or set train.grad_clip"
                )

            # ---- validate, record
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if val is not None:
                record.update(
                    _validate(
                        model,
                        val,
                        input_keys,
                        loss_fn,
                        autocast,
                        batch_size=4 * batch_size,  # no_grad keeps no activations
                        task=task,
                        metric_fn=metric_fn,
                    )
                )
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - epoch_start
            history.append(record)
            metrics_file.write(json.dumps(record) + "\n")
            metrics_file.flush()

            # ---- early stopping: keep the best weights
            if monitor not in record:
                raise TrainError(
                    f"train.early_stopping.metric is {monitor!r}, which is not computed; "
                    f"available: {', '.join(k for k in record if k not in ('epoch', 'seconds'))}"
                )
            improved = stopper.update(record[monitor])
            if improved or best_state is None:
                best_epoch = epoch
                best_state = _cpu_copy(model.state_dict())
            stopped_early = stopper.should_stop

            save_checkpoint(
                run_dir,
                model=model,
                optimizer=optimizer,
                best_state=best_state,
                rng=capture_rng(generators),
                state={
                    "epoch": epoch,
                    "step": step,
                    "scheduler_last_epoch": scheduler.last_epoch,
                    "early_stopping": stopper.state_dict(),
                    "grad_scaler": scaler.state_dict(),
                    "history": history,
                    "best_epoch": best_epoch,
                    "stopped_early": stopped_early,
                    "train_config": config.model_dump(mode="json"),
                },
            )
            if say is not None:
                say(_format_epoch(record, config.epochs, monitor, improved))
            if on_epoch_end is not None:
                on_epoch_end(record)

    if stopped_early and say is not None:
        say(
            f"stopped early: {monitor} did not improve for {es.patience} epochs; "
            f"keeping epoch {best_epoch}"
        )
    assert best_state is not None  # set by the first epoch, or by the checkpoint
    model.load_state_dict(best_state)
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metrics=history[best_epoch - 1],
        stopped_early=stopped_early,
        state_dict=best_state,
        seconds=time.perf_counter() - started,
        epochs_run=len(history),
    )


# ------------------------------------------------------------------------ validation


def _validate(
    model: nn.Module,
    data: Encoded,
    input_keys: list[str],
    loss_fn: LossFn,
    autocast: Callable[[], AbstractContextManager[Any]],
    *,
    batch_size: int,
    task: TaskInfo,
    metric_fn: MetricFn | None,
) -> dict[str, float]:
    """`val_loss` and `val_<metric>` over the whole of `data`."""
    model.eval()
    n = len(data["target"])
    with torch.no_grad(), autocast():
        chunks = [
            model({k: data[k][i : i + batch_size] for k in input_keys})
            for i in range(0, n, batch_size)
        ]
    outputs = torch.cat(chunks).float()  # [n, n_outputs]
    metrics = {"val_loss": loss_fn(outputs, data["target"]).item()}

    y_true, y_out = data["target"].cpu().numpy(), outputs.cpu().numpy()
    computed = metric_fn(y_true, y_out) if metric_fn else _default_metrics(task, y_true, y_out)
    for name, value in computed.items():
        key = f"val_{name}"
        if isinstance(value, numbers.Real) and key not in metrics:  # skip matrices, lists
            metrics[key] = float(value)
    return metrics


def _default_metrics(task: TaskInfo, y_true: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
    if task.is_classification:
        # one output column is a bce logit (class 1 when > 0), else argmax of logits
        pred = outputs.argmax(1) if outputs.shape[1] > 1 else (outputs[:, 0] > 0)
        return {"accuracy": float(np.mean(pred == y_true))}
    # the target is standardised for training: report the error in original units
    rmse = float(np.sqrt(np.mean((outputs[:, 0] - y_true) ** 2)))
    return {"rmse": rmse * task.target_std}


# ---------------------------------------------------------------------------- setup


@contextmanager
def _torch_settings(config: TrainConfig) -> Iterator[None]:
    """Thread count and deterministic kernels for the duration of `fit` only."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    if config.deterministic:
        # cuBLAS is only deterministic with a fixed workspace; it reads this variable
        # when it starts, so set it before the first CUDA matmul.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainError(
            "train.device is cuda but CUDA is not available", hint="use device: auto or cpu"
        )
    return torch.device(name)


def _precision(
    precision: str, device: torch.device
) -> tuple[Callable[[], AbstractContextManager[Any]], torch.amp.GradScaler]:
    """An autocast context factory and a grad scaler (disabled unless fp16)."""
    if precision == "auto":
        precision = "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise TrainError("train.precision: fp16 needs CUDA; use bf16 on CPU")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = nullcontext if dtype is None else partial(torch.autocast, device.type, dtype=dtype)
    # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return autocast, scaler


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [key for key in new if old.get(key) != new[key]]


def _cpu_copy(state: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


# -------------------------------------------------------------------------- display


# The per-epoch line shows these (plus the monitored metric); metrics.jsonl has everything.
_SHOWN = (
    "train_loss",
    "val_loss",
    "val_accuracy",
    "val_f1_macro",
    "val_roc_auc",
    "val_rmse",
    "val_r2",
)


def _format_epoch(record: dict[str, Any], epochs: int, monitor: str, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for key, value in record.items():
        if key in _SHOWN or key == monitor:
            parts.append(f"{key} {value:.4g}")
    parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['seconds']:.1f}s")
    if improved:
        parts.append(f"* best {monitor}")
    return "  ".join(parts)


class _RateColumn(ProgressColumn):
    """Batches per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? batch/s" if speed is None else f"{speed:,.0f} batch/s", style="cyan")


class _EpochBar:
    """A transient rich progress bar over one epoch's batches; does nothing when disabled.

    The bar is moved every `every` batches and redrawn a few times a second: a small
    batch takes well under a millisecond, and redrawing on each one would cost more.
    """

    def __init__(self, *, enabled: bool, n_batches: int, epochs: int) -> None:
        self.console = Console(stderr=True)
        self.epochs = epochs
        self.every = max(1, n_batches // 50)
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
                refresh_per_second=4,
            )
            if enabled
            else None
        )
        self._task = None
        self._n_batches = n_batches

    def __enter__(self) -> _EpochBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start_epoch(self, epoch: int) -> None:
        if self._progress is None:
            return
        description = f"epoch {epoch}/{self.epochs}"
        if self._task is None:
            self._task = self._progress.add_task(description, total=self._n_batches)
        else:
            self._progress.reset(self._task, total=self._n_batches, description=description)

    def advance(self, done: int) -> None:
        if self._progress is not None and (done % self.every == 0 or done == self._n_batches):
            self._progress.update(self._task, completed=done)
