"""What every Hugging Face package holds, whatever its task: the `hf` manifest section
(what loading needs without the config), provenance with the transformers / peft
versions, the transformers folder (adapter or full model, plus tokenizer) and the card's
pretrained-model lines. See `foundry.lm.hf_model` for loading."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from foundry.config.schema import FoundryConfig, HFModelConfig
from foundry.families.interface import PackageContents
from foundry.families.manifest import provenance

__all__ = ["hf_card_section", "hf_contents", "hf_manifest_section", "manifest_base"]


def hf_manifest_section(
    spec: HFModelConfig, source: str, hf_config: Any, *, task: str
) -> dict[str, Any]:
    """`manifest["hf"]`: what loading needs without the config. `source` is the resolved
    hub id or absolute directory; `commit` the hub commit the files came from (None for a
    local directory), so a LoRA base is reloaded at exactly that commit."""
    return {
        "name_or_path": spec.name_or_path,
        "source": source,
        "revision": spec.revision,
        "commit": getattr(hf_config, "_commit_hash", None),
        "task": task,
        "head": spec.head,
        "pooling": spec.pooling,
        "max_length": spec.max_length,
        "lora": spec.lora.model_dump(mode="json") if spec.lora is not None else None,
        "weights": "adapter" if spec.lora is not None else "full",
        "directory": "adapter" if spec.lora is not None else "hf",
        "model_type": hf_config.model_type,
        "architectures": list(getattr(hf_config, "architectures", None) or []),
    }


def hf_contents(
    body: Any,
    tokenizer: Any,
    hf: dict[str, Any],
    manifest: dict[str, Any],
    card: str,
    *,
    head: dict[str, Any],
) -> PackageContents:
    """The package: the transformers side (adapter or full model, plus tokenizer) written
    into a temporary folder that the registry copies (`cleanup` removes it), and the
    head weights stored as `model.safetensors`."""
    from foundry.models.hf import quiet_transformers
    from foundry.models.hf_lora import save_adapter

    tmp = tempfile.TemporaryDirectory(prefix="foundry-hf-")
    folder = Path(tmp.name) / hf["directory"]
    with quiet_transformers():
        if hf["weights"] == "adapter":
            save_adapter(body, folder)
        else:
            body.save_pretrained(str(folder))  # safetensors: transformers 5 writes no other
        tokenizer.hf.save_pretrained(str(folder))
    return PackageContents(
        weights={k: v.detach().cpu() for k, v in head.items()},
        manifest=manifest,
        card=card,
        files={hf["directory"]: folder},
        cleanup=tmp.cleanup,
    )


def manifest_base(cfg: FoundryConfig, hf: dict[str, Any]) -> dict[str, Any]:
    """format_version, config, versions (with transformers and peft), the `hf` section."""
    import peft
    import transformers

    return {
        **provenance(cfg, transformers=transformers.__version__, peft=peft.__version__),
        "hf": hf,
    }


def hf_card_section(hf: dict[str, Any]) -> str:
    base = hf["source"] if hf["commit"] is None else f"{hf['source']}@{hf['commit'][:12]}"
    lines = ["", "## Pretrained model", f"- base: `{base}` ({', '.join(hf['architectures'])})"]
    if hf["lora"] is not None:
        lora = hf["lora"]
        lines.append(
            f"- LoRA adapter r={lora['r']}, alpha={lora['alpha']}; the package holds only "
            "the adapter: loading needs the base model above"
        )
    else:
        lines.append("- weights: complete (the package loads with no network)")
    if "parameters" in hf:
        p = hf["parameters"]
        lines.append(f"- trained parameters: {p['trainable']:,} of {p['total']:,}")
    return "\n".join(lines) + "\n"
