"""Parallel trials on one machine: worker processes that share the study's storage.

Processes rather than threads: each trial is a PyTorch training whose CPU kernels
already use several threads, and Python threads would share one interpreter lock and
one torch thread pool. Each worker gets `cores // jobs` torch threads so the jobs
together do not oversubscribe the CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from foundry.errors import TrainError

__all__ = ["STORAGE_ENV", "available_cores", "run_workers", "split_trials", "wait_workers"]

STORAGE_ENV = "FOUNDRY_TUNE_STORAGE"
"""Workers read the storage URL from here, so a password never shows in `ps`."""


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def split_trials(n_trials: int | None, jobs: int) -> list[int | None]:
    """Trials per worker: `n_trials` shared out as evenly as possible (None: unbounded)."""
    if n_trials is None:
        return [None] * jobs
    return [n_trials // jobs + (1 if i < n_trials % jobs else 0) for i in range(jobs)]


def run_workers(
    config_path: Path,
    shares: list[int | None],
    *,
    storage: str,
    study_name: str,
    threads: int,
    timeout: float | None,
    quiet: bool,
    first_index: int = 1,
) -> list[subprocess.Popen]:
    """Start one `foundry tune --worker` process per share (worker indices from
    `first_index`); returns them running. `wait_workers` collects them."""
    procs = []
    env = {**os.environ, STORAGE_ENV: storage}
    for offset, share in enumerate(shares):
        if share == 0:
            continue
        cmd = [
            sys.executable,
            "-m",
            "foundry",
            "tune",
            str(config_path),
            "--worker",
            "--worker-index",
            str(first_index + offset),
            "--threads",
            str(threads),
            "--study-name",
            study_name,
        ]
        if share is not None:
            cmd += ["--trials", str(share)]
        if timeout is not None:
            cmd += ["--timeout", str(timeout)]
        if quiet:
            cmd.append("--quiet")
        # trial lines go to stderr, inherited; stdout is this process's (--json) alone
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    return procs


def wait_workers(procs: list[subprocess.Popen]) -> None:
    """Wait for every worker; stop them all if this process is interrupted, and raise
    when one of them failed."""
    try:
        codes = [p.wait() for p in procs]
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    failed = [(p.args, c) for p, c in zip(procs, codes, strict=True) if c != 0]
    if failed:
        args, code = failed[0]
        raise TrainError(
            f"{len(failed)} tuning worker(s) failed; the first exited with code {code}: "
            f"{' '.join(map(str, args))}",
            hint="its error is printed above; the trials it finished stay in the study",
        )
