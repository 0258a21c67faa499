"""Data-parallel training over several processes: PyTorch DDP, launched by torchrun.

`foundry train config.yaml --nproc N` starts N local workers through torch's own
launcher (`launch_local`, the machinery of `torchrun --standalone`); on several machines
run `torchrun --nnodes ... -m foundry train config.yaml` on each. Every worker runs the
ordinary pipeline; torchrun tells it its place through `RANK`, `WORLD_SIZE` and
`LOCAL_RANK`, and this module does the rest:

- `run_in_group(fn, device=...)`: join the process group (gloo on CPU, NCCL on CUDA,
  one GPU per local rank), call `fn`, and leave the group again, also on errors.
- `fit` asks `active()`, then wraps the model (`wrap`), gives each rank its share of
  each epoch's rows (`shard`), averages the training loss (`mean_over_ranks`) and takes
  the validation record rank 0 computed (`broadcast_json`).
- Rank 0 alone writes: the run directory, metrics, checkpoints, the registry entry
  (`is_main`, `from_main`, `result_from_main`).

`train.batch_size` is the global batch: each of N processes takes batch_size / N rows
per step, so a 2-process run steps like a 1-process run with the same batch size (DDP
averages the gradients of equal shards: the mean gradient of the whole batch).

Nothing here costs anything in a single process: with `WORLD_SIZE` unset or 1 no group
is made and `fit` runs exactly as it does without this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from foundry.errors import ConfigError, DataError, FoundryError, ModelError, TrainError

__all__ = [
    "active",
    "broadcast_json",
    "check_config",
    "exit_worker",
    "from_main",
    "is_main",
    "launch_local",
    "launched",
    "machines",
    "local_batch_size",
    "mean_over_ranks",
    "rank",
    "refuse_privacy",
    "result_from_main",
    "run_in_group",
    "seed_for_rank",
    "shard",
    "training_device",
    "world_size",
    "wrap",
]

T = TypeVar("T")

# Rank 0 evaluates and registers the model alone while the others wait in a collective:
# give that longer than the default (10 min for NCCL). A dead worker does not leave the
# others waiting this long: torchrun stops the whole group when one process fails.
_TIMEOUT = timedelta(hours=2)

_joined = False  # whether this process has trained in a process group (see exit_worker)


# ------------------------------------------------------------------- where am I


def launched() -> bool:
    """Whether torchrun started this process as one of several (`WORLD_SIZE` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """Whether this process trains in a process group of more than one."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    """Processes training together: the group's size, else `WORLD_SIZE`, else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def machines() -> int:
    """Machines (nodes) training together: torchrun's `WORLD_SIZE` over its processes per
    node (`LOCAL_WORLD_SIZE`); 1 for a single process or one machine's `--nproc N`."""
    if not launched():
        return 1
    world = world_size()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return max(1, -(-world // max(1, local)))  # ceil: nodes may run different counts


def rank() -> int:
    """This process's place among them, 0 for rank 0 and for a single process (a stray
    `RANK` without `WORLD_SIZE` > 1 does not count)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """Rank 0: the one process that writes files, logs and registers."""
    return rank() == 0


# --------------------------------------------------------------- checks and setup


def local_batch_size(batch_size: int, world: int) -> int:
    """Rows per process per step: `train.batch_size` is the global batch."""
    if batch_size % world:
        raise ConfigError(
            f"train.batch_size is the global batch, split evenly over {world} processes: "
            f"{batch_size} is not divisible by {world}",
            hint=f"use a multiple of {world}, e.g. {max(world, batch_size // world * world)}",
        )
    return batch_size // world


def check_config(cfg: Any, world: int) -> None:
    """Raise `ConfigError` for what a run over `world` processes cannot do; `cfg` is a
    `FoundryConfig`. Called before launching (one clear error) and again in each worker."""
    if world <= 1:
        return
    if cfg.model.type in ("gpt", "hf"):
        raise ConfigError(
            f"model.type {cfg.model.type} trains in one process only: distributed training "
            "(--nproc, torchrun) supports the mlp, cnn and text models",
            hint="drop --nproc / run without torchrun",
        )
    if cfg.train.privacy is not None:
        refuse_privacy()
    local_batch_size(cfg.train.batch_size, world)


def refuse_privacy() -> NoReturn:
    # Opacus' DPDDP would need a distributed Poisson sampler and accountant wired in;
    # `PrivateTraining` samples rows and accounts for them in one process.
    raise ConfigError(
        "train.privacy cannot be combined with distributed training (--nproc, torchrun): "
        "DP-SGD's sampling and privacy accounting here assume one process",
        hint="drop --nproc, or remove train.privacy",
    )


def _backend(device: str) -> str:
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def run_in_group(fn: Callable[[], T], *, device: str, share: tuple[str, ...] = ()) -> T:
    """Join the process group torchrun describes (env `MASTER_ADDR`, `RANK`, ...), run
    `fn()` and leave the group again, also when `fn` raises. `device`: `train.device`;
    CUDA training uses NCCL and the GPU `LOCAL_RANK`, CPU training gloo.

    `share`: fields of `fn`'s result (a dataclass) every rank takes from rank 0's (see
    `result_from_main`): rank 0 evaluates and registers, the others wait for it."""
    global _joined
    backend = _backend(device)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    _joined = True
    try:
        result = fn()
        result = result_from_main(result, share) if share else result
        dist.barrier()  # no rank closes its connections while another still uses them
        return result
    finally:
        # also after an error: this rank leaves, torchrun stops the others
        dist.destroy_process_group()


def exit_worker(code: int) -> None:
    """End a process that trained in a group now, with `code`, skipping interpreter
    shutdown; returns (does nothing) in any other process. The CLI calls it last.

    DistributedDataParallel keeps its process group alive after `destroy_process_group`
    (its reducer holds it), so gloo's worker threads outlive the training. When one of
    them releases a finished collective's tensors while Python shuts down, it needs the
    GIL, cannot have it, and the process aborts (`terminate called without an active
    exception`, exit code -6) after a run that succeeded: about 1 run in 20 on a loaded
    2-core machine; a core dump showed ProcessGroupGloo::runLoop freeing an
    AsyncBarrierWork during Py_FinalizeEx. Leaving with os._exit, as multiprocessing's
    children do, skips that shutdown; the streams are flushed first and every file and
    registry write is complete by then."""
    if not _joined:
        return
    import contextlib
    import logging

    for stream in (sys.stdout, sys.stderr):
        # a closed or broken pipe: nothing more can be written to it anyway
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    logging.shutdown()
    os._exit(code)


def training_device(device: torch.device) -> torch.device:
    """The device of this rank: `cuda` means the GPU `LOCAL_RANK` in a group."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` in DistributedDataParallel, which copies rank 0's weights to every rank
    now and averages gradients during each backward pass."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def seed_for_rank(seed: int, epoch: int) -> int:
    """Seed of this rank's dropout and augmentation in `epoch`: a different stream per
    rank (rows on two ranks do not share dropout masks), derived again each epoch so a
    resumed run needs no RNG state from ranks other than 0."""
    return seed + 1_000_003 * (rank() + 1) + epoch  # a prime apart: no overlap per rank


# -------------------------------------------------------------- each rank's rows


def shard(perm: Tensor, rank: int, world: int) -> Tensor:
    """Rank `rank`'s rows of an epoch, split as `DistributedSampler` splits them: `perm`
    padded to a multiple of `world` by repeating its first rows (every rank steps as
    often), then every world-th index from `rank`. Local batch b of all ranks together
    is then global batch b of `perm`: the run steps through the same global batches as a
    single process (exactly so when `world` divides the number of rows).

    (Not the sampler itself: the loop has no DataLoader, and the permutation comes from
    the loop's own generator, not the sampler's `seed + epoch`, so that the world size
    leaves the order of rows unchanged.)"""
    padding = -len(perm) % world
    if padding:
        perm = torch.cat([perm, perm.repeat(math.ceil(padding / len(perm)))[:padding]])
    return perm[rank::world]


def rows_per_rank(n_rows: int, world: int) -> int:
    """Rows `shard` gives each rank per epoch."""
    return math.ceil(n_rows / world)


# ---------------------------------------------------------------- communication


def _comm_device() -> torch.device:
    # NCCL moves CUDA tensors only; gloo CPU tensors
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean_over_ranks(value: Tensor) -> Tensor:
    """The mean of a scalar tensor over all ranks (every rank gets it)."""
    reduced = value.detach().float().to(_comm_device()).clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return (reduced / dist.get_world_size()).to(value.device)


def gather_counts(count: int) -> list[int]:
    """Every rank's `count`, in rank order; every rank gets the list."""
    mine = torch.tensor([count], dtype=torch.int64, device=_comm_device())
    every = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    return [int(t.item()) for t in every]


def broadcast_json(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` (JSON data) on every rank; sent as UTF-8 bytes, no pickle."""
    device = _comm_device()
    if dist.get_rank() == src:
        payload = torch.frombuffer(bytearray(json.dumps(obj).encode()), dtype=torch.uint8)
        size = torch.tensor([len(payload)], dtype=torch.int64, device=device)
    else:
        size = torch.zeros(1, dtype=torch.int64, device=device)
    dist.broadcast(size, src)
    if dist.get_rank() != src:
        payload = torch.empty(int(size.item()), dtype=torch.uint8)
    buffer = payload.to(device)
    dist.broadcast(buffer, src)
    return json.loads(bytes(buffer.cpu().numpy()).decode())


def from_main(fn: Callable[[], T]) -> T:
    """`fn()` computed by rank 0 and sent to every rank (JSON data); a `FoundryError` it
    raises is raised on every rank, so none is left waiting. One process: just `fn()`."""
    if not active():
        return fn()
    message: dict[str, Any] = {}
    if is_main():
        try:
            message = {"value": fn()}
        except FoundryError as exc:
            message = {"error": exc.message, "hint": exc.hint, "type": type(exc).__name__}
    message = broadcast_json(message)
    if "error" in message:
        kinds = {c.__name__: c for c in (ConfigError, DataError, ModelError, TrainError)}
        raise kinds.get(message["type"], FoundryError)(message["error"], hint=message["hint"])
    return message["value"]


def result_from_main(result: T, fields: tuple[str, ...]) -> T:
    """`result` (a dataclass) with `fields` taken from rank 0's: the other ranks skip
    evaluation and registration and return what rank 0 registered. Paths travel as text
    and arrive as paths again."""
    if not active():
        return result
    sent: dict[str, Any] = {"values": {}, "paths": []}
    if is_main():
        for name in fields:
            value = getattr(result, name)
            if isinstance(value, os.PathLike):
                value = os.fspath(value)
                sent["paths"].append(name)
            sent["values"][name] = value
    shared = broadcast_json(sent)
    if is_main():
        return result
    values = {k: Path(v) if k in shared["paths"] else v for k, v in shared["values"].items()}
    return dataclasses.replace(result, **values)  # type: ignore[type-var]


# ---------------------------------------------------------------------- launcher


def launch_local(nproc: int, args: list[str], cfg: Any) -> None:
    """Run `python -m foundry ARGS...` in `nproc` local processes with torch's elastic
    launcher (what `torchrun --standalone --nproc-per-node N` does) and wait for them;
    `cfg` (the `FoundryConfig` they train) is checked first (`check_config`).

    Each process gets cores / nproc CPU threads (`OMP_NUM_THREADS`, unless already set):
    more would make them compete for the same cores. Raises `TrainError` when a process
    fails; torchrun then stops the others, so none waits forever."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    check_nproc(nproc, cfg.train.device)
    check_config(cfg, nproc)
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads is None:  # the workers inherit this process's environment
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as `torchrun --standalone` picks
        max_restarts=0,  # a failed run is reported, not restarted
        monitor_interval=0.5,
    )
    try:
        elastic_launch(config, entrypoint=sys.executable)("-m", "foundry", *args)
    except ChildFailedError as exc:
        failed_rank, failure = exc.get_first_failure()
        raise TrainError(
            f"distributed training failed: process {failed_rank} of {nproc} exited with "
            f"code {failure.exitcode}; its message is above"
        ) from None
    finally:
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]


def check_nproc(nproc: int, device: str) -> None:
    """`--nproc` must be at least 1 and at most one process per GPU (CUDA) or per CPU
    core: more processes than that only compete for the same hardware."""
    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1. Got {nproc} instead.")
    if launched():
        raise ConfigError(
            "--nproc cannot be used inside a torchrun worker: torchrun already set the "
            "number of processes (--nproc-per-node)"
        )
    if _backend(device) == "nccl":
        limit, what = torch.cuda.device_count(), "GPUs"
    else:
        limit, what = os.cpu_count() or 1, "CPU cores"
    if nproc > limit:
        raise ConfigError(
            f"--nproc {nproc} is more than the {limit} {what} of this machine",
            hint=f"use --nproc {limit} or less; for more, add machines with torchrun --nnodes",
        )
