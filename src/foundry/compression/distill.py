"""Knowledge distillation: a smaller student trained to match a trained teacher.

    student = build_student(student_config, teacher_predictor)    # same inputs as the teacher
    result = distill(teacher, student, train, val, train_config, task, run_dir, n_outputs=...)
    result = distill_lm(teacher_gpt, student_gpt, train_tokens, val_tokens, train_config, run_dir)

The student reads the teacher's preprocessed inputs (the same `Encoded` dicts), so it
ships with the teacher's fitted preprocessing. Its loss (Hinton et al., 2015) mixes the
true labels with the teacher's softened output distribution:

    alpha * CE(student, y) + (1 - alpha) * T² * KL(softmax(teacher / T) || softmax(student / T))

T² keeps the soft term's gradients the same size as the hard term's whatever T is
(softening by T shrinks them by 1/T²). The teacher's outputs on the training rows are
computed once, before training (on each augmented batch instead when images are
augmented), and travel with the batches as the extra `"teacher"` tensor that
`foundry.training.fit`'s `loss_fn` hook reads. Validation is `fit`'s usual:
`val_loss` with `train.loss` and the metrics of `foundry.evaluation.compute_metrics`,
all on the true labels.

`distill_lm` does the same for a GPT student of a GPT teacher (same tokenizer) through
`foundry.lm.train.fit_lm`: every target position's next-token distribution is one
V-class classification, and the teacher runs on each batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from foundry.config.schema import TrainConfig
from foundry.data.schema import TaskInfo
from foundry.errors import ConfigError, ModelError
from foundry.evaluation.metrics import compute_metrics
from foundry.predictor import run_model
from foundry.training.loop import AugmentFn, BatchLossFn, FitResult, fit
from foundry.training.runtime import resolve_device

if TYPE_CHECKING:  # foundry.lm is imported only when a language model is distilled
    from foundry.lm.data import TokenData

__all__ = [
    "TEACHER_KEY",
    "build_student",
    "distill",
    "distill_lm",
    "distillation_loss",
    "next_token_distillation_loss",
]

Encoded = dict[str, Tensor]

TEACHER_KEY = "teacher"
"""Key of the teacher's raw outputs [N, n_teacher_outputs] in the student's training
`Encoded` dict (preprocessing never writes it: its keys are numeric, categorical,
text:<name>, image:<name> and target)."""


# ---------------------------------------------------------------------------- loss


def distillation_loss(
    student_out: Tensor,
    teacher_out: Tensor,
    target: Tensor,
    *,
    alpha: float,
    temperature: float,
    task: TaskInfo,
) -> Tensor:
    """Knowledge-distillation loss of one batch (a mean over its rows).

    `student_out` [B, n_student] and `teacher_out` [B, n_teacher] are raw model outputs;
    `target` [B] is the Encoded target (class index, or the standardised number).

    Classification: `alpha * CE(student, y) + (1 - alpha) * T² * KL(p_teacher || p_student)`
    with `p = softmax(logits / T)`. A single output (binary with `bce`) is the logit z of
    class 1, i.e. the two-class logits [0, z] (so its CE is exactly the BCE); a binary
    teacher and student may therefore have 1 and 2 outputs in any combination. A
    multi-class model needs one output per class.

    Regression: `alpha * MSE(student, y) + (1 - alpha) * MSE(student, teacher)`, both in
    standardised units; a number has no distribution to soften, so `temperature` is
    unused.
    """
    _check_weights(alpha, temperature)
    student, teacher = student_out.float(), teacher_out.float()
    if not task.is_classification:
        if student.shape[1] != 1 or teacher.shape[1] != 1:
            raise ModelError(
                f"regression distillation needs one output from each model, got student "
                f"{student.shape[1]} and teacher {teacher.shape[1]}"
            )
        student, teacher = student[:, 0], teacher[:, 0]
        hard, soft = F.mse_loss(student, target.float()), F.mse_loss(student, teacher)
        return alpha * hard + (1 - alpha) * soft

    student = _class_logits(student, task, "student")  # [B, n_classes]
    teacher = _class_logits(teacher, task, "teacher")
    return _hinton(student, teacher, target, alpha, temperature) / len(target)


def _hinton(student: Tensor, teacher: Tensor, target: Tensor, alpha: float, t: float) -> Tensor:
    """The distillation loss SUMMED over rows: student, teacher float logits [n, C],
    target [n] class indices."""
    hard = F.cross_entropy(student, target, reduction="sum")
    if alpha == 1:
        return hard
    # kl_div(log q, log p) = sum p (log p - log q) = KL(p || q): p the teacher, q the student
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="sum",
        log_target=True,
    )
    return alpha * hard + (1 - alpha) * t * t * soft


def _class_logits(outputs: Tensor, task: TaskInfo, who: str) -> Tensor:
    """Raw outputs [B, k] as logits over the task's classes [B, n_classes]."""
    k = outputs.shape[1]
    if k == 1 and task.task == "binary":
        # one bce logit z: P(class 1) = sigmoid(z) = softmax([0, z])[1]
        return torch.cat([torch.zeros_like(outputs), outputs], dim=1)
    if k != task.n_classes:
        raise ModelError(
            f"the {who} has {k} output(s) but {task.target!r} is {task.task} with "
            f"{task.n_classes} classes: distillation needs one output per class (or, for "
            "a binary target, a single bce logit)"
        )
    return outputs


def _check_weights(alpha: float, temperature: float) -> None:
    if not 0 <= alpha <= 1:
        raise ConfigError(f"compress.distill.alpha must be between 0 and 1; got {alpha}")
    if not temperature > 0:
        raise ConfigError(f"compress.distill.temperature must be > 0; got {temperature}")


# ---------------------------------------------------------------------------- train


def distill(
    teacher: nn.Module,
    student: nn.Module,
    train: Encoded,
    val: Encoded | None,
    config: TrainConfig,
    task: TaskInfo,
    run_dir: Path | str,
    *,
    n_outputs: int,
    alpha: float = 0.5,
    temperature: float = 2.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    augment: AugmentFn | None = None,
    resume: bool = False,
) -> FitResult:
    """Train `student` (with `n_outputs` outputs) to match `teacher` on `train`.

    Both models read the same `Encoded` inputs (the teacher's preprocessing). The student
    is trained by `foundry.training.fit` under `config` (epochs, optimizer, early
    stopping, checkpoints in `run_dir`, `resume`) with `distillation_loss` as its training
    loss; `val` is scored on the true labels as in ordinary training (`val_loss` with
    `config.loss`, accuracy / F1 / ... or RMSE / R²). The student ends with its best
    epoch's weights; the teacher is left unchanged (eval mode, on its own device).

    Without `augment`, the teacher runs once over the training rows before training. With
    it (image augmentation), each batch is augmented first and the teacher runs on the
    augmented batch, so both models always see the same pixels; that costs one teacher
    forward pass per batch.

    Raises `ConfigError` for an alpha outside [0, 1], a temperature <= 0 or an
    `n_outputs` that does not fit `config.loss`, and `ModelError` when the teacher's
    outputs do not fit the task.
    """
    _check_weights(alpha, temperature)
    if TEACHER_KEY in train:
        raise ValueError(f"train already has a {TEACHER_KEY!r} tensor; pass plain Encoded data")
    device = resolve_device(config.device)

    def loss(outputs: Tensor, teacher_out: Tensor, target: Tensor) -> Tensor:
        return distillation_loss(
            outputs, teacher_out, target, alpha=alpha, temperature=temperature, task=task
        )

    def train_student(data: Encoded, loss_fn: BatchLossFn) -> FitResult:
        return fit(
            student,
            data,
            val,
            config,
            task,
            run_dir,
            n_outputs=n_outputs,
            resume=resume,
            progress=progress,
            augment=augment,
            metric_fn=lambda y, out: compute_metrics(task, y, out),
            log=log,
            loss_fn=loss_fn,
        )

    if augment is None:
        with _teacher_on(teacher, device):
            teacher_out = run_model(teacher, train, len(train["target"]))  # [N, n_teacher]
        _check_teacher(teacher_out, task)

        def precomputed(outputs: Tensor, batch: Encoded) -> Tensor:
            return loss(outputs, batch[TEACHER_KEY], batch["target"])

        return train_student({**train, TEACHER_KEY: torch.from_numpy(teacher_out)}, precomputed)

    def per_batch(outputs: Tensor, batch: Encoded) -> Tensor:
        with torch.no_grad():  # on the batch's augmented inputs, as the student saw them
            teacher_out = teacher({k: v for k, v in batch.items() if k != "target"})
        return loss(outputs, teacher_out, batch["target"])

    with _teacher_on(teacher, device):  # for the whole run: it sees every batch
        # one row first, so that a teacher that does not fit the task fails before training
        _check_teacher(run_model(teacher, _rows(train, 1), min(len(train["target"]), 1)), task)
        return train_student(train, per_batch)


def _rows(data: Encoded, n: int) -> Encoded:
    return {k: v[:n] for k, v in data.items()}


def _check_teacher(outputs: np.ndarray, task: TaskInfo) -> None:
    """Refuses teacher outputs [N, k] that do not fit the task (no rows: `fit` refuses)."""
    if len(outputs) == 0:
        return
    if task.is_classification:
        _class_logits(torch.from_numpy(outputs), task, "teacher")
    elif outputs.shape[1] != 1:
        raise ModelError(
            f"the teacher has {outputs.shape[1]} outputs but {task.target!r} is a number: "
            "a regression teacher has one"
        )


@contextmanager
def _teacher_on(teacher: nn.Module, device: torch.device) -> Iterator[None]:
    """The teacher in eval mode on the training device, put back as it was afterwards."""
    param = next(teacher.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    was_training = teacher.training
    teacher.eval().to(device)
    try:
        yield
    finally:
        teacher.train(was_training).to(home)


# ---------------------------------------------------------------------------- student


def build_student(model_config: Any, predictor: Any, *, n_outputs: int | None = None) -> nn.Module:
    """A new, untrained student for `predictor`'s inputs (a `foundry.load` result).

    `model_config` is a model section (`MLPConfig`, `CNNConfig`, `TextModelConfig`, or
    the same as a dict, e.g. `{"type": "mlp", "layers": [64]}`); the student reads the
    teacher's preprocessed inputs (`predictor.preprocessor.schema`). `n_outputs` defaults
    to the teacher's. Raises `ConfigError` naming `compress.distill.student` when the
    architecture cannot read those inputs (an mlp for images, a cnn for a table, ...).
    """
    from pydantic import TypeAdapter, ValidationError

    from foundry.config.schema import ModelConfig
    from foundry.models import build_model

    key = "compress.distill.student"
    if isinstance(model_config, dict):
        try:
            model_config = TypeAdapter(ModelConfig).validate_python(model_config)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = list(first["loc"])
            if loc and loc[0] == model_config.get("type"):  # pydantic's union tag
                loc = loc[1:]
            where = ".".join(str(p) for p in loc)
            raise ConfigError(f"{key}{'.' + where if where else ''}: {first['msg']}") from None
    kind = getattr(model_config, "type", None)
    if kind in ("gpt", "hf"):
        raise ConfigError(
            f"{key}: a {kind} model cannot be a student of '{_ref(predictor)}'; use an mlp, "
            "cnn or text model that reads the teacher's inputs"
        )
    preprocessor = getattr(predictor, "preprocessor", None)
    if preprocessor is None:
        raise ConfigError(
            f"{key}: the teacher '{_ref(predictor)}' has no foundry preprocessing (a Hugging "
            "Face model?); distillation needs an mlp, cnn or text teacher"
        )
    if n_outputs is None:
        n_outputs = int(predictor.manifest["n_outputs"])
    try:
        return build_model(model_config, preprocessor.schema, n_outputs)
    except ModelError as exc:
        raise ConfigError(
            f"{key}: {exc.message} (the student reads the inputs of '{_ref(predictor)}')",
            hint=exc.hint,
        ) from None


def _ref(predictor: Any) -> str:
    return str(getattr(predictor, "ref", "the teacher"))


# ------------------------------------------------------------------ language models


def distill_lm(
    teacher: nn.Module,
    student: nn.Module,
    train: TokenData,
    val: TokenData | None,
    config: TrainConfig,
    run_dir: Path | str,
    *,
    alpha: float = 0.5,
    temperature: float = 2.0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    resume: bool = False,
) -> FitResult:
    """Train a GPT `student` to match a GPT `teacher` that uses the same tokenizer.

    The loss is `distillation_loss`'s classification one over the next-token
    distributions, on target positions only (labels != IGNORE), averaged per target
    token. The teacher runs on each batch (its logits over the whole corpus, [N, L, V],
    would not fit in memory). Training is `foundry.lm.train.fit_lm` under `config`;
    `val_loss` / `val_perplexity` are the student's on the true next tokens.

    Raises `ModelError` when the two vocabularies differ.
    """
    from foundry.lm.train import fit_lm

    _check_weights(alpha, temperature)
    vocab = getattr(teacher, "vocab_size", None), getattr(student, "vocab_size", None)
    if vocab[0] != vocab[1]:
        raise ModelError(
            f"teacher and student vocabularies differ ({vocab[0]} vs {vocab[1]} tokens): "
            "distillation needs a student built for the teacher's tokenizer"
        )

    def loss_fn(output: Any, input_ids: Tensor, labels: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_out = teacher(input_ids)
        return next_token_distillation_loss(
            output, teacher_out, labels, alpha=alpha, temperature=temperature, reduction="sum"
        )

    with _teacher_on(teacher, resolve_device(config.device)):
        return fit_lm(
            student,
            train,
            val,
            config,
            run_dir,
            resume=resume,
            progress=progress,
            log=log,
            loss_fn=loss_fn,
        )


def next_token_distillation_loss(
    student_out: Any,
    teacher_out: Any,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
    reduction: str = "mean",
) -> Tensor:
    """`distillation_loss` of a language model: each target position's next-token
    distribution is a `V`-class classification.

    `student_out`, `teacher_out`: logits [B, L, V] (or objects with `.logits`); `labels`
    [B, L] with IGNORE (-100) where there is no target: those positions are left out.
    `reduction`: "mean" over target tokens, or "sum" (what `fit_lm`'s `loss_fn` returns).
    """
    from foundry.lm.data import IGNORE

    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum'; got {reduction!r}")
    _check_weights(alpha, temperature)
    mask = labels != IGNORE  # [B, L]
    student = _logits(student_out)[mask].float()  # [n_targets, V]
    teacher = _logits(teacher_out)[mask].float()
    total = _hinton(student, teacher, labels[mask], alpha, temperature)
    return total if reduction == "sum" else total / mask.sum().clamp(min=1)


def _logits(output: Any) -> Tensor:
    return output if isinstance(output, Tensor) else output.logits
