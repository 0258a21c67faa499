"""`fit`: the training loop, meant to be read top to bottom.

setup (device, precision, loss, optimizer, schedule, seeds) → resume? → for each epoch:
shuffle, train on slices of pre-built tensors, validate, log, keep the best weights,
checkpoint, maybe stop early → load the best weights into the model.

With `train.privacy` an epoch is DP-SGD instead (see `foundry.training.privacy`): each
step trains on a Poisson sample of rows, clips each row's gradient and adds noise, and
the privacy spent is recorded per epoch.

Speed matters as much as clarity here: an epoch should cost what a hand-written
`for i in range(0, n, bs)` loop costs. So each batch is one index operation per input
tensor (no DataLoader, no per-row work), and nothing reads a GPU value back per batch:
the loss is summed as a tensor and read once per epoch. Two exceptions: an image column
too big to decode into memory (`foundry.data.lazy_images.LazyImages`) has its batches
decoded ahead, in the same shuffled order, by DataLoader workers; and data too big for
memory arrives as a `foundry.data.stream.StreamedTable`, whose DataLoader workers read,
encode and shuffle blocks of rows while this loop trains (docs/DATA.md).

In a distributed run (torchrun, `foundry train --nproc N`; see
`foundry.training.distributed`) every process runs this same loop on its share of each
global batch, DDP averages the gradients, rank 0 validates and alone writes files.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from foundry.config.schema import TrainConfig
from foundry.data.lazy_images import decode_workers, epoch_inputs
from foundry.data.schema import TaskInfo
from foundry.errors import TrainError
from foundry.training import distributed
from foundry.training.epochs import EpochLedger
from foundry.training.losses import LossFn, build_loss
from foundry.training.optim import build_optimizer, build_scheduler
from foundry.training.progress import EpochBar
from foundry.training.runtime import (
    precision_context,
    resolve_device,
    torch_settings,
)

if TYPE_CHECKING:
    from foundry.data.stream import StreamedTable
    from foundry.training.privacy import PrivateTraining

__all__ = ["AugmentFn", "BatchLossFn", "FitResult", "MetricFn", "fit"]

Encoded = dict[str, Tensor]
AugmentFn = Callable[[Encoded, torch.Generator], Encoded]
"""`augment(inputs, generator) -> inputs`: changes a training batch (inputs only, no
"target"); draws its randomness from `generator` (on the training device)."""
MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]
"""`metric_fn(y_true [N], outputs [N, n_outputs]) -> {name: value}` on the validation
split. `y_true` is the Encoded "target" (class index, or the standardised number) and
`outputs` the raw model outputs."""
BatchLossFn = Callable[[Tensor, Encoded], Tensor]
"""`loss_fn(outputs [batch, n_outputs], batch) -> scalar` replaces the training loss.
`batch` holds the batch's rows of every tensor in `train` ("target" and any extra
per-row tensor, e.g. a teacher's outputs), inputs after augmentation."""


@dataclass(frozen=True)
class FitResult:
    history: list[dict[str, Any]]
    """One dict per epoch (the lines of metrics.jsonl): epoch, train_loss, val_loss,
    val_<metric>..., lr, seconds; streamed data adds rows_per_rank (the training rows
    each rank trained on that epoch, in rank order: one entry for one process)."""
    best_epoch: int
    """1-based epoch whose weights were kept."""
    best_metrics: dict[str, Any]
    """`history[best_epoch - 1]`."""
    stopped_early: bool
    state_dict: dict[str, Tensor]
    """The best epoch's weights, on CPU (also loaded into the model); `fit_lm` leaves
    out frozen parameters (a LoRA run's base model)."""
    seconds: float
    """Wall time of the whole run: this call's, plus for a resumed run the time its
    checkpoint recorded (`checkpoint.trained_seconds`). Work lost after the last
    checkpoint of a killed process is not counted."""
    epochs_run: int
    """Epochs completed in total, including those before a resume."""
    privacy: dict[str, Any] | None = None
    """With `train.privacy`: what was spent and how. "epsilon" (ε spent, <= the target),
    "delta", "noise_multiplier", "max_grad_norm", "sample_rate" (probability of a row
    being in a step), "steps" and "epochs" (taken, resumes included), "accountant"
    ("prv" or "rdp"), "library" ("opacus <version>"). None otherwise."""


def fit(
    model: nn.Module,
    train: Encoded | StreamedTable,
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
    loss_fn: BatchLossFn | None = None,
) -> FitResult:
    """Train `model` on `train` (an Encoded dict with "target", or a streamed table:
    `foundry.data.stream.StreamedTable`), validating on `val`.

    Writes `run_dir/metrics.jsonl` (one JSON line per epoch) and `run_dir/checkpoint/`
    (after every epoch). `resume=True` continues from that checkpoint and ends with the
    same weights as a run that was never interrupted. Early stopping watches
    `config.early_stopping.metric`, or `train_loss` when there is no validation data.

    `metric_fn` computes the validation metrics (each is logged as `val_<name>`; values
    that are not single numbers are left out); without it: `val_accuracy` for
    classification, `val_rmse` (original units) for regression. `log` receives the
    per-epoch lines instead of the console; `progress=False` prints nothing.
    `on_epoch_end(record)` is called after each epoch's checkpoint is written.

    `loss_fn(outputs, batch)` replaces the `config.loss` loss for training only (knowledge
    distillation): `train` may then carry extra per-row tensors, which are sliced into
    each batch with the rest and passed to the model too (models read only their own
    keys). `train_loss` is then that loss; `val_loss` and the validation metrics stay
    `config.loss` and the metrics on the true labels.

    `config.privacy` trains with DP-SGD (per-example clipping and noise, Poisson sampling;
    see `foundry.training.privacy`): the model must have been passed through
    `make_private_model`, each history record gains "epsilon" (spent so far) and
    `FitResult.privacy` reports the total. Without validation data every epoch is kept
    (choosing one by the training loss would look at the private rows).

    Inside a process group of N > 1 (`foundry.training.distributed.run_in_group`) this
    is DDP: `config.batch_size` is the global batch (batch_size / N rows per process per
    step, which must divide), each process trains on its shard of the epoch's rows, rank 0
    validates and alone writes `run_dir`; every rank returns the same result.

    The caller seeds and builds the model; the model's weights end as the best epoch's.
    Raises `TrainError` when the loss diverges, the device or precision is unavailable,
    the monitored metric does not exist, or there is nothing to resume.
    """
    # lazy image columns and streamed tables both read in DataLoader workers
    workers = decode_workers(train) if isinstance(train, dict) else train.stream.workers
    try:
        with torch_settings(config, workers=workers):
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
                loss_fn=loss_fn,
            )
    finally:
        if not isinstance(train, dict):  # workers started ahead for an epoch never run
            train.discard_prefetch()


def _fit(
    model: nn.Module,
    train: Encoded | StreamedTable,
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
    loss_fn: BatchLossFn | None,
) -> FitResult:
    started = time.perf_counter()
    ddp = distributed.active()  # one of several processes training together
    writer = not ddp or distributed.is_main()  # rank 0 alone writes files and reports
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)

    # ---- data: moved to the device once; a batch is one index op per tensor
    device = resolve_device(config.device)
    if ddp:
        device = distributed.training_device(device)  # cuda → this rank's GPU
    model.to(device)
    # streamed data (foundry.data.stream): batches arrive from DataLoader workers
    streamed: StreamedTable | None = None if isinstance(train, dict) else train
    if streamed is not None:
        _check_streamable(config, loss_fn)
        input_keys, n_rows = streamed.input_keys, streamed.n_rows
    else:
        input_keys = [k for k in train if k != "target"]
        train = {k: v.to(device) for k, v in train.items()}
        n_rows = len(train["target"])
    if val is not None and len(val["target"]) == 0:
        val = None
    if val is not None:
        val = {k: v.to(device) for k, v in val.items()}
    batch_size = config.batch_size
    if n_rows == 0:
        raise TrainError("the training split has no rows")
    world, n_local = 1, n_rows  # processes training together; rows this one trains on
    if ddp:  # batch_size is the global batch: each rank takes its share of every batch
        world = distributed.world_size()
        batch_size = distributed.local_batch_size(batch_size, world)
        n_local = distributed.rows_per_rank(n_rows, world)
    n_batches = math.ceil(n_local / batch_size)
    if n_local > 1 and n_local % batch_size == 1:
        n_batches -= 1  # BatchNorm cannot train on a last batch of one row: skip it
    if streamed is not None:  # each rank reads its own shards (see batches_per_epoch)
        n_batches = streamed.batches_per_epoch(batch_size, world)
    # Gradient accumulation: `accum` batches per optimizer step (the last step of an
    # epoch may have fewer); the schedule counts optimizer steps.
    accum = config.gradient_accumulation
    n_steps = math.ceil(n_batches / accum)
    precision = config.precision
    if config.privacy is not None:
        # imported here: Opacus adds ~1 s to every import of foundry.training
        from foundry.training.privacy import PrivateTraining, check_private_settings

        check_private_settings(config, distillation=loss_fn is not None)
        # DP-SGD steps on Poisson samples of about batch_size x accum rows (see
        # PrivateTraining); "auto" would be fp16 on CUDA, whose loss scaling DP cannot use
        n_batches = n_steps = math.ceil(n_rows / (batch_size * accum))
        precision = "fp32" if precision == "auto" else precision
    total_steps = config.epochs * n_steps

    # ---- what is optimised, and how
    autocast, scaler = precision_context(precision, device)
    task_loss = build_loss(config.loss, task, n_outputs)  # and validation's loss
    optimizer = build_optimizer(model.parameters(), config.optimizer)
    scheduler = build_scheduler(optimizer, config.scheduler, n_steps, total_steps)
    monitor = config.early_stopping.metric if val is not None else "train_loss"

    # ---- randomness: the global RNG (dropout) plus one generator each for shuffling
    # and augmentation, so that adding augmentation does not change the batch order
    torch.manual_seed(config.seed)
    generators = {
        "shuffle": torch.Generator().manual_seed(config.seed),
        "augment": torch.Generator(device).manual_seed(config.seed + 1),
    }
    private: PrivateTraining | None = None
    if config.privacy is not None:  # its own generator: the noise does not shift the rest
        generators["noise"] = torch.Generator(device).manual_seed(config.seed + 2)
        private = PrivateTraining(
            model, optimizer, config, n_rows=n_rows, noise=generators["noise"]
        )

    progress = progress and writer
    bar = EpochBar(enabled=progress, n_batches=n_batches, epochs=config.epochs)
    say = log if log is not None else (bar.console.print if progress else None)
    if not writer:
        say = None

    # ---- state carried from epoch to epoch (and through checkpoints): training.epochs
    ledger = EpochLedger(
        run_dir,
        config,
        monitor,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        generators=generators,
        format_epoch=_format_epoch,
        say=say,
        on_epoch_end=on_epoch_end,
        writer=writer,
    )

    def privacy_state(state: dict[str, Any]) -> None:
        if private is not None:
            private.load_state_dict(state.get("privacy"))  # ε continues where it was
        elif "privacy" in state:
            raise TrainError(
                "the checkpoint comes from a run with train.privacy: resuming without it "
                "would void its guarantee",
                hint="resume with the same train.privacy, or start a new run",
            )

    if resume:
        ledger.resume(privacy_state)
    if private is not None and say is not None:
        say(private.describe())
    net = model  # what the training steps call
    if ddp:  # copies rank 0's weights to every rank; averages gradients in backward()
        net = distributed.wrap(model, device)
        if say is not None:
            say(
                f"distributed: {distributed.world_size()} processes "
                f"({torch.distributed.get_backend()}), {batch_size} rows each per step "
                f"(global batch {config.batch_size})"
            )

    with (
        ledger.metrics_file(),
        bar,
        private if private is not None else nullcontext(),  # Opacus hooks, removed after
    ):
        for epoch in ledger.epochs():
            epoch_start = time.perf_counter()
            if ddp:  # each rank its own dropout and augmentation (see seed_for_rank)
                torch.manual_seed(distributed.seed_for_rank(config.seed, epoch))
                generators["augment"].manual_seed(distributed.seed_for_rank(config.seed + 1, epoch))

            # ---- train one epoch
            model.train()
            bar.start_epoch(epoch)
            # summed as a tensor, read once per epoch: no GPU→CPU sync per batch. (A list
            # of every batch's loss tensor held ~17 KB of heap per batch, pinned between
            # the batches' activations: +340 MiB over a 30M-row epoch.)
            loss_sum, n_losses = torch.zeros((), device=device), 0
            rows_trained = 0  # by this rank this epoch: streamed runs record it (rows_per_rank)
            if private is None:
                if streamed is not None:  # a fresh shard order and shuffle per epoch
                    rank = distributed.rank() if ddp else 0
                    batches = streamed.batches(epoch, batch_size, rank=rank, world=world)
                else:
                    perm = torch.randperm(n_rows, generator=generators["shuffle"]).to(device)
                    if ddp:
                        # this rank's rows of each global batch
                        perm = distributed.shard(perm, distributed.rank(), world)
                    # image columns kept as paths (data.images) arrive decoded by workers
                    keys = [*input_keys, "target"]
                    batches = epoch_inputs(train, keys, perm, batch_size, n_batches)
                for b, batch in zip(range(n_batches), batches, strict=False):
                    if streamed is not None:
                        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                    inputs = {k: batch[k] for k in input_keys}
                    target = batch["target"]
                    if augment is not None:
                        inputs = augment(inputs, generators["augment"])

                    group_start = b - b % accum  # first batch of this optimizer step
                    last_of_step = b + 1 == group_start + accum or b + 1 == n_batches
                    if b == group_start:
                        optimizer.zero_grad(set_to_none=True)
                    # DDP all-reduces gradients in backward; the step's earlier batches keep
                    # theirs local and the last one's backward reduces the sum once.
                    sync = net.no_sync() if ddp and not last_of_step else nullcontext()
                    with sync:
                        with autocast():
                            outputs = net(inputs)  # [batch, n_outputs]
                            if loss_fn is None:
                                loss = task_loss(outputs, target)
                            else:
                                loss = loss_fn(outputs, {**inputs, "target": target})
                        # Gradients add up over the step's batches: dividing each batch's mean
                        # loss by their number makes the step's gradient that of their mean.
                        scaled = loss if accum == 1 else loss / min(accum, n_batches - group_start)
                        scaler.scale(scaled).backward()  # the scaler is a no-op unless fp16
                    if last_of_step:
                        if config.grad_clip is not None:
                            scaler.unscale_(optimizer)
                            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                        scheduler.step()

                    loss_sum += loss.detach().float()
                    n_losses += 1
                    rows_trained += len(target)  # a shape: no device sync
                    bar.advance(b + 1)
                batches.close()  # a stream's workers stop here (rows past n_batches unread)
                if streamed is not None and epoch < config.epochs:
                    # the next epoch's workers start on their first blocks while this
                    # one validates and checkpoints (a run that stops early drops them)
                    streamed.prefetch(epoch + 1, batch_size, rank=rank, world=world)
            else:  # DP-SGD: each step a Poisson sample of rows, in physical batches
                for b, rows in enumerate(private.sample_steps(generators["shuffle"])):
                    parts = rows.to(device).split(batch_size)  # one empty part if no rows
                    for j, idx in enumerate(parts):
                        inputs = {k: train[k][idx] for k in input_keys}
                        target = train["target"][idx]
                        if augment is not None:
                            inputs = augment(inputs, generators["augment"])
                        # after a part, zero_grad keeps the step's sum of clipped gradients
                        private.optimizer.zero_grad(set_to_none=True)
                        with autocast():
                            outputs = model(inputs)  # Opacus' hooks record each row's input
                            loss = task_loss(outputs, target)
                        loss.backward()  # ... and each row's gradient
                        # every part: clip and add up; the last: noise, update, accountant
                        private.optimizer.signal_skip_step(j + 1 < len(parts))
                        private.optimizer.step()
                        if len(idx):  # an empty step still adds noise, but its loss is NaN
                            loss_sum += loss.detach().float()
                            n_losses += 1
                    scheduler.step()
                    bar.advance(b + 1)
            ledger.step += n_steps

            epoch_loss = loss_sum / n_losses if n_losses else loss_sum * float("nan")
            if ddp:
                epoch_loss = distributed.mean_over_ranks(epoch_loss)
            train_loss = epoch_loss.item()
            if not math.isfinite(train_loss):
                clip = "train.grad_clip" if private is None else "a lower privacy.max_grad_norm"
                raise TrainError(
                    f"training diverged at epoch {epoch}: loss is {train_loss}; "
                    f"lower train.optimizer.lr or set {clip}"
                )

            # ---- validate, record
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if streamed is not None:  # each rank's share of the shards, as trained
                record["rows_per_rank"] = (
                    distributed.gather_counts(rows_trained) if ddp else [rows_trained]
                )
            if val is not None and writer:
                record.update(
                    _validate(
                        model,
                        val,
                        [k for k in input_keys if k in val],  # extras are train-only
                        task_loss,
                        autocast,
                        batch_size=4 * config.batch_size,  # no_grad keeps no activations
                        task=task,
                        metric_fn=metric_fn,
                    )
                )
            record["lr"] = optimizer.param_groups[0]["lr"]
            if private is not None:
                record["epsilon"] = private.epsilon()  # spent so far
            record["seconds"] = time.perf_counter() - epoch_start
            if ddp:  # rank 0 validated: all ranks take its record, and so decide alike
                record = distributed.broadcast_json(record)
            # ---- best weights, early stopping, checkpoint, the epoch line: the ledger.
            # DP-SGD without validation data keeps every epoch: choosing or stopping at an
            # epoch by its training loss would look at the private rows outside DP.
            ledger.end_epoch(
                record,
                # the accountant's history
                extra_state={"privacy": private.state_dict()} if private is not None else None,
                keep_every=private is not None and val is None,
            )

    return FitResult(
        **ledger.finish(started),
        privacy=private.report(epochs=len(ledger.history)) if private is not None else None,
    )


def _check_streamable(config: TrainConfig, loss_fn: BatchLossFn | None) -> None:
    """TrainError for what needs every training row in memory."""
    if config.privacy is not None:
        raise TrainError(
            "train.privacy (DP-SGD) samples rows at random across the whole table, "
            "which streamed data cannot do",
            hint="set data.streaming: false, or train without train.privacy",
        )
    if loss_fn is not None:
        raise TrainError(
            "distillation needs the training rows in memory",
            hint="set data.streaming: false",
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
    "epsilon",
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
