"""A language model answered by another OpenAI-compatible engine (`serve.models` entry
with `upstream:`), sold through this server's keys and metering. The engine is real: a
second `foundry serve` with a tiny GPT, behind its own key (the gate's `api_key_env`);
the official `openai` client talks to the gate. Relayed answers equal the engine's own,
streams are relayed chunk by chunk, the engine's usage is what /v1/usage charges, a cut
stream is charged for what was relayed, and an engine that is down is a 502 in the API's
error shape, not charged."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from tests.serve.serve_app_support import run_cli

from foundry.serve.loadtest import Server, free_port, serve_command

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow

CORPUS = "\n\n".join(
    f"The {animal} sat on the {thing} and looked at the {color} sky. "
    f"Then the {animal} ran to the {thing} again."
    for animal in ("cat", "dog", "fox", "owl")
    for thing in ("mat", "wall", "box")
    for color in ("blue", "red")
)
PLANS = {"lm": {"included_units": 1_000_000, "requests_per_minute": 10_000}}


def _key(home: Path) -> str:
    """A key on plan `lm` in the SQLite store at `home`, made in this process (a
    `foundry keys create` subprocess would spend seconds importing)."""
    from foundry.config.schema import PlanConfig
    from foundry.serve.gate import Gate

    plans = {name: PlanConfig(**plan) for name, plan in PLANS.items()}
    gate = Gate(plans, url=f"sqlite:///{(home / 'foundry.db').as_posix()}")
    try:
        return gate.create_key("team", "lm").key
    finally:
        gate.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("upstream")
    base = {k: v for k, v in os.environ.items() if k != "FOUNDRY_DATABASE_URL"}
    engine_env = {**base, "FOUNDRY_HOME": str(root / "engine")}
    (root / "corpus.txt").write_text(CORPUS)
    (root / "gpt.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "tiny-gpt",
                "data": {"path": "corpus.txt"},
                "model": {
                    "type": "gpt",
                    "n_layers": 1,
                    "d_model": 32,
                    "n_heads": 2,
                    "context_length": 512,
                    "vocab_size": 300,
                },
                "train": {"epochs": 1, "batch_size": 16, "optimizer": {"lr": 3e-3}},
                "serve": {"plans": PLANS},
            }
        )
    )
    run_cli(root, engine_env, "train", "gpt.yaml")
    engine_key = _key(root / "engine")
    engine = Server(
        serve_command("tiny-gpt", free_port(), config=root / "gpt.yaml"),
        env=engine_env,
        log=root / "engine.log",
        cwd=root,
    )
    engine_url = engine.url  # known before it starts: the port is chosen now

    gate_env = {**base, "FOUNDRY_HOME": str(root / "gate"), "ENGINE_KEY": engine_key}
    (root / "gate.yaml").write_text(
        yaml.safe_dump(
            {
                "serve": {
                    "plans": PLANS,
                    "models": [
                        {
                            "name": "chat",
                            "upstream": f"{engine_url}/v1",
                            "model": "tiny-gpt",
                            "api_key_env": "ENGINE_KEY",
                            "max_tokens": 16,
                        },
                        {
                            "name": "down",
                            "upstream": f"http://127.0.0.1:{free_port()}/v1",
                            "connect_timeout_s": 2,
                        },
                    ],
                }
            }
        )
    )
    key = _key(root / "gate")
    # no model of its own: everything it serves is upstream
    gate_command = [sys.executable, "-m", "foundry", "serve", "--config", "gate.yaml"]
    gate = Server(
        [*gate_command, "--port", str(free_port())],
        env=gate_env,
        log=root / "gate.log",
        cwd=root,
    )
    with engine, gate:  # stopped in reverse: the gate first, it closes its connections
        yield {"gate": gate.url, "engine": engine_url, "key": key, "engine_key": engine_key}


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)


def _used(url: str, key: str) -> int:
    r = httpx.get(f"{url}/v1/usage", headers={"authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["units_used"] + r.json()["reserved_units"]


def test_completions_and_chat_are_relayed_and_metered_by_the_engines_usage(stack):
    gate = _client(stack["gate"], stack["key"])
    engine = _client(stack["engine"], stack["engine_key"])
    assert "chat" in [m.id for m in gate.models.list().data]
    before = _used(stack["gate"], stack["key"])

    ask = {"prompt": "The cat sat on the", "max_tokens": 10, "temperature": 0}
    got = gate.completions.create(model="chat", **ask)
    direct = engine.completions.create(model="tiny-gpt", **ask)
    assert got.model == "chat" and got.choices[0].text == direct.choices[0].text
    assert got.usage == direct.usage and got.usage.completion_tokens >= 1

    messages = [{"role": "user", "content": "Where did the dog run?"}]
    chat = gate.chat.completions.create(model="chat", messages=messages, temperature=0)
    same = engine.chat.completions.create(
        model="tiny-gpt", messages=messages, temperature=0, max_tokens=16
    )  # the entry's max_tokens
    assert chat.choices[0].message.content == same.choices[0].message.content
    assert chat.usage == same.usage
    # Idempotency-Key: a sampled answer replayed, charged once
    ask = {"model": "chat", "prompt": "The hen", "max_tokens": 6, "temperature": 1}
    first = gate.completions.create(**ask, extra_headers={"Idempotency-Key": "up-1"})
    again = gate.completions.with_raw_response.create(
        **ask, extra_headers={"Idempotency-Key": "up-1"}
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().model_dump() == first.model_dump()
    # charged the engine's counts, not the reservation (prompt bytes + max_tokens)
    assert _used(stack["gate"], stack["key"]) - before == (
        got.usage.total_tokens + chat.usage.total_tokens + first.usage.total_tokens
    )


def test_streams_are_relayed_chunk_by_chunk_with_the_engines_usage(stack):
    gate = _client(stack["gate"], stack["key"])
    before = _used(stack["gate"], stack["key"])
    ask = {"model": "chat", "prompt": "The fox", "max_tokens": 12, "temperature": 0}
    whole = gate.completions.create(**ask)
    chunks = list(
        gate.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    )
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # not one lump
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage

    messages = [{"role": "user", "content": "Where did the owl go?"}]
    whole_chat = gate.chat.completions.create(
        model="chat", messages=messages, max_tokens=8, temperature=0
    )
    streamed = list(
        gate.chat.completions.create(
            model="chat", messages=messages, max_tokens=8, temperature=0, stream=True
        )
    )
    assert all(c.choices for c in streamed)  # no usage chunk unless asked for...
    assert (
        "".join(c.choices[0].delta.content or "" for c in streamed)
        == whole_chat.choices[0].message.content
    )
    # ...but the engine's usage was asked for, and charged
    assert (
        _used(stack["gate"], stack["key"]) - before
        == 2 * whole.usage.total_tokens + 2 * whole_chat.usage.total_tokens
    )


def test_a_cut_stream_is_charged_for_what_was_relayed_and_stops_the_engine(stack):
    prompt, max_tokens = "The owl", 480
    before = _used(stack["gate"], stack["key"])
    engine_before = _used(stack["engine"], stack["engine_key"])
    body = {
        "model": "chat",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 1,
        "seed": 3,
        "stream": True,
    }
    read = 0
    with httpx.stream(
        "POST",
        f"{stack['gate']}/v1/completions",
        json=body,
        timeout=60,
        headers={"authorization": f"Bearer {stack['key']}"},
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            read += line.startswith("data: {")
            if read == 3:
                break  # three chunks read, then the client goes away
    prompt_estimate = math.ceil(len(prompt) / 4)  # no usage from a cut stream: counted
    deadline = time.monotonic() + 30
    while True:  # reserved while relaying; settled once the gate sees the disconnect
        charged = _used(stack["gate"], stack["key"]) - before
        if charged < len(prompt.encode()) + max_tokens:
            break
        assert time.monotonic() < deadline, f"still {charged} reserved"
        time.sleep(0.1)
    assert prompt_estimate + read <= charged < prompt_estimate + max_tokens
    # the gate closed its connection, so the engine stopped generating too
    deadline = time.monotonic() + 30
    while (spent := _used(stack["engine"], stack["engine_key"]) - engine_before) >= max_tokens:
        assert time.monotonic() < deadline, f"engine still holds {spent}"
        time.sleep(0.1)


def test_engine_errors_come_in_the_api_error_shape_and_are_not_charged(stack):
    gate = _client(stack["gate"], stack["key"])
    before = _used(stack["gate"], stack["key"])
    with pytest.raises(openai.APIStatusError) as down:
        gate.completions.create(model="down", prompt="The cat", max_tokens=4)
    assert down.value.status_code == 502
    assert down.value.body["code"] == "upstream_unavailable"
    assert "'down'" in down.value.body["message"]
    with pytest.raises(openai.APIStatusError) as down_stream:
        gate.chat.completions.create(
            model="down", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert down_stream.value.status_code == 502
    # the engine's 4xx is passed on, naming the upstream
    with pytest.raises(openai.BadRequestError) as long:
        gate.completions.create(model="chat", prompt="cat " * 2000, max_tokens=4)
    assert long.value.body["code"] == "context_length_exceeded"
    assert "upstream of model 'chat'" in long.value.body["message"]
    assert _used(stack["gate"], stack["key"]) == before
