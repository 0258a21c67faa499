"""Progress of long operations (reading big files, predicting many rows, compressing):
one rich bar on stderr with what is being done, M/N (or bytes), a rate with its unit,
elapsed time and ETA.

    with progress_bar("reading big.csv", total=size, unit="bytes") as bar:
        for block in blocks:
            bar.advance(len(block))

When it is on (`progress_enabled`), first rule that applies wins:

1. `--quiet` / `--json` (the CLI runs the command inside `silenced()`), or a caller's
   explicit `enabled=False`: off. Scripts asked for the result alone.
2. `FOUNDRY_PROGRESS=0`: off; `FOUNDRY_PROGRESS=1`: on, also when stderr is a file or a
   pipe (CI logs, tests), where it is printed as a plain line every few seconds and
   once at the end instead of a redrawn bar.
3. Called from the Python API (`foundry.train()`..., see `foundry.console.output`): off.
4. Otherwise on when stderr is a terminal (a caller's explicit `enabled=True` too).

Nothing is ever written to stdout: it carries results that scripts pipe. A disabled bar
is a no-op, and an enabled one is cheap per `advance` (an addition and a clock read; rich
is told at most ten times a second), so loops can call it per batch or per block.
One bar at a time: a bar opened while another is shown is disabled (a file read inside
a compression step does not draw over the step's bar).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from rich.progress import ProgressColumn

__all__ = ["ENV", "Bar", "progress_bar", "progress_enabled", "silenced"]

ENV = "FOUNDRY_PROGRESS"
"""`1` forces progress on (also in pipes and files), `0` forces it off."""

_UPDATE_EVERY_S = 0.1  # hand counts to rich at most this often: it locks and keeps samples
_LOG_EVERY_S = 5.0  # a plain progress line this often when stderr is not a terminal

# Context-local rather than a flag threaded through every reader: `--quiet` has to reach
# `read_table` deep inside any stage, and a context variable ends with the `with` block.
_silenced: ContextVar[bool] = ContextVar("foundry_progress_silenced", default=False)
_active: ContextVar[Bar | None] = ContextVar("foundry_progress_active", default=None)


@contextmanager
def silenced(on: bool = True) -> Iterator[None]:
    """No progress bars inside the block when `on` (what `--quiet` and `--json` do)."""
    token = _silenced.set(_silenced.get() or on)
    try:
        yield
    finally:
        _silenced.reset(token)


def progress_enabled(enabled: bool | None = None) -> bool:
    """Whether a bar would be shown now (the rules in the module docstring); `enabled`:
    the caller's choice, None to decide from the environment and the terminal."""
    if enabled is False or _silenced.get():
        return False
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        return False
    if forced in ("1", "true", "yes", "on"):
        return True
    from foundry.console import console_output

    if not console_output():  # the Python API: bars only when FOUNDRY_PROGRESS=1 asks
        return False
    return enabled if enabled is not None else _stderr_is_terminal()


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


class Bar:
    """One progress bar; use `progress_bar(...)`. Methods do nothing when it is off.

    `total`: the amount of work in `unit`s (None: unknown, the bar pulses); `unit`:
    "bytes" shows sizes and MB/s, anything else `M/N unit` and `unit/s`."""

    def __init__(
        self, description: str, total: float | None, *, unit: str, enabled: bool
    ) -> None:
        self.description = description
        self.total = total
        self.unit = unit
        self.enabled = enabled
        self._done = 0.0
        self._told = 0.0  # what rich was last told
        self._next = 0.0  # monotonic time of the next update rich gets
        self._progress: Any = None
        self._task: Any = None
        self._live = False
        self._next_log = 0.0

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> Bar:
        if not self.enabled or _active.get() is not None:
            self.enabled = False
            return self
        self._token = _active.set(self)
        from rich.console import Console

        console = Console(stderr=True)
        self._live = console.is_terminal and not console.is_dumb_terminal
        if not self._live:  # a log has no width: keep each plain line on one line
            console = Console(stderr=True, width=max(console.width, 160))
        self._progress = _make_progress(console, self.unit, live=self._live)
        self._task = self._progress.add_task(self.description, total=self.total)
        if self._live:
            self._progress.start()
        self._next_log = time.monotonic() + _LOG_EVERY_S
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if not self.enabled:
            return
        self._flush()
        if self._live:
            self._progress.stop()  # transient: the bar disappears, results stay
        elif exc_type is None:
            self._log()  # the last plain line: totals, overall rate
        _active.reset(self._token)

    # ---------------------------------------------------------------- updates

    def advance(self, amount: float = 1) -> None:
        """`amount` more units done."""
        if self.enabled:
            self._done += amount
            if time.monotonic() >= self._next:
                self._flush()

    def update(self, completed: float) -> None:
        """`completed` units done in all."""
        if self.enabled:
            self._done = completed
            if time.monotonic() >= self._next:
                self._flush()

    def describe(self, description: str, *, total: float | None = None) -> None:
        """Say what is being done now (and, with `total`, change the amount of work)."""
        if not self.enabled:
            return
        self.description = description
        self._flush()
        changes: dict[str, Any] = {"description": description}
        if total is not None:
            changes["total"] = self.total = total
        self._progress.update(self._task, **changes)

    @property
    def completed(self) -> float:
        return self._done

    def _flush(self) -> None:
        now = time.monotonic()
        self._next = now + _UPDATE_EVERY_S
        if self._done != self._told:
            self._progress.update(self._task, advance=self._done - self._told)
            self._told = self._done
        if not self._live and now >= self._next_log:
            self._next_log = now + _LOG_EVERY_S
            self._log()

    def _log(self) -> None:
        """One plain line of the bar's columns (stderr is not a terminal)."""
        task = self._progress.tasks[0]
        self._progress.console.print(self._progress.make_tasks_table([task]))


@contextmanager
def progress_bar(
    description: str,
    total: float | None,
    *,
    unit: str = "rows",
    enabled: bool | None = None,
) -> Iterator[Bar]:
    """A `Bar` for the block: on by the rules of `progress_enabled(enabled)`; rich's
    transient bar on a terminal, plain lines otherwise (when forced on)."""
    with Bar(description, total, unit=unit, enabled=progress_enabled(enabled)) as bar:
        yield bar


# ------------------------------------------------------------------- rendering


def _make_progress(console: Any, unit: str, *, live: bool) -> Any:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    amount = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    columns = [TextColumn("{task.description}"), BarColumn(), amount]
    if unit != "bytes":
        columns.append(TextColumn(unit))
    columns += [
        _RateColumn(unit),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    ]
    return Progress(
        *columns,
        console=console,
        transient=True,
        auto_refresh=live,
        refresh_per_second=4,
        # results printed on stdout while the bar is shown must stay on stdout (rich
        # would otherwise route them above the bar, to stderr)
        redirect_stdout=False,
    )


def _rate_text(speed: float | None, unit: str) -> str:
    if speed is None:
        return f"? {'B' if unit == 'bytes' else unit}/s"
    if unit == "bytes":
        from rich.filesize import decimal

        return f"{decimal(int(speed))}/s"
    return f"{speed:,.0f} {unit}/s" if speed >= 10 else f"{speed:,.2f} {unit}/s"


class _RateColumn(ProgressColumn):
    """Units per second: rich's recent-window speed, else the overall average (a fast
    operation may end before rich has two samples)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Any) -> Any:
        from rich.text import Text

        speed = task.finished_speed or task.speed
        if speed is None and task.elapsed and task.completed:
            speed = task.completed / task.elapsed
        return Text(_rate_text(speed, self.unit), style="progress.data.speed")
