"""The chat examples, run for real on small slices of their data:

- examples/tiny_llama_lora.yaml: `make_lm_data.py tiny-llama` builds a small pretrained
  Llama directory (deterministic, loads like a hub checkpoint), and the config
  LoRA-instruction-tunes it into an adapter package that generates;
- examples/gpt_chat.yaml + examples/chat_client.py: a GPT trained on the instructions,
  served by `foundry serve` in a subprocess, chatted with through the `openai` client
  (streamed text, then usage with total = prompt + completion).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest

import foundry
from foundry.config import load_config
from foundry.config.schema import GenerationConfig
from foundry.lm.load import load as load_lm
from foundry.models.hf import HFTokenizer, load_pretrained, load_tokenizer
from foundry.registry import Registry
from foundry.serve.loadtest import free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUESTION = "What does json.dumps do?"


def _example_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def maker(tmp_path, monkeypatch) -> ModuleType:
    """examples/make_lm_data.py, writing into tmp_path/data instead of examples/data."""
    module = _example_module("make_lm_data")
    monkeypatch.setattr(module, "DATA", tmp_path / "data")
    return module


def _first_pairs(maker: ModuleType, n: int) -> Path:
    """The first n lines of the instructions data set, as a file of their own."""
    lines = maker.instructions().read_text(encoding="utf-8").splitlines()[:n]
    path = maker.DATA / f"pairs-{n}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


# ------------------------------------------------------------------- tiny Llama + LoRA


def test_tiny_llama_maker_is_deterministic_and_loads_like_a_checkpoint(maker):
    maker.corpus()
    path = maker.tiny_llama(steps=2)  # the real build, but 2 of its 300 pretraining steps
    first = _digests(path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(first)
    assert _digests(maker.tiny_llama(steps=2)) == first
    assert not (maker.DATA / ".tiny-llama.tmp").exists()

    model = load_pretrained(str(path), "causal_lm")
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size == 128 and model.config.num_hidden_layers == 4
    assert model.config.num_key_value_heads == 2  # grouped-query attention

    tok = HFTokenizer(load_tokenizer(str(path)))
    assert (tok.hf.bos_token, tok.hf.eos_token, tok.hf.pad_token) == ("<s>", "</s>", "<pad>")
    assert tok.vocab_size == model.config.vocab_size == maker.VOCAB_SIZE
    prompt = tok.render_chat([{"role": "user", "content": QUESTION}])
    assert prompt == f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    im_end = tok.encode("<|im_end|>")
    assert len(im_end) == 1 and im_end[0] in tok.stop_ids  # one token; generation stops on it
    text = "def f(x):\n    return json.dumps(x)  # é ✓"
    assert tok.decode(tok.encode(text)) == text  # byte-level: nothing is unknown


def test_tiny_llama_lora_example_trains_an_adapter_that_generates(maker, tmp_path):
    cfg = load_config(EXAMPLES / "tiny_llama_lora.yaml").config
    assert cfg.model.type == "hf" and cfg.model.lora is not None
    assert cfg.lm.loss_on == "completion" and cfg.train.gradient_accumulation > 1

    maker.corpus()
    base = maker.tiny_llama(steps=5)
    run = foundry.train(
        EXAMPLES / "tiny_llama_lora.yaml",
        [
            f"model.name_or_path={base}",
            f"data.path={_first_pairs(maker, 64)}",
            "train.epochs=1",
            f"output_dir={tmp_path / 'runs'}",
        ],
        progress=False,
        quiet=True,
    )
    package = Registry().load(run.model_ref)
    hf = package.manifest["hf"]
    assert hf["weights"] == "adapter" and hf["task"] == "causal_lm"
    assert hf["source"] == str(base.resolve())  # serving loads the base from there again
    assert (package.path / "adapter" / "adapter_model.safetensors").is_file()
    assert math.isfinite(run.metrics["perplexity"])  # 5 pretraining steps: no more to ask

    lm = load_lm(run.model_ref)
    prompt = lm.render_chat([{"role": "user", "content": QUESTION}])
    [completion] = lm.generate([prompt], GenerationConfig(max_tokens=8, temperature=0))
    assert completion.completion_tokens >= 1
    assert completion.finish_reason in ("stop", "length")


# ------------------------------------------------------------- GPT chat + openai client


def test_chat_client_needs_a_key(monkeypatch, capsys):
    monkeypatch.delenv("FOUNDRY_API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_:
        _example_module("chat_client").main(["hello"])
    assert exit_.value.code == 2
    assert "FOUNDRY_API_KEY" in capsys.readouterr().err


def _foundry(cwd: Path, *args: str) -> str:
    """Run the foundry CLI (FOUNDRY_HOME comes from the environment conftest sets)."""
    out = subprocess.run(
        [sys.executable, "-m", "foundry", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@contextlib.contextmanager
def _served(cwd: Path, model: str) -> Iterator[str]:
    """`foundry serve MODEL` in a subprocess; yields its base URL once /readyz answers."""
    port = free_port()
    log_path = cwd / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "foundry", "serve", model, "--port", str(port)],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one below
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log_path.read_text()
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                assert time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.2)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=30)


USAGE = re.compile(
    r"\[finish_reason=(\w+) prompt_tokens=(\d+) completion_tokens=(\d+) total_tokens=(\d+)\]"
)


@pytest.mark.slow
def test_gpt_chat_example_is_served_and_the_openai_client_streams_with_usage(
    maker, tmp_path, monkeypatch, capsys
):
    run = foundry.train(
        EXAMPLES / "gpt_chat.yaml",
        [
            f"data.path={_first_pairs(maker, 400)}",
            "train.epochs=1",
            f"output_dir={tmp_path / 'runs'}",
        ],
        progress=False,
        quiet=True,
    )
    assert run.model_ref == "gpt-chat:1"
    key = _foundry(tmp_path, "keys", "create", "--name", "example", "--plan", "trial")
    monkeypatch.setenv("FOUNDRY_API_KEY", key)  # the client's default for --api-key

    client = _example_module("chat_client")
    with _served(tmp_path, "gpt-chat") as url:
        argv = ["--base-url", f"{url}/v1", "--max-tokens", "12", "--temperature", "0"]
        assert client.main([*argv, QUESTION]) == 0
        printed = capsys.readouterr().out
        used = httpx.get(
            f"{url}/v1/usage", headers={"authorization": f"Bearer {key}"}, timeout=30
        ).json()["units_used"]

    text, usage_line = printed.rstrip("\n").rsplit("\n", 1)
    finish, prompt_tokens, completion_tokens, total = USAGE.fullmatch(usage_line).groups()
    assert int(total) == int(prompt_tokens) + int(completion_tokens) == used
    # the same as generating in this process: the stream added up to the whole reply
    lm = load_lm("gpt-chat")
    prompt = lm.render_chat([{"role": "user", "content": QUESTION}])
    [expected] = lm.generate([prompt], GenerationConfig(max_tokens=12, temperature=0))
    assert text == expected.text and finish == expected.finish_reason
    assert int(prompt_tokens) == expected.prompt_tokens == lm.count_tokens(prompt)
    assert int(completion_tokens) == expected.completion_tokens
