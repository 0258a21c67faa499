"""Differentially private training (DP-SGD, Opacus) for `fit`.

    make_private_model(model) -> (model, changes)   swap the layers DP-SGD cannot train
                                                    (BatchNorm → GroupNorm, attention...)
    PrivateTraining(model, optimizer, config, ...)  one run's DP-SGD: Poisson sampling,
                                                    per-example clipping, noise, accountant

DP-SGD (Abadi et al. 2016) bounds what the weights can reveal about any one training
row: every step draws each row with probability q (Poisson sampling), clips each row's
gradient to norm `max_grad_norm`, adds Gaussian noise of std `noise_multiplier x
max_grad_norm` to their sum, and an accountant adds up the privacy spent, ε at δ. The
noise multiplier is chosen before training so that all the planned steps spend at most
`train.privacy.target_epsilon`.

The model must compute each example's output from that example alone, hence the layer
swaps: BatchNorm mixes the rows of a batch, and Opacus needs to see a layer's input and
output to compute per-example gradients (its hooks), which `nn.MultiheadAttention` and
the text transformer's learned positions hide.
"""

from __future__ import annotations

import inspect
import itertools
import math
import warnings
from collections.abc import Iterator
from typing import Any

from foundry.extras import require

# Every caller imports this module only when train.privacy is set (or a DP package loads),
# so checking here, before the opacus imports, covers them all with one line.
# ruff: noqa: E402
require("trust", "opacus", "differentially private training (train.privacy)")

import opacus
import torch
from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample import GradSampleModule
from opacus.optimizers import DPOptimizer
from opacus.validators import ModuleValidator
from torch import Tensor, nn
from torch.nn import functional as F

from foundry.config.schema import TrainConfig
from foundry.errors import ConfigError, TrainError
from foundry.models.text import TransformerTextEncoder, masked_mean
from foundry.training import distributed

__all__ = ["PrivateTraining", "check_private_settings", "make_private_model"]


# ---------------------------------------------------------------------- layer swaps


class LearnedPositions(nn.Module):
    """`x + weight[:, :L]` for `x` [B, L, D]: the text transformer's learned positions as a
    layer of their own, so Opacus sees its input and output and can compute each
    example's gradient (with functorch: it has no grad sampler of its own)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach().clone())  # [1, max_length, D]

    def forward(self, x: Tensor) -> Tensor:
        return x + self.weight[:, : x.shape[1]]


class PrivateTransformerTextEncoder(nn.Module):
    """`TransformerTextEncoder` with its positions in a `LearnedPositions` layer: the same
    computation (tests/training/test_privacy.py checks it), keys `positions.weight` and
    `encoder.*`."""

    def __init__(self, original: TransformerTextEncoder) -> None:
        super().__init__()
        self.positions = LearnedPositions(original.positions)
        self.encoder = original.encoder
        self.out_dim = original.out_dim

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.positions(x)
        # as TransformerTextEncoder: an all-padding row attends to its first position
        empty = ~mask.any(dim=1, keepdim=True)  # [B, 1]
        attend = mask.clone()
        attend[:, :1] |= empty
        h = self.encoder(x, src_key_padding_mask=~attend)  # [B, L, D]
        return masked_mean(h, mask)


class PrivateMultiheadAttention(nn.Module):
    """`nn.MultiheadAttention` with separate q/k/v projections (`qlinear`, `klinear`,
    `vlinear`, `out_proj`: Linear layers, which Opacus has per-example gradients for).

    Not Opacus' DPMultiheadAttention: in 1.6 its `batch_first=True` output mixes heads
    and positions (it views [B*H, L, d] as [B, L, H*d]; meta-pytorch/opacus PR #825), and
    it takes boolean padding masks only, while `nn.TransformerEncoder` hands its layers
    float ones. No attention
    weights are returned (`need_weights` is ignored).
    """

    # Where nn.TransformerEncoder(Layer) looks for its fused fast path: None turns it off.
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = True

    def __init__(self, original: nn.MultiheadAttention) -> None:
        super().__init__()
        if not original._qkv_same_embed_dim or original.bias_k is not None:
            raise TrainError(
                "train.privacy: attention with other key/value sizes or extra key/value "
                "biases has no DP-SGD replacement here"
            )
        if original.add_zero_attn:
            raise TrainError("train.privacy: attention with add_zero_attn is not supported")
        d, bias = original.embed_dim, original.in_proj_bias is not None
        self.embed_dim, self.num_heads = d, original.num_heads
        self.batch_first, self.dropout = original.batch_first, original.dropout
        self.qlinear, self.klinear, self.vlinear = (nn.Linear(d, d, bias=bias) for _ in range(3))
        self.out_proj = nn.Linear(d, d, bias=original.out_proj.bias is not None)
        with torch.no_grad():
            for i, layer in enumerate((self.qlinear, self.klinear, self.vlinear)):
                layer.weight.copy_(original.in_proj_weight[i * d : (i + 1) * d])
                if bias:
                    layer.bias.copy_(original.in_proj_bias[i * d : (i + 1) * d])
            self.out_proj.load_state_dict(original.out_proj.state_dict())
        self.to(original.out_proj.weight.device)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, None]:
        if not self.batch_first:  # [L, B, D] → [B, L, D]: Opacus wants rows first
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, _ = query.shape
        heads, head_dim = self.num_heads, self.embed_dim // self.num_heads

        def split(x: Tensor) -> Tensor:  # [B, S, D] → [B, H, S, d]
            return x.view(batch, -1, heads, head_dim).transpose(1, 2)

        q, k, v = split(self.qlinear(query)), split(self.klinear(key)), split(self.vlinear(value))
        mask = _additive(attn_mask, q.dtype)  # [L, S] or [B*H, L, S]
        if mask is not None and mask.dim() == 3:
            mask = mask.view(batch, heads, length, -1)
        padding = _additive(key_padding_mask, q.dtype)  # [B, S]
        if padding is not None:
            padding = padding[:, None, None, :]
            mask = padding if mask is None else mask + padding
        out = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal and mask is None,
        )  # [B, H, L, d]
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, self.embed_dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _additive(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean mask (True = masked out) as 0 / -inf; a float mask as it is."""
    if mask is None or mask.is_floating_point():
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, -math.inf)


def _describe(name: str, old: nn.Module, new: nn.Module) -> str:
    if isinstance(new, nn.GroupNorm):
        was = f"{type(old).__name__}({new.num_channels})"
        groups = f"{new.num_groups} group{'s' if new.num_groups > 1 else ''}"
        return f"{name}: {was} -> GroupNorm({groups})"
    if isinstance(new, PrivateMultiheadAttention):
        return f"{name}: MultiheadAttention -> separate q/k/v Linear layers"
    if isinstance(new, PrivateTransformerTextEncoder):
        return f"{name}: learned positions -> a layer of their own ({name}.positions)"
    return f"{name}: {type(old).__name__} -> {type(new).__name__}"


def _needs_swap(module: nn.Module) -> list[str]:
    """Why Opacus cannot train `module` as it is (empty: it can)."""
    if isinstance(module, TransformerTextEncoder):
        return ["its learned positions have no per-example gradients"]
    validator = ModuleValidator.VALIDATORS.get(type(module))
    return [str(error) for error in validator(module)] if validator is not None else []


def _replacement(module: nn.Module) -> nn.Module | None:
    """What DP-SGD trains in place of `module`, or None: keep it (or nothing fits)."""
    if not _needs_swap(module):
        return None
    if isinstance(module, TransformerTextEncoder):
        return PrivateTransformerTextEncoder(module)
    if type(module) is nn.MultiheadAttention:
        return PrivateMultiheadAttention(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        # BatchNorm1d sits on [B, features] in an MLP: groups of a few features would
        # normalise each to ±1 or 0, so one group (LayerNorm with per-feature affine).
        # Images: GroupNorm's default of 32 groups (Wu & He 2018), fewer if C has no 32.
        channels = module.num_features
        groups = 1 if isinstance(module, nn.BatchNorm1d) else math.gcd(32, channels)
        norm = nn.GroupNorm(groups, channels, affine=module.affine)
        return norm.to(module.weight.device) if module.affine else norm
    fixer = ModuleValidator.FIXERS.get(type(module))  # e.g. LSTM → DPLSTM
    if fixer is None:
        return None
    new = fixer(module)
    weights = next(itertools.chain(module.parameters(), module.buffers()), None)
    return new if weights is None else new.to(weights.device)


def make_private_model(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Swap the layers of `model` that DP-SGD cannot train for ones it can; returns the
    model (changed in place) and one line per swap, e.g.
    `"features.1: BatchNorm2d(32) -> GroupNorm(32 groups)"`.

    - BatchNorm → GroupNorm (BatchNorm mixes the rows of a batch; GroupNorm normalises
      each row on its own): one group for BatchNorm1d (an MLP's features), gcd(32,
      channels) groups for images;
    - `nn.MultiheadAttention` → `PrivateMultiheadAttention`, the same attention with
      separate q/k/v Linear layers (keys `qlinear.*`, `klinear.*`, `vlinear.*`);
    - the text transformer's learned positions → a `LearnedPositions` layer
      (key `encoder.positions.weight`).

    Deterministic: the same architecture always gets the same structure, so weights saved
    by a private run load into `make_private_model(build_model(...))[0]`. Swapped layers
    keep the original's weights (attention, positions) or start fresh (GroupNorm: weight
    1, bias 0). Idempotent. Raises `TrainError` naming a layer nothing can replace.
    """
    changes: list[str] = []
    # New layers draw their initial weights from the global RNG: keep it as it was, so
    # whatever the caller seeds next does not depend on privacy being on.
    with torch.random.fork_rng(devices=[]):
        for name, module in list(model.named_modules()):
            new = _replacement(module) if name else None
            if new is None:
                continue
            parent_name, _, child = name.rpartition(".")
            try:
                parent = model.get_submodule(parent_name)  # may be a replacement itself
            except AttributeError:
                continue  # inside a layer that was replaced with all it holds
            if getattr(parent, child, None) is not module:
                continue
            setattr(parent, child, new)
            changes.append(_describe(name, module, new))
    problems = _unsupported(model)
    if problems:
        raise TrainError(
            f"train.privacy: DP-SGD cannot train layer {'; '.join(problems)}",
            hint="use a model of supported layers (Linear, Conv, Embedding, GroupNorm, "
            "LayerNorm, attention) or remove train.privacy",
        )
    return model, changes


def _unsupported(model: nn.Module) -> list[str]:
    """`"<layer name> (<type>): why"` for each layer Opacus cannot compute per-example
    gradients for, as the model is now."""
    problems = []
    for name, module in model.named_modules():
        label = f"{name or 'the model'} ({type(module).__name__})"
        reasons = _needs_swap(module)
        if reasons:
            fixable = isinstance(module, TransformerTextEncoder) or (
                type(module) in ModuleValidator.FIXERS
            )
            problems.append(f"{label}: " + ("not swapped yet" if fixable else reasons[0]))
            continue
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        if any(True for _ in module.buffers()):
            problems.append(f"{label}: a trainable layer with buffers (state shared by rows)")
        elif type(module) not in GradSampleModule.GRAD_SAMPLERS and _takes_several(module):
            # Opacus' fallback (functorch) replays a layer on its first input only
            problems.append(f"{label}: its forward takes several inputs")
    return problems


def _takes_several(module: nn.Module) -> bool:
    required = [
        p
        for p in inspect.signature(module.forward).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) > 1


# -------------------------------------------------------------------------- settings


def check_private_settings(config: TrainConfig, *, distillation: bool = False) -> None:
    """Raise `ConfigError` for `train` settings DP-SGD cannot honour."""
    if distributed.world_size() > 1:
        distributed.refuse_privacy()
    if distillation:
        raise ConfigError(
            "train.privacy: distillation (a custom training loss) cannot be trained "
            "privately: DP-SGD needs the task loss, a mean over rows",
            hint="remove train.privacy from the student's config",
        )
    if config.grad_clip is not None:
        raise ConfigError(
            "train.grad_clip cannot be combined with train.privacy: DP-SGD clips each "
            "example's gradient instead",
            hint="remove train.grad_clip and set train.privacy.max_grad_norm",
        )
    if config.precision == "fp16":
        raise ConfigError(
            "train.precision: fp16 cannot be combined with train.privacy (its loss scaling "
            "would scale the per-example gradients that DP-SGD clips)",
            hint="use precision: bf16 or fp32",
        )


# ------------------------------------------------------------------------ one DP run


class PrivateTraining:
    """DP-SGD for one `fit` run: which rows each step trains on, per-example clipping and
    noise (Opacus' DPOptimizer over `optimizer`), and the privacy accountant.

    Poisson sampling, as the accountants assume: an epoch is `steps_per_epoch =
    ceil(n_rows / (batch_size x gradient_accumulation))` steps, and each step trains on
    every row independently with probability `sample_rate = 1 / steps_per_epoch` (so a
    step has about batch_size x gradient_accumulation rows, and an epoch about n_rows).
    A step's rows are processed in physical batches of at most `batch_size` rows whose
    clipped gradients add up: one noise draw, one optimizer step, one accountant step.

    Use as a context manager around training: entering hooks Opacus into `model`'s layers
    (calling `model` then records per-example gradients) and builds `self.optimizer`;
    leaving removes every hook and attribute Opacus added.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        *,
        n_rows: int,
        noise: torch.Generator,
    ) -> None:
        assert config.privacy is not None
        privacy = config.privacy
        problems = _unsupported(model)
        if problems:
            raise TrainError(
                f"train.privacy: DP-SGD cannot train layer {'; '.join(problems)}",
                hint="build the model, then `model, changes = make_private_model(model)`",
            )
        self.model, self.base_optimizer, self.noise = model, optimizer, noise
        self.accountant_name = privacy.accountant
        self.max_grad_norm = privacy.max_grad_norm
        self.target_epsilon = privacy.target_epsilon
        self.delta = privacy.delta if privacy.delta is not None else 1 / (10 * n_rows)
        self.n_rows = n_rows
        rows_per_step = config.batch_size * config.gradient_accumulation
        self.steps_per_epoch = math.ceil(n_rows / rows_per_step)
        self.sample_rate = 1 / self.steps_per_epoch
        self.planned_steps = config.epochs * self.steps_per_epoch
        try:
            with warnings.catch_warnings():
                # the search tries huge noise levels, where RDP warns about its orders
                warnings.simplefilter("ignore")
                self.noise_multiplier = get_noise_multiplier(
                    target_epsilon=self.target_epsilon,
                    target_delta=self.delta,
                    sample_rate=self.sample_rate,
                    steps=self.planned_steps,
                    accountant=self.accountant_name,
                )
        except ValueError as e:  # "The privacy budget is too low."
            raise ConfigError(
                f"train.privacy.target_epsilon {self.target_epsilon} cannot be met over "
                f"{self.planned_steps} steps at delta {self.delta:.3g}: {e}",
                hint="raise target_epsilon, lower train.epochs or raise train.batch_size",
            ) from None
        self.accountant = create_accountant(self.accountant_name)
        self.optimizer: DPOptimizer | None = None
        self._hooks: GradSampleModule | None = None
        self._warnings: warnings.catch_warnings | None = None
        self._spent: tuple[int, float] | None = None  # (steps, ε) last computed

    def describe(self) -> str:
        """One line for the training log."""
        return (
            f"differential privacy: noise multiplier {self.noise_multiplier:.3f} spends "
            f"ε ≤ {self.target_epsilon:g} at δ = {self.delta:.3g} over {self.planned_steps} "
            f"steps (each row in a step with probability {self.sample_rate:.4g}); "
            f"per-example gradients clipped to norm {self.max_grad_norm:g}"
        )

    # ---- hooks in, hooks out

    def __enter__(self) -> PrivateTraining:
        # Hooks on the model's own layers: `model(inputs)` records per-example gradients,
        # and its state_dict keeps the plain keys (no GradSampleModule "_module." prefix).
        self._hooks = GradSampleModule(self.model, batch_first=True, loss_reduction="mean")
        self.optimizer = DPOptimizer(
            self.base_optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            # the mean over a step divides by the expected rows, not the drawn ones: the
            # drawn number depends on which rows are in the data
            expected_batch_size=self.n_rows * self.sample_rate,  # type: ignore[arg-type]
            loss_reduction="mean",
            generator=self.noise,
        )
        self.optimizer.attach_step_hook(self._account)
        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        # The first layer's input needs no gradient, so its hook fires on outputs only,
        # which is all Opacus reads.
        warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._warnings is not None:
            self._warnings.__exit__(None, None, None)
            self._warnings = None
        if self._hooks is not None:
            self._hooks.cleanup()  # hooks, grad_sample...
            for p in self.model.parameters():
                if hasattr(p, "summed_grad"):  # DPOptimizer's, which cleanup leaves
                    del p.summed_grad
            self._hooks = None

    def _account(self, _optimizer: DPOptimizer) -> None:
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)

    # ---- sampling

    def sample_steps(self, generator: torch.Generator) -> Iterator[Tensor]:
        """One epoch: `steps_per_epoch` index tensors (CPU, int64), each row in each with
        probability `sample_rate`. A step may be empty; it still adds noise."""
        for _ in range(self.steps_per_epoch):
            drawn = torch.rand(self.n_rows, generator=generator) < self.sample_rate
            yield drawn.nonzero().squeeze(1)

    # ---- privacy spent

    @property
    def steps(self) -> int:
        """Noisy optimizer steps taken so far (including those before a resume)."""
        return sum(int(n) for _, _, n in self.accountant.history)

    def epsilon(self) -> float:
        """ε spent so far, at `self.delta`."""
        steps = self.steps
        if self._spent is None or self._spent[0] != steps:
            # the prv accountant takes ~0.1-0.5 s: once per epoch, not again for the report
            spent = self.accountant.get_epsilon(delta=self.delta) if steps else 0.0
            self._spent = (steps, float(spent))
        return self._spent[1]

    def report(self, epochs: int) -> dict[str, Any]:
        """`FitResult.privacy`."""
        return {
            "epsilon": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "max_grad_norm": self.max_grad_norm,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "epochs": epochs,
            "accountant": self.accountant_name,
            "library": f"opacus {opacus.__version__}",
        }

    # ---- checkpoints (JSON)

    def state_dict(self) -> dict[str, Any]:
        return {
            "accountant": self.accountant_name,
            "history": [list(entry) for entry in self.accountant.history],
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "delta": self.delta,
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue the accounting of a checkpoint, which must come from a private run with
        the same settings: its noise was calibrated for them."""
        if state is None:
            raise TrainError(
                "train.privacy is set but the checkpoint comes from a run without it: the "
                "privacy spent so far is unknown",
                hint="start a new run (without resume)",
            )
        saved = (state["accountant"], state["noise_multiplier"], state["sample_rate"])
        now = (self.accountant_name, self.noise_multiplier, self.sample_rate)
        if saved != now or not math.isclose(state["delta"], self.delta):
            raise TrainError(
                "cannot resume: the checkpoint's DP-SGD settings (accountant, noise "
                f"multiplier, sample rate) {saved} differ from this run's {now}",
                hint="resume with the same train.privacy, train.epochs, train.batch_size "
                "and training data, or start a new run",
            )
        self.accountant.history = [tuple(entry) for entry in state["history"]]
        self._spent = None
