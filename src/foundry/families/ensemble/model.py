"""A weighted ensemble as a `Predictor`'s network and preprocessor, so that predict,
probabilities, temperature scaling, fairness thresholds, `labelled_outputs`, chunked
prediction and serving need nothing new (as gbm's `BoosterModel` does it).

    inputs  = EnsembleInputs(members)        # each member's encoding, side by side:
                                             # {"0/features": ..., "1/num": ..., "target"}
    network = EnsembleNet(members, weights)  # their probabilities (or values), averaged
    Predictor(network, inputs, task, manifest, ref)

Classification: the weighted mean of the members' class probabilities, returned as its
log (a softmax of it gives the mean back), `[N, n_classes]`. Regression: the weighted
mean of the members' standardised predictions, `[N, 1]` (every member standardised the
target with the same training rows' mean and deviation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EnsembleInputs", "EnsembleNet", "member_scores", "select_weights"]


class EnsembleInputs:
    """A `Preprocessor` look-alike over the members' own preprocessors."""

    def __init__(self, members: list[Any]) -> None:
        self.members = members
        self.task = members[0].task

    def prepare(self, df: Any) -> Any:
        return df

    def transform_records(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """What `transform` gives for a frame of these records (serving's path)."""
        out: dict[str, Any] = {}
        for i, member in enumerate(self.members):
            own = records if member.scrubber is None else member.scrubber.transform_records(records)
            for key, value in member.preprocessor.transform_records(own).items():
                out[f"{i}/{key}"] = value
        return out

    @property
    def encoders(self) -> Any:
        """The first member's input encoders: what serving validates records against
        (every member reads the same inputs)."""
        return self.members[0].preprocessor.encoders

    # The target's labels and scale are the same in every member: the first member's.
    def decode_labels(self, *args: Any, **kwargs: Any) -> Any:
        return self.members[0].preprocessor.decode_labels(*args, **kwargs)

    def denormalize(self, *args: Any, **kwargs: Any) -> Any:
        return self.members[0].preprocessor.denormalize(*args, **kwargs)

    def transform(self, df: Any, with_target: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for i, member in enumerate(self.members):
            # the first member's encoding carries the target (the same for all members)
            encoded = member.preprocessor.transform(
                member.scrub(df), with_target=with_target and i == 0
            )
            for key, value in encoded.items():
                out["target" if key == "target" else f"{i}/{key}"] = value
        return out


class EnsembleNet:
    """Calls each member's network on its part of the batch and averages."""

    def __init__(self, members: list[Any], weights: list[float]) -> None:
        self.members, self.weights = members, weights
        self.task = members[0].task

    def __call__(self, batch: dict[str, Any]) -> Any:
        import torch

        from foundry.predictor import run_model

        parts = []
        n = len(next(iter(batch.values())))
        for i, member in enumerate(self.members):
            prefix = f"{i}/"
            own = {k[len(prefix) :]: v for k, v in batch.items() if k.startswith(prefix)}
            parts.append(member.calibrated(run_model(member.model, own, n)))
        mixed = mix(parts, self.weights, self.task)
        if self.task.is_classification:
            mixed = np.log(np.clip(mixed, 1e-12, None))
        return torch.from_numpy(mixed.astype(np.float32))


def mix(outputs: list[np.ndarray], weights: list[float], task: Any) -> np.ndarray:
    """The weighted mean of the members' probabilities `[N, n_classes]` (classification)
    or standardised values `[N, 1]`, from their raw outputs."""
    from foundry.evaluation.metrics import probabilities

    total = None
    for out, weight in zip(outputs, weights, strict=True):
        scores = probabilities(out, task) if task.is_classification else out[:, :1]
        total = weight * scores if total is None else total + weight * scores
    assert total is not None
    return total


def member_scores(member: Any, val: Any) -> tuple[np.ndarray, np.ndarray]:
    """(encoded targets [N], probabilities [N, n_classes] or values [N, 1]) on `val`."""
    y, out = member.labelled_outputs(val)
    return y, mix([out], [1.0], member.task)


def select_weights(y: np.ndarray, scores: list[np.ndarray], task: Any, rounds: int) -> list[float]:
    """Caruana et al.'s greedy ensemble selection (2004), with replacement: `rounds`
    times add the member whose addition gives the lowest validation loss (log loss;
    squared error for regression) of the running mean; a member's weight is the share
    of rounds it was picked."""
    counts = [0] * len(scores)
    total = np.zeros_like(scores[0])
    for k in range(1, rounds + 1):
        losses = [_loss(y, (total + s) / k, task) for s in scores]
        best = int(np.argmin(losses))  # ties: the earlier member, the cheaper one
        counts[best] += 1
        total = total + scores[best]
    return [c / rounds for c in counts]


def _loss(y: np.ndarray, scores: np.ndarray, task: Any) -> float:
    if task.is_classification:
        picked = scores[np.arange(len(y)), y.astype(np.int64)]
        return float(-np.mean(np.log(np.clip(picked, 1e-12, None))))
    return float(np.mean((scores[:, 0] - y) ** 2))
