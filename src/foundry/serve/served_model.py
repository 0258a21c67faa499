"""A model as the API serves it: predictor, record validator, description, forward pass.

    served = ServedModel.load("adult:3", registry=Registry())   # once per worker, at startup
    records = served.validator.records_of(json.loads(body))
    served.validator.validate(records)
    served.predict_records(records.items)     # on the batcher's thread: [{"label", ...}, ...]

`predict_records` gives exactly what `Predictor.predict` gives on the same rows (inputs
encoded as `Preprocessor.transform` encodes them, the same forward pass, decoded as
`Predictor.decode` does), one JSON-ready dict per record.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from foundry.data.encoders.binary import BinaryEncoder
from foundry.data.encoders.category import MISSING, CategoryEncoder
from foundry.data.encoders.image import ImageEncoder
from foundry.data.encoders.number import NumberEncoder
from foundry.data.encoders.text import TextEncoder
from foundry.evaluation.fairness import group_keys
from foundry.evaluation.metrics import probabilities
from foundry.predictor import Predictor, run_model
from foundry.registry import Registry
from foundry.serve.schemas import InputSpec, RecordValidator

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_LISTED_VALUES = 50
"""Category inputs with at most this many training values list them in the model schema."""


@dataclass(frozen=True)
class ServedModel:
    name: str
    predictor: Predictor
    validator: RecordValidator
    summary: dict[str, Any]
    """`GET /v1/models` entry (built once)."""
    detail: dict[str, Any]
    """`GET /v1/models/{name}` body: the summary plus a ready-to-send example request."""

    @classmethod
    def load(cls, ref: str, *, registry: Registry | None = None) -> ServedModel:
        from foundry.predictor import load

        return cls.from_predictor(load(ref, registry=registry))

    @classmethod
    def from_predictor(cls, predictor: Predictor) -> ServedModel:
        encoders = {e.name: e for e in predictor.preprocessor.encoders}
        features = predictor.manifest["features"]["inputs"]
        inputs = [input_spec(f, encoders.get(f["name"])) for f in features]
        # Sensitive columns that are not inputs may ride along: they pick the group
        # thresholds of fairness mitigation.
        mitigation = getattr(predictor, "mitigation", None) or {}
        optional = [c for c in mitigation.get("sensitive_features", []) if c not in encoders]
        validator = RecordValidator(predictor.name, inputs, optional=optional)
        described = [_describe(spec, encoders.get(spec.name)) for spec in inputs]
        task = predictor.task
        summary = {
            "name": predictor.name,
            "version": predictor.manifest.get("version") or _version_of(predictor.ref),
            "ref": predictor.ref,
            "task": {"type": task.task, "target": task.target, "classes": list(task.classes)},
            "inputs": described,
        }
        example = {"records": [{f["name"]: f["example"] for f in described}]}
        return cls(predictor.name, predictor, validator, summary, {**summary, "example": example})

    @property
    def ref(self) -> str:
        return self.predictor.ref

    # ------------------------------------------------------------------ inference

    def predict_records(self, records: list[dict]) -> list[dict[str, Any]]:
        """Validated records → one prediction dict per record (runs on a worker thread):
        `forward_records(scrub(records))`."""
        return self.forward_records(self.scrub(records))

    @property
    def scrubs(self) -> bool:
        """Whether `scrub` changes values (a PII scrubber that masks, hashes or drops)."""
        scrubber = self.predictor.scrubber
        return scrubber is not None and scrubber.changes_values

    def scrub(self, records: list[dict]) -> list[dict]:
        """The records with PII masked as in training (new dicts where a value changes).
        The server calls it in the request's own path, not on the model's batching
        thread: a body packed with PII-like values costs ~1 s/MB to scan, and on the
        batching thread every other client of the model would wait for it."""
        if not self.scrubs:
            return records
        return self.predictor.scrubber.transform_records(records)

    def forward_records(self, records: list[dict]) -> list[dict[str, Any]]:
        """Scrubbed, validated records → one prediction dict per record (the batcher's
        forward). No DataFrame: `transform_records` encodes the records' Python values
        directly, bit for bit as `Predictor.outputs` encodes a frame of them."""
        predictor = self.predictor
        encoded = predictor.preprocessor.transform_records(records)
        outputs = predictor.calibrated(run_model(predictor.model, encoded, len(records)))
        return self._decode(outputs, records)

    def _decode(
        self, outputs: np.ndarray, records: list[dict] | None = None
    ) -> list[dict[str, Any]]:
        """Outputs [N, n_outputs] → prediction dicts: the computation of
        `Predictor.decode`, without building a DataFrame. `records` (the validated
        request records) carry the sensitive columns fairness mitigation reads."""
        predictor = self.predictor
        task, preprocessor = predictor.task, predictor.preprocessor
        if not task.is_classification:
            values = preprocessor.denormalize(outputs[:, 0])
            return [{"value": v if math.isfinite(v) else None} for v in values.tolist()]
        proba = probabilities(outputs, task)  # float64 [N, n_classes]
        chosen = proba.argmax(axis=1)
        mitigated = np.zeros(len(chosen), dtype=bool)
        if predictor.mitigation is not None and records is not None:
            columns = predictor.mitigation["sensitive_features"]
            rows = [i for i, r in enumerate(records) if all(c in r for c in columns)]
            if rows:  # records without every sensitive value keep the plain decision
                sensitive = pd.DataFrame([{c: records[i][c] for c in columns} for i in rows])
                chosen[rows] = predictor.mitigated(proba[rows], sensitive)
                # a group the thresholds were not fitted on keeps the plain decision
                seen = group_keys(sensitive).isin(list(predictor.mitigation["groups"]))
                mitigated[np.asarray(rows)[seen.to_numpy()]] = True
        labels = preprocessor.decode_labels(chosen).tolist()
        classes = [str(c) for c in task.classes]
        out = [
            {"label": str(label), "probabilities": dict(zip(classes, row, strict=True))}
            for label, row in zip(labels, proba.tolist(), strict=True)
        ]
        if predictor.mitigation is not None:
            for i in np.flatnonzero(mitigated):
                out[i]["mitigated"] = True
        broken = ~np.isfinite(proba).all(axis=1)
        for i in np.flatnonzero(broken):  # the network overflowed: JSON has no NaN
            out[i] = {"label": None, "probabilities": dict.fromkeys(classes)}
        return out


def image_tensor(enc: ImageEncoder, blobs: list[bytes]) -> np.ndarray:
    """PNG/JPEG bytes [N] → float32 [N, C, H, W], exactly as `enc.transform` on files
    (`enc.encode_list`, which `predict_records` reaches through `transform_records`)."""
    return enc.encode_list(blobs)


# ------------------------------------------------------------------ description


def input_spec(feature: dict[str, Any], enc: Any) -> InputSpec:
    """What the API accepts for one input (`feature`: its entry in the manifest's
    `features.inputs`; `enc`: its fitted encoder)."""
    ftype = feature["type"]
    if ftype == "binary" and isinstance(enc, BinaryEncoder):
        # Only the two training values (a third is a typo or another column's value,
        # not a missing one): `RecordValidator` refuses anything else.
        return InputSpec(feature["name"], ftype, nullable=True,
                         values=tuple(v for v in enc.values if v != MISSING))
    if ftype != "number":
        return InputSpec(feature["name"], ftype, nullable=ftype != "image")
    nullable = feature.get("number", {}).get("missing") != "error"
    bound = math.inf
    if isinstance(enc, NumberEncoder):
        # (x - center) / scale must stay a finite float32.
        bound = max(0.0, FLOAT32_MAX * enc.scale - abs(enc.center))
    return InputSpec(feature["name"], ftype, nullable, bound)


def _describe(spec: InputSpec, enc: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "type": spec.type, "nullable": spec.nullable}
    values: list[str] | None = None
    example: Any = None
    if isinstance(enc, NumberEncoder):
        example = _round(enc.fill if enc.missing in ("mean", "median") else enc.center)
    elif isinstance(enc, (CategoryEncoder, BinaryEncoder)):
        known = [v for v in (enc.vocab if isinstance(enc, CategoryEncoder) else enc.values)
                 if v != MISSING]  # CategoryEncoder.vocab is most frequent first
        values = known if len(known) <= MAX_LISTED_VALUES else None
        example = known[0] if known else "value"
    elif isinstance(enc, TextEncoder):
        # Word ids after [PAD] and [UNK] come in order of training frequency.
        words = [enc.tokenizer.id_to_token(i) for i in range(2, min(8, enc.vocab_size))]
        example = " ".join(w for w in words if w) or "some text"
    elif isinstance(enc, ImageEncoder):
        example = _gray_png(enc.width, enc.height, enc.channels)
    elif spec.type == "text":
        # a family with its own text state (ngram's vocabularies) has no TextEncoder
        example = "some text"
    out["values"] = values
    out["example"] = example
    return out


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _gray_png(width: int, height: int, channels: int) -> str:
    from PIL import Image

    mode, color = ("L", 128) if channels == 1 else ("RGB", (128, 128, 128))
    buf = io.BytesIO()
    Image.new(mode, (width, height), color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _version_of(ref: str) -> int | None:
    _, _, version = ref.partition(":")
    return int(version) if version.isdigit() else None


# ------------------------------------------------------------------ fine-tuned text models


@dataclass(frozen=True)
class ServedTextModel:
    """A fine-tuned Hugging Face text classifier / regressor (`hf` package, task
    classification or regression) behind /v1/models/{name}/predict: the same request
    and answer shapes as a tabular model whose one input is the text column."""

    name: str
    predictor: Any
    """A `foundry.lm.hf_model.HFTextPredictor`."""
    validator: RecordValidator
    summary: dict[str, Any]
    detail: dict[str, Any]

    @classmethod
    def from_predictor(cls, predictor: Any) -> ServedTextModel:
        name = predictor.ref.split(":")[0]
        column = predictor.text_column
        validator = RecordValidator(name, [InputSpec(column, "text", nullable=True)])
        task = predictor.task
        summary = {
            "name": name,
            "version": _version_of(predictor.ref),
            "ref": predictor.ref,
            "task": {"type": task.task, "target": task.target, "classes": list(task.classes)},
            "inputs": [{"name": column, "type": "text", "nullable": True, "values": None,
                        "example": "some text"}],
        }
        example = {"records": [{column: "some text"}]}
        return cls(name, predictor, validator, summary, {**summary, "example": example})

    @property
    def ref(self) -> str:
        return self.predictor.ref

    def predict_records(self, records: list[dict]) -> list[dict[str, Any]]:
        return self.predictor.predict_records(records)

    # The batcher's forward. A fine-tuned transformer's predictor scrubs its texts itself:
    # a forward pass costs far more per record than the scan does.
    forward_records = predict_records
