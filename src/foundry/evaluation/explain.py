"""Explanations: which inputs a model relies on (global) and why it answered what it did
for one row (local).

    permutation_importance(predictor, val_df)   # drop in the main metric per shuffled column
    explain(predictor, df, steps=50)            # Integrated Gradients (Captum) per row;
                                                # a model with `local_explainer` (gbm:
                                                # TreeSHAP) answers in the same format
    Explainer(predictor).explain_records(recs)  # the same for API records (the /explain route)
    explain_file("adult:3", "rows.csv")         # what `foundry explain` calls

Local attributions are Integrated Gradients of one output — the logit of the explained
class (for a single-logit binary model: its log-odds), or the predicted value in the
target's units for a regressor — from a baseline row to the row, integrated along the
straight line between them in the space where the network first sees each input:

    input        integrated over                 baseline
    number       its standardised value          its missing-value fill (the training mean)
    binary       its 0 / 1 code                  0.5, halfway between the two values
    category     its embedding vector            the mean embedding of the known values
    text         its token embeddings [L, D]     the padding token's embedding, everywhere
    image        its encoded pixels [C, H, W]    zero: black (`unit`), the mean colour
                                                 (`standard` normalisation)

Category and token embeddings are substituted inside the network with forward hooks
(what Captum's `LayerIntegratedGradients` does), but for all inputs at once in one
`IntegratedGradients` call: every column lies on the same path, so a row's attributions
add up to `output - baseline_output` (completeness), and `convergence_delta` (Captum's)
is what they miss by — the error of the `steps`-point integral, not a property of the
model. The text mask always comes from the row's real tokens (Captum's own
`LayerIntegratedGradients` re-runs the baseline on all-padding ids, whose different mask
would show up as a delta that no number of steps removes).

The explained output is the network's raw output, before the probabilities: temperature
scaling divides every logit by the same T, which changes their size, not their ranking.
ONNX variants have no gradients and int8 variants round their activations (zero
gradient): both are refused with a pointer to the float parent they were made from.
"""

from __future__ import annotations

import copy
import json
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

import foundry.crypto as crypto
from foundry.errors import DataError, ModelError
from foundry.extras import require

__all__ = [
    "ExplainResult",
    "Explainer",
    "attribution_tables",
    "explain",
    "explain_file",
    "explain_settings",
    "heatmap",
    "importance_table",
    "permutation_importance",
]

METHOD = "integrated_gradients"
MAX_ROWS = 100
"""Rows `explain` attributes by default (each costs `steps` forward and backward passes)."""
ROW_CHUNK = 16
"""Rows integrated together: their interpolated batches share forward passes."""
FORWARD_ROWS = 512
"""Most rows (examples x steps) in one forward pass of the integral: bounds the memory
of a large image or a long text (Captum splits the steps to fit)."""
HEATMAP_GRID = 8
"""Image heatmaps are summed into at most 8 x 8 cells (a readable grid, small JSON)."""
_NOT_DIFFERENTIABLE = {
    "onnx": "ONNX Runtime computes no gradients",
    "onnx_int8": "ONNX Runtime computes no gradients",
    "int8": "its int8 layers round their inputs, whose gradient is zero",
}


# ---------------------------------------------------------------------- global importance


def permutation_importance(
    predictor: Any,
    df: pd.DataFrame,
    *,
    repeats: int = 5,
    max_rows: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """How much the task's main metric drops when one raw input column is shuffled.

    Works on any predictor with `labelled_outputs` (foundry models and their int8 / ONNX
    variants, fine-tuned Hugging Face classifiers): each shuffle re-encodes the column,
    so a category or a text column is one feature. Scored on the labelled rows of `df`
    (a seeded sample of `max_rows` beyond that) with accuracy (classification) or R²
    (regression), as `compute_metrics` gives them; `repeats` shuffles per column.

    Returns `{"metric", "baseline", "rows", "repeats", "features": [{"feature",
    "importance", "std"}]}`, features sorted by importance, largest first. An importance
    near 0 (or below) means the model does not need the column.
    """
    task = predictor.task
    target = task.target
    if target not in df.columns:
        raise DataError(
            f"permutation importance needs the target column '{target}' in the data "
            f"(columns: {', '.join(map(str, df.columns))})"
        )
    columns = _require_inputs(predictor, df)
    rows = df.loc[df[target].notna()]
    if len(rows) > max_rows:
        rows = rows.sample(max_rows, random_state=seed)
    if len(rows) < 2:
        raise DataError(
            f"permutation importance needs at least 2 rows with a '{target}' value, got {len(rows)}"
        )
    rows = rows.reset_index(drop=True)
    metric = "accuracy" if task.is_classification else "r2"

    def score(frame: pd.DataFrame) -> float:
        return _main_metric(task, *predictor.labelled_outputs(frame))

    # Our own loop, not sklearn.inspection.permutation_importance: that one insists on an
    # estimator with `fit`, which a trained predictor is not.
    baseline = score(rows)
    if math.isnan(baseline):
        raise DataError(f"{metric} is undefined on these rows (is '{target}' constant?)")
    rng = np.random.default_rng(seed)
    drops = np.empty((len(columns), repeats))  # [column, repeat]
    for j, name in enumerate(columns):
        values = rows[name].to_numpy()
        for r in range(repeats):
            shuffled = rows.assign(**{name: values[rng.permutation(len(rows))]})
            drops[j, r] = baseline - score(shuffled)
    features = [
        {"feature": name, "importance": float(np.mean(d)), "std": float(np.std(d))}
        for name, d in zip(columns, drops, strict=True)
    ]
    features.sort(key=lambda f: f["importance"], reverse=True)
    return {
        "metric": metric,
        "baseline": baseline,
        "rows": len(rows),
        "repeats": repeats,
        "features": features,
    }


def _main_metric(task: Any, y: np.ndarray, outputs: np.ndarray) -> float:
    """Accuracy (classification) or R² (regression) as `compute_metrics` gives them,
    without its other metrics: per-class ROC and PR AUCs cost ~0.2 s a call on a
    10-class table, and importance scores columns x repeats times (digits: 64 x 5
    calls were 50 s of a 57 s `foundry train`, the booster's fit 4 s)."""
    from foundry.evaluation.metrics import probabilities

    y = np.asarray(y)
    out = np.asarray(outputs, dtype=np.float64).reshape(len(y), -1)
    if task.is_classification:
        return float(np.mean(probabilities(out, task).argmax(axis=1) == y))
    # R² is unchanged by the affine map back to the target's units (both sides move)
    if len(y) < 2:
        return math.nan
    y = y.astype(np.float64)
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum((y - out[:, 0]) ** 2))
    if total == 0.0:  # sklearn's r2_score: 1 for a perfect fit, else 0, of a constant y
        return 1.0 if residual == 0.0 else 0.0
    return 1.0 - residual / total


# ---------------------------------------------------------------------- local attributions


def explain(
    predictor: Any,
    df: pd.DataFrame,
    *,
    target: str | None = None,
    steps: int = 50,
    max_rows: int = MAX_ROWS,
) -> dict[str, Any]:
    """Integrated-gradients attributions for the first `max_rows` rows of `df`, for the
    predicted class of each row, or for class `target` (a class label) in every row;
    regressors: for the predicted value. See the module docstring for the baselines.

    Returns `{"model", "method", "steps", "output", "baseline", "rows": [...]}`, one row
    dict per row: `prediction`, `target_class`, `output` and `baseline_output` (the
    explained output at the row and at the baseline), `attributions` ({input column:
    value}, summing to output - baseline_output), `tokens` ([[token, value], ...], text
    models), `heatmap` ([rows][cols] of summed pixel attributions, image models) and
    `convergence_delta`.
    """
    explainer = Explainer(predictor)
    return explainer.explain_frame(df.head(max_rows), target=target, steps=steps)


class Explainer:
    """Local attributions for one predictor, on a private copy of its network (so its
    hooks never touch the network that serves predictions). Thread-safe: the API shares
    one per served model across requests."""

    def __init__(self, predictor: Any) -> None:
        method = (getattr(predictor, "manifest", None) or {}).get("compression") or {}
        reason = _NOT_DIFFERENTIABLE.get(method.get("method"))
        if reason is not None:
            parent = predictor.manifest.get("parent") or "its parent"
            raise ModelError(
                f"model {predictor.ref} is a {method['method']} variant: {reason}, so it "
                "has no integrated-gradients explanations",
                hint=f"explain the float model it was made from: foundry explain {parent}",
            )
        self.predictor = predictor
        self.task = predictor.task
        # A model that explains itself (gbm: exact TreeSHAP) has `local_explainer`.
        own = getattr(getattr(predictor, "model", None), "local_explainer", None)
        if own is not None:
            self._network: Any = own(predictor)
        elif hasattr(predictor, "preprocessor"):
            self._network = _FoundryNetwork(predictor)
        elif hasattr(predictor, "text_column"):
            self._network = _HFTextNetwork(predictor)
        else:
            raise ModelError(f"model {predictor.ref} has no network to explain")

    def target_index(self, target: str | None) -> int | None:
        """The output index of class label `target` (None: each row's prediction);
        DataError naming the classes when it is not one of them."""
        if target is None:
            return None
        if not self.task.is_classification:
            raise DataError(
                f"model {self.predictor.ref} is a regressor: it has no class '{target}' "
                "to explain; leave the target out to explain its predicted value"
            )
        classes = [str(c) for c in self.task.classes]
        if str(target) not in classes:
            raise DataError(
                f"unknown class '{target}' for target '{self.task.target}' of model "
                f"{self.predictor.ref}; classes: {', '.join(classes)}"
            )
        return classes.index(str(target))

    def explain_frame(
        self, df: pd.DataFrame, *, target: str | None = None, steps: int = 50
    ) -> dict[str, Any]:
        """Attributions for every row of `df` (see `explain`); the predictions are
        `predictor.predict(df)`'s."""
        _require_inputs(self.predictor, df)
        self.target_index(target)  # an unknown class fails before any work
        predicted = self.predictor.predict(df)[self.task.target].tolist()
        return self._explain(self._network.encode_frame(df), predicted, target, steps)

    def explain_records(
        self,
        records: list[dict[str, Any]],
        predictions: list[dict[str, Any]],
        *,
        target: str | None = None,
        steps: int = 50,
    ) -> dict[str, Any]:
        """Attributions for API records (checked by the model's `RecordValidator`, images
        as bytes), encoded as the predict route encodes them; `predictions` are what it
        answered for them (`{"label", ...}` or `{"value"}` per record)."""
        self.target_index(target)
        predicted = [p.get("label", p.get("value")) for p in predictions]
        return self._explain(self._network.encode_records(records), predicted, target, steps)

    def _explain(
        self, encoded: Any, predicted: list[Any], target: str | None, steps: int
    ) -> dict[str, Any]:
        if steps < 2:
            raise DataError(f"steps must be at least 2, got {steps}")
        fixed = self.target_index(target)
        if hasattr(self._network, "explain_encoded"):  # its own method, no integral
            return self._network.explain_encoded(encoded, predicted, fixed)
        classes = [str(c) for c in self.task.classes]
        net = self._network
        rows: list[dict[str, Any]] = []
        for start in range(0, len(predicted), ROW_CHUNK):
            labels = predicted[start : start + ROW_CHUNK]
            chunk = net.slice(encoded, start, start + len(labels))
            inputs, baselines, extra = net.integrand(chunk)
            with torch.no_grad():
                scores = net.explained_forward(*inputs, *extra)  # [B, K]
                base_scores = net.explained_forward(*baselines, *extra)
            targets = [fixed] * len(labels) if fixed is not None else []
            if fixed is None:
                # The class predict answered (temperature and fairness thresholds
                # included); the top output only where it gave no label (overflow).
                for label, top in zip(labels, scores.argmax(1).tolist(), strict=True):
                    known = label is not None and str(label) in classes
                    targets.append(classes.index(str(label)) if known else int(top))
            attributions, delta = _integrate(net, inputs, baselines, extra, targets, steps)
            index = torch.as_tensor(targets, device=scores.device)[:, None]
            out = scores.gather(1, index)[:, 0].tolist()
            base_out = base_scores.gather(1, index)[:, 0].tolist()
            for i, described in enumerate(net.describe(chunk, attributions)):
                rows.append(
                    {
                        "prediction": _json_value(labels[i]),
                        "target_class": classes[targets[i]] if classes else None,
                        "output": _num(out[i]),
                        "baseline_output": _num(base_out[i]),
                        **described,
                        "convergence_delta": _num(delta[i]),
                    }
                )
        return {
            "model": self.predictor.ref,
            "method": METHOD,
            "steps": steps,
            "output": _output_meaning(self.task, net.n_outputs),
            "baseline": net.baseline_description(),
            "rows": rows,
        }


def _integrate(
    net: _FoundryNetwork | _HFTextNetwork,
    inputs: tuple[torch.Tensor, ...],
    baselines: tuple[torch.Tensor, ...],
    extra: tuple[torch.Tensor, ...],
    targets: list[int],
    steps: int,
) -> tuple[list[np.ndarray], list[float]]:
    """Captum's IntegratedGradients of `net.explained_forward` over `inputs` (each
    [B, ...]) from `baselines`, for output column `targets[i]` of row i; `extra` tensors
    (integer ids, masks) pass along unchanged. Returns (attributions per input, float64
    numpy shaped like it; convergence delta per row)."""
    require("trust", "captum", "integrated-gradients explanations")
    from captum.attr import IntegratedGradients

    attributions, delta = IntegratedGradients(net.explained_forward).attribute(
        inputs,
        baselines=baselines,
        target=targets,
        additional_forward_args=extra or None,
        n_steps=steps,
        internal_batch_size=max(FORWARD_ROWS, 2 * len(targets)),
        return_convergence_delta=True,
    )
    return [a.detach().double().cpu().numpy() for a in attributions], delta.tolist()


# ---------------------------------------------------------------------- networks


class _Network:
    """A private copy of a network whose embedding outputs can be replaced per call.

    Each kind below (foundry networks, Hugging Face classifiers) has the same methods:
    `encode_frame` / `encode_records` → encoded rows, `slice` → a chunk on the device,
    `integrand(chunk)` → (inputs, baselines, extra), `explained_forward(*inputs,
    *extra)` → [B, K] with column k the explained output of class k (regression: K = 1,
    the value), `describe(chunk, attributions)` → per-row dicts, and
    `baseline_description()`.
    """

    def __init__(self, model: nn.Module, task: Any, n_outputs: int) -> None:
        if not isinstance(model, nn.Module):
            raise ModelError("only PyTorch networks can be explained")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.task = task
        self.n_outputs = n_outputs
        self.device = next(iter(self.model.parameters())).device
        self._local = threading.local()
        """`.replace`: {embedding module: tensor to output instead}, per thread."""

    def substitute(self, module: nn.Module) -> None:
        """Let `run` replace `module`'s output (a module of the private copy only)."""
        module.register_forward_hook(self._replace_output)

    def _replace_output(self, module: nn.Module, args: Any, output: torch.Tensor) -> Any:
        replace = getattr(self._local, "replace", None)
        return None if replace is None else replace.get(module)

    def run(self, replace: dict[nn.Module, torch.Tensor], call: Any) -> torch.Tensor:
        """`call()` with each module in `replace` answering its tensor instead; per
        thread, so concurrent explanations on one copy do not mix."""
        self._local.replace = replace
        try:
            return call()
        finally:
            self._local.replace = None

    def explained(self, out: torch.Tensor) -> torch.Tensor:
        """Raw outputs [B, n_outputs] → [B, K], column k explained for class k."""
        task = self.task
        if not task.is_classification:
            return out[:, :1] * task.target_std + task.target_mean  # target units
        if out.shape[1] == 1:  # one logit (BCE): the log-odds of class 1, negated for 0
            return torch.cat([-out, out], dim=1)
        return out


@dataclass(frozen=True)
class _Part:
    """One integrated input of a foundry network."""

    kind: str
    """numbers (every number and binary column, [B, n]), category ([B, d]), text
    ([B, L, D]) or image ([B, C, H, W])."""
    columns: list[str]
    key: str
    """Its entry in the encoded dict ("numeric", "categorical", "text:x", "image:x")."""
    module: nn.Module | None = None
    """The embedding whose output it replaces (None: it is the encoded tensor itself)."""
    index: int = 0
    """Category parts: the column of "categorical" they embed."""
    baseline: torch.Tensor | None = field(default=None, repr=False)
    """One row's baseline (broadcast over the batch; text: one token's)."""


class _FoundryNetwork(_Network):
    """mlp, cnn and text models: `Encoded` dict in, [B, n_outputs] out."""

    def __init__(self, predictor: Any) -> None:
        from foundry.data.encoders.binary import UNKNOWN
        from foundry.data.encoders.number import NumberEncoder
        from foundry.models.tabular import TabularInputs

        super().__init__(predictor.model, predictor.task, int(predictor.manifest["n_outputs"]))
        self.predictor = predictor
        pre = predictor.preprocessor
        schema = pre.schema
        encoders = {e.name: e for e in pre.encoders}
        model_type = predictor.manifest.get("config", {}).get("model", {}).get("type")
        parts: list[_Part] = []
        if schema.numeric:
            fills = [
                (e.fill - e.center) / e.scale if isinstance(e, NumberEncoder) else UNKNOWN
                for e in (encoders[name] for name in schema.numeric)
            ]
            base = torch.tensor(fills, dtype=torch.float32, device=self.device)
            parts.append(_Part("numbers", list(schema.numeric), "numeric", baseline=base))
        if schema.categorical:
            tabular = [m for m in self.model.modules() if isinstance(m, TabularInputs)]
            if len(tabular) != 1 or len(tabular[0].embeddings) != len(schema.categorical):
                raise ModelError(
                    f"cannot find the category embeddings of model type '{model_type}' "
                    "(explanations look for one TabularInputs module)"
                )
            for i, (name, emb) in enumerate(
                zip(schema.categorical, tabular[0].embeddings, strict=True)
            ):
                weight = emb.weight.detach()
                # Row 0 (unseen values) is rarely trained and so near its random start;
                # the mean of the known values is a typical category.
                base = weight[1:].mean(0) if len(weight) > 1 else weight[0]
                parts.append(_Part("category", [name], "categorical", emb, i, base))
        for text in schema.text:
            key = f"text:{text.name}"
            owner = next(
                (
                    m
                    for m in self.model.modules()
                    if getattr(m, "key", None) == key
                    and isinstance(getattr(m, "embedding", None), nn.Embedding)
                ),
                None,
            )
            if owner is None:
                raise ModelError(
                    f"cannot find the token embedding of text input '{text.name}' in "
                    f"model type '{model_type}'"
                )
            base = owner.embedding.weight.detach()[0]  # the padding token
            parts.append(_Part("text", [text.name], key, owner.embedding, baseline=base))
        for image in schema.image:
            base = torch.zeros((), device=self.device)
            parts.append(_Part("image", [image.name], f"image:{image.name}", baseline=base))
        for part in parts:
            if part.module is not None:
                self.substitute(part.module)
        self.parts = parts
        # Integer inputs pass through unchanged: embeddings read them (and are replaced),
        # text models take their padding mask from them.
        self.ints = ["categorical"] * bool(schema.categorical) + [
            f"text:{t.name}" for t in schema.text
        ]
        self._encoders = encoders

    # -- encoding ----------------------------------------------------------------

    def encode_frame(self, df: pd.DataFrame) -> dict[str, torch.Tensor]:
        # As `Predictor.outputs` encodes: the training's PII rule first, when it has one.
        scrub = getattr(self.predictor, "scrub", None)
        frame = scrub(df) if scrub is not None else df
        return self.predictor.preprocessor.transform(frame, with_target=False)

    def encode_records(self, records: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        scrubber = getattr(self.predictor, "scrubber", None)
        if scrubber is not None:
            records = scrubber.transform_records(records)
        return self.predictor.preprocessor.transform_records(records)

    def slice(self, encoded: dict[str, torch.Tensor], start: int, stop: int) -> dict:
        return {k: v[start:stop].to(self.device) for k, v in encoded.items() if k != "target"}

    # -- forward -----------------------------------------------------------------

    def integrand(self, chunk: dict[str, torch.Tensor]) -> tuple[tuple, tuple, tuple]:
        inputs, baselines = [], []
        with torch.no_grad():
            for part in self.parts:
                if part.kind == "category":
                    x = part.module(chunk["categorical"][:, part.index])  # [B, d]
                elif part.kind == "text":
                    x = part.module(chunk[part.key])  # [B, L, D]
                else:
                    x = chunk[part.key]
                inputs.append(x.float())
                baselines.append(part.baseline.float().expand_as(x).contiguous())
        return tuple(inputs), tuple(baselines), tuple(chunk[k] for k in self.ints)

    def explained_forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        continuous, ints = tensors[: len(self.parts)], tensors[len(self.parts) :]
        batch = dict(zip(self.ints, ints, strict=True))
        replace: dict[nn.Module, torch.Tensor] = {}
        for part, x in zip(self.parts, continuous, strict=True):
            if part.module is None:
                batch[part.key] = x
            else:
                replace[part.module] = x
        return self.explained(self.run(replace, lambda: self.model(batch)))

    # -- describing --------------------------------------------------------------

    def describe(self, chunk: dict, attributions: list[np.ndarray]) -> list[dict[str, Any]]:
        n = len(attributions[0])
        rows: list[dict[str, Any]] = [{"attributions": {}} for _ in range(n)]
        for part, attr in zip(self.parts, attributions, strict=True):
            for i, row in enumerate(rows):
                if part.kind == "numbers":
                    for j, name in enumerate(part.columns):
                        row["attributions"][name] = _num(attr[i, j])
                elif part.kind == "category":
                    row["attributions"][part.columns[0]] = _num(attr[i].sum())
                elif part.kind == "text":
                    per_token = attr[i].sum(-1)  # [L]
                    ids = chunk[part.key][i].tolist()
                    tokenizer = self._encoders[part.columns[0]].tokenizer
                    row["attributions"][part.columns[0]] = _num(per_token.sum())
                    row["tokens"] = [
                        [tokenizer.id_to_token(t), _num(v)]
                        for t, v in zip(ids, per_token, strict=True)
                        if t != 0
                    ]
                else:
                    pixels = attr[i].sum(0)  # [H, W], channels summed
                    row["attributions"][part.columns[0]] = _num(pixels.sum())
                    row["heatmap"] = heatmap(pixels)
        order = self.predictor.input_columns
        for row in rows:
            row["attributions"] = {c: row["attributions"][c] for c in order}
        return rows

    def baseline_description(self) -> dict[str, str]:
        from foundry.data.encoders.number import NumberEncoder

        out: dict[str, str] = {}
        for name in self.predictor.input_columns:
            enc = self._encoders[name]
            part = next(p for p in self.parts if name in p.columns)
            if part.kind == "numbers" and isinstance(enc, NumberEncoder):
                how = {"median": "training median", "zero": "zero"}.get(
                    enc.missing, "training mean"
                )
                out[name] = f"{enc.fill:.6g} (the missing-value fill: {how})"
            elif part.kind == "numbers":
                out[name] = f"0.5, halfway between {' and '.join(map(repr, enc.values))}"
            elif part.kind == "category":
                out[name] = "the mean embedding of the known values"
            elif part.kind == "text":
                out[name] = "the padding token at every real token's position"
            else:
                colour = "the training mean colour" if enc.normalization == "standard" else "black"
                out[name] = f"an image of {colour} (encoded pixels all zero)"
        return out


class _HFTextNetwork(_Network):
    """A fine-tuned Hugging Face classifier / regressor: `(input_ids, attention_mask)`
    in, [B, n_outputs] out; the word embeddings are integrated from the padding token's."""

    def __init__(self, predictor: Any) -> None:
        probe = predictor.outputs(["a"])
        super().__init__(predictor.model, predictor.task, probe.shape[1])
        self.predictor = predictor
        self.tokenizer = predictor.tokenizer
        self.embedding = self.model.encoder.get_input_embeddings()
        self.substitute(self.embedding)

    def encode_frame(self, df: pd.DataFrame) -> list[list[int]]:
        from foundry.data.encoders.text import texts_of

        return self._ids(texts_of(df[self.predictor.text_column]))

    def encode_records(self, records: list[dict[str, Any]]) -> list[list[int]]:
        from foundry.data.encoders.text import texts_of

        column = self.predictor.text_column
        missing = [i for i, r in enumerate(records) if column not in r]
        if missing:
            raise DataError(f"record {missing[0]} lacks '{column}', the text input")
        return self._ids(texts_of(pd.Series([r[column] for r in records], dtype=object)))

    def _ids(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_inputs(texts, max_length=self.predictor.max_length)

    def slice(self, encoded: list[list[int]], start: int, stop: int) -> tuple:
        from foundry.models.hf import pad_batch

        ids, mask = pad_batch(encoded[start:stop], self.tokenizer.pad_id)
        return ids.to(self.device), mask.to(self.device)

    def integrand(self, chunk: tuple) -> tuple[tuple, tuple, tuple]:
        ids, mask = chunk
        with torch.no_grad():
            x = self.embedding(ids).float()  # [B, L, H]
            pad = self.embedding(torch.full_like(ids[:1, :1], self.tokenizer.pad_id))
        return (x,), (pad.float().expand_as(x).contiguous(),), (ids, mask)

    def explained_forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        x, ids, mask = tensors
        return self.explained(self.run({self.embedding: x}, lambda: self.model(ids, mask)))

    def describe(self, chunk: tuple, attributions: list[np.ndarray]) -> list[dict[str, Any]]:
        ids, mask = chunk
        column = self.predictor.text_column
        rows = []
        for i, attr in enumerate(attributions[0]):
            per_token = attr.sum(-1)  # [L]
            real = mask[i].bool().cpu().numpy()
            tokens = self.tokenizer.hf.convert_ids_to_tokens(ids[i][mask[i].bool()].tolist())
            rows.append(
                {
                    "attributions": {column: _num(per_token.sum())},
                    "tokens": [[t, _num(v)] for t, v in zip(tokens, per_token[real], strict=True)],
                }
            )
        return rows

    def baseline_description(self) -> dict[str, str]:
        return {self.predictor.text_column: "the padding token at every real token's position"}


# ---------------------------------------------------------------------- files and the CLI


@dataclass(frozen=True)
class ExplainResult:
    model_ref: str
    data_path: Path
    explanations: dict[str, Any]
    """What `explain` returns."""
    importance: dict[str, Any] | None
    """What `permutation_importance` returns (with `--importance`), else None."""
    output_path: Path | None
    frame: pd.DataFrame = field(repr=False, compare=False, default_factory=pd.DataFrame)
    """The rows explained, as read (the CLI shows their values beside the attributions)."""

    def to_dict(self) -> dict[str, Any]:
        out = {"model": self.model_ref, "data": str(self.data_path), **self.explanations}
        if self.importance is not None:
            out["importance"] = self.importance
        return out


def explain_file(
    ref: str | Path,
    data: str | Path,
    *,
    output: str | Path | None = None,
    steps: int | None = None,
    target: str | None = None,
    rows: int = 20,
    importance: bool = False,
) -> ExplainResult:
    """`foundry explain`: load model `ref`, read `data` (`read_table`), explain its first
    `rows` rows and, with `importance`, score permutation importance on its labelled rows;
    write the JSON to `output`. `steps`, repeats and rows for importance default to the
    model's `evaluate.explain` settings."""
    from foundry.data import read_table
    from foundry.predictor import load

    predictor = load(ref)
    explainer = Explainer(predictor)  # refuses ONNX / int8 before reading the data
    explainer.target_index(target)
    settings = explain_settings(predictor)
    path = Path(data)
    df = read_table(path)
    shown = df.head(rows)
    explanations = explainer.explain_frame(shown, target=target, steps=steps or settings.steps)
    ranked = None
    if importance:
        ranked = permutation_importance(
            predictor, df, repeats=settings.repeats, max_rows=settings.max_rows
        )
    out_path = Path(output) if output is not None else None
    result = ExplainResult(predictor.ref, path, explanations, ranked, out_path, shown)
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        crypto.write_text(out_path, json.dumps(result.to_dict(), indent=2), fsync=False)
    return result


def explain_settings(predictor: Any) -> Any:
    """The model's `evaluate.explain` section (defaults when its config has none)."""
    from foundry.config.schema import ExplainConfig, FoundryConfig

    config = (getattr(predictor, "manifest", None) or {}).get("config")
    if config is None:
        return ExplainConfig()
    try:
        return FoundryConfig.model_validate(config).evaluate.explain
    except ValueError:
        return ExplainConfig()


def attribution_tables(explanations: dict[str, Any], df: pd.DataFrame, *, top: int = 5) -> list:
    """One rich renderable per explained row: a heading line, then its `top` largest
    attributions by magnitude beside the row's value of each column (text: its tokens)."""
    from rich.console import Group
    from rich.table import Table

    out = []
    for i, row in enumerate(explanations["rows"]):
        what = f"class {row['target_class']}" if row["target_class"] is not None else "value"
        heading = (
            f"row {i}: predicted {row['prediction']}; {what}: output {_fmt(row['output'])}"
            f" = baseline {_fmt(row['baseline_output'])} + attributions"
            f" (convergence delta {_fmt(row['convergence_delta'])})"
        )
        table = Table()
        table.add_column("input")
        table.add_column("value")
        table.add_column("attribution", justify="right")
        items = [(name, value, df.iloc[i][name]) for name, value in row["attributions"].items()]
        items += [(f"  token {t!r}", v, "") for t, v in row.get("tokens", [])]
        items.sort(key=lambda item: -abs(item[1] or 0.0))
        for name, value, raw in items[:top]:
            shown = f"{raw:.4g}" if isinstance(raw, float) else str(raw)
            table.add_row(name, shown if len(shown) <= 30 else shown[:27] + "...", _fmt(value))
        out.append(Group(heading, table))
    return out


def importance_table(importance: dict[str, Any]) -> Any:
    """Permutation importance as a heading line and one table row per input."""
    from rich.console import Group
    from rich.table import Table

    heading = (
        f"permutation importance: drop in {importance['metric']} when an input is "
        f"shuffled (baseline {importance['baseline']:.4f}, {importance['rows']} rows, "
        f"{importance['repeats']} shuffles each)"
    )
    table = Table()
    table.add_column("input")
    table.add_column("importance", justify="right")
    table.add_column("std", justify="right")
    for f in importance["features"]:
        table.add_row(f["feature"], f"{f['importance']:.4f}", f"{f['std']:.4f}")
    return Group(heading, table)


# ---------------------------------------------------------------------- helpers


def heatmap(pixels: np.ndarray, grid: int = HEATMAP_GRID) -> list[list[float | None]]:
    """Attributions [H, W] summed into at most `grid` x `grid` cells (as even as the size
    allows): a coarse map of where the evidence is, as JSON lists [rows][cols]."""
    h, w = pixels.shape
    rows = np.linspace(0, h, min(grid, h) + 1).astype(int)[:-1]
    cols = np.linspace(0, w, min(grid, w) + 1).astype(int)[:-1]
    cells = np.add.reduceat(np.add.reduceat(pixels, rows, axis=0), cols, axis=1)
    return [[_num(v) for v in row] for row in cells]


def _require_inputs(predictor: Any, df: pd.DataFrame) -> list[str]:
    columns = list(predictor.input_columns)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(
            f"the data lacks input column(s) {missing} that model '{predictor.ref}' needs "
            f"(it expects: {', '.join(columns)})"
        )
    return columns


def _output_meaning(task: Any, n_outputs: int) -> str:
    if not task.is_classification:
        return f"the predicted '{task.target}' value, in its units"
    if n_outputs == 1:
        return "the log-odds of the target class (the model's one logit, negated for the first)"
    return "the logit of the target class (the raw output, before softmax and temperature)"


def _num(value: Any) -> float | None:
    """A JSON number: float, None for NaN / inf (not JSON)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _json_value(value: Any) -> Any:
    """A predicted label (str) or value (float); None for a missing or non-finite one."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float, np.integer, np.floating)):
        return _num(value)
    return str(value)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.4g}"
