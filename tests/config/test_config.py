"""The config schema: defaults, key-path errors, suggestions, overrides, generated docs."""

from __future__ import annotations

import pytest

from foundry.config import apply_override, load_config
from foundry.config.docs import config_markdown
from foundry.config.schema import FoundryConfig
from foundry.errors import ConfigError

BASE = {"data": {"path": "train.csv"}, "features": {"target": "y"}}


def cfg(**sections):
    return load_config({**BASE, **sections}).config


def test_minimal_config_fills_documented_defaults():
    c = cfg()
    assert c.model.type == "mlp"
    assert c.train.optimizer.type == "adam"
    assert c.train.optimizer.lr == pytest.approx(1e-3)
    assert c.data.split.train == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"trian": {}}, "unknown key 'trian'; did you mean 'train'?"),
        ({"train": {"optimzer": {}}}, "unknown key 'train.optimzer'; did you mean 'optimizer'?"),
        (
            {"model": {"type": "cnn", "layrs": [8]}},
            "unknown key 'model.layrs'; did you mean 'layers'?",
        ),
        (
            {"train": {"optimizer": {"lr": -1}}},
            "train.optimizer.lr: Input should be greater than 0",
        ),
        (
            {"train": {"optimizer": {"type": "adm"}}},
            "'sgd', 'adagrad', 'rmsprop', 'adam' or 'adamw'",
        ),
        # every type of the schema's union, gbm and auto included
        ({"model": {"type": "rnn"}}, "unknown model type (allowed: mlp, cnn, text, gpt, hf, gbm"),
        ({"train": {"epochs": "many"}}, "train.epochs: Input should be a valid integer"),
        ({"data": {"path": "x", "split": {"train": 0.5}}}, "must sum to 1"),
        ({"train": {"optimizer": {"type": "adam", "nesterov": True}}}, "nesterov needs type: sgd"),
        (
            {
                "model": {
                    "type": "text",
                    "encoder": "transformer",
                    "embedding_dim": 30,
                    "num_heads": 4,
                }
            },
            "divisible by num_heads",
        ),
        # the database columns behind them (PostgreSQL refuses longer values)
        ({"serve": {"plans": {"p" * 65: {}}}}, "must have 1 to 64 characters"),
        ({"name": "m" * 129}, "name: String should have at most 128 characters"),
    ],
)
def test_bad_values_name_the_key_path(section, expected):
    with pytest.raises(ConfigError) as err:
        cfg(**section)
    assert expected in str(err.value)


def test_unknown_key_lists_the_allowed_keys_of_that_section():
    with pytest.raises(ConfigError, match=r"allowed: .*batch_size.*epochs"):
        cfg(train={"epoch": 3})


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        load_config({"features": {"target": "y"}})
    with pytest.raises(ConfigError, match="features.target is required"):
        load_config({"data": {"path": "x.csv"}})


def test_language_models_need_no_target():
    gpt = load_config({"data": {"path": "corpus.txt"}, "model": {"type": "gpt"}}).config
    assert gpt.is_language_model and gpt.features.target is None
    hf = {"type": "hf", "name_or_path": "gpt2"}
    assert load_config({"data": {"path": "c.txt"}, "model": hf}).config.is_language_model
    tuned = load_config({"data": {"path": "x.csv"}, "features": {"target": "y"}, "model": hf})
    assert not tuned.config.is_language_model  # an hf encoder fine-tuned on a target
    with pytest.raises(ConfigError, match="d_model .* divisible by n_heads"):
        load_config({"data": {"path": "c.txt"}, "model": {"type": "gpt", "d_model": 10,
                                                          "n_heads": 4}})


def test_overrides_parse_yaml_values_and_create_sections():
    loaded = load_config(
        BASE, ["train.optimizer.lr=3e-4", "model.layers=[8, 4]", "train.epochs=3", "name=abc"]
    )
    c = loaded.config
    assert c.train.optimizer.lr == pytest.approx(3e-4)
    assert c.model.layers == [8, 4]
    assert c.train.epochs == 3
    assert c.name == "abc"


def test_override_errors():
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        apply_override({}, "train.epochs")
    with pytest.raises(ConfigError, match="'data' is not a section"):
        apply_override({"data": "x"}, "data.path=y")
    with pytest.raises(ConfigError, match="train.epochs"):
        load_config(BASE, ["train.epochs=-2"])


def test_yaml_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(scalar)


def test_relative_paths_resolve_against_the_config_folder(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "c.yaml"
    path.write_text("data: {path: ../d.csv}\nfeatures: {target: y}\n")
    loaded = load_config(path)
    assert loaded.resolve(loaded.config.data.path).resolve() == (tmp_path / "d.csv").resolve()


def test_config_is_frozen():
    c = cfg()
    with pytest.raises(Exception, match="frozen"):
        c.train.epochs = 5  # type: ignore[misc]


def test_generated_docs_cover_every_section_and_field():
    text = config_markdown()
    for section in (
        "`data`",
        "`data.split`",
        "`features`",
        "`train.optimizer`",
        "`train.scheduler`",
        "`model (type: cnn)`",
        "`model (type: text)`",
    ):
        assert f"## {section}" in text
    # every field of every model section has a documented row
    for name, field in FoundryConfig.model_fields.items():
        assert f"| `{name}` |" in text
        assert field.description, f"{name} has no documentation"


def test_docs_config_md_is_up_to_date():
    from pathlib import Path

    committed = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"
    assert committed.read_text().strip() == config_markdown().strip(), (
        "docs/CONFIG.md is stale: run `foundry config-docs > docs/CONFIG.md`"
    )


def test_overrides_leave_the_callers_dict_untouched():
    from foundry.config import load_config

    raw = {"name": "m", "data": {"path": "d.csv"}, "features": {"target": "y"},
           "train": {"optimizer": {"lr": 0.1}}}
    loaded = load_config(raw, ["train.optimizer.lr=0.5", "train.epochs=3"])
    assert loaded.config.train.optimizer.lr == 0.5 and loaded.config.train.epochs == 3
    assert raw["train"] == {"optimizer": {"lr": 0.1}}


def test_an_override_reaches_a_key_with_dots_in_it():
    raw = {"tune": {"params": {"train.optimizer.lr": {"type": "log_float", "low": 1e-4,
                                                      "high": 1e-1}}}}  # fmt: skip
    apply_override(raw, "tune.params.train.optimizer.lr.low=1e-3")
    assert raw["tune"]["params"]["train.optimizer.lr"]["low"] == 1e-3
    apply_override(raw, "tune.params.train.optimizer.lr={type: float, low: 0.1, high: 0.2}")
    assert raw["tune"]["params"] == {"train.optimizer.lr": {"type": "float", "low": 0.1,
                                                           "high": 0.2}}  # fmt: skip
    # without such a key the dots are sections, as always
    apply_override(raw, "train.optimizer.lr=0.5")
    assert raw["train"] == {"optimizer": {"lr": 0.5}}
