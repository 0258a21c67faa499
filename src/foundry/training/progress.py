"""Progress inside an epoch of the training loops, on stderr: a transient rich bar on a
terminal; with progress forced on elsewhere (`FOUNDRY_PROGRESS=1` into a CI log, a pipe,
nohup) a plain line every `LOG_EVERY_S` seconds: batch i/n, rate and ETA."""

from __future__ import annotations

import time

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

__all__ = ["LOG_EVERY_S", "EpochBar"]

LOG_EVERY_S = 15.0
"""Seconds between plain progress lines inside an epoch when stderr is not a terminal.
Often enough that a long epoch shows it is alive and when it will end (a 7-minute epoch:
28 lines), rarely enough that a day-long run's log stays readable (240 lines an hour);
an epoch shorter than this prints only its summary line, as before. Longer than
`foundry.progress`'s 5 s for file reads and predictions, which last seconds, not hours."""


class RateColumn(ProgressColumn):
    """Batches per second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("? batch/s" if speed is None else f"{speed:,.0f} batch/s", style="cyan")


class EpochBar:
    """Progress over one epoch's batches; does nothing when disabled by the caller or by
    `foundry.progress`'s rules (`--quiet`/`--json`, FOUNDRY_PROGRESS=0, stderr not a
    terminal unless FOUNDRY_PROGRESS=1).

    On a terminal: a transient rich bar, moved every `every` batches and redrawn a few
    times a second (a small batch takes well under a millisecond, and redrawing on each
    one would cost more). Elsewhere: a plain line every `LOG_EVERY_S` seconds (one clock
    read per batch), since a transient bar shows nothing in a log.
    """

    def __init__(self, *, enabled: bool, n_batches: int, epochs: int) -> None:
        from foundry.progress import progress_enabled

        self.enabled = enabled and progress_enabled()
        self.console = Console(stderr=True)
        self.epochs = epochs
        self.every = max(1, n_batches // 50)
        live = self.console.is_terminal and not self.console.is_dumb_terminal
        self._lines = self.enabled and not live  # plain lines instead of a bar
        self._epoch, self._epoch_start, self._next_line = 0, 0.0, 0.0
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
            if self.enabled and live
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
        self._epoch = epoch
        self._epoch_start = time.monotonic()
        self._next_line = self._epoch_start + LOG_EVERY_S
        if self._progress is None:
            return
        description = f"epoch {epoch}/{self.epochs}"
        if self._task is None:
            self._task = self._progress.add_task(description, total=self._n_batches)
        else:
            self._progress.reset(self._task, total=self._n_batches, description=description)

    def advance(self, done: int) -> None:
        """`done` batches of the epoch finished."""
        if self._lines:
            now = time.monotonic()
            if now >= self._next_line and done < self._n_batches:  # the epoch line follows
                self._next_line = now + LOG_EVERY_S
                self.console.print(
                    self._line(done, now - self._epoch_start), highlight=False, soft_wrap=True
                )
        elif self._progress is not None and (done % self.every == 0 or done == self._n_batches):
            self._progress.update(self._task, completed=done)

    def _line(self, done: int, elapsed: float) -> str:
        """One line: `epoch 3/10: batch 1,200/5,000 (24%), 41.2 batch/s, 0:00:29 elapsed,
        eta 0:01:32`."""
        n = self._n_batches
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _clock((n - done) / rate) if rate > 0 else "?"
        return (
            f"epoch {self._epoch}/{self.epochs}: batch {done:,}/{n:,} ({done / n:.0%}), "
            f"{rate:,.1f} batch/s, {_clock(elapsed)} elapsed, eta {eta}"
        )


def _clock(seconds: float) -> str:
    """H:MM:SS, as rich's elapsed and remaining columns show time."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
