"""The OpenAI-compatible routes over real HTTP, driven by the official `openai` client: a
GPT trained with `foundry train` on a small corpus, served by `foundry serve` in a
subprocess; generation equals `foundry.lm.load(...).generate`, streams end with usage
and [DONE], tokens are metered (reserved, settled, cut-off streams charged), and errors
come in the API's one shape."""

from __future__ import annotations

import json
import os
import time

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
    for animal in ("cat", "dog", "fox", "owl", "hen")
    for thing in ("mat", "wall", "box", "hill")
    for color in ("blue", "grey", "red")
)
PLANS = {
    "lm": {"included_units": 100_000, "requests_per_minute": 10_000,
           "tokens_per_minute": 1_000_000},
    "tiny": {"included_units": 60, "hard_limit": True, "requests_per_minute": 10_000},
    "tpm": {"included_units": 100_000, "requests_per_minute": 10_000, "tokens_per_minute": 50},
}



@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    home = root / "home"
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    (root / "corpus.txt").write_text(CORPUS)
    config = {
        "name": "tiny-gpt",
        "data": {"path": "corpus.txt"},
        "model": {"type": "gpt", "n_layers": 1, "d_model": 32, "n_heads": 2,
                  "context_length": 512, "vocab_size": 320},
        "train": {"epochs": 2, "batch_size": 16, "optimizer": {"lr": 3e-3}},
        "lm": {"generation": {"max_tokens": 12, "temperature": 0}},
        "serve": {"plans": PLANS},
    }
    (root / "gpt.yaml").write_text(yaml.safe_dump(config))
    run_cli(root, env, "train", "gpt.yaml")
    keys = {plan: run_cli(root, env, "keys", "create", "--name", plan, "--plan", plan,
                          "--config", "gpt.yaml")
            for plan in PLANS}
    command = serve_command("tiny-gpt", free_port(), config=root / "gpt.yaml")
    with Server(command, env=env, log=root / "server.log", cwd=root) as running:
        yield {"root": root, "home": home, "env": env, "url": running.url, "keys": keys}


def _client(stack, plan: str = "lm") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=stack["keys"][plan],
                         max_retries=0, timeout=60)


def _local(stack):
    """The same package, loaded in this process."""
    os.environ["FOUNDRY_HOME"] = str(stack["home"])
    from foundry.config.schema import GenerationConfig
    from foundry.lm.load import load

    return load("tiny-gpt"), GenerationConfig


def _usage(stack, plan: str) -> dict:
    r = httpx.get(f"{stack['url']}/v1/usage",
                  headers={"authorization": f"Bearer {stack['keys'][plan]}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_completions_equal_local_generation_and_report_usage(stack):
    lm, Params = _local(stack)
    prompt = "The cat sat on the"
    [expected] = lm.generate([prompt], Params(max_tokens=10, temperature=0))
    before = _usage(stack, "lm")["units_used"]
    got = _client(stack).completions.create(model="tiny-gpt", prompt=prompt, max_tokens=10,
                                            temperature=0)
    assert got.choices[0].text == expected.text
    assert got.choices[0].finish_reason == expected.finish_reason
    assert got.usage.prompt_tokens == lm.count_tokens(prompt) == expected.prompt_tokens
    assert got.usage.completion_tokens == expected.completion_tokens
    assert got.usage.total_tokens == got.usage.prompt_tokens + got.usage.completion_tokens
    # Charged what was used, not the reservation (prompt + max_tokens).
    assert _usage(stack, "lm")["units_used"] - before == got.usage.total_tokens


def test_chat_stream_matches_the_whole_answer_and_ends_with_usage(stack):
    client = _client(stack)
    messages = [{"role": "user", "content": "Where did the dog run?"}]
    whole = client.chat.completions.create(model="tiny-gpt", messages=messages,
                                           max_tokens=12, temperature=0, seed=1)
    chunks = list(client.chat.completions.create(
        model="tiny-gpt", messages=messages, max_tokens=12, temperature=0, seed=1,
        stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == \
        whole.usage.total_tokens


def test_raw_stream_ends_with_done(stack):
    with httpx.stream("POST", f"{stack['url']}/v1/completions", timeout=60,
                      headers={"authorization": f"Bearer {stack['keys']['lm']}"},
                      json={"model": "tiny-gpt", "prompt": "The fox", "max_tokens": 5,
                            "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    for e in events[:-1]:
        assert json.loads(e[6:])["object"] == "text_completion"


def test_a_stream_cut_off_by_its_client_is_charged_for_what_was_generated(stack):
    lm, _ = _local(stack)
    reserved = lm.count_tokens("The owl") + 480
    before = _usage(stack, "lm")
    # Long enough that the client is gone before it ends: the generation must stop there.
    body = {"model": "tiny-gpt", "prompt": "The owl", "max_tokens": 480, "temperature": 1,
            "seed": 3, "stream": True}
    with httpx.stream("POST", f"{stack['url']}/v1/completions", json=body, timeout=60,
                      headers={"authorization": f"Bearer {stack['keys']['lm']}"}) as r:
        for line in r.iter_lines():
            if line.startswith("data: {"):
                break  # one chunk read, then the client goes away
    deadline = time.monotonic() + 30
    while True:  # reserved while generating; settled once the server sees the disconnect
        charged = _usage(stack, "lm")["units_used"] - before["units_used"]
        if 0 < charged < reserved:
            break
        assert time.monotonic() < deadline, f"still charged {charged} of {reserved} reserved"
        time.sleep(0.1)
    assert charged > lm.count_tokens("The owl")  # the tokens computed before it stopped


def test_models_list_and_errors(stack):
    client = _client(stack)
    assert "tiny-gpt" in [m.id for m in client.models.list().data]
    with pytest.raises(openai.NotFoundError) as missing:
        client.completions.create(model="nope", prompt="x")
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.completions.create(model="tiny-gpt", prompt="x", n=2)
    assert bad.value.status_code == 422 and "n" in (bad.value.body.get("param") or "")
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{stack['url']}/v1", api_key="fdy_wrong",
                      max_retries=0).completions.create(model="tiny-gpt", prompt="x")
    with pytest.raises(openai.BadRequestError) as long:
        client.completions.create(model="tiny-gpt", prompt="cat " * 2000)
    assert long.value.body["code"] == "context_length_exceeded"


def test_token_quota_and_token_rate_limit(stack):
    tiny = _client(stack, "tiny")  # 60 tokens in all, hard limit
    tiny.completions.create(model="tiny-gpt", prompt="The hen", max_tokens=20)
    with pytest.raises(openai.RateLimitError) as quota:
        for _ in range(5):
            tiny.completions.create(model="tiny-gpt", prompt="The hen", max_tokens=20)
    assert quota.value.body["code"] == "quota_exceeded"
    assert quota.value.response.headers["x-should-retry"] == "false"
    assert _usage(stack, "tiny")["units_used"] <= 60
    tpm = _client(stack, "tpm")  # 50 tokens per minute
    tpm.completions.create(model="tiny-gpt", prompt="The dog", max_tokens=30)
    with pytest.raises(openai.RateLimitError) as limited:
        tpm.completions.create(model="tiny-gpt", prompt="The dog", max_tokens=30)
    headers = limited.value.response.headers
    assert limited.value.body["code"] == "rate_limit_exceeded"
    assert headers["x-ratelimit-limit-tokens"] == "50" and int(headers["retry-after"]) >= 1


def _spent(stack, plan: str = "lm") -> int:
    usage = _usage(stack, plan)
    return usage["units_used"] + usage["reserved_units"]


def test_idempotency_key_replays_a_generation_and_charges_it_once(stack):
    client = _client(stack)
    before = _spent(stack)
    # Sampled (temperature 1, no seed): only a replay gives the same text twice.
    ask = {"model": "tiny-gpt", "prompt": "The cat", "max_tokens": 12, "temperature": 1}
    first = client.completions.create(**ask, extra_headers={"Idempotency-Key": "gen-1"})
    again = client.completions.with_raw_response.create(
        **ask, extra_headers={"Idempotency-Key": "gen-1"})
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().model_dump() == first.model_dump()  # same id, text and usage
    assert _spent(stack) - before == first.usage.total_tokens  # charged once

    # Chat too, and the same key on another route is another request's key: refused.
    messages = [{"role": "user", "content": "Where did the fox go?"}]
    chat = client.chat.completions.create(model="tiny-gpt", messages=messages,
                                          max_tokens=8, temperature=1,
                                          extra_headers={"Idempotency-Key": "chat-1"})
    assert client.chat.completions.create(
        model="tiny-gpt", messages=messages, max_tokens=8, temperature=1,
        extra_headers={"Idempotency-Key": "chat-1"}).model_dump() == chat.model_dump()
    assert _spent(stack) - before == first.usage.total_tokens + chat.usage.total_tokens
    with pytest.raises(openai.UnprocessableEntityError) as other_route:
        client.chat.completions.create(model="tiny-gpt", messages=messages, max_tokens=12,
                                       extra_headers={"Idempotency-Key": "gen-1"})
    assert other_route.value.body["code"] == "idempotency_key_reused"


def test_idempotency_key_with_another_body_is_refused(stack):
    headers = {"authorization": f"Bearer {stack['keys']['lm']}", "Idempotency-Key": "body-1"}
    url = f"{stack['url']}/v1/completions"
    body = {"model": "tiny-gpt", "prompt": "The dog", "max_tokens": 4}
    with httpx.Client(timeout=60) as http:
        first = http.post(url, json=body, headers=headers)
        before = _spent(stack)
        reordered = http.post(url, json=dict(reversed(body.items())), headers=headers)
        other = http.post(url, json={**body, "prompt": "The hen"}, headers=headers)
    assert first.status_code == reordered.status_code == 200
    assert reordered.json() == first.json()  # the same request, keys in another order
    assert other.status_code == 422 and other.json()["error"]["code"] == \
        "idempotency_key_reused"
    assert other.json()["error"]["param"] == "Idempotency-Key"
    assert _spent(stack) == before  # neither the replay nor the refusal is charged


def test_idempotency_key_replays_a_whole_stream(stack):
    # A stream's events are stored once its last one is written: a retry just after
    # may get 409 idempotency_in_progress (Retry-After: 1), which the client retries.
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=stack["keys"]["lm"],
                           max_retries=3, timeout=60)
    ask = {"model": "tiny-gpt", "messages": [{"role": "user", "content": "Tell me"}],
           "max_tokens": 10, "temperature": 1, "stream": True,
           "stream_options": {"include_usage": True},
           "extra_headers": {"Idempotency-Key": "stream-1"}}
    before = _spent(stack)
    first = [c.model_dump() for c in client.chat.completions.create(**ask)]
    again = [c.model_dump() for c in client.chat.completions.create(**ask)]
    assert again == first and first[-1]["usage"]["total_tokens"] > 0
    assert _spent(stack) - before == first[-1]["usage"]["total_tokens"]
