"""Causal LMs from Hugging Face checkpoints (tiny GPT-2 and Llama built from configs,
loaded by path): instruction tuning with the loss on completions only, LoRA or full,
registered, reloaded and generating through foundry's engine."""

from __future__ import annotations

from pathlib import Path

import hf_tiny
import pytest
import torch

import foundry
from foundry.config.schema import GenerationConfig
from foundry.errors import ConfigError
from foundry.lm.data import IGNORE, LMExamples, encode_examples
from foundry.lm.generate import GenerationEngine
from foundry.lm.hf_model import HFLanguageModel, load_hf_package
from foundry.lm.hf_step import HFCausalLMStep
from foundry.lm.load import load as load_lm
from foundry.models.hf import HFTokenizer, load_pretrained, load_tokenizer
from foundry.models.hf_lora import load_adapter
from foundry.registry import Registry

GREEDY = GenerationConfig(temperature=0, max_tokens=8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {"gpt2": hf_tiny.gpt2_dir(root), "llama": hf_tiny.llama_dir(root)}


def config(tmp_path: Path, model_dir: Path, **model) -> dict:
    data = hf_tiny.write_instructions(tmp_path / "instructions.jsonl")
    return {
        "name": "tiny-chat",
        "data": {"path": str(data), "split": {"train": 0.8, "val": 0.2, "test": 0.0}},
        "model": {"type": "hf", "name_or_path": str(model_dir), "max_length": 64, **model},
        "train": {"epochs": 4, "batch_size": 8, "optimizer": {"lr": 0.003}},
        "output_dir": str(tmp_path / "runs"),
    }


@pytest.mark.parametrize(
    ("name", "expected"),
    [("gpt2", "red red<|end|>\n<|endoftext|>"), ("llama", "red red</s>\n</s>")],
)
def test_only_completion_tokens_are_targets(models, name, expected):
    tok = HFTokenizer(load_tokenizer(str(models[name])))
    conversation = [
        {"role": "user", "content": "say red"},
        {"role": "assistant", "content": "red red"},
    ]
    rows = encode_examples(
        LMExamples("instructions", [conversation]),
        tok,
        block_size=64,
        chat_template=tok.chat_template,
        **tok.template_variables,
    )
    targets = rows.labels[0][rows.labels[0] != IGNORE].tolist()
    # the reply, its end-of-turn marker and EOS: nothing of the prompt
    assert tok.decode(targets) == expected
    prompt_text = tok.render_chat(conversation[:1])
    n_prompt = len(tok.encode(prompt_text))
    assert (rows.labels[0][: n_prompt - 1] == IGNORE).all()


def test_lora_on_gpt2_saves_the_adapter_and_generates_like_the_unmerged_model(tmp_path, models):
    run = foundry.train(config(tmp_path, models["gpt2"], lora={"r": 4}), quiet=True)
    assert run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    assert {"perplexity", "unigram_perplexity", "loss"} <= set(run.metrics)

    package = Registry().load(run.model_ref)
    hf = package.manifest["hf"]
    assert hf["task"] == "causal_lm" and hf["weights"] == "adapter"
    assert hf["context_length"] == 64 and package.manifest["task"] == "language_modeling"
    names = {p.name for p in (package.path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= names
    assert "model.safetensors" not in names and package.weights == {}

    lm = load_hf_package(package, run.model_ref)
    assert isinstance(lm, HFLanguageModel)
    prompt = lm.render_chat([{"role": "user", "content": "say red"}])
    assert prompt == "<|user|>\nsay red<|end|>\n<|assistant|>\n"
    [merged] = lm.generate([prompt], GREEDY)

    # the same adapter, not merged: the same tokens
    unmerged = load_adapter(
        load_pretrained(str(models["gpt2"]), "causal_lm"), package.path / "adapter", merge=False
    )
    tok = HFTokenizer(load_tokenizer(str(package.path / "adapter")))
    engine = GenerationEngine(HFCausalLMStep(unmerged), tok, context_length=64)
    [reference] = engine.generate([prompt], lm._params(GREEDY))
    assert merged == reference and merged.completion_tokens > 0

    streamed = list(lm.stream(prompt, GREEDY))
    assert "".join(d.text for d in streamed) == merged.text
    assert streamed[-1].finish_reason == merged.finish_reason


@pytest.mark.slow
def test_full_fine_tuning_of_llama_learns_the_reply_format(tmp_path, models):
    cfg = config(tmp_path, models["llama"])
    cfg["data"]["split"] = {"train": 1.0, "val": 0.0, "test": 0.0}
    cfg["train"].update(epochs=40, optimizer={"lr": 0.01}, early_stopping={"patience": None})
    run = foundry.train(cfg, quiet=True)
    package = Registry().load(run.model_ref)
    assert package.manifest["hf"]["weights"] == "full"
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {
        p.name for p in (package.path / "hf").iterdir()
    }
    lm = load_lm(run.model_ref)
    words = ["hello", "world", "red", "green", "blue", "one", "two", "three"]
    prompts = [lm.render_chat([{"role": "user", "content": f"say {w}"}]) for w in words]
    assert prompts[2] == "<s>[user] say red\n[assistant] "  # the tokenizer's template
    completions = lm.generate(prompts, GREEDY)
    # a random 2-layer model of width 32 learns the reply's shape ("<w> <w>", then the
    # EOS that ends it: a target) within 40 epochs, and some of the words
    for c in completions:
        first, second = c.text.split(" ")
        assert first == second and first in words and c.finish_reason == "stop"
    assert sum(c.text == f"{w} {w}" for c, w in zip(completions, words, strict=True)) >= 2


def test_llama_lora_keeps_the_chat_template_and_the_config_can_replace_it(tmp_path, models):
    template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    cfg = config(tmp_path, models["llama"], lora={"r": 2, "target_modules": ["q_proj", "k_proj"]})
    cfg["lm"] = {"chat_template": template}
    run = foundry.train(cfg, quiet=True)
    lm = load_lm(run.model_ref)
    assert lm.render_chat([{"role": "user", "content": "hi"}]) == "user: hi\nassistant: "
    assert Registry().load(run.model_ref).manifest["tokenizer"]["chat_template"] == template


def test_gpt2_on_a_corpus(tmp_path, models):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(hf_tiny.CORPUS))
    cfg = config(tmp_path, models["gpt2"])
    cfg["data"] = {"path": str(corpus)}
    cfg["lm"] = {"block_size": 16}
    run = foundry.train(cfg, quiet=True)
    assert (
        run.metrics["tokens"] > 0 and run.history[-1]["train_loss"] < run.history[0]["train_loss"]
    )
    [completion] = load_lm(run.model_ref).generate(["the film"], GREEDY)
    assert completion.prompt_tokens == 2


def test_block_size_beyond_the_context_is_refused(tmp_path, models):
    cfg = config(tmp_path, models["gpt2"])
    cfg["lm"] = {"block_size": 65}
    with pytest.raises(ConfigError, match="block_size.*65.*at most 64 tokens"):
        foundry.train(cfg, quiet=True)


def test_step_adapter_sees_the_merged_weights(tmp_path, models):
    """A merged LoRA model is a plain transformers model: the step adapter and
    `model.generate` agree on it."""
    run = foundry.train(config(tmp_path, models["llama"], lora={"r": 2}), quiet=True)
    lm = load_hf_package(Registry().load(run.model_ref), run.model_ref)
    ids = lm.tokenizer.encode("the film was")
    ours = lm.engine.generate_ids([ids], GenerationConfig(temperature=0, max_tokens=6))[0]
    theirs = lm.model.generate(
        torch.tensor([ids]),
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=lm.tokenizer.pad_id,
    )[0, len(ids) :].tolist()
    stop = next((i for i, t in enumerate(theirs) if t in lm.tokenizer.stop_ids), len(theirs))
    assert ours == theirs[:stop]


def test_a_relative_name_or_path_in_a_config_file_is_found_next_to_it(tmp_path, models):
    import shutil

    import yaml

    shutil.copytree(models["gpt2"], tmp_path / "checkpoints" / "gpt2")
    hf_tiny.write_instructions(tmp_path / "chat.jsonl")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "name": "relative",
                "data": {"path": "chat.jsonl", "split": {"train": 1.0, "val": 0.0, "test": 0.0}},
                "model": {"type": "hf", "name_or_path": "checkpoints/gpt2", "max_length": 64},
                "train": {"epochs": 1, "batch_size": 8},
                "evaluate": {"split": "train"},
            }
        )
    )
    run = foundry.train(config_file, quiet=True)
    hf = Registry().load(run.model_ref).manifest["hf"]
    assert hf["name_or_path"] == "checkpoints/gpt2"
    assert hf["source"] == str((tmp_path / "checkpoints" / "gpt2").resolve())
