"""The transient per-epoch progress bar of the training loops (on stderr, via rich)."""

from __future__ import annotations

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

__all__ = ["EpochBar"]


class RateColumn(ProgressColumn):
    """Batches per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? batch/s" if speed is None else f"{speed:,.0f} batch/s", style="cyan")


class EpochBar:
    """A transient rich progress bar over one epoch's batches; does nothing when disabled
    by the caller or by `foundry.progress`'s rules (`--quiet`/`--json`, FOUNDRY_PROGRESS=0,
    stderr not a terminal).

    The bar is moved every `every` batches and redrawn a few times a second: a small
    batch takes well under a millisecond, and redrawing on each one would cost more.
    """

    def __init__(self, *, enabled: bool, n_batches: int, epochs: int) -> None:
        from foundry.progress import progress_enabled

        self.enabled = enabled and progress_enabled()
        self.console = Console(stderr=True)
        self.epochs = epochs
        self.every = max(1, n_batches // 50)
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                RateColumn(),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
                refresh_per_second=4,
            )
            if self.enabled
            else None
        )
        self._task = None
        self._n_batches = n_batches

    def __enter__(self) -> EpochBar:
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
