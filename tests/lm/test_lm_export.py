"""A GPT trained by foundry is also a transformers checkpoint (`foundry.lm.export`): the
package's hf/ folder (and `foundry export`'s) loads with AutoModelForCausalLM and
AutoTokenizer, offline, and gives the same logits, token ids, chat text and greedy
tokens as foundry's own model."""

from __future__ import annotations

import json

import pytest
import torch
from lm_helpers import tiny_gpt

import foundry
from foundry.config.schema import GenerationConfig
from foundry.errors import ModelError
from foundry.lm.export import export_package, hf_files
from foundry.lm.gpt_model import GPTLanguageModel, load_gpt_package
from foundry.lm.tokenizer import BPETokenizer
from foundry.registry import Registry

transformers = pytest.importorskip("transformers")

CORPUS = [
    f"The {a} {v} the {o}. Then the {a} slept."
    for a in ("cat", "dog", "fox", "owl")
    for v in ("sat on", "ran to", "looked at")
    for o in ("mat", "wall", "hill")
]
STRINGS = [
    "The cat sat on the mat.",
    "  leading spaces and\ttabs\nnew lines",
    "<|user|>\nHi<|end|>\n<|assistant|>\n",  # special tokens are single ids
    "Ünïcödé — 猫 🐈 mixed with ASCII",
    "",
]


def _hf(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, local_files_only=True, dtype=torch.float32
    ).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return model, tokenizer


def _write(files, folder):
    folder.mkdir()
    for name, content in files.items():
        if isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


def _same_logits(lm, hf_model, tokenizer):
    ids = torch.tensor([tokenizer.encode(" ".join(CORPUS[:3]))[:40]])
    with torch.no_grad():
        ours = lm.model(ids)
        theirs = hf_model(ids).logits
    assert ours.shape == theirs.shape
    return (ours - theirs).abs().max().item()


@pytest.mark.parametrize(("positions", "tied"), [("rope", True), ("learned", False)])
def test_untrained_gpt_maps_weight_for_weight(tmp_path, positions, tied):
    """Random weights (nothing a trained model's smoothness could hide): GPT-NeoX for
    rotary positions, GPT-2 for learned ones, tied and untied heads."""
    tokenizer = BPETokenizer.train(CORPUS, 300, min_frequency=1)
    model = tiny_gpt(positions, vocab_size=tokenizer.vocab_size, seed=3, tie_embeddings=tied)
    with torch.no_grad():  # non-zero biases and norms, so a misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln" in name:
                p.add_(torch.randn_like(p) * 0.1)
    lm = GPTLanguageModel(model, tokenizer, ref="t:1")
    hf_model, hf_tok = _hf(_write(hf_files(lm), tmp_path / "hf"))
    expected = "GPTNeoXForCausalLM" if positions == "rope" else "GPT2LMHeadModel"
    assert type(hf_model).__name__ == expected
    assert (
        hf_model.get_output_embeddings().weight is hf_model.get_input_embeddings().weight
    ) == tied
    assert _same_logits(lm, hf_model, tokenizer) <= 1e-5


@pytest.mark.slow
def test_trained_package_hf_folder_and_foundry_export(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(CORPUS) + "\n")
    config = {
        "name": "tiny-gpt",
        "data": {"path": str(corpus)},
        "model": {
            "type": "gpt",
            "n_layers": 2,
            "d_model": 32,
            "n_heads": 4,
            "context_length": 64,
            "vocab_size": 300,
            "dropout": 0.0,
        },
        "train": {
            "epochs": 3,
            "batch_size": 8,
            "num_threads": 1,
            "optimizer": {"type": "adamw", "lr": 0.01},
        },
        "lm": {"generation": {"max_tokens": 20, "temperature": 0}},
        "output_dir": str(tmp_path / "runs"),
    }
    run = foundry.train(config, progress=False, quiet=True)
    record = Registry().resolve(run.model_ref)
    lm = load_gpt_package(Registry().load(run.model_ref), run.model_ref)

    # the package's hf/ folder, checksummed with the rest of the package
    folder = record.path / "hf"
    manifest = json.loads((record.path / "foundry.json").read_text())
    assert "hf/model.safetensors" in manifest["files"]
    hf_model, hf_tok = _hf(folder)
    assert _same_logits(lm, hf_model, lm.tokenizer) <= 1e-5

    for text in STRINGS:
        ids = lm.tokenizer.encode(text)
        assert hf_tok(text)["input_ids"] == ids, text  # no BOS/EOS added either
        assert hf_tok.decode(ids) == text
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "The cat"}]
    chat = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat == lm.render_chat(messages)

    # greedy decoding: the same tokens, stopping where foundry stops
    for prompt in ("The cat", "The owl looked", chat):
        [done] = lm.generate([prompt], GenerationConfig(max_tokens=20, temperature=0))
        ids = hf_tok(prompt, return_tensors="pt")["input_ids"]
        out = hf_model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=20
        )[0, ids.shape[1] :].tolist()
        stops = set(lm.tokenizer.stop_ids)
        if out and out[-1] in stops:  # foundry does not return the token that ended it
            out = out[:-1]
            assert done.finish_reason == "stop"
        assert hf_tok.decode(out) == done.text, prompt
        assert lm.tokenizer.encode(done.text) == lm.tokenizer.encode(hf_tok.decode(out))

    # `foundry export` writes the same folder for a registered package
    from typer.testing import CliRunner

    from foundry.cli import app

    target = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", run.model_ref, "--out", str(target)])
    assert result.exit_code == 0, result.output
    for name in (
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
    ):
        assert (target / name).read_bytes() == (folder / name).read_bytes(), name
    with pytest.raises(ModelError, match="not empty"):
        export_package(run.model_ref, target)
