"""model.type ngram (foundry.families.ngram): TF-IDF word and character n-grams and a
linear head, stored as JSON vocabularies and safetensors arrays, explained by each
n-gram's exact share of the score.

The family contract (fit → package → load, served = local, hooks, bad inputs) is checked
by test_family_conformance.py; these tests cover what is particular to n-gram models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

import foundry
from foundry.errors import ConfigError, DataError, FoundryError

STEMS = {"python": "python3-{}", "perl": "lib{}-perl", "go": "golang-{}-dev"}
WORDS = ["foo", "bar", "baz", "qux", "zip", "zap", "lorem", "ipsum"]


def _packages(path: Path, n: int = 90, seed: int = 0) -> Path:
    """Unique package names whose parts give the section; a free-text description and a
    number that carry nothing."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        section = list(STEMS)[i % 3]
        rows.append(
            {
                "package": STEMS[section].format(f"{rng.choice(WORDS)}{i}"),
                "description": f"{rng.choice(WORDS)} {rng.choice(WORDS)} module",
                "size": rng.uniform(1, 100),
                "section": section,
            }
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _config(root: Path, **model) -> dict:
    return {
        "name": "ngram-test",
        "data": {
            "path": str(_packages(root / "packages.csv")),
            "pii": {"keep_columns": ["package"]},
        },
        "features": {
            "target": "section",
            "inputs": [
                {"name": "package", "type": "text"},
                {"name": "description", "type": "text"},
                {"name": "size", "type": "number"},
            ],
        },
        "model": {"type": "ngram", **model},
        "evaluate": {"explain": {"permutation_importance": False}},
        "output_dir": str(root / "runs"),
    }


def _rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "package": ["python3-brandnew", "libnothing-perl", "golang-x-dev"],
            "description": ["lorem module", None, "zip zap"],
            "size": [3.0, None, 50.0],
        }
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(TrainResult, package path) of a model trained once for this module."""
    root = tmp_path_factory.mktemp("ngram")
    result = foundry.train(_config(root), progress=False, quiet=True, register=False)
    return result, result.package_path


# ---------------------------------------------------------------- n-grams


def _word_grams(column: str, texts: list[str], *, ngram_range=(1, 2), min_df=1):
    """Word n-grams, lowercased, sublinear TF, no vocabulary cap, no hashing:
    (TextNGrams, the training rows' TF-IDF matrix)."""
    from foundry.families.ngram.vectorize import TextNGrams

    return TextNGrams.fit(
        column,
        texts,
        kind="word",
        ngram_range=ngram_range,
        lowercase=True,
        sublinear_tf=True,
        min_df=min_df,
        max_features=None,
        hash_features=None,
    )


def test_structured_names_split_on_punctuation_into_words():
    texts = ["python3-foo", "libbar-perl", "src/a_b/c.py", "https://x.org/y?q=1"]
    grams, _ = _word_grams("name", texts)
    words = set(grams.vocabulary)
    assert {"python3", "foo", "libbar", "perl", "src", "a", "b", "c", "py"} <= words
    assert {"https", "x", "org", "y", "q", "1", "python3 foo", "libbar perl"} <= words
    assert not any("-" in w or "/" in w or "_" in w for w in words)


@pytest.mark.parametrize("ngram_range", [(1, 4), (2, 5), (3, 3)])
def test_char_ngrams_count_as_scikit_learns_char_wb(ngram_range):
    from foundry.families.ngram.chargrams import CharCounter

    texts = ["libfoo-perl  is a  Perl module", "a b", "", "python3-foo", "x", "Perl PERL"]
    reference = CountVectorizer(analyzer="char_wb", ngram_range=ngram_range, min_df=1)
    expected = reference.fit_transform(texts)
    counter, vocabulary, counts = CharCounter.fit(
        texts, ngram_range, True, min_df=1, max_features=None
    )
    assert vocabulary == list(reference.get_feature_names_out())
    assert (counts != expected).nnz == 0
    unseen = ["perl modules", "zzz"]
    assert (counter.transform(unseen) != reference.transform(unseen)).nnz == 0


def test_tfidf_weighting_is_scikit_learns_sublinear_l2():
    texts = ["a cat sat", "a cat ran ran ran", "dogs ran", "the cat"]
    grams, x = _word_grams("t", texts)
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)[^\W_]+")
    expected = reference.fit_transform(texts).toarray()
    assert grams.vocabulary == list(reference.get_feature_names_out())
    np.testing.assert_allclose(x.toarray(), expected, rtol=1e-6)  # idf stored as float32


def test_min_df_pruning_everything_is_a_data_error_naming_the_column():
    with pytest.raises(DataError, match="'name'") as caught:
        _word_grams("name", ["a", "b"], ngram_range=(1, 1), min_df=2)
    assert "min_df" in str(caught.value.hint)


def test_config_needs_some_ngrams_in_order():
    from foundry.config.schema import NGramConfig

    with pytest.raises(ValueError, match="both None"):
        NGramConfig(word_ngrams=None, char_ngrams=None)
    with pytest.raises(ValueError, match="char_ngrams"):
        NGramConfig(char_ngrams=(4, 2))


# ---------------------------------------------------------------- package


def test_the_package_reloads_to_identical_outputs_without_pickle(trained):
    result, package = trained
    loaded = foundry.load(package)
    rows = _rows()
    assert np.array_equal(loaded.outputs(rows), result.model.outputs(rows))
    assert loaded.predict(rows)["section"].tolist() == ["python", "perl", "go"]
    files = {p.name for p in package.iterdir()}
    assert "ngram_vocabulary.json" in files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".joblib"))]
    vocabulary = json.loads((package / "ngram_vocabulary.json").read_text())
    assert [(v["column"], v["kind"]) for v in vocabulary] == [
        ("package", "word"),
        ("package", "char"),
        ("description", "word"),
        ("description", "char"),
    ]
    assert "perl" in vocabulary[0]["vocabulary"]


def test_hashing_stores_no_vocabulary_and_reloads_identically(tmp_path):
    result = foundry.train(
        _config(tmp_path, hash_features=1024), progress=False, quiet=True, register=False
    )
    vocabulary = json.loads((result.package_path / "ngram_vocabulary.json").read_text())
    assert all(v["vocabulary"] is None and v["n_columns"] == 1024 for v in vocabulary)
    loaded = foundry.load(result.package_path)
    rows = _rows()
    assert np.array_equal(loaded.outputs(rows), result.model.outputs(rows))
    assert loaded.predict(rows)["section"].tolist() == ["python", "perl", "go"]
    # explanations still name the n-grams, from the row's own text
    from foundry.evaluation.explain import explain

    names = [t for t, _ in explain(loaded, rows.head(2))["rows"][1]["tokens"]]
    assert "package:word:perl" in names


# ---------------------------------------------------------------- bad inputs


def test_a_missing_text_column_is_a_data_error_naming_it(trained):
    _, package = trained
    with pytest.raises(DataError, match="package"):
        foundry.load(package).predict(_rows().drop(columns=["package"]))


@pytest.mark.parametrize("value", [42, ["python3-foo"], {"name": "x"}])
def test_a_non_string_text_value_is_a_data_error_naming_the_column(trained, value):
    _, package = trained
    model = foundry.load(package)
    rows = _rows().astype({"description": object})
    rows.at[1, "description"] = value
    with pytest.raises(DataError, match="'description'"):
        model.predict(rows)
    records = rows.to_dict("records")
    with pytest.raises(DataError, match="'description'"):
        model.preprocessor.transform_records(records)


def test_image_inputs_are_refused_with_the_column_named(tmp_path):
    config = _config(tmp_path)
    config["features"]["inputs"].append({"name": "photo", "type": "image"})
    pd.read_csv(tmp_path / "packages.csv").assign(photo="a.png").to_csv(
        tmp_path / "packages.csv", index=False
    )
    config["data"]["path"] = str(tmp_path / "packages.csv")
    with pytest.raises(ConfigError, match="photo"):
        foundry.train(config, progress=False, quiet=True, register=False)


# ---------------------------------------------------------------- explanations


def test_explanations_are_exact_shares_that_add_up_to_the_score(trained):
    from foundry.evaluation.explain import explain

    result, package = trained
    model = foundry.load(package)
    rows = _rows()
    explained = explain(model, rows)
    assert explained["method"] == "linear_contributions"
    raw = model.outputs(rows) * model.temperature  # explained before the temperature
    classes = [str(c) for c in model.task.classes]
    for i, row in enumerate(explained["rows"]):
        k = classes.index(row["target_class"])
        assert row["output"] == pytest.approx(raw[i, k], abs=1e-5)
        total = row["baseline_output"] + sum(row["attributions"].values())
        assert total == pytest.approx(row["output"], abs=1e-9)
        assert abs(row["convergence_delta"]) < 1e-9
        assert row["attributions"]["package"] == max(row["attributions"].values())
    top = [t for t, _ in explained["rows"][1]["tokens"][:3]]
    assert "package:word:perl" in top
    # a fixed class: the shares of that class's score, whatever was predicted
    fixed = explain(model, rows, target="go")
    assert {r["target_class"] for r in fixed["rows"]} == {"go"}


def test_records_encode_as_frames_do(trained):
    _, package = trained
    model = foundry.load(package)
    rows = _rows()
    records = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
        for r in rows.to_dict("records")
    ]
    framed = model.preprocessor.transform(rows, with_target=False)["features"].matrix
    recorded = model.preprocessor.transform_records(records)["features"].matrix
    assert (framed != recorded).nnz == 0


# ---------------------------------------------------------------- heads and weights


def test_class_weights_move_decisions_toward_the_weighted_class(tmp_path):
    from foundry.config.schema import FeatureConfig, NGramConfig
    from foundry.data.infer import ResolvedFeatures
    from foundry.families.ngram.inputs import NGramInputs
    from foundry.families.ngram.linear import LinearModel, fit_head
    from foundry.families.table import class_weights

    rng = random.Random(1)
    # ambiguous rows: the words say little, so the weights decide
    df = pd.DataFrame(
        {
            "t": [" ".join(rng.choices(WORDS, k=3)) for _ in range(120)],
            "y": ["rare" if i % 6 == 0 else "common" for i in range(120)],
        }
    )
    resolved = ResolvedFeatures([FeatureConfig(name="t", type="text")], "y", "category")
    predicted = {}
    for setting in (None, {"rare": 8.0}):
        model = NGramConfig(class_weight=setting)
        inputs, encoded = NGramInputs.fit(df, resolved, model)
        y = encoded["target"].numpy()
        weight, bias = fit_head(
            encoded["features"].matrix,
            y,
            model,
            inputs.task,
            class_weights(setting, y, inputs.task),
            0,
        )
        scores = LinearModel(weight, bias).scores(encoded["features"].matrix)
        rare = list(inputs.task.classes).index("rare")
        predicted[str(setting)] = int(((scores[:, 0] > 0) == (rare == 1)).sum())
    assert predicted[str({"rare": 8.0})] > predicted["None"]
    with pytest.raises(ConfigError, match="not classes"):
        class_weights({"nope": 2.0}, y, inputs.task)


def test_a_logistic_head_trains_and_a_number_target_gets_ridge(tmp_path):
    (tmp_path / "a").mkdir()
    logistic = foundry.train(
        _config(tmp_path / "a", head="logistic"), progress=False, quiet=True, register=False
    )
    assert logistic.metrics["accuracy"] > 0.8
    # price in the words: "cheap" rows cost about 10, "dear" rows about 100
    rng = random.Random(2)
    rows = [
        {
            "note": f"{w} {rng.choice(WORDS)}",
            "price": (10 if w == "cheap" else 100) + rng.uniform(-1, 1),
        }
        for w in ["cheap", "dear"] * 40
    ]
    (tmp_path / "b").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "b" / "prices.csv", index=False)
    config = {
        "name": "ngram-price",
        "data": {"path": str(tmp_path / "b" / "prices.csv")},
        "features": {"target": "price", "inputs": [{"name": "note", "type": "text"}]},
        "model": {"type": "ngram", "C": 10.0},
        "evaluate": {"explain": {"permutation_importance": False}},
        "output_dir": str(tmp_path / "b" / "runs"),
    }
    result = foundry.train(config, progress=False, quiet=True, register=False)
    assert result.metrics["r2"] > 0.9
    predicted = foundry.load(result.package_path).predict(
        pd.DataFrame({"note": ["cheap foo", "dear bar"]})
    )["price"]
    assert predicted[0] < 30 < 80 < predicted[1]


def test_compress_says_why_there_is_no_variant(tmp_path, monkeypatch):
    from foundry.compression import compress

    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "home"))
    result = foundry.train(_config(tmp_path), progress=False, quiet=True)
    with pytest.raises(FoundryError, match="no compressed variant") as caught:
        compress(result.model_ref, quiet=True)
    assert "max_features" in str(caught.value.hint)


def test_tune_searches_ngram_keys(tmp_path):
    from foundry.tuning import tune

    config = _config(tmp_path)
    config["tune"] = {
        "metric": "accuracy",
        "n_trials": 2,
        "params": {
            "model.C": {"type": "log_float", "low": 0.1, "high": 10.0},
            "model.char_ngrams": {"type": "choice", "values": [None, [2, 4]]},
        },
    }
    result = tune(config, quiet=True)
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    assert 0.1 <= result.best_params["model.C"] <= 10.0
    assert 0.5 < result.best_value <= 1.0


def test_every_class_gets_a_score_row_and_two_classes_get_one_log_odds():
    from foundry.config.schema import NGramConfig
    from foundry.data.schema import TaskInfo
    from foundry.families.ngram.linear import fit_head

    x = np.eye(6)
    three = TaskInfo(target="y", task="multiclass", classes=["a", "b", "c"])
    # class "b" has no training row (it fell into validation): it still gets a row
    weight, bias = fit_head(x, np.array([0, 0, 0, 2, 2, 2]), NGramConfig(), three, None, 0)
    assert weight.shape == (3, 6) and bias.shape == (3,)
    assert (x @ weight.T + bias).argmax(1).tolist() == [0, 0, 0, 2, 2, 2]
    two = TaskInfo(target="y", task="binary", classes=["a", "b"])
    weight, bias = fit_head(x, np.array([0, 0, 0, 1, 1, 1]), NGramConfig(), two, None, 0)
    assert weight.shape == (1, 6)
    assert ((x @ weight.T + bias)[:, 0] > 0).tolist() == [False] * 3 + [True] * 3


def test_more_rows_than_a_forward_chunk_give_the_same_outputs(trained, monkeypatch):
    _, package = trained
    model = foundry.load(package)
    rows = _rows()
    whole = model.outputs(rows)
    monkeypatch.setattr("foundry.predictor.PREDICT_CHUNK", 2)  # run_model slices the rows
    assert np.array_equal(model.outputs(rows), whole)


def test_a_binary_model_has_one_log_odds_and_explains_either_class(tmp_path):
    from foundry.evaluation.explain import explain

    config = _config(tmp_path)
    frame = pd.read_csv(config["data"]["path"])
    frame[frame.section != "go"].to_csv(config["data"]["path"], index=False)
    result = foundry.train(config, progress=False, quiet=True, register=False)
    model = foundry.load(result.package_path)
    rows = _rows().head(2)  # a python and a perl package
    raw = model.outputs(rows)[:, 0] * model.temperature  # [N]: log-odds of classes[1]
    assert model.manifest["n_outputs"] == 1
    assert model.predict(rows)["section"].tolist() == ["python", "perl"]
    second = str(model.task.classes[1])
    for target in (None, "perl", "python"):
        for i, row in enumerate(explain(model, rows, target=target)["rows"]):
            sign = 1.0 if row["target_class"] == second else -1.0
            assert row["output"] == pytest.approx(sign * raw[i], abs=1e-5)
            total = row["baseline_output"] + sum(row["attributions"].values())
            assert total == pytest.approx(row["output"], abs=1e-9)
