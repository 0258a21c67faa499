"""`fit_lm`: the next-token training loop, read top to bottom like `foundry.training.fit`.

setup (device, precision, optimizer over the trainable parameters, schedule, seeds) →
resume? → for each epoch: shuffle the rows, for each optimizer step accumulate
`gradient_accumulation` batches of masked cross-entropy, clip, step; validate (loss and
perplexity on held-out tokens), log, keep the best weights, checkpoint, maybe stop
early → load the best weights into the model.

The model contract: `model(input_ids [B, L]) -> logits [B, L, V]`, or an object with
`.logits` of that shape (a Hugging Face causal LM works as is). Position t's logits
predict `labels[:, t]` (see `foundry.lm.data.TokenData`); IGNORE labels carry no loss.
Only parameters with `requires_grad` are optimised (frozen base + LoRA adapters work).

The loss of an optimizer step is the mean over every target token of its batches, so k
accumulated batches of b rows give the gradient of one batch of k*b rows even when rows
hold different numbers of targets (instruction data).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from foundry.config.schema import TrainConfig
from foundry.errors import TrainError
from foundry.lm.data import IGNORE, TokenData
from foundry.training.epochs import EpochLedger
from foundry.training.loop import FitResult
from foundry.training.optim import build_optimizer, build_scheduler
from foundry.training.progress import EpochBar
from foundry.training.runtime import precision_context, resolve_device, torch_settings

__all__ = ["TokenLossFn", "evaluate_tokens", "exp_loss", "fit_lm", "next_token_loss", "perplexity"]

TokenLossFn = Callable[[Any, Tensor, Tensor], Tensor]
"""`loss_fn(output, input_ids [B, L], labels [B, L]) -> scalar`: the loss SUMMED over the
batch's target tokens (labels != IGNORE), as `next_token_loss(output, labels, "sum")`;
`output` is the model's (logits [B, L, V] or an object with `.logits`)."""


def fit_lm(
    model: nn.Module,
    train: TokenData,
    val: TokenData | None,
    config: TrainConfig,
    run_dir: Path | str,
    *,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
    loss_fn: TokenLossFn | None = None,
) -> FitResult:
    """Train `model` on `train` token rows, validating on `val` (may be None or empty).

    Writes `run_dir/metrics.jsonl` (one line per epoch: train_loss, val_loss,
    val_perplexity, lr, tokens_per_second, seconds) and `run_dir/checkpoint/` after each
    epoch; `resume=True` continues from it. Early stopping watches
    `config.early_stopping.metric` (val_loss by default), or `train_loss` without
    validation data. The caller seeds and builds the model; it ends with the best
    epoch's weights. Raises TrainError when the loss diverges or there is no data.

    `loss_fn` replaces the next-token cross-entropy for training only (distillation from
    a teacher); `train_loss` is then its mean per target token, while `val_loss` and
    `val_perplexity` stay the cross-entropy on the true next tokens.
    """
    with torch_settings(config):
        return _fit_lm(
            model,
            train,
            val,
            config,
            Path(run_dir),
            resume=resume,
            progress=progress,
            log=log,
            on_epoch_end=on_epoch_end,
            loss_fn=loss_fn,
        )


def _fit_lm(
    model: nn.Module,
    train: TokenData,
    val: TokenData | None,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    progress: bool,
    log: Callable[[str], None] | None,
    on_epoch_end: Callable[[dict[str, Any]], None] | None,
    loss_fn: TokenLossFn | None,
) -> FitResult:
    started = time.perf_counter()
    run_dir.mkdir(parents=True, exist_ok=True)

    # ---- data: on the device once; a batch is one index op per tensor
    device = resolve_device(config.device)
    model.to(device)
    input_ids, labels = train.input_ids.to(device), train.labels.to(device)
    if val is not None and (len(val) == 0 or val.n_targets == 0):
        val = None
    n_rows, batch_size = len(train), config.batch_size
    if n_rows == 0 or train.n_targets == 0:
        raise TrainError(
            "the training split has no tokens to learn from",
            hint="add data, or raise lm.block_size if long prompts left no completion "
            "tokens inside the block",
        )
    n_batches = math.ceil(n_rows / batch_size)
    accum = config.gradient_accumulation
    n_steps = math.ceil(n_batches / accum)  # optimizer steps per epoch
    total_steps = config.epochs * n_steps

    # ---- what is optimised, and how
    autocast, scaler = precision_context(config.precision, device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise TrainError("the model has no trainable parameters (every requires_grad is False)")
    optimizer = build_optimizer(params, config.optimizer, fused=True)
    scheduler = build_scheduler(optimizer, config.scheduler, n_steps, total_steps)
    monitor = config.early_stopping.metric if val is not None else "train_loss"

    # ---- randomness: the global RNG (dropout) and a generator for the row order
    torch.manual_seed(config.seed)
    generators = {"shuffle": torch.Generator().manual_seed(config.seed)}

    bar = EpochBar(enabled=progress, n_batches=n_batches, epochs=config.epochs)
    say = log if log is not None else (bar.console.print if progress else None)

    # ---- what carries from epoch to epoch (and through checkpoints): training.epochs.
    # Frozen weights (a LoRA run's base model) never change: checkpoints and the copy of
    # the best epoch hold only the rest, not gigabytes of base weights per epoch.
    frozen = {n for n, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
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
        frozen=frozen,
        missing_monitor="a language model does not compute; use val_loss, val_perplexity "
        "or train_loss",
    )
    if resume:
        ledger.resume()

    with ledger.metrics_file(), bar:
        for epoch in ledger.epochs():
            epoch_start = time.perf_counter()

            # ---- train one epoch
            model.train()
            bar.start_epoch(epoch)
            perm = torch.randperm(n_rows, generator=generators["shuffle"]).to(device)
            loss_sum = torch.zeros((), device=device)  # read once per epoch
            token_count = torch.zeros((), device=device, dtype=torch.int64)
            group_tokens = token_count
            for b in range(n_batches):
                group_start = b - b % accum  # first batch of this optimizer step
                if b == group_start:
                    optimizer.zero_grad(set_to_none=True)
                    group_end = min(group_start + accum, n_batches)
                    group = perm[group_start * batch_size : group_end * batch_size]
                    group_tokens = (labels[group] != IGNORE).sum().clamp(min=1)
                idx = perm[b * batch_size : (b + 1) * batch_size]
                batch_labels = labels[idx]
                with autocast():
                    if loss_fn is None:
                        batch_sum = next_token_loss(model(input_ids[idx]), batch_labels, "sum")
                    else:
                        batch_ids = input_ids[idx]
                        batch_sum = loss_fn(model(batch_ids), batch_ids, batch_labels)
                scaler.scale(batch_sum / group_tokens).backward()  # no-op scaler unless fp16
                if b + 1 == group_end:
                    if config.grad_clip is not None:
                        scaler.unscale_(optimizer)
                        nn.utils.clip_grad_norm_(params, config.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                loss_sum += batch_sum.detach()
                token_count += (batch_labels != IGNORE).sum()
                bar.advance(b + 1)
            ledger.step += n_steps

            tokens = int(token_count.item())
            train_loss = loss_sum.item() / max(tokens, 1)
            if not math.isfinite(train_loss):
                raise TrainError(
                    f"training diverged at epoch {epoch}: loss is {train_loss}; "
                    "lower train.optimizer.lr or set train.grad_clip"
                )
            train_seconds = time.perf_counter() - epoch_start

            # ---- validate, record; best weights, early stopping, checkpoint: the ledger
            record: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss}
            if val is not None:
                val_loss, _ = evaluate_tokens(model, val, batch_size=batch_size, autocast=autocast)
                record["val_loss"] = val_loss
                record["val_perplexity"] = exp_loss(val_loss)
            record["lr"] = optimizer.param_groups[0]["lr"]
            record["tokens_per_second"] = tokens / train_seconds if train_seconds > 0 else 0.0
            record["seconds"] = time.perf_counter() - epoch_start
            ledger.end_epoch(record)

    return FitResult(**ledger.finish(started))


# ---------------------------------------------------------------------------- loss


def next_token_loss(output: Any, labels: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy of `output` (logits [B, L, V], or an object with `.logits`) against
    `labels` [B, L], IGNORE positions left out; computed in float32 under autocast too."""
    logits = output if isinstance(output, Tensor) else output.logits
    return F.cross_entropy(
        logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE, reduction=reduction
    )


@torch.no_grad()
def evaluate_tokens(
    model: nn.Module,
    data: TokenData,
    *,
    batch_size: int = 32,
    autocast: Callable[[], Any] | None = None,
) -> tuple[float, int]:
    """(mean next-token loss in nats, number of target tokens) of `model` on `data`."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros((), device=device, dtype=torch.float64)
    count = 0
    for i in range(0, len(data), batch_size):
        ids = data.input_ids[i : i + batch_size].to(device)
        labels = data.labels[i : i + batch_size].to(device)
        with autocast() if autocast is not None else nullcontext():
            total += next_token_loss(model(ids), labels, "sum").double()
        count += int((labels != IGNORE).sum())
    model.train(was_training)
    return (total.item() / count if count else float("nan")), count


def perplexity(model: nn.Module, data: TokenData, *, batch_size: int = 32) -> float:
    """exp(mean next-token loss) over the target tokens of `data`: the number of equally
    likely tokens the model is, on average, choosing between."""
    loss, _ = evaluate_tokens(model, data, batch_size=batch_size)
    return exp_loss(loss)


def exp_loss(loss: float) -> float:
    """Perplexity from a mean loss in nats (inf instead of an overflow)."""
    return math.exp(loss) if loss < 700 else float("inf")  # exp overflows a float at ~709


def _format_epoch(record: dict[str, Any], epochs: int, monitor: str, improved: bool) -> str:
    parts = [f"epoch {record['epoch']}/{epochs}", f"train_loss {record['train_loss']:.4f}"]
    if "val_loss" in record:
        parts.append(f"val_loss {record['val_loss']:.4f}")
        parts.append(f"val_perplexity {record['val_perplexity']:.2f}")
    parts.append(f"lr {record['lr']:.3g}")
    parts.append(f"{record['tokens_per_second']:,.0f} tok/s")
    parts.append(f"{record['seconds']:.1f}s")
    if improved:
        parts.append(f"* best {monitor}")
    return "  ".join(parts)
