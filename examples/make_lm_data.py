"""Write the data of the GPT examples into examples/data/, offline and deterministic.

    python examples/make_lm_data.py              # corpus and instructions (seconds)
    python examples/make_lm_data.py corpus       # just one
    python examples/make_lm_data.py tiny-llama   # a small pretrained Llama (~2 minutes)

`corpus` (lm_corpus.jsonl, one {"text": ...} per line): the docstrings of a fixed list of
Python standard-library modules and of their public classes, functions and methods —
English prose about programming that ships with every Python, ~600 KB. Each docstring is
one document (so a split by document never cuts one in half). The text depends on the
Python version only.

`instructions` (lm_instructions.jsonl, {"prompt", "completion"}): "What does json.dumps
do?" → the first sentence of its docstring, for the same functions; a small set to try
`loss_on: completion` and the chat template with.

`tiny-llama` (tiny-llama/, a transformers model directory): a stand-in for a pretrained
causal LM from the hub, which cannot be downloaded offline. A byte-level BPE tokenizer
trained on the corpus (`<s>`, `</s>`, `<pad>`, and ChatML's `<|im_start|>` / `<|im_end|>`
with a ChatML chat template, as Qwen's instruct models use), a Llama model (4 layers,
width 128, grouped-query attention, 1.05 M weights) pretrained on the corpus by the
plain loop in `pretrain` (~2 minutes on 2 CPU cores), saved with `save_pretrained`
(config.json, model.safetensors, tokenizer files). `model: {type: hf, name_or_path:
data/tiny-llama}` then fine-tunes it like any hub checkpoint (examples/tiny_llama_lora.yaml).
Deterministic on a given machine (seeded; the same thread count gives the same floats).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"

MODULES = [
    "abc", "argparse", "array", "ast", "asyncio", "base64", "bisect", "calendar", "cmd",
    "codecs", "collections", "colorsys", "concurrent.futures", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email.message",
    "enum", "fileinput", "fnmatch", "fractions", "ftplib", "functools", "getopt",
    "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html.parser", "http.client",
    "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale",
    "logging", "lzma", "mailbox", "mimetypes", "multiprocessing", "numbers", "operator",
    "optparse", "os", "pathlib", "pdb", "pickle", "pkgutil", "platform", "plistlib",
    "poplib", "pprint", "queue", "random", "re", "sched", "secrets", "selectors", "shelve",
    "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3",
    "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap",
    "threading", "timeit", "tokenize", "traceback", "turtle", "types", "typing",
    "unittest", "urllib.parse", "urllib.request", "uuid", "wave", "weakref", "xml.dom.minidom",
    "xml.etree.ElementTree", "zipfile", "zoneinfo",
]  # fmt: skip
"""Pure-Python modules with long docstrings; no GUI toolkit is imported (turtle only
defines classes until used)."""

MIN_CHARS = 40  # one-line stubs ("Return self.") teach nothing and repeat a lot


def docstrings() -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of each module and its public members, in a fixed order."""
    seen: set[str] = set()  # the same docstring reached through two names counts once
    for module_name in MODULES:
        # deprecated modules and attributes (typing.io...) still document themselves
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                module = importlib.import_module(module_name)
            except ImportError:  # not built into this Python (e.g. no _sqlite3, _lzma)
                continue
            docs = [(name, inspect.getdoc(obj)) for name, obj in _members(module_name, module)]
        for name, doc in docs:
            if doc and len(doc) >= MIN_CHARS and doc not in seen:
                seen.add(doc)
                yield name, doc.strip()


def _members(module_name: str, module: object) -> Iterator[tuple[str, object]]:
    yield module_name, module
    for attr in sorted(vars(module)):
        obj = getattr(module, attr)
        if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue  # private, or imported from elsewhere (documented there)
        if inspect.isclass(obj):
            yield f"{module_name}.{attr}", obj
            for method in sorted(vars(obj)):
                member = vars(obj)[method]
                # methods other packages patch onto a class (transformers adds some to
                # logging.Logger on import) would make the corpus depend on imports
                home = getattr(member, "__module__", module.__name__)
                if not method.startswith("_") and callable(member) and home == module.__name__:
                    yield f"{module_name}.{attr}.{method}", member
        elif inspect.isfunction(obj):
            yield f"{module_name}.{attr}", obj


def corpus() -> Path:
    path = DATA / "lm_corpus.jsonl"
    records = [{"text": doc} for _, doc in docstrings()]
    return _write_jsonl(path, records)


_SENTENCE = re.compile(r"^(.+?[.!?])(\s|$)", re.S)


def instructions() -> Path:
    records = []
    for name, doc in docstrings():
        if name in MODULES:
            continue  # a module's first line is a title, not an answer
        first = " ".join(doc.split("\n\n")[0].split())
        match = _SENTENCE.match(first)
        if match and 20 <= len(match.group(1)) <= 200:
            records.append({"prompt": f"What does {name} do?", "completion": match.group(1)})
    return _write_jsonl(DATA / "lm_instructions.jsonl", records)


def _write_jsonl(path: Path, records: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


# --------------------------------------------------------------------- tiny-llama

LLAMA_SPECIAL_TOKENS = ["<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, the layout of Qwen's instruct models: `<|im_start|>user\\nHi<|im_end|>\\n`
per message, `<|im_start|>assistant\\n` as the generation prompt. foundry stops
generation at `<|im_end|>`."""

LLAMA_ARCHITECTURE = {
    "hidden_size": 128,
    "intermediate_size": 384,  # 3x the width (Llama's SwiGLU uses ~8/3x; any size works)
    "num_hidden_layers": 4,
    "num_attention_heads": 4,  # head size 32
    "num_key_value_heads": 2,  # grouped-query attention, as Llama 2-70B / 3 use
    "max_position_embeddings": 256,  # the context: prompt + reply, in tokens
    "tie_word_embeddings": True,  # output head = token embedding, as small Llamas do
}
VOCAB_SIZE = 2048  # byte-level BPE: 256 bytes + specials + ~1,800 merges
PRETRAIN_STEPS = 900  # x 16 blocks x 128 tokens = 1.8 M tokens, ~9 passes over the corpus
PRETRAIN_BATCH, PRETRAIN_BLOCK = 16, 128  # blocks per step, tokens per block
PRETRAIN_LR = 2e-3  # peak; 20 steps of warm-up, then cosine down to a tenth


def tiny_llama(steps: int = PRETRAIN_STEPS) -> Path:
    """Build the tokenizer and model, pretrain `steps` optimizer steps, save the directory."""
    corpus_path = DATA / "lm_corpus.jsonl"
    if not corpus_path.exists():
        corpus()  # before importing transformers, which adds methods to logging.Logger

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from foundry.models.hf import quiet_transformers  # no progress bars, no notes

    lines = corpus_path.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"] for line in lines]

    bpe = _byte_bpe(texts)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=LLAMA_ARCHITECTURE["max_position_embeddings"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    config = LlamaConfig(
        **LLAMA_ARCHITECTURE,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    with quiet_transformers():
        model = LlamaForCausalLM(config)

    # the corpus as one stream of token ids, each document followed by </s>
    stream = [i for e in bpe.encode_batch(texts) for i in [*e.ids, tokenizer.eos_token_id]]
    print(f"  corpus: {len(texts):,} documents, {len(stream):,} tokens", flush=True)
    pretrain(model, torch.tensor(stream), steps)

    path, tmp = DATA / "tiny-llama", DATA / ".tiny-llama.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with quiet_transformers():
        model.save_pretrained(str(tmp))  # config.json, model.safetensors, generation_config
        tokenizer.save_pretrained(str(tmp))  # tokenizer.json, tokenizer_config.json, template
    shutil.rmtree(path, ignore_errors=True)  # no file of an older build left behind
    tmp.replace(path)
    return path


def _byte_bpe(texts: list[str]) -> Any:
    """A byte-level BPE (GPT-2's scheme: any text encodes, nothing is unknown)."""
    from foundry.lm.tokenizer import train_byte_level_bpe

    return train_byte_level_bpe(texts, VOCAB_SIZE, LLAMA_SPECIAL_TOKENS, min_frequency=0)


def pretrain(model: Any, stream: Any, steps: int) -> None:
    """Next-token training on random windows of `stream` (int64 [n_tokens]), nanoGPT-style:
    AdamW, warm-up then cosine decay, gradient clipping. Prints the loss now and then."""
    import math

    import torch

    generator = torch.Generator().manual_seed(0)  # which windows, in which order
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.1)
    warmup = min(20, steps)

    def lr_at(step: int) -> float:
        if step < warmup:
            return PRETRAIN_LR * (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return PRETRAIN_LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    for step in range(steps):
        starts = torch.randint(len(stream) - PRETRAIN_BLOCK, (PRETRAIN_BATCH,), generator=generator)
        # batch: [PRETRAIN_BATCH, PRETRAIN_BLOCK] token ids; as labels too, since a
        # transformers causal LM shifts them by one itself (position t predicts t + 1)
        batch = torch.stack([stream[s : s + PRETRAIN_BLOCK] for s in starts.tolist()])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  pretrain step {step + 1}/{steps}: loss {loss.item():.3f}", flush=True)
    model.eval()


MAKERS = {"corpus": corpus, "instructions": instructions, "tiny-llama": tiny_llama}
DEFAULT = ["corpus", "instructions"]  # seconds; tiny-llama trains a model, so only on request


def main(names: list[str]) -> None:
    for name in names or DEFAULT:
        if name not in MAKERS:
            raise SystemExit(f"unknown data set '{name}' (choose from {', '.join(MAKERS)})")
        path = MAKERS[name]()
        files = [f for f in path.rglob("*") if f.is_file()] if path.is_dir() else [path]
        print(f"{name}: {path} ({sum(f.stat().st_size for f in files) / 1e3:,.0f} KB)")


if __name__ == "__main__":
    main(sys.argv[1:])
