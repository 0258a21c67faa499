"""Request and response shapes of the API, and per-model validation of records.

A predict body is any of (all equivalent for one record):

    {"age": 39, "color": "red"}                           one record
    [{"age": 39, "color": "red"}, {"age": 51, ...}]        a list of records
    {"records": [{...}, ...]}        {"record": {...}}

Each record must hold exactly the model's input features. `RecordValidator` checks the
types (numbers are JSON numbers or null; categories strings, numbers or booleans, cast to
the training keys; text strings or null; images base64 PNG/JPEG strings, never URLs).
The checked records go straight to `Preprocessor.transform_records` (no DataFrame per
request); `RecordValidator.frame` gives the DataFrame that encodes to the same tensors
(the reference the tests compare with). Errors are `ApiError`s whose `param` is the
JSON path of the offending field (`age`, `[3].age`, `records[3].age`, `record.age`).

The pydantic models below describe the JSON for the OpenAPI document; the predict route
itself parses the body with `json.loads` and answers pre-encoded JSON (no per-request
pydantic pass).
"""

from __future__ import annotations

import base64
import difflib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, RootModel

from foundry.data.encoders.keys import scalar_key
from foundry.serve.errors import ApiError

# ------------------------------------------------------------------ OpenAPI models

Value = float | int | str | bool | None
"""A JSON scalar: the value of one input feature."""


class _Schema(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)


class RecordsBody(_Schema):
    records: list[dict[str, Value]]
    """Records to predict, one object per row, keyed by input feature name."""


class RecordBody(_Schema):
    record: dict[str, Value]
    """One record, keyed by input feature name."""


Record = dict[str, Value]


class PredictRequest(RootModel[Record | list[Record] | RecordsBody | RecordBody]):
    """One record, a list of records, `{"records": [...]}` or `{"record": {...}}`."""


class ClassPrediction(_Schema):
    label: str | None
    """The most probable class (null, with null probabilities, when the record's values
    overflowed the model's arithmetic)."""
    probabilities: dict[str, float | None]
    """Probability of every class, by class label."""


class ValuePrediction(_Schema):
    value: float | None
    """The predicted number (regression), in the target's units (null on overflow)."""


class Usage(_Schema):
    units: int
    """Units charged for this request (one per record)."""


class PredictResponse(_Schema):
    model: str
    """The model version that answered, `name:version`."""
    predictions: list[ClassPrediction | ValuePrediction]
    """One prediction per record, in request order (a list even for one record)."""
    usage: Usage


class RecommendQuery(_Schema):
    user: str | int | None = None
    """A user id seen in training; an unknown one gets the popularity list (or, with
    `items`, a list folded in from them)."""
    items: list[str | int] | None = None
    """Recent items of someone the model does not know (at most 1000)."""
    k: int = Field(10, ge=1, le=1000)
    """How many items to return."""
    exclude_seen: bool | None = None
    """Leave out items the user already interacted with; null: the model's setting."""


class RecommendQueries(_Schema):
    queries: list[RecommendQuery]
    """Several queries, answered in order (one unit each)."""


class RecommendRequest(RootModel[RecommendQuery | RecommendQueries]):
    """One query, or `{"queries": [...]}`."""


class ScoredItem(_Schema):
    item: str
    score: float
    """The model's score (a dot product, or the popularity count): higher is better."""


class Recommendation(_Schema):
    items: list[ScoredItem]
    """Best first."""
    source: str
    """`model` (the user's factors, learned or folded in) or `popularity` (nothing is
    known of the user)."""


class RecommendResponse(_Schema):
    model: str
    """The model version that answered, `name:version`."""
    recommendations: list[Recommendation]
    """One per query, in request order."""
    usage: Usage


class ErrorDetail(_Schema):
    message: str
    """What went wrong and what to change."""
    type: str
    """invalid_request_error, authentication_error, permission_error, not_found_error,
    rate_limit_error or server_error."""
    param: str | None
    """JSON path of the offending field (`age`, `records[3].age`), when one is to blame."""
    code: str
    """Machine-readable code (`invalid_field`, `quota_exceeded`, ...)."""


class ErrorResponse(_Schema):
    error: ErrorDetail


class InputFeature(_Schema):
    name: str
    type: str
    """number, binary, category, text or image (base64 PNG/JPEG)."""
    nullable: bool
    """Whether null (a missing value) is accepted."""
    values: list[str] | None = None
    """Binary inputs: the only values accepted (a JSON number or boolean naming one
    also: `1` for "1", `true` for "True"); null is missing; anything else is a 422.
    Category inputs: the values seen in training (when there are few); any other value
    is accepted and treated as unknown."""
    example: Any = None
    """A typical value (the training mean, the most frequent category...)."""


class TaskDescription(_Schema):
    type: str
    """binary, multiclass or regression."""
    target: str
    """The predicted column."""
    classes: list[str] = []
    """Class labels (classification), in the order of the model's outputs."""


class ModelSummary(_Schema):
    name: str
    version: int | None
    ref: str
    """`name:version`, as in the registry."""
    task: TaskDescription
    inputs: list[InputFeature]


class ModelDetail(ModelSummary):
    example: dict[str, Any]
    """A ready-to-send body for POST /v1/models/{name}/predict."""


class OpenAIModel(_Schema):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "foundry"


class ModelList(_Schema):
    object: str = "list"
    data: list[OpenAIModel] = Field(default_factory=list)
    """Every served model in OpenAI's `models.list` shape (for OpenAI clients)."""
    models: list[ModelSummary]
    """Prediction models (POST /v1/models/{name}/predict)."""
    language_models: list[dict[str, Any]] = Field(default_factory=list)
    """Generation and embedding models (the OpenAI-compatible routes)."""


class Status(_Schema):
    status: str
    models: dict[str, str] = Field(default_factory=dict)
    """readyz: each model's state (loaded, loading, failed: ...)."""


# ------------------------------------------------------------------ validation

NUMBER, BINARY, CATEGORY, TEXT, IMAGE = "number", "binary", "category", "text", "image"
_KIND = {"number": NUMBER, "binary": BINARY, "category": CATEGORY, "text": TEXT, "image": IMAGE}
IMAGE_FORMATS = ("PNG", "JPEG")
MAX_IMAGE_PIXELS = 4096 * 4096
"""Larger images are refused before decoding (a 1 MB PNG can hold 100M black pixels)."""


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    """The feature type: number, binary, category, text, image."""
    nullable: bool
    bound: float = math.inf
    """Numbers: the largest magnitude accepted (beyond it the encoded value overflows the
    model's float32)."""
    values: tuple[str, ...] | None = None
    """Binary inputs: the keys accepted (the training values; a JSON number or boolean
    whose key is one of them too). None: any category value."""

    @property
    def kind(self) -> str:
        if self.type == "binary" and self.values is None:
            return CATEGORY  # no fitted values to hold it to
        return _KIND[self.type]


@dataclass(frozen=True)
class Records:
    """The records of one request and where they sat in the body (for error paths)."""

    items: list[Any]
    prefix: str
    """`""` (top-level record or list), `"records"` or `"record"`."""
    many: bool
    """A list (paths get `[i]`) rather than a single record."""

    def path(self, i: int, name: str | None = None) -> str:
        """JSON path of record `i` (or of its field `name`): `age`, `records[3].age`."""
        where = f"{self.prefix}[{i}]" if self.many else self.prefix
        if name is None:
            return where or "the record"
        return f"{where}.{name}" if where else name


class RecordValidator:
    """Checks and casts the records of one model's requests; built once per model."""

    def __init__(
        self, model: str, inputs: Sequence[InputSpec], optional: Sequence[str] = ()
    ) -> None:
        self.model = model
        self.inputs = list(inputs)
        self.names = [s.name for s in self.inputs]
        self._name_set = frozenset(self.names)
        self.optional = [name for name in optional if name not in self._name_set]
        """Fields a record may carry besides the inputs (sensitive columns that pick
        fairness thresholds): strings, numbers, booleans or null."""
        self._specs = [(s.name, s.kind, s.nullable, s.type, s.bound) for s in self.inputs]
        self._binary = {s.name: frozenset(s.values) for s in self.inputs
                        if s.kind == BINARY and s.values is not None}
        """Binary inputs: name → the keys accepted."""

    # -- body → records --------------------------------------------------------

    def records_of(self, payload: Any) -> Records:
        """The records of a parsed body (422 when the body has none of the accepted shapes)."""
        if isinstance(payload, list):
            records = Records(payload, "", True)
        elif isinstance(payload, dict):
            records = self._wrapped(payload) or Records([payload], "", False)
        else:
            raise ApiError(
                422,
                "invalid_field",
                "the body must be a record (a JSON object of input features), a list of "
                'records, {"records": [...]} or {"record": {...}}; got '
                f"{_json_type(payload)}",
            )
        if not records.items:
            raise ApiError(422, "invalid_field", "the body holds no records to predict",
                           param=records.prefix or None)
        return records

    def _wrapped(self, payload: dict) -> Records | None:
        if len(payload) != 1:
            return None
        (key, value), = payload.items()
        if key == "records" and key not in self._name_set:
            if not isinstance(value, list):
                raise ApiError(422, "invalid_field", '"records" must be a list of records',
                               param="records")
            return Records(value, "records", True)
        if key == "record" and key not in self._name_set:
            return Records([value], "record", False)
        return None

    # -- records → checked records ---------------------------------------------

    def validate(self, records: Records) -> None:
        """Raise ApiError 422 at the first bad record; cast values in place (category
        numbers → training keys, base64 images → bytes)."""
        name_set = self._name_set
        for i, record in enumerate(records.items):
            if type(record) is not dict:
                raise ApiError(
                    422,
                    "invalid_field",
                    f"{records.path(i)} must be a JSON object of input features, got "
                    f"{_json_type(record)}",
                    param=records.path(i),
                )
            if record.keys() != name_set:
                self._field_set_error(record, records, i)
            for name, kind, nullable, ftype, bound in self._specs:
                value = record[name]
                vtype = type(value)
                if kind == NUMBER:
                    if vtype is float or vtype is int:
                        if abs(value) <= bound:  # False for inf; exact for huge ints
                            continue
                        if vtype is int or math.isfinite(value):
                            raise self._range_error(records, i, name, bound)
                    elif value is None and nullable:
                        continue
                    raise self._type_error(records, i, name, ftype, nullable, value)
                elif kind == BINARY:
                    if value is None and nullable:
                        continue
                    if vtype in (int, float, bool):
                        value = record[name] = scalar_key(value)  # true → "True", 1 → "1"
                    elif vtype is not str:
                        raise self._type_error(records, i, name, ftype, nullable, value)
                    if value not in self._binary[name]:
                        raise self._binary_error(records, i, name, nullable, value)
                elif kind == CATEGORY:
                    if vtype is str or (value is None and nullable):
                        continue
                    if vtype in (int, float, bool):
                        record[name] = scalar_key(value)  # 3, 3.0 → "3", as in training
                        continue
                    raise self._type_error(records, i, name, ftype, nullable, value)
                elif kind == TEXT:
                    if vtype is str or (value is None and nullable):
                        continue
                    raise self._type_error(records, i, name, ftype, nullable, value)
                else:
                    if vtype is not str:
                        raise self._type_error(records, i, name, ftype, nullable, value)
                    record[name] = decode_image(value, records.path(i, name))

    def _field_set_error(self, record: dict, records: Records, i: int) -> None:
        """Raise for an unknown or missing field; return when the only difference from
        the inputs is optional fields (cast like category values)."""
        unknown = [k for k in record if k not in self._name_set and k not in self.optional]
        if unknown:
            name = str(unknown[0])
            close = difflib.get_close_matches(name, self.names + self.optional, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ApiError(
                422,
                "invalid_field",
                f"unknown field '{name}' in {records.path(i)}{hint} (model '{self.model}' "
                f"takes: {', '.join(self.names)})",
                param=records.path(i, name),
            )
        missing = [n for n in self.names if n not in record]
        if not missing:
            for name in self.optional:
                value = record.get(name)
                if type(value) in (int, float, bool):
                    record[name] = scalar_key(value)
                elif value is not None and type(value) is not str:
                    raise self._type_error(records, i, name, "category", True, value)
            return
        spec = next(s for s in self.inputs if s.name == missing[0])
        null_hint = "; send null for a missing value" if spec.nullable else ""
        raise ApiError(
            422,
            "missing_field",
            f"{records.path(i)} lacks the required field '{spec.name}' ({spec.type}{null_hint})",
            param=records.path(i, spec.name),
        )

    @staticmethod
    def _type_error(
        records: Records, i: int, name: str, ftype: str, nullable: bool, value: Any
    ) -> ApiError:
        expected = {
            "number": "a finite number",
            "binary": "a string, number or boolean",
            "category": "a string, number or boolean",
            "text": "a string",
            "image": "a base64-encoded PNG or JPEG string",
        }[ftype]
        if nullable:
            expected += " or null"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        path = records.path(i, name)
        return ApiError(
            422,
            "invalid_field",
            f"{path} must be {expected} ({ftype} input), got {_json_type(value)} {shown}",
            param=path,
        )

    def _binary_error(
        self, records: Records, i: int, name: str, nullable: bool, value: Any
    ) -> ApiError:
        accepted = sorted(self._binary[name])
        spellings = " or ".join(repr(v) for v in accepted) or "no value"
        shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
        path = records.path(i, name)
        return ApiError(
            422,
            "invalid_field",
            f"{path} must be {spellings}{' or null' if nullable else ''} (binary input, "
            f"the values it was trained on), got {shown}",
            param=path,
        )

    @staticmethod
    def _range_error(records: Records, i: int, name: str, bound: float) -> ApiError:
        path = records.path(i, name)
        return ApiError(
            422,
            "invalid_field",
            f"{path} is out of range for this model (|value| <= {bound:.3g})",
            param=path,
        )

    # -- records → DataFrame (not on the serving path) ---------------------------

    def frame(self, records: list[dict]) -> pd.DataFrame:
        """Checked records → one DataFrame with a column per input, built column-wise;
        `Preprocessor.transform` encodes it exactly as `transform_records` encodes the
        records (image cells hold bytes, which only `transform_records` reads)."""
        data: dict[str, Any] = {}
        for name, kind, *_ in self._specs:
            values = [r[name] for r in records]
            if kind == NUMBER:
                data[name] = np.array(values, dtype=np.float64)  # None → NaN (missing)
            else:
                # object, like a column read from JSON Lines: category keys were cast in
                # validate(), images are bytes.
                data[name] = pd.Series(values, dtype=object)
        return pd.DataFrame(data)


def decode_image(text: str, path: str) -> bytes:
    """A base64 (or `data:image/...;base64,`) PNG/JPEG string → its bytes, checked by
    decoding it with Pillow; ApiError 422 naming `path` otherwise."""
    from PIL import Image

    data = text
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        if not header.endswith(";base64"):
            raise ApiError(422, "invalid_field",
                           f"{path}: only base64 data URLs are accepted", param=path)
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise ApiError(
            422,
            "invalid_field",
            f"{path} is not valid base64 (send the PNG/JPEG file's bytes base64-encoded; "
            "URLs are not fetched)",
            param=path,
        ) from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.format not in IMAGE_FORMATS:
                raise ValueError(f"{img.format} images are not accepted (PNG or JPEG only)")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise ValueError(f"{img.width}x{img.height} pixels is too large")
            img.load()
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError...
        raise ApiError(
            422, "invalid_field", f"{path} is not a readable PNG or JPEG image ({exc})",
            param=path,
        ) from None
    return raw


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


# ------------------------------------------------------------------ explain

MAX_EXPLAIN_STEPS = 200
"""Most integrated-gradients steps one explain request may ask for: each record costs
`steps` forward and backward passes."""
MAX_EXPLAIN_RECORDS = 100
"""Most records one explain request may carry, whatever the plan allows (413 beyond)."""
_EXPLAIN_FIELDS = ("records", "target", "steps")


class ExplainRequest(_Schema):
    records: list[dict[str, Value]]
    """Records to explain, keyed by input feature name (as for predict)."""
    target: str | None = None
    """Class whose output is explained in every record; null: each record's predicted
    class (regressors: the predicted value)."""
    steps: int | None = Field(None, ge=2, le=MAX_EXPLAIN_STEPS)
    """Integrated-gradients steps; null: the model's `evaluate.explain.steps`."""


class Explanation(_Schema):
    prediction: str | float | None
    """What /predict answers for the record: its label, or value."""
    target_class: str | None
    """The class explained (null for a regressor)."""
    output: float | None
    """The explained output at the record: the target class's logit (log-odds for a
    one-logit binary model), or the predicted value."""
    baseline_output: float | None
    """The same output at the baseline (see the response's `baseline`)."""
    attributions: dict[str, float | None]
    """Every input feature's share of `output - baseline_output`."""
    tokens: list[tuple[str, float | None]] | None = None
    """Text models: `[token, attribution]` for each real token, in order."""
    heatmap: list[list[float | None]] | None = None
    """Image models: pixel attributions summed into at most 8 x 8 cells [rows][cols]."""
    convergence_delta: float | None
    """sum(attributions) - (output - baseline_output): the integral's error; more
    `steps` shrink it."""


class ExplainResponse(_Schema):
    model: str
    method: str
    """`integrated_gradients`."""
    steps: int
    output: str
    """What is explained, in words."""
    baseline: dict[str, str]
    """The baseline value of each input feature, in words."""
    rows: list[Explanation]
    """One explanation per record, in request order."""
    usage: Usage


@dataclass(frozen=True)
class ExplainBody:
    records: Records
    target: str | None
    steps: int | None


def explain_body(payload: Any) -> ExplainBody:
    """The parts of an explain body `{"records": [...], "target"?, "steps"?}`; ApiError
    422 naming the offending field, 413 beyond `MAX_EXPLAIN_RECORDS`. The records still
    need `RecordValidator.validate`."""
    if not isinstance(payload, dict) or "records" not in payload:
        raise ApiError(
            422,
            "missing_field",
            'an explain body is {"records": [...], "target": optional class, "steps": '
            f"optional}}; got {_json_type(payload)}"
            + (" without records" if isinstance(payload, dict) else ""),
            param="records",
        )
    unknown = [k for k in payload if k not in _EXPLAIN_FIELDS]
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field '{unknown[0]}' in the explain "
                       f"body (fields: {', '.join(_EXPLAIN_FIELDS)})", param=str(unknown[0]))
    items = payload["records"]
    if not isinstance(items, list) or not items:
        raise ApiError(422, "invalid_field", '"records" must be a non-empty list of records',
                       param="records")
    if len(items) > MAX_EXPLAIN_RECORDS:
        raise ApiError(413, "too_many_records", f"{len(items)} records in one explain request;"
                       f" explanations take up to {MAX_EXPLAIN_RECORDS} (split the list)",
                       param="records")
    target = payload.get("target")
    if target is not None:
        if type(target) not in (str, int, float, bool):
            raise ApiError(422, "invalid_field", f"target must be a class label (a string), got "
                           f"{_json_type(target)}", param="target")
        target = scalar_key(target) if type(target) is not str else target
    steps = payload.get("steps")
    if steps is not None and (type(steps) is not int or not 2 <= steps <= MAX_EXPLAIN_STEPS):
        raise ApiError(422, "invalid_field", f"steps must be an integer from 2 to "
                       f"{MAX_EXPLAIN_STEPS}, got {steps!r}", param="steps")
    return ExplainBody(Records(items, "records", True), target, steps)
