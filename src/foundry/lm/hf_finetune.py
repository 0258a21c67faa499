"""`finetune`: the training loop for Hugging Face text classifiers and regressors.

setup (device, loss, optimizer over trainable weights only, schedule, seeds) → resume?
→ for each epoch: shuffle, train on padded micro-batches with gradient accumulation,
validate, log, keep the best trainable weights, checkpoint, maybe stop early → load the
best weights back.

It differs from `foundry.training.fit` where pretrained transformers differ from
foundry's own networks: token sequences of different lengths are padded per batch (to
the longest in the batch, not to `max_length`), and only trainable weights (LoRA
matrices and the head, or everything for full fine-tuning) are copied, kept and
checkpointed, so a LoRA run never writes the frozen base weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from foundry.config.schema import (
    OptimizerConfig,
    SchedulerConfig,
    TrainConfig,
)
from foundry.data.schema import TaskInfo
from foundry.errors import TrainError
from foundry.models.hf import pad_batch, text_model_outputs
from foundry.training import build_loss, build_optimizer, build_scheduler
from foundry.training.epochs import EpochLedger
from foundry.training.runtime import precision_context, resolve_device, torch_settings

__all__ = ["FineTuneResult", "TokenizedSplit", "finetune", "finetune_defaults"]

MetricFn = Callable[[np.ndarray, np.ndarray], dict[str, Any]]


@dataclass(frozen=True)
class TokenizedSplit:
    """One split, tokenized: `ids[i]` are the token ids of row i (special tokens in,
    truncated, not padded); `target` int64 [N] class indices or float32 [N]
    standardised values."""

    ids: list[list[int]]
    target: Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class FineTuneResult:
    history: list[dict[str, Any]]
    """One dict per epoch (the lines of metrics.jsonl)."""
    best_epoch: int
    best_metrics: dict[str, Any]
    stopped_early: bool
    epochs_run: int
    seconds: float
    """Wall time of this call."""
    train_examples_per_second: float
    """Training throughput (forward, backward and optimizer steps; validation excluded)."""


def finetune_defaults(train: TrainConfig, *, lora: bool) -> tuple[TrainConfig, list[str]]:
    """`train` with fine-tuning values for the keys the config left unset, and the list
    of what was filled in (`key=value`, for the log and the manifest).

    foundry's train defaults suit small networks trained from scratch (Adam at 1e-3,
    batches of 128, 20 epochs); the same on a pretrained transformer wrecks what it
    learned within a few steps. Keys the config sets are never changed.
    """
    given = train.model_fields_set
    top: dict[str, Any] = {}
    if "epochs" not in given:
        top["epochs"] = 3  # pretrained models adapt in a few passes
    if "batch_size" not in given:
        top["batch_size"] = 16  # sequences of up to max_length tokens through 10M+ weights
    opt_given = train.optimizer.model_fields_set if "optimizer" in given else set()
    optimizer: dict[str, Any] = {}
    if "type" not in opt_given:
        optimizer["type"] = "adamw"
    if "lr" not in opt_given:
        # LoRA's B starts at zero and needs larger steps than pretrained weights can take
        optimizer["lr"] = 5e-4 if lora else 5e-5
    if "weight_decay" not in opt_given:
        optimizer["weight_decay"] = 0.01
    scheduler: dict[str, Any] = {}
    if "scheduler" not in given:
        # BERT's recipe: linear warm-up over the first 10% of steps, then linear decay to 0
        scheduler = {"type": "linear", "warmup_epochs": 0.1 * top.get("epochs", train.epochs)}

    update: dict[str, Any] = dict(top)
    if optimizer:
        update["optimizer"] = OptimizerConfig(**{**train.optimizer.model_dump(), **optimizer})
    if scheduler:
        update["scheduler"] = SchedulerConfig(**{**train.scheduler.model_dump(), **scheduler})
    filled = [f"{k}={v}" for k, v in top.items()]
    filled += [f"optimizer.{k}={v}" for k, v in optimizer.items()]
    filled += [
        f"scheduler.{k}={v:g}" if isinstance(v, float) else f"scheduler.{k}={v}"
        for k, v in scheduler.items()
    ]
    if not update:
        return train, []
    return TrainConfig(**{**train.model_dump(), **update}), filled


def finetune(
    model: nn.Module,
    train: TokenizedSplit,
    val: TokenizedSplit | None,
    config: TrainConfig,
    task: TaskInfo,
    run_dir: Path,
    *,
    n_outputs: int,
    pad_id: int,
    resume: bool = False,
    metric_fn: MetricFn | None = None,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
) -> FineTuneResult:
    """Train `model` (`(input_ids [B, L], attention_mask [B, L]) → [B, n_outputs]`).

    Only parameters with `requires_grad` are optimised, kept and checkpointed. One
    optimizer step sums the gradients of `config.gradient_accumulation` micro-batches of
    `config.batch_size` rows. Writes `run_dir/metrics.jsonl` and `run_dir/checkpoint/`;
    `resume=True` continues from that checkpoint. Early stopping watches
    `config.early_stopping.metric` (or `train_loss` without validation data).
    `on_epoch_end(record)` is called after each epoch's checkpoint is written (what
    `foundry tune` prunes on); an exception it raises stops the run.
    """
    with torch_settings(config):
        return _finetune(
            model,
            train,
            val,
            config,
            task,
            run_dir,
            n_outputs=n_outputs,
            pad_id=pad_id,
            resume=resume,
            metric_fn=metric_fn,
            log=log,
            on_epoch_end=on_epoch_end,
        )


def _finetune(
    model: nn.Module,
    train: TokenizedSplit,
    val: TokenizedSplit | None,
    config: TrainConfig,
    task: TaskInfo,
    run_dir: Path,
    *,
    n_outputs: int,
    pad_id: int,
    resume: bool,
    metric_fn: MetricFn | None,
    log: Callable[[str], None] | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
) -> FineTuneResult:
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- setup
    device = resolve_device(config.device)
    autocast, scaler = precision_context(config.precision, device)
    model.to(device)
    if val is not None and len(val) == 0:
        val = None
    n_rows, batch_size, accumulate = len(train), config.batch_size, config.gradient_accumulation
    if n_rows == 0:
        raise TrainError("the training split has no rows")
    n_micro = math.ceil(n_rows / batch_size)
    steps_per_epoch = math.ceil(n_micro / accumulate)
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    loss_fn = build_loss(config.loss, task, n_outputs)
    optimizer = build_optimizer(list(trainable.values()), config.optimizer, fused=True)
    scheduler = build_scheduler(
        optimizer, config.scheduler, steps_per_epoch, config.epochs * steps_per_epoch
    )
    monitor = config.early_stopping.metric if val is not None else "train_loss"
    torch.manual_seed(config.seed)  # dropout
    generators = {"shuffle": torch.Generator().manual_seed(config.seed)}
    # only the trainable weights are checkpointed and kept (training.epochs does that)
    ledger = EpochLedger(
        run_dir,
        config,
        monitor,
        model=_TrainableWeights(model, trainable),
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        generators=generators,
        format_epoch=_format_epoch,
        say=log or (lambda _: None),
        on_epoch_end=on_epoch_end,
    )
    train_seconds, train_examples = 0.0, 0
    if resume:
        ledger.resume()
        if log is not None:
            log(f"resuming after epoch {len(ledger.history)}")

    with ledger.metrics_file():
        for epoch in ledger.epochs():
            epoch_start = time.perf_counter()

            # ---- train one epoch: `accumulate` micro-batches per optimizer step
            model.train()
            perm = torch.randperm(n_rows, generator=generators["shuffle"])
            losses: list[Tensor] = []
            optimizer.zero_grad(set_to_none=True)
            for step in range(steps_per_epoch):
                group = range(step * accumulate, min((step + 1) * accumulate, n_micro))
                for micro in group:
                    idx = perm[micro * batch_size : (micro + 1) * batch_size]
                    ids, mask = pad_batch([train.ids[i] for i in idx], pad_id)
                    with autocast():
                        outputs = model(ids.to(device), mask.to(device))  # [B, n_outputs]
                        loss = loss_fn(outputs, train.target[idx].to(device))
                    # the mean over the group's micro-batches, as one big batch would give;
                    # the scaler is a no-op unless fp16
                    scaler.scale(loss / len(group)).backward()
                    losses.append(loss.detach())
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(trainable.values(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            ledger.step += steps_per_epoch
            train_seconds += time.perf_counter() - epoch_start
            train_examples += n_rows

            train_loss = torch.stack(losses).mean().item()
            if not math.isfinite(train_loss):
                raise TrainError(
                    f"training diverged at epoch {epoch}: loss is {train_loss}; "
                    "lower train.optimizer.lr or set train.grad_clip"
                )

            # ---- validate, record; best weights, early stopping, checkpoint: the ledger
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if val is not None:
                outputs = text_model_outputs(model, val.ids, pad_id, batch_size=2 * batch_size)
                record["val_loss"] = loss_fn(torch.from_numpy(outputs), val.target).item()
                y_true = val.target.numpy()
                for name, value in (metric_fn(y_true, outputs) if metric_fn else {}).items():
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        record.setdefault(f"val_{name}", float(value))
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["seconds"] = time.perf_counter() - epoch_start
            ledger.end_epoch(record)

    kept = ledger.finish(started)
    model.eval()
    return FineTuneResult(
        history=kept["history"],
        best_epoch=kept["best_epoch"],
        best_metrics=kept["best_metrics"],
        stopped_early=kept["stopped_early"],
        epochs_run=kept["epochs_run"],
        seconds=kept["seconds"],
        train_examples_per_second=train_examples / train_seconds if train_seconds else 0.0,
    )


class _TrainableWeights:
    """The trainable part of a model, shaped like an `nn.Module` for the checkpoint
    helpers: `state_dict()` copies only trainable tensors (to the CPU), and
    `load_state_dict` puts them back."""

    def __init__(self, model: nn.Module, trainable: dict[str, nn.Parameter]) -> None:
        self.model = model
        self.trainable = trainable

    def parameters(self):
        return iter(self.trainable.values())

    def state_dict(self) -> dict[str, Tensor]:
        return {n: p.detach().to("cpu", copy=True) for n, p in self.trainable.items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        missing = set(self.trainable) - set(state)
        if missing:
            raise TrainError(f"saved weights lack {sorted(missing)[:3]}: not this model's")
        with torch.no_grad():
            for name, param in self.trainable.items():
                param.copy_(state[name].to(param.device))


def _format_epoch(record: dict[str, Any], epochs: int, monitor: str, improved: bool) -> str:
    shown = ("train_loss", "val_loss", "val_accuracy", "val_f1_macro", "val_rmse", "val_r2")
    parts = [f"epoch {record['epoch']}/{epochs}"]
    parts += [f"{k} {v:.4g}" for k, v in record.items() if k in shown or k == monitor]
    parts += [f"lr {record['lr']:.3g}", f"{record['seconds']:.1f}s"]
    if improved:
        parts.append(f"* best {monitor}")
    return "  ".join(parts)
