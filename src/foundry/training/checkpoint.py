"""Training checkpoints without pickle: safetensors for tensors, JSON for the rest.

`run_dir/checkpoint/` holds:

    model.safetensors       model.state_dict() after the last completed epoch
    best.safetensors        the best epoch's weights so far
    optimizer.safetensors   tensors of optimizer.state_dict()["state"], keyed
                            "state.{param_index}.{name}" (Adam's `step` is a tensor too)
    optimizer.json          the rest of it: non-tensor state values and param_groups
    rng.safetensors         RNG states (uint8 tensors): "torch" (global CPU RNG, used by
                            dropout), "cuda.{i}", and one per named torch.Generator
    state.json              epoch, global step, scheduler step, early stopping, history,
                            seconds (training time up to this checkpoint, resumes summed)...

With FOUNDRY_ENCRYPTION_KEY set every file is encrypted (`foundry.crypto`).

The folder is written as `checkpoint.tmp/` and then renamed into place, so a process
killed mid-write leaves the previous checkpoint whole. A rename cannot replace a
non-empty folder, so the old one is first moved to `checkpoint.old/`; a kill between the
two renames leaves only `checkpoint.old/`, which `load_checkpoint` falls back to.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from foundry.crypto import read_tensors, read_text, write_tensors, write_text
from foundry.errors import TrainError

__all__ = [
    "Checkpoint",
    "capture_rng",
    "find_checkpoint",
    "load_checkpoint",
    "restore_rng",
    "save_checkpoint",
    "trained_seconds",
]

CHECKPOINT = "checkpoint"


@dataclass(frozen=True)
class Checkpoint:
    """What `load_checkpoint` hands back besides restoring the model and optimizer."""

    state: dict[str, Any]  # the contents of state.json
    rng: dict[str, Tensor]  # for `restore_rng`
    best_state: dict[str, Tensor]  # best weights so far, on CPU


# ------------------------------------------------------------------------------ save


def save_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    optimizer: Optimizer,
    best_state: dict[str, Tensor],
    rng: dict[str, Tensor],
    state: dict[str, Any],
    weights: dict[str, Tensor] | None = None,
) -> Path:
    """Write a complete checkpoint into `run_dir/checkpoint/`, atomically; returns it.

    `weights`: what to save of the model (default: its whole state dict); a LoRA run
    leaves out the frozen base, which the run loads again from its source."""
    final = run_dir / CHECKPOINT
    tmp = run_dir / f"{CHECKPOINT}.tmp"
    old = run_dir / f"{CHECKPOINT}.old"
    shutil.rmtree(tmp, ignore_errors=True)  # left over from a killed save
    tmp.mkdir(parents=True)

    write_tensors(
        tmp / "model.safetensors", _to_cpu(model.state_dict() if weights is None else weights)
    )
    write_tensors(tmp / "best.safetensors", _to_cpu(best_state))
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    write_tensors(tmp / "optimizer.safetensors", opt_tensors)
    _write_json(tmp / "optimizer.json", opt_meta)
    write_tensors(tmp / "rng.safetensors", _to_cpu(rng))
    _write_json(tmp / "state.json", state)

    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def _to_cpu(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    # A copy: safetensors refuses tensors that share memory (tied weights) and wants
    # contiguous CPU tensors.
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def _write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=1) + "\n", fsync=False)


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into safetensors tensors and JSON data."""
    tensors: dict[str, Tensor] = {}
    json_state: dict[str, dict[str, Any]] = {}
    for param_id, param_state in sd["state"].items():
        for name, value in param_state.items():
            if isinstance(value, Tensor):
                tensors[f"state.{param_id}.{name}"] = value.detach().to("cpu", copy=True)
            else:  # e.g. SGD's momentum_buffer=None
                json_state.setdefault(str(param_id), {})[name] = value
    return tensors, {"state": json_state, "param_groups": sd["param_groups"]}


# ------------------------------------------------------------------------------ load


def find_checkpoint(run_dir: Path) -> Path | None:
    """The folder of the last complete checkpoint in `run_dir`, or None."""
    for name in (CHECKPOINT, f"{CHECKPOINT}.old"):
        if (run_dir / name / "state.json").is_file():
            return run_dir / name
    return None


def load_checkpoint(
    run_dir: Path,
    *,
    model: nn.Module,
    optimizer: Optimizer,
    frozen: Collection[str] = (),
) -> Checkpoint:
    """Load weights into `model` and state into `optimizer` from `run_dir`'s checkpoint.

    `frozen`: weight names the checkpoint may lack (saved without them, see
    `save_checkpoint`); every other weight must be there."""
    folder = find_checkpoint(run_dir)
    if folder is None:
        raise TrainError(
            f"nothing to resume in {run_dir}: it has no checkpoint/state.json",
            hint="train without resume, or point at the run_dir of an interrupted run",
        )
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        saved = read_tensors(str(folder / "model.safetensors"), device=str(device))
        load_weights(model, saved, frozen)
    except RuntimeError as e:
        raise TrainError(f"the checkpoint in {folder} does not fit this model: {e}") from e

    meta = json.loads(read_text(folder / "optimizer.json"))
    tensors = read_tensors(str(folder / "optimizer.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(tensors, meta, optimizer))

    return Checkpoint(
        state=json.loads(read_text(folder / "state.json")),
        rng=read_tensors(str(folder / "rng.safetensors")),
        best_state=read_tensors(str(folder / "best.safetensors")),
    )


def trained_seconds(state: dict[str, Any]) -> float:
    """Seconds of training a checkpoint's state.json records up to its epoch, every
    earlier resume included: a resumed run adds its own time to this, so its manifest
    and training cost count the whole run, not the last part. A checkpoint written before
    "seconds" was recorded gives the sum of its epochs' seconds (without the setup)."""
    if isinstance(state.get("seconds"), (int, float)):
        return float(state["seconds"])
    return float(sum(float(h.get("seconds") or 0.0) for h in state.get("history") or []))


def load_weights(
    model: nn.Module, weights: dict[str, Tensor], frozen: Collection[str] = ()
) -> None:
    """`model.load_state_dict(weights)`, where `weights` may leave out the `frozen` names."""
    if not frozen:
        model.load_state_dict(weights)
        return
    result = model.load_state_dict(weights, strict=False)
    missing = sorted(set(result.missing_keys) - set(frozen))
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"missing {missing[:3]}, unexpected {sorted(result.unexpected_keys)[:3]}"
        )


def _unflatten_optimizer(
    tensors: dict[str, Tensor], meta: dict[str, Any], optimizer: Optimizer
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for param_id, values in meta["state"].items():
        state.setdefault(int(param_id), {}).update(values)
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    # JSON turned tuples (Adam's betas) into lists: give them back their live type.
    groups = []
    for saved, live in zip(meta["param_groups"], optimizer.param_groups, strict=True):
        groups.append(
            {
                k: tuple(v) if isinstance(live.get(k), tuple) and isinstance(v, list) else v
                for k, v in saved.items()
            }
        )
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------- RNG


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Tensor]:
    """Every RNG state training draws from, as uint8 tensors."""
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda.{i}"] = s
    for name, generator in generators.items():
        states[f"generator.{name}"] = generator.get_state()
    return states


def restore_rng(states: dict[str, Tensor], generators: dict[str, torch.Generator]) -> None:
    """Put back what `capture_rng` recorded."""
    torch.set_rng_state(states["torch"])
    cuda = [states[f"cuda.{i}"] for i in range(len(states)) if f"cuda.{i}" in states]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    for name, generator in generators.items():
        generator.set_state(states[f"generator.{name}"])
