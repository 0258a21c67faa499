"""`serve.models` entries: registry references and upstream engines side by side, and
errors that name the entry's key."""

from __future__ import annotations

import pytest

from foundry.config.load import load_serve_config
from foundry.config.schema import UpstreamConfig
from foundry.errors import ConfigError


def test_references_and_upstreams_side_by_side():
    cfg = load_serve_config(
        None,
        {
            "models": [
                "adult:3",
                {
                    "name": "chat",
                    "upstream": "http://10.0.0.5:8000/v1",
                    "model": "Qwen/Qwen2.5-7B",
                    "api_key_env": "VLLM_API_KEY",
                },
            ]
        },
    )
    assert cfg.model_refs() == ["adult:3"]
    [up] = cfg.upstreams()
    assert isinstance(up, UpstreamConfig) and up.model == "Qwen/Qwen2.5-7B"
    assert up.max_tokens == 256  # a bound to reserve even when a request sets none
    # it survives the trip to worker processes (FOUNDRY_SERVE_CONFIG is JSON)
    assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"name": "chat", "upstream": "http://h:1/v1", "modle": "x"},
            "unknown key 'serve.models.0.modle'; did you mean 'model'?",
        ),
        ({"name": "chat"}, "missing required key 'serve.models.0.upstream'"),
        (
            {"name": "chat", "upstream": "h:1/v1"},
            "serve.models.0.upstream: must be the engine's base URL",
        ),
        (
            {"name": "chat", "upstream": "http://h:1/v1", "api_key_env": "sk-abc 123"},
            "serve.models.0.api_key_env",
        ),  # a variable's name, not a key
    ],
)
def test_a_bad_upstream_entry_names_its_key(entry, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
        load_serve_config(None, {"models": [entry]})


def test_an_upstream_name_given_twice_is_refused():
    entry = {"name": "chat", "upstream": "http://h:1/v1"}
    with pytest.raises(ConfigError, match="'chat'.* more than once"):
        load_serve_config(None, {"models": [entry, entry]})
