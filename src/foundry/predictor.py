"""A trained model ready to predict: preprocessing state + network + task, from a package."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from foundry.data.preprocess import Preprocessor
from foundry.data.schema import InputSchema, TaskInfo
from foundry.errors import DataError, ModelError
from foundry.evaluation.metrics import probabilities
from foundry.registry import Package, Registry, read_package
from foundry.registry.refs import is_package_dir

# Rows per forward pass at prediction time: large enough to amortise Python overhead,
# small enough that a 1M-row file does not need the whole activation in memory.
PREDICT_CHUNK = 8192


@dataclass(frozen=True)
class Predictor:
    """`foundry.load("adult:latest")` returns one; `predict(df)` gives labels and probabilities."""

    model: Any
    """The network: an `nn.Module` (fp32, or int8 Linear layers), or an `OnnxRunner`
    for ONNX variants; both take the encoded inputs dict and return outputs [N, n_out]."""
    preprocessor: Preprocessor
    task: TaskInfo
    manifest: dict[str, Any]
    ref: str

    @classmethod
    def from_package(cls, package: Package, ref: str | None = None) -> Predictor:
        from foundry.config.schema import FoundryConfig

        manifest = package.manifest
        try:
            config = FoundryConfig.model_validate(manifest["config"])
            schema = InputSchema.from_dict(manifest["schema"])
            task = TaskInfo.from_dict(manifest["task"])
            preprocessor = Preprocessor.from_state(manifest["preprocessing"])
            n_outputs = int(manifest["n_outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"{package.path}/foundry.json is not a foundry model manifest ({exc})"
            ) from None
        model = load_network(package, config, schema, n_outputs)
        name = manifest.get("name", config.name)
        return cls(model, preprocessor, task, manifest, ref or f"{name}:{manifest.get('version')}")

    @property
    def name(self) -> str:
        return self.ref.split(":")[0]

    @property
    def input_columns(self) -> list[str]:
        return [f["name"] for f in self.manifest["features"]["inputs"]]

    def outputs(self, df: pd.DataFrame) -> np.ndarray:
        """Raw model outputs [N, n_outputs] for the rows of `df` (logits or standardised values)."""
        missing = [c for c in self.input_columns if c not in df.columns]
        if missing:
            raise DataError(
                f"input data lacks column(s) {missing} that model '{self.ref}' needs "
                f"(it expects: {', '.join(self.input_columns)})"
            )
        encoded = self.preprocessor.transform(df, with_target=False)
        return run_model(self.model, encoded, len(df))

    def labelled_outputs(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(encoded targets [N], raw outputs [N, n_outputs]) of a labelled frame: what
        `compute_metrics` scores."""
        encoded = self.preprocessor.transform(df, with_target=True)
        return encoded["target"].numpy(), run_model(self.model, encoded, len(df))

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """One row per input row: `<target>` (label or value) and, for classifiers, one
        `probability_<class>` column per class."""
        out = self.outputs(df)
        return self.decode(out, index=df.index)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if not self.task.is_classification:
            raise ModelError(f"model '{self.ref}' is a regressor: it has no probabilities")
        return probabilities(self.outputs(df), self.task)

    def decode(self, outputs: np.ndarray, index: Any = None) -> pd.DataFrame:
        target = self.task.target
        if not self.task.is_classification:
            return pd.DataFrame({target: self.preprocessor.denormalize(outputs[:, 0])}, index=index)
        proba = probabilities(outputs, self.task)
        frame = {target: self.preprocessor.decode_labels(proba.argmax(axis=1))}
        for i, cls in enumerate(self.task.classes):
            frame[f"probability_{cls}"] = proba[:, i]
        return pd.DataFrame(frame, index=index)


def load_network(package: Package, config: Any, schema: InputSchema, n_outputs: int) -> Any:
    """The network a package holds, in eval mode: rebuilt from its config and loaded from
    model.safetensors, with the structure its compression method gave it (int8 Linear
    layers), or an ONNX Runtime session over its model.onnx."""
    from foundry.models import build_model

    method = (package.manifest.get("compression") or {}).get("method")
    if method in ("onnx", "onnx_int8"):
        from foundry.compression.onnx import OnnxRunner

        onnx = package.manifest["compression"]
        path = package.path / onnx.get("file", "model.onnx")
        if not path.is_file():
            raise ModelError(f"model package {package.path} is missing {path.name}")
        return OnnxRunner(path, onnx["input_names"])
    model = build_model(config.model, schema, n_outputs)
    if method == "int8":
        from foundry.compression.quantize import quantize_linears

        quantize_linears(model)  # the int8 structure; the weights come next
    try:
        model.load_state_dict(package.weights)
    except RuntimeError as exc:
        raise ModelError(
            f"{package.path}/model.safetensors does not fit the model: {exc}"
        ) from None
    return model.eval()


def model_device(model: Any) -> torch.device:
    """Where `model` computes: its first parameter's or buffer's device (an int8 model
    may hold only buffers), else the CPU (ONNX Runtime takes CPU tensors)."""
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            return tensor.device
    return torch.device("cpu")


@torch.inference_mode()
def run_model(model: Any, encoded: dict[str, torch.Tensor], n: int) -> np.ndarray:
    """Forward `encoded` in chunks on the model's device; returns float32 numpy [n, n_out]."""
    device = model_device(model)
    inputs = {k: v for k, v in encoded.items() if k != "target"}
    if n == 0:
        return np.zeros((0, 1), dtype=np.float32)
    if n <= PREDICT_CHUNK:  # one pass (every API batch): no slicing, no concatenation copy
        return model({k: v.to(device) for k, v in inputs.items()}).float().cpu().numpy()
    parts = []
    for start in range(0, n, PREDICT_CHUNK):
        batch = {k: v[start : start + PREDICT_CHUNK].to(device) for k, v in inputs.items()}
        parts.append(model(batch).float().cpu())
    return torch.cat(parts).numpy()


def load(ref: str | Path, *, registry: Registry | None = None) -> Any:
    """Load a model by registry reference (`name`, `name:3`, `name:latest`) or package path:
    a `Predictor`, or for a fine-tuned Hugging Face text model an `HFTextPredictor` (same
    `predict` / `labelled_outputs` / `task`). Language and embedding models have no
    labels to predict: they are refused with a pointer to `foundry.lm.load`."""
    if isinstance(ref, Path) or is_package_dir(Path(str(ref))):
        package = read_package(Path(ref))
        name = f"{package.manifest.get('name', Path(ref).name)}:{package.manifest.get('version')}"
    else:
        registry = registry or Registry()
        record = registry.resolve(str(ref))
        package, name = registry.load(record.ref), record.ref
    from foundry.lm.load import is_language_package, model_type

    if not is_language_package(package.manifest):
        return Predictor.from_package(package, ref=name)
    task = (package.manifest.get("hf") or {}).get("task")
    if model_type(package.manifest) == "hf" and task in ("classification", "regression"):
        from foundry.lm.hf_model import load_hf_package

        return load_hf_package(package, name)
    what = "an embedding model" if task == "embedding" else "a language model"
    raise ModelError(
        f"model {name} is {what}: it has no labels to predict",
        hint=(
            "embed texts with foundry.lm.load(...).embed or POST /v1/embeddings"
            if task == "embedding"
            else "generate with `foundry generate`, foundry.lm.load(...) or POST "
            "/v1/completions; `foundry evaluate` reports its perplexity on a text file"
        ),
    )
