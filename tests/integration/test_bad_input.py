"""Every bad input is one clear line naming the problem and a non-zero exit, never a traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from tests.integration.support import adult_like, write_config


def assert_one_line_error(result, *needles: str) -> None:
    assert result.code != 0
    assert "Traceback" not in result.err
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    # progress lines may come first; the error is one line and the last thing printed
    assert len(errors) == 1 and lines[-1] == errors[0], result.err
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_missing_config_file(cli, tmp_path):
    assert_one_line_error(
        cli("train", "nope.yaml", cwd=tmp_path), "config file not found", "nope.yaml"
    )


def test_missing_data_file(cli, tmp_path):
    write_config(tmp_path / "c.yaml", "missing.csv", "y")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "missing.csv")


def test_empty_data_file(cli, tmp_path):
    (tmp_path / "empty.csv").write_text("")
    write_config(tmp_path / "c.yaml", "empty.csv", "y")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "empty.csv", "empty")


def test_malformed_csv(cli, tmp_path):
    (tmp_path / "bad.csv").write_text('a,b,y\n1,2,3\n4,"5,6\n7,8,9,10,11\n')
    write_config(tmp_path / "c.yaml", "bad.csv", "y")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "bad.csv")


def test_unknown_target_column_suggests_a_close_name(cli, tmp_path):
    adult_like(100).to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "incme")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "incme", "income")


def test_unknown_input_column(cli, tmp_path):
    adult_like(100).to_csv(tmp_path / "d.csv", index=False)
    write_config(
        tmp_path / "c.yaml",
        "d.csv",
        "income",
        features={"target": "income", "inputs": [{"name": "agee"}]},
    )
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "agee")


def test_target_with_one_class(cli, tmp_path):
    df = adult_like(100)
    df["income"] = ">50K"
    df.to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "income")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "income")


def test_inf_in_numeric_column(cli, tmp_path):
    df = adult_like(100)
    df.loc[5, "hours"] = np.inf
    df.to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "income")
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "hours")


def test_non_numeric_value_is_named_by_its_row_in_the_file(cli, tmp_path):
    """Not by its position in the shuffled training split (issue 14)."""
    df = adult_like(100).astype({"age": object})
    df.loc[57, "age"] = "forty"  # data row 58 counted from 1, line 59 of the CSV
    df.loc[5, "hours"] = np.inf  # the other check to_float makes: data row 6
    df.to_csv(tmp_path / "d.csv", index=False)
    inputs = [{"name": "age", "type": "number"}, {"name": "hours", "type": "number"}]
    write_config(
        tmp_path / "c.yaml", "d.csv", "income", features={"target": "income", "inputs": inputs}
    )
    assert_one_line_error(
        cli("train", "c.yaml", cwd=tmp_path),
        "'age' has a non-numeric value 'forty' (row 58 of d.csv, counting data rows from 1",
    )
    df.loc[57, "age"] = 40
    df.to_csv(tmp_path / "d.csv", index=False)
    assert_one_line_error(
        cli("train", "c.yaml", cwd=tmp_path),
        "'hours' has 1 infinite value(s) (first at row 6 of d.csv",
    )


def test_nan_with_error_policy(cli, tmp_path):
    df = adult_like(100)
    df.loc[3, "hours"] = np.nan
    df.to_csv(tmp_path / "d.csv", index=False)
    write_config(
        tmp_path / "c.yaml",
        "d.csv",
        "income",
        features={
            "target": "income",
            "inputs": [{"name": "hours", "type": "number", "number": {"missing": "error"}}],
        },
    )
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "hours")


def test_image_that_does_not_decode(cli, tmp_path):
    root = tmp_path / "imgs"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8), i * 30, np.uint8)).save(root / label / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png at all")
    write_config(tmp_path / "c.yaml", "imgs", "label", model={"type": "cnn"})
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "broken.png")


def test_wrong_config_types(cli, tmp_path):
    adult_like(50).to_csv(tmp_path / "d.csv", index=False)
    path = write_config(tmp_path / "c.yaml", "d.csv", "income")
    config = yaml.safe_load(path.read_text())
    config["train"]["batch_size"] = "large"
    path.write_text(yaml.safe_dump(config))
    assert_one_line_error(cli("train", "c.yaml", cwd=tmp_path), "train.batch_size")


def test_bad_override(cli, tmp_path):
    adult_like(50).to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "income")
    assert_one_line_error(
        cli("train", "c.yaml", "train.optimzer.lr=1", cwd=tmp_path),
        "train.optimzer",
        "did you mean 'optimizer'",
    )


def test_model_that_does_not_exist(cli, tmp_path):
    (tmp_path / "d.csv").write_text("a\n1\n")
    assert_one_line_error(cli("predict", "nosuch:latest", "d.csv", cwd=tmp_path), "nosuch")
    assert_one_line_error(cli("evaluate", "nosuch:3", "--data", "d.csv", cwd=tmp_path), "nosuch")
    assert_one_line_error(cli("models", "show", "bad:ref:x"), "bad:ref:x")


def test_resume_with_nothing_to_resume(cli, tmp_path):
    adult_like(50).to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "income")
    assert_one_line_error(cli("train", "c.yaml", "--resume", cwd=tmp_path), "nothing to resume")


def test_init_refuses_to_overwrite(cli, tmp_path):
    adult_like(50).to_csv(tmp_path / "d.csv", index=False)
    (tmp_path / "config.yaml").write_text("keep: me\n")
    assert_one_line_error(cli("init", "d.csv", "--target", "income", cwd=tmp_path), "--force")
    assert (tmp_path / "config.yaml").read_text() == "keep: me\n"


@pytest.mark.slow
def test_predict_with_missing_input_column(cli, tmp_path):
    adult_like(200).to_csv(tmp_path / "d.csv", index=False)
    write_config(tmp_path / "c.yaml", "d.csv", "income", train={"epochs": 1})
    assert cli("train", "c.yaml", "--quiet", cwd=tmp_path).code == 0
    pd.DataFrame({"age": [30.0]}).to_csv(tmp_path / "new.csv", index=False)
    assert_one_line_error(cli("predict", "m", "new.csv", cwd=tmp_path), "hours")
