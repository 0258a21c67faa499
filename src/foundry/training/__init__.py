"""Training: `fit` a model on Encoded tensors, with checkpoints that need no pickle.

fit(model, train, val, config, task, run_dir, n_outputs=...) -> FitResult
build_loss / n_outputs_for             loss by `train.loss` name
build_optimizer / build_scheduler      from `train.optimizer` / `train.scheduler`
EarlyStopping                          on one monitored metric

`train.privacy` (DP-SGD) lives in `foundry.training.privacy`, imported only by private
runs (Opacus adds ~1 s to an import): `make_private_model(model) -> (model, changes)`
swaps the layers DP-SGD cannot train; build a model, pass it through, then `fit`.

Several processes (`foundry train --nproc N`, torchrun): `foundry.training.distributed`
joins the process group; `fit` then trains with DDP (`train.batch_size` is the global
batch) and only rank 0 writes.
"""

from foundry.training.early_stopping import EarlyStopping
from foundry.training.loop import FitResult, fit
from foundry.training.losses import build_loss, n_outputs_for
from foundry.training.optim import build_optimizer, build_scheduler

__all__ = [
    "EarlyStopping",
    "FitResult",
    "build_loss",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "n_outputs_for",
]
