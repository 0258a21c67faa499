"""A trained model ready to predict: preprocessing state + network + task, from a package."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from foundry.data.preprocess import Preprocessor
from foundry.data.schema import InputSchema, TaskInfo
from foundry.errors import DataError, FoundryError, ModelError
from foundry.evaluation.metrics import probabilities
from foundry.progress import progress_bar
from foundry.registry import Package, Registry, read_package
from foundry.registry.integrity import Confinement
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
    scrubber: Any = None
    """The `PIIScrubber` training applied (`data.pii`): prediction inputs get the same
    masking / hashing, so the model sees what it was trained on. None: nothing to do."""
    temperature: float = 1.0
    """Temperature scaling fitted on the validation split: logits are divided by it
    before they become probabilities (the predicted class never changes)."""
    mitigation: dict[str, Any] | None = None
    """Fitted group thresholds (`evaluate.fairness.mitigation`): applied to the decision
    of a binary classifier when the input carries every sensitive column."""

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
        ref = ref or f"{name}:{manifest.get('version')}"
        return cls(model, preprocessor, task, manifest, ref, **trust_state(manifest, ref=ref))

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
        encoded = self.preprocessor.transform(self.scrub(df), with_target=False)
        return self.calibrated(run_model(self.model, encoded, len(df)))

    def labelled_outputs(
        self, df: pd.DataFrame, *, progress: bool | None = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """(encoded targets [N], outputs [N, n_outputs]) of a labelled frame: what
        `compute_metrics` scores (temperature-scaled, as predictions are).

        More rows than `PREDICT_CHUNK` are encoded and run a chunk at a time (the same
        numbers, less memory), with a rows/s bar when `progress` (None: the rule of
        `foundry.progress.progress_enabled`; False, the default: never, as in serving)."""
        if len(df) <= PREDICT_CHUNK:
            return self._labelled_outputs(df)
        targets, outputs = [], []
        with progress_bar(f"scoring with {self.ref}", len(df), enabled=progress) as bar:
            for chunk in _chunks(df):
                y, out = self._labelled_outputs(chunk)
                targets.append(y)
                outputs.append(out)
                bar.advance(len(chunk))
        return np.concatenate(targets), np.concatenate(outputs)

    def _labelled_outputs(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        encoded = self.preprocessor.transform(self.scrub(df), with_target=True)
        outputs = self.calibrated(run_model(self.model, encoded, len(df)))
        return encoded["target"].numpy(), outputs

    def scrub(self, df: pd.DataFrame) -> pd.DataFrame:
        """`df` with the training's PII rule applied (a new frame; `df` is not changed)."""
        if self.scrubber is None:
            return df
        return self.scrubber.transform(df)

    def calibrated(self, outputs: np.ndarray) -> np.ndarray:
        """Logits divided by the fitted temperature (classifiers; regressors unchanged)."""
        if self.temperature == 1.0 or not self.task.is_classification:
            return outputs
        return outputs / np.float32(self.temperature)

    def predict(self, df: pd.DataFrame, *, progress: bool | None = False) -> pd.DataFrame:
        """One row per input row: `<target>` (label or value) and, for classifiers, one
        `probability_<class>` column per class. With fairness mitigation and every
        sensitive column in `df`, `<target>` is the group-thresholded decision.

        More rows than `PREDICT_CHUNK` are predicted a chunk at a time (the same frame
        as one pass, less memory), with a rows/s bar when `progress` (None: the rule of
        `foundry.progress.progress_enabled`; False, the default: never, as in serving)."""
        if len(df) <= PREDICT_CHUNK:
            return self._predict(df)
        with progress_bar(f"predicting with {self.ref}", len(df), enabled=progress) as bar:
            parts = []
            for chunk in _chunks(df):
                parts.append(self._predict(chunk))
                bar.advance(len(chunk))
        return pd.concat(parts)

    def _predict(self, df: pd.DataFrame) -> pd.DataFrame:
        out = self.outputs(df)
        return self.decode(out, index=df.index, sensitive=self.sensitive_of(df))

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if not self.task.is_classification:
            raise ModelError(f"model '{self.ref}' is a regressor: it has no probabilities")
        return probabilities(self.outputs(df), self.task)

    def sensitive_of(self, df: pd.DataFrame) -> pd.DataFrame | None:
        """The sensitive columns mitigation needs, when `df` has all of them."""
        if self.mitigation is None:
            return None
        columns = self.mitigation["sensitive_features"]
        if not all(c in df.columns for c in columns):
            return None
        return df[columns]

    def decode(
        self, outputs: np.ndarray, index: Any = None, sensitive: pd.DataFrame | None = None
    ) -> pd.DataFrame:
        """Outputs (already temperature-scaled) → the prediction frame; `sensitive`: the
        rows' sensitive columns, to apply fairness mitigation."""
        target = self.task.target
        if not self.task.is_classification:
            return pd.DataFrame({target: self.preprocessor.denormalize(outputs[:, 0])}, index=index)
        proba = probabilities(outputs, self.task)
        chosen = proba.argmax(axis=1)
        if sensitive is not None and self.mitigation is not None:
            chosen = self.mitigated(proba, sensitive)
        frame = {target: self.preprocessor.decode_labels(chosen)}
        for i, cls in enumerate(self.task.classes):
            frame[f"probability_{cls}"] = proba[:, i]
        return pd.DataFrame(frame, index=index)

    def mitigated(self, proba: np.ndarray, sensitive: pd.DataFrame) -> np.ndarray:
        """Class indices decided by the fitted group thresholds on P(positive class)."""
        from foundry.evaluation.fairness import apply_mitigation

        assert self.mitigation is not None
        positive = int(self.mitigation["positive_index"])
        decisions = apply_mitigation(self.mitigation, proba[:, positive], sensitive)
        return np.where(decisions.astype(bool), positive, 1 - positive)


def _chunks(df: pd.DataFrame) -> list[pd.DataFrame]:
    """`df` in consecutive slices of PREDICT_CHUNK rows: the slices `run_model` forwards
    anyway, so chunked results equal one pass bit for bit (rows are encoded one by one)."""
    return [df.iloc[start : start + PREDICT_CHUNK] for start in range(0, len(df), PREDICT_CHUNK)]


def trust_state(manifest: dict[str, Any], *, ref: str = "this model") -> dict[str, Any]:
    """What a package's trust sections change at prediction: the PII scrubber, the
    temperature and the fairness thresholds (`Predictor` keyword arguments).

    The scrubber's patterns run on every customer input, so they go through the checks a
    config's `data.pii.patterns` get (`PIIScrubber.from_state`): a pattern that could
    backtrack refuses the package here, at load, naming `ref`."""
    state: dict[str, Any] = {}
    if manifest.get("pii_scrubber"):
        from foundry.data.scrub import PIIScrubber

        try:
            scrubber = PIIScrubber.from_state(manifest["pii_scrubber"])
        except (FoundryError, re.error, KeyError, TypeError, ValueError) as exc:
            raise ModelError(
                f"model {ref}: the PII scrubber in its foundry.json (pii_scrubber) is "
                f"refused: {exc}",
                hint="a package's patterns run on every request: train the model again "
                "with patterns foundry accepts in data.pii.patterns",
            ) from None
        if scrubber.changes_values:
            state["scrubber"] = scrubber
    temperature = (manifest.get("calibration") or {}).get("temperature")
    if temperature:
        state["temperature"] = float(temperature)
    mitigation = (manifest.get("fairness") or {}).get("mitigation") or {}
    if mitigation.get("state"):
        state["mitigation"] = mitigation["state"]
    return state


def load_network(package: Package, config: Any, schema: InputSchema, n_outputs: int) -> Any:
    """The network a package holds, in eval mode: rebuilt from its config and loaded from
    model.safetensors, with the structure its compression method gave it (int8 Linear
    layers), or an ONNX Runtime session over its model.onnx."""
    from foundry.models import build_model

    method = (package.manifest.get("compression") or {}).get("method")
    if method in ("onnx", "onnx_int8"):
        from foundry.compression.onnx import OnnxRunner

        onnx = package.manifest["compression"]
        path = Confinement([package.path]).require(
            package.path / str(onnx.get("file", "model.onnx")),
            what="the ONNX file compression.file of foundry.json names,",
        )
        if not path.is_file():
            raise ModelError(f"model package {package.path} is missing {path.name}")
        return OnnxRunner(path, onnx["input_names"])
    model = build_model(config.model, schema, n_outputs)
    if config.train.privacy is not None:
        from foundry.training.privacy import make_private_model

        # DP training replaced layers Opacus cannot train (BatchNorm → GroupNorm).
        model, _ = make_private_model(model)
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
    from foundry.families import family_of_package
    from foundry.lm.load import is_language_package, model_type

    task = (package.manifest.get("hf") or {}).get("task")
    if model_type(package.manifest) is None:  # a manifest that names no model type
        return Predictor.from_package(package, ref=name)
    if not is_language_package(package.manifest) or task in ("classification", "regression"):
        # the family that trained it loads it (a Predictor, an HFTextPredictor, ...)
        return family_of_package(package.manifest).load(package, name)
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
