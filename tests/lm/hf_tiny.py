"""Tiny Hugging Face checkpoints built from configs (seeded random weights) and saved as a
local directory exactly as `save_pretrained` writes one: config.json, model.safetensors
and a tokenizer trained with the `tokenizers` library, wrapped in
`PreTrainedTokenizerFast`. Nothing is downloaded.

(Not a conftest.py: tests import these by name, and tests/conftest.py exists.)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from foundry.lm.tokenizer import train_byte_level_bpe
from foundry.models.hf import quiet_transformers

VOCABULARY_TEXT = (
    "the a film meal book show was is good bad great awful not very really fine dull "
    "i it we you they say hello world red green blue one two three four five yes no"
)
"""Every word the tests use, so each has its own tokens."""

CORPUS = [
    "the film was good",
    "the meal was awful",
    "i say hello world",
    "red green blue",
    "one two three four five",
    "we say yes they say no",
    "the show was not very dull",
] * 4

LLAMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '[' + message['role'] + '] ' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)
"""A small template in Hugging Face's convention (bos_token, eos_token variables)."""


def _byte_bpe(special: list[str], vocab_size: int = 400) -> Tokenizer:
    return train_byte_level_bpe([*CORPUS, VOCABULARY_TEXT], vocab_size, special, min_frequency=0)


def gpt2_dir(root: Path, *, seed: int = 0) -> Path:
    """GPT-2 (2 layers, width 32): a byte-level BPE tokenizer with <|endoftext|> as BOS,
    EOS and UNK and no padding token, like the real one; no chat template."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = root / "tiny-gpt2"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(["<|endoftext|>"]),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        model_max_length=64,
    )
    config = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=64,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(seed)
    with quiet_transformers():
        GPT2LMHeadModel(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def llama_dir(root: Path, *, seed: int = 0, chat_template: bool = True) -> Path:
    """Llama (2 layers, width 32, grouped-query attention) with <s> / </s> / <pad> and a
    chat template that uses bos_token and eos_token."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = root / "tiny-llama"
    tok = PreTrainedTokenizerFast(
        tokenizer_object=_byte_bpe(["<s>", "</s>", "<pad>"]),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=64,
    )
    if chat_template:
        tok.chat_template = LLAMA_CHAT_TEMPLATE
    config = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    with quiet_transformers():
        LlamaForCausalLM(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def bert_dir(root: Path, *, seed: int = 0) -> Path:
    """A BERT encoder (2 layers, width 32) with a lower-casing WordPiece tokenizer that
    adds [CLS] ... [SEP], saved as `BertModel` (no head: like sentence-transformers)."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    path = root / "tiny-bert"
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.BertNormalizer(lowercase=True)
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator(
        [*CORPUS, VOCABULARY_TEXT],
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=special, show_progress=False),
    )
    cls_id, sep_id = wp.token_to_id("[CLS]"), wp.token_to_id("[SEP]")
    wp.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=wp,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    with quiet_transformers():
        BertModel(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def write_sentiment_csv(path: Path, n: int = 80, seed: int = 0) -> Path:
    """`text,label` rows a tiny model can learn: good/great/fine vs bad/awful/dull."""
    import random

    rng = random.Random(seed)
    rows = ["text,label"]
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(["good", "great", "fine"] if positive else ["bad", "awful", "dull"])
        thing = rng.choice(["film", "meal", "book", "show"])
        rows.append(f"the {thing} was {word},{'pos' if positive else 'neg'}")
    path.write_text("\n".join(rows) + "\n")
    return path


def write_instructions(path: Path, n: int = 24) -> Path:
    """prompt/completion JSONL: 'say <word>' → '<word> <word>'."""
    words = ["hello", "world", "red", "green", "blue", "one", "two", "three"]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            w = words[i % len(words)]
            f.write(json.dumps({"prompt": f"say {w}", "completion": f"{w} {w}"}) + "\n")
    return path
