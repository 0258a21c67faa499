"""What every training loop does around its epochs, written once.

    ledger = EpochLedger(run_dir, config, monitor, model=..., optimizer=..., ...)
    if resume:
        ledger.resume()                     # weights, optimizer, schedule, stopper, RNG
    with ledger.metrics_file():             # metrics.jsonl, rewritten from the history
        for epoch in ledger.epochs():       # stops after an early stop
            ... train one epoch, validate: the loop's own step ...
            ledger.end_epoch(record)        # history, best weights, early stopping,
                                            # checkpoint, the epoch line, on_epoch_end
    kept = ledger.finish()                  # best weights loaded; FitResult fields

`training.fit` (encoded columns; DDP; DP-SGD), `lm.train.fit_lm` (next tokens) and
`lm.hf_finetune.finetune` (a pretrained text classifier) differ in how a batch is formed,
what its loss is and how they validate; this is the part that was the same in all three
(and had been copied into each).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from torch import Tensor

from foundry.config.schema import TrainConfig
from foundry.errors import TrainError
from foundry.training.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_weights,
    restore_rng,
    save_checkpoint,
    trained_seconds,
)
from foundry.training.early_stopping import EarlyStopping
from foundry.training.runtime import changed_keys, cpu_copy

__all__ = ["EpochLedger", "StopTraining"]

FormatEpoch = Callable[[dict[str, Any], int, str, bool], str]
"""`(record, epochs, monitor, improved) -> line`: each loop words its own epoch line."""


class StopTraining(Exception):  # noqa: N818 (a signal, not an error)
    """Raised by an `on_epoch_end` hook to end training after this epoch as early
    stopping does: the best epoch so far is kept (a model search's time budget)."""


class EpochLedger:
    """The state a run carries from epoch to epoch and through its checkpoints."""

    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        monitor: str,
        *,
        model: Any,
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        generators: dict[str, Any],
        format_epoch: FormatEpoch,
        say: Callable[[str], None] | None = None,
        on_epoch_end: Callable[[dict[str, Any]], None] | None = None,
        frozen: Collection[str] = (),
        writer: bool = True,
        missing_monitor: str | None = None,
    ) -> None:
        """`model`: what checkpoints save and the best weights are copied from (a module,
        or a view of its trainable part with `state_dict` / `load_state_dict`);
        `frozen`: its weight names never trained (a LoRA run's base), left out of
        checkpoints and of the best copy. `writer=False` (a DDP rank other than 0)
        writes no file. `missing_monitor` ends the error for a monitored metric the
        loop does not compute (default: the metrics it does)."""
        self.run_dir, self.config, self.monitor = run_dir, config, monitor
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.scaler, self.generators = scaler, generators
        self.format_epoch, self.say, self.on_epoch_end = format_epoch, say, on_epoch_end
        self.frozen, self.writer, self.missing_monitor = set(frozen), writer, missing_monitor
        es = config.early_stopping
        self.stopper = EarlyStopping(monitor, es.mode, es.patience, es.min_delta)
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch, self.step, self.stopped_early = 0, 0, False
        self.stop_reason = ""
        """Why `on_epoch_end` stopped the run (`StopTraining`'s message); empty otherwise."""
        self._file: TextIO | None = None
        self.started = time.perf_counter()
        self.earlier = 0.0
        """Training seconds before this call: a resumed run's checkpoint records them
        (`checkpoint.trained_seconds`), so the run's time and cost count the whole run."""

    def weights(self) -> dict[str, Tensor]:
        """The model's weights that are kept: all but the frozen ones."""
        state = self.model.state_dict()
        if not self.frozen:
            return state
        return {k: v for k, v in state.items() if k not in self.frozen}

    # ------------------------------------------------------------------- resume

    def resume(self, extras: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Load the run directory's checkpoint into the model, optimizer, schedule,
        early stopping, gradient scaler and generators. `extras(state)` reads the
        loop's own part of the checkpoint's state (the privacy accountant) first, so it
        can refuse a checkpoint before anything else is restored from it."""
        ckpt = load_checkpoint(
            self.run_dir, model=self.model, optimizer=self.optimizer, frozen=self.frozen
        )
        state = ckpt.state
        if extras is not None:
            extras(state)
        self.earlier = trained_seconds(state)
        self.step = state.get("step", 0)
        self.scheduler.last_epoch = state["scheduler_last_epoch"]
        self.stopper.load_state_dict(state["early_stopping"])
        self.scaler.load_state_dict(state["grad_scaler"])
        self.history = state["history"]
        self.best_epoch = state["best_epoch"]
        self.stopped_early = state["stopped_early"]
        self.best_state = ckpt.best_state
        restore_rng(ckpt.rng, self.generators)
        if "train_config" in state:
            changed = changed_keys(state["train_config"], self.config.model_dump(mode="json"))
            if changed and self.say is not None:
                self.say(f"resuming with changed train settings: {', '.join(changed)}")

    # ------------------------------------------------------------------- epochs

    @contextmanager
    def metrics_file(self) -> Iterator[TextIO]:
        """metrics.jsonl, rewritten from the (restored) history so no epoch appears
        twice; /dev/null for a process that does not write."""
        path = self.run_dir / "metrics.jsonl" if self.writer else os.devnull
        with open(path, "w", encoding="utf-8") as file:
            for record in self.history:
                file.write(json.dumps(record) + "\n")
            self._file = file
            try:
                yield file
            finally:
                self._file = None

    def epochs(self) -> Iterator[int]:
        """The epochs left to run (1-based), until early stopping says stop."""
        for epoch in range(len(self.history) + 1, self.config.epochs + 1):
            if self.stopped_early:  # also set by a resumed run that had stopped early
                return
            yield epoch

    def end_epoch(
        self,
        record: dict[str, Any],
        *,
        extra_state: dict[str, Any] | None = None,
        keep_every: bool = False,
    ) -> bool:
        """Record the epoch (history, metrics.jsonl), keep the best weights by the
        monitored metric, decide on early stopping, checkpoint, print the epoch line and
        call `on_epoch_end` (after the checkpoint: a run it stops keeps the epoch).
        `keep_every`: every epoch counts as the best and none stops the run (DP-SGD
        without validation data). Returns whether this epoch is the best so far."""
        self.history.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self.monitor not in record:
            available = ", ".join(k for k in record if k not in ("epoch", "seconds"))
            raise TrainError(
                f"train.early_stopping.metric is {self.monitor!r}, which "
                + (self.missing_monitor or f"is not computed; available: {available}")
            )
        improved = self.stopper.update(record[self.monitor])
        self.stopped_early = self.stopper.should_stop
        if keep_every:
            improved, self.stopped_early = True, False
        if improved or self.best_state is None:
            self.best_epoch = record["epoch"]
            self.best_state = cpu_copy(self.weights())
        if self.writer:
            state = {
                "epoch": record["epoch"],
                "step": self.step,
                "scheduler_last_epoch": self.scheduler.last_epoch,
                "early_stopping": self.stopper.state_dict(),
                "grad_scaler": self.scaler.state_dict(),
                "history": self.history,
                "best_epoch": self.best_epoch,
                "stopped_early": self.stopped_early,
                "train_config": self.config.model_dump(mode="json"),
                "seconds": self.earlier + time.perf_counter() - self.started,
                **(extra_state or {}),
            }
            save_checkpoint(
                self.run_dir,
                model=self.model,
                optimizer=self.optimizer,
                best_state=self.best_state,
                weights=self.weights() if self.frozen else None,
                rng=capture_rng(self.generators),
                state=state,
            )
        if self.say is not None:
            self.say(self.format_epoch(record, self.config.epochs, self.monitor, improved))
        if self.on_epoch_end is not None:
            try:
                self.on_epoch_end(record)
            except StopTraining as stop:  # e.g. a search's time budget: keep the best epoch
                self.stopped_early, self.stop_reason = True, str(stop)
        return improved

    # ------------------------------------------------------------------- finish

    def finish(self, started: float) -> dict[str, Any]:
        """Say why the run stopped early (if it did), load the best epoch's weights into
        the model; returns the `FitResult` fields every loop shares (`started`: the
        `time.perf_counter()` the loop began at)."""
        if self.stopped_early and self.say is not None:
            why = self.stop_reason or (
                f"{self.monitor} did not improve for "
                f"{self.config.early_stopping.patience} epochs"
            )
            self.say(f"stopped early: {why}; keeping epoch {self.best_epoch}")
        assert self.best_state is not None  # set by the first epoch, or by the checkpoint
        load_weights(self.model, self.best_state, self.frozen)
        return {
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_metrics": self.history[self.best_epoch - 1],
            "stopped_early": self.stopped_early,
            "state_dict": self.best_state,
            "seconds": self.earlier + time.perf_counter() - started,
            "epochs_run": len(self.history),
        }
