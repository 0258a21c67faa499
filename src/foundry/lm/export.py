"""Our GPT as a Hugging Face transformers checkpoint, so other engines can serve it.

    files = hf_files(lm)                      # "config.json" → text, ... (a package's hf/)
    export_package("tiny-gpt:2", Path("out")) # the same folder for a registered package

    AutoModelForCausalLM.from_pretrained("out")   # same logits (float32, within 1e-5)
    AutoTokenizer.from_pretrained("out")          # same token ids

vLLM, TGI and llama.cpp's converters read such a folder. No architecture change was
needed: foundry's GPT block is a standard one, and which standard depends on its
positions:

    foundry GPT            positions: learned        positions: rope (the default)
    transformers class     GPT2LMHeadModel           GPTNeoXForCausalLM
    norm                   LayerNorm + bias, eps 1e-5, pre-norm, final norm (both)
    attention              fused qkv with bias       fused qkv with bias, per-head
                           (Conv1D: weights [in,out]) [q|k|v] rows (reordered here);
                                                     rotary on every dim (rotary_pct 1),
                                                     rotate-half, base 10,000
    residual               x + attn(ln1 x); x + mlp(ln2 x)  (NeoX: use_parallel_residual
                                                     false)
    MLP                    Linear(d, 4d) → exact (erf) GELU ("gelu") → Linear(4d, d)
    head                   no bias; tied to the token embedding unless tie_embeddings is
                           false (then lm_head / embed_out is written)

Llama is not a match: RMSNorm, a gated SiLU MLP and no biases would change the model.

The tokenizer is the same tokenizer.json (the `tokenizers` library's file) behind
`PreTrainedTokenizerFast`; tokenizer_config.json names the special tokens, keeps
`clean_up_tokenization_spaces` off (decode must give the exact text, as ours does) and
carries the chat template, so `apply_chat_template` renders what foundry renders.
generation_config.json stops on `<|endoftext|>` and `<|end|>`, as foundry does.
Weights are float32 safetensors (an int8 variant has no standard layout: export its
parent).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes
from torch import Tensor

from foundry.errors import ModelError
from foundry.lm.tokenizer import EOS, PAD, SPECIAL_TOKENS

__all__ = ["HF_FOLDER", "export_package", "hf_files", "hf_weights"]

HF_FOLDER = "hf"
"""The folder of a GPT package that holds the transformers checkpoint."""


def hf_files(lm: Any) -> dict[str, str | bytes]:
    """A `GPTLanguageModel`'s checkpoint as file name → content (config.json,
    model.safetensors, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
    generation_config.json)."""
    from foundry.lm.data import DEFAULT_CHAT_TEMPLATE

    model, tokenizer = lm.model, lm.tokenizer
    weights = hf_weights(model)
    return {
        "config.json": _json(hf_config(model, tokenizer)),
        # metadata format=pt: what transformers' own save_pretrained writes
        "model.safetensors": safetensors_bytes(weights, metadata={"format": "pt"}),
        "tokenizer.json": tokenizer.to_json(),
        "tokenizer_config.json": _json(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": EOS,
                "eos_token": EOS,
                "pad_token": PAD,
                "unk_token": None,  # byte-level: every text encodes
                "additional_special_tokens": [t for t in SPECIAL_TOKENS if t not in (EOS, PAD)],
                "clean_up_tokenization_spaces": False,
                "add_bos_token": False,
                "add_eos_token": False,
                "model_max_length": model.context_length,
                "chat_template": lm.chat_template or DEFAULT_CHAT_TEMPLATE,
            }
        ),
        "special_tokens_map.json": _json({"bos_token": EOS, "eos_token": EOS, "pad_token": PAD}),
        "generation_config.json": _json(generation_config(lm)),
    }


def hf_config(model: Any, tokenizer: Any) -> dict[str, Any]:
    """config.json: GPT-2 for learned positions, GPT-NeoX for rotary (see module doc)."""
    cfg = model.config
    common = {
        "vocab_size": model.vocab_size,
        "bos_token_id": tokenizer.eos_id,  # documents are separated by <|endoftext|>
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
        "tie_word_embeddings": model.tied,
        "torch_dtype": "float32",
    }
    if cfg.positions == "learned":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers,
            "n_head": cfg.n_heads,
            "n_inner": 4 * cfg.d_model,
            "n_positions": cfg.context_length,
            "n_ctx": cfg.context_length,
            "activation_function": "gelu",  # exact GELU, as nn.GELU() (not gelu_new)
            "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
            "resid_pdrop": cfg.dropout,
            "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.dropout,
            "scale_attn_weights": True,
            "initializer_range": 0.02,
            **common,
        }
    from foundry.models.gpt import ROPE_BASE

    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "model_type": "gpt_neox",
        "hidden_size": cfg.d_model,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "intermediate_size": 4 * cfg.d_model,
        "hidden_act": "gelu",
        "max_position_embeddings": cfg.context_length,
        # the names vLLM and llama.cpp's converter read; transformers 5 maps them onto
        # rope_parameters
        "rotary_pct": 1.0,
        "rotary_emb_base": ROPE_BASE,
        "use_parallel_residual": False,  # sequential: x + attn(ln1 x), then + mlp(ln2 x)
        "attention_bias": True,
        "layer_norm_eps": 1e-5,
        "attention_dropout": cfg.dropout,
        "hidden_dropout": cfg.dropout,
        "initializer_range": 0.02,
        "use_cache": True,
        **common,
    }


def generation_config(lm: Any) -> dict[str, Any]:
    """generation_config.json: foundry's stop tokens and the package's `lm.generation`
    defaults (temperature 0 is greedy: do_sample false)."""
    gen, tokenizer = lm.generation, lm.tokenizer
    config: dict[str, Any] = {
        "bos_token_id": tokenizer.eos_id,
        "eos_token_id": list(tokenizer.stop_ids),
        "pad_token_id": tokenizer.pad_id,
        "max_new_tokens": gen.max_tokens,
        "do_sample": gen.temperature > 0,
    }
    if gen.temperature > 0:
        config["temperature"] = gen.temperature
    if gen.top_k is not None:
        config["top_k"] = gen.top_k
    if gen.top_p is not None:
        config["top_p"] = gen.top_p
    if gen.repetition_penalty != 1.0:
        config["repetition_penalty"] = gen.repetition_penalty
    return config


def hf_weights(model: Any) -> dict[str, Tensor]:
    """The GPT's weights under the transformers class's names (contiguous float32
    copies; a tied head is left out, as transformers ties it on load)."""
    if model.config.positions == "learned":
        names, root = _gpt2_names, "transformer"
    else:
        names, root = _neox_names, "gpt_neox"
    state = model.state_dict()
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if key == "head.weight":
            if not model.tied:
                out["lm_head.weight" if root == "transformer" else "embed_out.weight"] = value
            continue
        if value.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ModelError(
                f"weight {key} is {value.dtype}: an int8 variant has no transformers "
                "layout; export the package it was compressed from"
            )
        name, tensor = names(key, value, model.config)
        out[f"{root}.{name}"] = tensor
    return {k: v.detach().cpu().to(torch.float32).contiguous().clone() for k, v in out.items()}


_GPT2_FIXED = {
    "embed.weight": "wte.weight",
    "pos_embed.weight": "wpe.weight",
    "ln_f.weight": "ln_f.weight",
    "ln_f.bias": "ln_f.bias",
}
_GPT2_BLOCK = {
    "ln1": "ln_1",
    "ln2": "ln_2",
    "attn.qkv": "attn.c_attn",
    "attn.proj": "attn.c_proj",
    "mlp.0": "mlp.c_fc",
    "mlp.2": "mlp.c_proj",
}
_NEOX_FIXED = {
    "embed.weight": "embed_in.weight",
    "ln_f.weight": "final_layer_norm.weight",
    "ln_f.bias": "final_layer_norm.bias",
}
_NEOX_BLOCK = {
    "ln1": "input_layernorm",
    "ln2": "post_attention_layernorm",
    "attn.qkv": "attention.query_key_value",
    "attn.proj": "attention.dense",
    "mlp.0": "mlp.dense_h_to_4h",
    "mlp.2": "mlp.dense_4h_to_h",
}


def _block_weight(key: str, block: dict[str, str], architecture: str) -> tuple[str, str, str]:
    """`blocks.{i}.{module}.{param}` → (i, module, param); ModelError when `block` (the
    architecture's names of a block's modules) has no counterpart for `module`."""
    _, layer, rest = key.split(".", 2)
    module, param = rest.rsplit(".", 1)
    if module not in block:
        raise ModelError(f"GPT weight {key} has no {architecture} counterpart")
    return layer, module, param


def _gpt2_names(key: str, value: Tensor, cfg: Any) -> tuple[str, Tensor]:
    """foundry name → GPT-2's. GPT-2's Conv1D stores Linear weights as [in, out]."""
    if key in _GPT2_FIXED:
        return _GPT2_FIXED[key], value
    layer, module, param = _block_weight(key, _GPT2_BLOCK, "GPT-2")
    conv = module not in ("ln1", "ln2") and param == "weight"
    return f"h.{layer}.{_GPT2_BLOCK[module]}.{param}", value.t() if conv else value


def _neox_names(key: str, value: Tensor, cfg: Any) -> tuple[str, Tensor]:
    """foundry name → GPT-NeoX's; the fused qkv rows go from [q | k | v] (each all
    heads) to per head [q_h | k_h | v_h], the layout NeoX splits."""
    if key in _NEOX_FIXED:
        return _NEOX_FIXED[key], value
    layer, module, param = _block_weight(key, _NEOX_BLOCK, "GPT-NeoX")
    if module == "attn.qkv":
        heads, head_dim = cfg.n_heads, cfg.d_model // cfg.n_heads
        # rows [3, H, Dh] → [H, 3, Dh]
        value = value.reshape(3, heads, head_dim, -1).transpose(0, 1).reshape(value.shape)
    return f"layers.{layer}.{_NEOX_BLOCK[module]}.{param}", value


def export_package(ref: str, out: Path, *, registry: Any = None) -> Path:
    """Write the transformers folder of registered GPT package `ref` to `out` (which
    must not exist or be empty): for packages trained before GPT packages carried hf/,
    or to hand the folder to another machine. Returns `out`."""
    from foundry.lm.gpt_model import GPTLanguageModel
    from foundry.lm.load import load
    from foundry.registry import Registry

    lm = load(ref, registry=registry or Registry())
    if not isinstance(lm, GPTLanguageModel):
        raise ModelError(
            f"model {ref} is not a foundry GPT (model.type gpt): a Hugging Face model's "
            "package already holds its transformers folder under hf/"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(f"{out} already exists and is not empty: choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name, content in hf_files(lm).items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return out


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2) + "\n"
