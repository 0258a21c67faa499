"""LoRA adapters on Hugging Face models, through `peft`.

LoRA freezes the pretrained weights W and learns a low-rank update: a layer computes
`W x + (alpha / r) * B A x` with A `[r, in]` and B `[out, r]` (B starts at zero, so
training starts from the pretrained model exactly). Only A and B are trained and saved:
a package holds `adapter_model.safetensors` + `adapter_config.json` (kilobytes to a few
megabytes), and the base model is named in the manifest. For serving, the base is
loaded again, the adapter applied and merged into W (`merge_and_unload`), so inference
costs what the base model costs.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from torch import nn

from foundry.config.schema import LoRAConfig
from foundry.errors import ConfigError, ModelError
from foundry.extras import require

__all__ = [
    "DEFAULT_TARGETS",
    "PeftTask",
    "apply_lora",
    "load_adapter",
    "parameter_counts",
    "save_adapter",
    "target_modules_for",
]

PeftTask = Literal["FEATURE_EXTRACTION", "SEQ_CLS", "CAUSAL_LM"]

DEFAULT_TARGETS: dict[str, list[str]] = {
    # the attention projections, as in the LoRA paper (query and value suffice there)
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
    "gpt2": ["c_attn"],  # GPT-2 fuses q, k, v into one Conv1D
    "llama": ["q_proj", "v_proj"],
    "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"],
}
"""Used when `lora.target_modules` is None and peft has no mapping for the architecture
(peft's own table covers most; this keeps the common ones explicit). Anything else falls
back to every linear layer except the output head (`all-linear`)."""


def target_modules_for(model: nn.Module, lora: LoRAConfig) -> list[str] | str:
    """The layers to adapt: `lora.target_modules`, else the table for the model type."""
    if lora.target_modules is not None:
        return list(lora.target_modules)
    require("llm", "peft", "LoRA adapters (lora:)")
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TABLE

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in PEFT_TABLE:
        return list(PEFT_TABLE[model_type])
    if model_type in DEFAULT_TARGETS:
        return DEFAULT_TARGETS[model_type]
    return "all-linear"


def apply_lora(model: nn.Module, lora: LoRAConfig, task: PeftTask) -> Any:
    """Wrap a transformers model in a peft model whose only trainable weights are the
    LoRA matrices (for `SEQ_CLS`, the classification head too: peft keeps a trainable
    copy of it and saves it with the adapter). Seed torch before calling: A is random."""
    require("llm", "peft", "LoRA adapters (lora:)")
    from peft import LoraConfig, get_peft_model

    targets = target_modules_for(model, lora)
    config = LoraConfig(
        task_type=task,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        # GPT-2's Conv1D stores its weight as [in, out], transposed from nn.Linear
        fan_in_fan_out=_targets_conv1d(model, targets),
    )
    try:
        with _peft_warnings_off():
            return get_peft_model(model, config)
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if _is_linear(m)})
        raise ConfigError(
            f"model.lora.target_modules: {targets} do not match layers of this model "
            f"({' '.join(str(exc).split())[:200]})",
            hint=f"linear layer names here: {', '.join(names[:20])}",
        ) from None


@contextmanager
def _peft_warnings_off() -> Iterator[None]:
    # peft 0.21 still reads a transformers property deprecated in v5: not ours to fix
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*is_gradient_checkpointing", FutureWarning)
        yield


def _targets_conv1d(model: nn.Module, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        return False
    return any(
        type(m).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in targets
        for name, m in model.named_modules()
    )


def _is_linear(module: nn.Module) -> bool:
    # GPT-2's projections are transformers' Conv1D (a linear layer with transposed weight)
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def save_adapter(peft_model: Any, directory: Path) -> None:
    """Write only the adapter: `adapter_model.safetensors` + `adapter_config.json`."""
    peft_model.save_pretrained(str(directory), safe_serialization=True, save_embedding_layers=False)


def load_adapter(base: nn.Module, directory: Path, *, merge: bool = True) -> nn.Module:
    """Apply a saved adapter to `base`; `merge=True` folds it into the base weights and
    returns a plain transformers model (no peft wrapper left at inference)."""
    require("llm", "peft", "LoRA adapters (lora:)")
    from peft import PeftModel

    if not (directory / "adapter_model.safetensors").is_file():
        raise ModelError(f"{directory} holds no adapter_model.safetensors")
    try:
        with _peft_warnings_off():
            model = PeftModel.from_pretrained(base, str(directory), is_trainable=False)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(
            f"{directory}: the LoRA adapter does not fit the base model: {exc}"
        ) from exc
    model.eval()
    return model.merge_and_unload() if merge else model
