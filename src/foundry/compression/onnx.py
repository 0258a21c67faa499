"""ONNX: export a foundry model, check it against PyTorch, int8-quantize it, run it.

    exported = export_onnx(model, example, out / "model.onnx")   # OnnxExport, checked
    int8 = quantize_onnx(exported.path, out / "model.int8.onnx")  # dynamic int8 weights
    runner = OnnxRunner(int8, exported.input_names)               # called like the model
    logits = runner(encoded)                                      # float32 [B, n_outputs]

The graph takes the same inputs as the model's forward (an `Encoded` dict, see
`foundry.data.schema`), one graph input per key, named after the key. Every input's
batch dimension is dynamic, and so is the sequence dimension of text token ids
("text:<name>", int64 [B, L]). An ONNX file is a protobuf graph of standard operators
and tensors: loading one runs no code, which is why model packages may carry it.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import foundry.crypto as crypto
from foundry.errors import ModelError
from foundry.extras import require

_TEXT_PREFIX = "text:"
"""Keys of token-id inputs: their dimension 1 (sequence length) is dynamic too."""

_NUMPY_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
}
"""ONNX Runtime's input type strings → the numpy dtype a feed must have."""

_EXPORT_HINT = (
    "the forward must be traceable by torch.export: no Python `if` or loop on tensor "
    "values or sizes read as numbers (.item(), x.sum() > 0, range(len(x))), and only "
    "operators ONNX has; leave the ONNX methods out of this model's compression"
)


@dataclass(frozen=True)
class OnnxExport:
    """What `export_onnx` wrote and checked."""

    path: Path
    input_names: tuple[str, ...]
    """The `Encoded` keys the graph takes, in the order of its inputs (each graph input
    is named after its key); pass it to `OnnxRunner`."""
    max_abs_diff: float
    """Largest |ONNX Runtime - PyTorch| over the check batches (output units: logits)."""
    opset: int
    """Version of the default ONNX operator set the graph uses."""


def export_onnx(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    path: Path,
    *,
    check_atol: float = 1e-4,
    check_rtol: float = 1e-3,
) -> OnnxExport:
    """Export `model` to the ONNX file `path` and check ONNX Runtime against PyTorch.

    `example` is an `Encoded` batch (a "target" key is ignored). The check runs the file
    on `example` and on a second batch of another size (and, for text, another sequence
    length); outputs must agree within `check_atol + check_rtol * |torch output|`.
    Raises `ModelError` naming the model class when it cannot be exported or the outputs
    differ; `path` is then left untouched.
    """
    require_onnx("ONNX export")
    path = Path(path)
    name = type(model).__name__
    example = {k: v for k, v in example.items() if k != "target"}
    if not example or min(len(v) for v in example.values()) == 0:
        raise ModelError(f"cannot export {name} to ONNX: the example batch has no rows")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    example = {k: v.to(device) for k, v in example.items()}

    was_training = model.training
    model.eval()  # dropout off, batch norm on running statistics: what inference runs
    try:
        # torch.onnx's dynamo exporter (torch.export → ONNX); it handles every foundry
        # architecture (mlp, cnn, text with bow / cnn / transformer encoders), so the
        # legacy TorchScript exporter is not used.
        program = _export(model, example)
        tmp = path.with_name(f".{path.name}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # One self-contained file: packages store no external-data side files.
            program.save(tmp, external_data=False)
        except Exception as exc:
            tmp.unlink(missing_ok=True)
            raise ModelError(
                f"cannot write the ONNX file of {name} to {path}: {_reason(exc)}",
                hint="a single ONNX file holds at most 2 GB of weights",
            ) from None
        try:
            diff, input_names = _check(model, example, tmp, check_atol, check_rtol)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    finally:
        model.train(was_training)
    os.replace(tmp, path)
    opset = int(program.model.opset_imports.get("", 0))
    return OnnxExport(path=path, input_names=input_names, max_abs_diff=diff, opset=opset)


def _export(model: nn.Module, example: dict[str, torch.Tensor]) -> Any:
    """The `torch.onnx.ONNXProgram` of `model` with dynamic batch (and text length) dims."""
    # torch.export may specialise a dimension it sees with size 0 or 1 to a constant (a
    # one-row, one-token example froze the transformer encoder's graph to [1, 1]): trace
    # on at least 2 rows and 2 tokens.
    # Extra rows repeat existing ones; extra tokens are padding (id 0), which every text
    # encoder ignores.
    traced = {}
    for key, value in example.items():
        if len(value) < 2:
            value = value[torch.arange(2, device=value.device) % len(value)]
        if key.startswith(_TEXT_PREFIX) and value.shape[1] < 2:
            value = nn.functional.pad(value, (0, 2 - value.shape[1]))
        traced[key] = value
    batch = torch.export.Dim("batch")  # one for all inputs: they share their rows
    dynamic = {}
    for key in traced:
        dynamic[key] = {0: batch}
        if key.startswith(_TEXT_PREFIX):  # each text input has its own length
            name = re.sub(r"\W", "_", key[len(_TEXT_PREFIX) :])
            dynamic[key][1] = torch.export.Dim(f"length_{name}")
    try:
        with _quiet():
            return torch.onnx.export(
                model,
                # forward(inputs: dict) takes one positional dict; torch.onnx reads a
                # trailing dict in `args` as keyword arguments, so an empty one follows.
                (traced, {}),
                dynamo=True,
                dynamic_shapes=(dynamic,),
                input_names=list(traced),
                verbose=False,
            )
    except Exception as exc:
        raise ModelError(
            f"cannot export {type(model).__name__} to ONNX: {_reason(exc)}", hint=_EXPORT_HINT
        ) from None


@torch.no_grad()
def _check(
    model: nn.Module,
    example: dict[str, torch.Tensor],
    path: Path,
    atol: float,
    rtol: float,
) -> tuple[float, tuple[str, ...]]:
    """Run the file with ONNX Runtime on `example` and on a batch of another shape; returns
    (max |ONNX - torch|, input names in graph order), or raises `ModelError`."""
    name = type(model).__name__
    runner = OnnxRunner(path, None)
    for inp in runner.session.get_inputs():
        # The exporter can silently trace a fixed size when the forward reads it as a
        # Python number (a loop over rows...): the graph would then refuse other batches.
        dims = (0, 1) if inp.name.startswith(_TEXT_PREFIX) else (0,)
        fixed = [d for d in dims if isinstance(inp.shape[d], int)]
        if fixed:
            what = "batch size" if fixed[0] == 0 else "sequence length"
            raise ModelError(
                f"cannot export {name} to ONNX: the {what} of input {inp.name!r} was "
                f"traced as the constant {inp.shape[fixed[0]]}",
                hint=_EXPORT_HINT,
            )
    # A second batch: 3 more rows than the example (cycling through it) and, for token
    # ids, one token fewer, so both dynamic dimensions take a value they were not
    # traced with.
    n = len(next(iter(example.values())))
    rows = torch.arange(n + 3, device=next(iter(example.values())).device) % n
    other = {}
    for key, value in example.items():
        value = value[rows]
        if key.startswith(_TEXT_PREFIX) and value.shape[1] > 1:
            value = value[:, :-1]
        other[key] = value
    worst = 0.0
    for batch in (example, other):
        expected = model(batch).float().cpu().numpy()
        try:
            got = runner(batch).numpy()
        except Exception as exc:
            raise ModelError(
                f"the ONNX export of {name} does not run in ONNX Runtime on a batch of "
                f"shape {_shapes(batch)}: {_reason(exc)}",
                hint=_EXPORT_HINT,
            ) from None
        if got.shape != expected.shape:
            raise ModelError(
                f"the ONNX export of {name} gives outputs of shape {got.shape}, PyTorch "
                f"{expected.shape}, on a batch of shape {_shapes(batch)}",
                hint=_EXPORT_HINT,
            )
        diff = float(np.abs(got - expected).max()) if got.size else 0.0
        if not np.allclose(got, expected, atol=atol, rtol=rtol):
            raise ModelError(
                f"the ONNX export of {name} does not match PyTorch: max |difference| "
                f"{diff:.3g} exceeds {atol:g} + {rtol:g} * |output| on a batch of shape "
                f"{_shapes(batch)}",
                hint="an operator computes differently in ONNX Runtime; raise "
                "check_atol / check_rtol if that difference is acceptable",
            )
        worst = max(worst, diff)
    return worst, tuple(runner.input_names)


def require_onnx(feature: str) -> None:
    """Raise the one-line install hint unless the `onnx` extra (exporter, graph library,
    runtime) is installed; called before any work so nothing is half built."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require("onnx", module, feature)


def quantize_onnx(src: Path, dst: Path) -> Path:
    """Write `src` with int8 weights to `dst` (ONNX Runtime dynamic quantization) and
    check that it runs; returns `dst`.

    Weights of MatMul / Gemm (Linear), Conv and Gather (embeddings) become int8 (QInt8,
    symmetric); activations are quantized per batch at run time (uint8), so no
    calibration data is needed. ONNX Runtime's optional pre-processing
    (`quant_pre_process`) is not run: on these graphs it gives no smaller file, and its
    symbolic shape inference fails on the text encoders' masks.
    """
    require("onnx", "onnxruntime", "int8 ONNX quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with _quiet():
            quantize_dynamic(src, tmp, weight_type=QuantType.QInt8)
        _smoke_run(OnnxRunner(tmp, None))
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ModelError(
            f"cannot quantize the ONNX model {src} to int8: {_reason(exc)}",
            hint="keep the fp32 ONNX variant (method onnx) for this model",
        ) from None
    os.replace(tmp, dst)
    return dst


def _smoke_run(runner: OnnxRunner) -> None:
    """One forward pass on zeros (2 rows, 2 tokens where a size is dynamic): id 0 is a
    valid index of every embedding (padding / unknown)."""
    feeds = {}
    for inp, key in zip(runner.session.get_inputs(), runner.input_names, strict=True):
        shape = [d if isinstance(d, int) else 2 for d in inp.shape]
        feeds[key] = torch.from_numpy(np.zeros(shape, dtype=_NUMPY_DTYPES.get(inp.type)))
    out = runner(feeds)
    if not torch.isfinite(out).all():
        raise ModelError(f"{runner.path} gives non-finite outputs on a batch of zeros")


class OnnxRunner:
    """An ONNX model run by ONNX Runtime and called like the `nn.Module` it came from:
    `runner(encoded)` takes an `Encoded` dict (extra keys such as "target" ignored) and
    returns float32 outputs [B, n_outputs] on the CPU.

    `input_names` maps graph inputs to dict keys: a list gives the key of each graph input
    in order (`OnnxExport.input_names`), a dict maps graph input name → key, and None
    means each graph input is named after its key. `threads` sets ONNX Runtime's
    intra-op threads (default: `torch.get_num_threads()`). One session is shared; ONNX
    Runtime sessions may be run from several threads at once, and so may this.
    """

    device = torch.device("cpu")
    """Inputs are read from CPU tensors (ONNX Runtime copies them to a GPU itself)."""

    def __init__(
        self,
        path: Path,
        input_names: Sequence[str] | Mapping[str, str] | None,
        *,
        threads: int | None = None,
    ) -> None:
        ort = require("onnx", "onnxruntime", f"running the ONNX model {path}")
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: they also come back as exceptions
        # ONNX Runtime's pool threads otherwise busy-wait after each run, taking cores from
        # PyTorch models (and other sessions) in the same process: on a 2-core machine an
        # interleaved torch forward ran 3.6x slower beside a spinning session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            # An encrypted file is decrypted into memory: ONNX Runtime also reads bytes.
            source = crypto.read_bytes(self.path) if crypto.is_encrypted(self.path) else str(
                self.path)
            self.session = ort.InferenceSession(source, options, providers=providers)
        except Exception as exc:
            raise ModelError(f"cannot load the ONNX model {self.path}: {_reason(exc)}") from None
        graph_inputs = [i.name for i in self.session.get_inputs()]
        if input_names is None:
            keys = graph_inputs
        elif isinstance(input_names, Mapping):
            if set(input_names) != set(graph_inputs):
                raise ModelError(
                    f"ONNX model {self.path} has inputs {graph_inputs}, but input_names "
                    f"maps {sorted(input_names)}"
                )
            keys = [input_names[g] for g in graph_inputs]
        else:
            keys = list(input_names)
            if len(keys) != len(graph_inputs):
                raise ModelError(
                    f"ONNX model {self.path} has {len(graph_inputs)} inputs "
                    f"{graph_inputs}, but input_names lists {len(keys)}: {keys}"
                )
        self.input_names: list[str] = keys
        """The `Encoded` key of each graph input, in graph order."""
        self._feeds = [
            (graph, key, _NUMPY_DTYPES.get(i.type))
            for graph, key, i in zip(graph_inputs, keys, self.session.get_inputs(), strict=True)
        ]
        self._output = self.session.get_outputs()[0].name
        self._n_parameters: int | None = None

    def __call__(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feeds = {}
        for graph, key, dtype in self._feeds:
            try:
                value = inputs[key]
            except KeyError:
                raise ModelError(
                    f"ONNX model {self.path.name} needs input {key!r} "
                    f"(it takes {', '.join(self.input_names)})"
                ) from None
            # .numpy() of a CPU tensor shares its memory; ascontiguousarray copies only
            # when the layout or dtype differs from what the graph takes.
            feeds[graph] = np.ascontiguousarray(value.detach().cpu().numpy(), dtype=dtype)
        (out,) = self.session.run([self._output], feeds)
        return torch.from_numpy(out).float()  # no copy when already float32

    def eval(self) -> OnnxRunner:
        return self

    def num_parameters(self) -> int:
        """Number of values stored in the graph's initializers (weights, biases, scales)."""
        if self._n_parameters is None:
            onnx = require("onnx", "onnx", "reading an ONNX graph")
            graph = onnx.load(str(self.path), load_external_data=False).graph
            self._n_parameters = sum(int(np.prod(t.dims)) for t in graph.initializer)
        return self._n_parameters

    def __repr__(self) -> str:
        return f"OnnxRunner({str(self.path)!r}, inputs={self.input_names})"


def _shapes(batch: Mapping[str, torch.Tensor]) -> str:
    return ", ".join(f"{k} {list(v.shape)}" for k, v in batch.items())


def _reason(exc: BaseException) -> str:
    """The innermost cause of an exporter / runtime error, on one line."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).strip()  # exporters colour their text
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if len(first) > 300:
        first = first[:297] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


_LIBRARY_PATHS = tuple(f"{os.sep}{name}{os.sep}" for name in ("torch", "onnxruntime", "onnxscript"))
"""Records logged straight on the root logger from these packages are dropped by `_quiet`."""


def _drop_library_records(record: logging.LogRecord) -> bool:
    return not any(part in record.pathname for part in _LIBRARY_PATHS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's and quantizer's console output while they run: progress
    prints, torch's logger warnings ("torchvision is not installed"), Python warnings,
    and ONNX Runtime's quantizer, which logs on the root logger ("Please consider
    pre-processing..."). Their errors still surface as exceptions. This changes
    process-wide logging for the duration, so it is used around those calls only.
    """
    loggers = [logging.getLogger(n) for n in ("torch", "onnxscript", "onnx_ir", "onnxruntime")]
    levels = [lg.level for lg in loggers]
    root = logging.getLogger()
    # `logging.warning()` with no root handler installs a stderr handler for good
    # (basicConfig): give the root logger one that drops records while we run.
    guard = logging.NullHandler() if not root.handlers else None
    sink = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        if guard is not None:
            root.addHandler(guard)
        root.addFilter(_drop_library_records)
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
            contextlib.redirect_stderr(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.removeFilter(_drop_library_records)
        if guard is not None:
            root.removeHandler(guard)
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
