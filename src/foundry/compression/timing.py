"""Timing the networks of a compress run, two ways, in one process:

- **model only**: one forward of encoded tensors (`run_model`), what the network itself
  costs;
- **end to end**: what a `/predict` request costs a worker, HTTP and the gate aside: the
  JSON body of raw records parsed, validated, scrubbed and encoded, the network run,
  the outputs decoded (temperature, fairness thresholds) and the answer written as JSON
  (`foundry.serve.served_model.ServedModel`).

The two differ most on small models. For a 16k-weight MLP the forward is tens of
microseconds and preprocessing the records costs more than that, so a variant 4x faster
on the model alone was measured ~1.1x faster end to end; timed only at the network, and
without warm-up, an earlier table claimed 86x. The speed-up a user gets is the
end-to-end one, and that is what the table's speed-up column and the choice of
`name:compressed` read.

Both run with the intra-op threads a server worker gets (`serve.workers` of the training
config; `foundry.serve.app.inference_threads`): PyTorch's default, one thread per core,
is not what serving uses, and on a busy machine a forward split over threads waits at
PyTorch's thread barrier for a thread that has no core. Measured on the shared 2-core
machine: the fp32 parent of a small MLP took 72.8 ms at batch 64 with 2 threads against
0.11 ms for its ONNX variant, a "678x" that was the barrier, not the variant. ONNX
Runtime sessions are opened again with the same thread count for the timing.

Every call is warmed up (`WARMUP` calls each: first calls allocate, pick kernels, fill
caches) before any is timed. Then each of `repeats` rounds times every network in turn,
in forward order on even rounds and backward on odd ones, so load on a shared machine
hits all of them alike and no network always runs right after the same neighbour. The
median of the rounds is reported.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["BATCHES", "WARMUP", "Timings", "round_robin", "time_networks"]

BATCHES = (1, 64)
"""Batch sizes every variant is timed at: one API request, and a batched one."""
WARMUP = 5
"""Untimed calls of every (network, batch, model / end-to-end) before the rounds."""


@dataclass(frozen=True)
class Timings:
    """Median milliseconds per call, by batch size ("1", "64")."""

    model_ms: dict[str, float]
    end_to_end_ms: dict[str, float]
    """Empty when the rows cannot be sent as API records (see `time_networks`)."""


def time_networks(
    parent: Any,
    networks: list[Any],
    same_network: list[bool],
    encoded: dict[str, torch.Tensor],
    frame: pd.DataFrame,
    repeats: int,
    *,
    workers: int = 1,
    on_round: Callable[[], None] | None = None,
) -> tuple[list[Timings], str]:
    """Model-only and end-to-end medians for each of `networks` (the parent's first).

    parent: the parent `Predictor` (its preprocessing, scrubber, temperature and
    thresholds serve every variant; `same_network[i]` False: a retrained network, served
    without the parent's temperature and thresholds). encoded / frame: the same rows,
    encoded and raw. workers: server worker processes, whose share of the cores the
    timing gets (module docstring). `on_round` is called after the warm-up and after
    each round. Also returns why end to end was not measured ("" when it was)."""
    from foundry.economics.throughput import torch_threads

    restore = torch_threads(workers)
    try:
        networks = [_with_current_threads(net) for net in networks]
        return _time(parent, networks, same_network, encoded, frame, repeats, on_round)
    finally:
        restore()


def _time(
    parent: Any,
    networks: list[Any],
    same_network: list[bool],
    encoded: dict[str, torch.Tensor],
    frame: pd.DataFrame,
    repeats: int,
    on_round: Callable[[], None] | None,
) -> tuple[list[Timings], str]:
    from foundry.predictor import run_model

    inputs = {k: v for k, v in encoded.items() if k != "target"}
    n = len(next(iter(inputs.values())))
    index = {size: torch.arange(size) % n for size in BATCHES}  # few rows: repeat them
    batches = {size: {k: v[index[size]] for k, v in inputs.items()} for size in BATCHES}
    calls: list[dict[tuple[str, int], Callable[[], Any]]] = []
    for net in networks:
        calls.append(
            {("model", s): (lambda net=net, s=s: run_model(net, batches[s], s)) for s in BATCHES}
        )
    why = ""
    try:
        bodies = _request_bodies(parent, frame, index)
        for net, same, timed in zip(networks, same_network, calls, strict=True):
            served = _served(parent, net, same)
            for size in BATCHES:
                _answer(served, bodies[size])  # refuses now what the rounds would
                timed[("end_to_end", size)] = lambda served=served, s=size: _answer(
                    served, bodies[s]
                )
    except Exception as exc:  # noqa: BLE001 - any refusal: report the model-only figure
        why = f"end to end not measured: the rows cannot be sent as API records ({exc})"
        for timed in calls:
            for size in BATCHES:
                timed.pop(("end_to_end", size), None)

    medians = round_robin(calls, repeats, on_round=on_round)
    return [
        Timings(model_ms=_of(m, "model"), end_to_end_ms=_of(m, "end_to_end")) for m in medians
    ], why


def round_robin(
    calls: list[dict[Any, Callable[[], Any]]],
    repeats: int,
    *,
    warmup: int = WARMUP,
    on_round: Callable[[], None] | None = None,
) -> list[dict[Any, float]]:
    """Median milliseconds of every call of every subject: `calls[i]` maps a key (a batch
    size, ...) to a zero-argument call of subject i. Each call runs `warmup` times
    untimed first; then each of `repeats` rounds times every subject in turn, forward on
    even rounds and backward on odd ones (the module docstring says why), with the garbage
    collector off inside a round and run between rounds. `on_round` is called after the
    warm-up and after each round."""
    for _ in range(warmup):
        for timed in calls:
            for call in timed.values():
                call()
    if on_round is not None:
        on_round()
    samples: list[dict[Any, list[float]]] = [{key: [] for key in timed} for timed in calls]
    collecting = gc.isenabled()
    try:
        for r in range(repeats):
            # as timeit does: a collection inside a timed call would charge one subject
            # for the garbage all of them made; collect between rounds instead
            gc.collect()
            gc.disable()
            order = range(len(calls)) if r % 2 == 0 else range(len(calls) - 1, -1, -1)
            for i in order:
                for key, call in calls[i].items():
                    start = time.perf_counter()
                    call()
                    samples[i][key].append((time.perf_counter() - start) * 1000)
            if collecting:
                gc.enable()
            if on_round is not None:
                on_round()
    finally:
        if collecting:
            gc.enable()
    return [{key: statistics.median(v) for key, v in s.items()} for s in samples]


def _with_current_threads(network: Any) -> Any:
    """An ONNX variant's session opened again with PyTorch's current thread count (the
    stage built it with the default); any other network as it is."""
    from foundry.compression.onnx import OnnxRunner

    if isinstance(network, OnnxRunner):
        return OnnxRunner(network.path, network.input_names, threads=torch.get_num_threads())
    return network


def _of(medians: dict[tuple[str, int], float], kind: str) -> dict[str, float]:
    """{"1": ms, "64": ms} of one kind of call, rounded to 0.1 µs."""
    return {str(size): round(ms, 4) for (k, size), ms in medians.items() if k == kind}


def _request_bodies(parent: Any, frame: pd.DataFrame, index: dict[int, Any]) -> dict[int, str]:
    """The JSON body of a `/predict` request per batch size: the rows' input columns (and
    the sensitive ones fairness mitigation reads), missing values as null."""
    columns = list(parent.input_columns)
    sensitive = (parent.mitigation or {}).get("sensitive_features", [])
    columns += [c for c in sensitive if c not in columns]
    raw = frame[[c for c in columns if c in frame.columns]]
    raw = raw.astype(object).where(raw.notna(), None)
    out = {}
    for size, rows in index.items():
        records = raw.iloc[np.asarray(rows)].to_dict("records")
        out[size] = json.dumps({"records": records}, default=_plain)
    return out


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones (json cannot write them)."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _served(parent: Any, network: Any, same_network: bool) -> Any:
    from foundry.serve.served_model import ServedModel

    predictor = replace(parent, model=network)
    if not same_network:  # a retrained variant is registered without them
        predictor = replace(predictor, temperature=1.0, mitigation=None)
    return ServedModel.from_predictor(predictor)


def _answer(served: Any, body: str) -> str:
    """A `/predict` request's work on a worker: parse, validate, predict, write."""
    records = served.validator.records_of(json.loads(body))
    served.validator.validate(records)
    return json.dumps({"predictions": served.predict_records(records.items)})
