"""`s3://` data paths (`foundry.data.load.read_url`) against a real S3-compatible server:
the same frame as the same file read from disk, and errors that name the URL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from foundry.config.load import LoadedConfig
from foundry.config.schema import FoundryConfig
from foundry.data import read_table
from foundry.errors import DataError, ModelError
from foundry.objectstore import filesystem


@pytest.fixture
def table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "age": rng.integers(18, 90, 50),
            "income": rng.normal(50, 20, 50).round(2),
            "city": rng.choice(["Oslo", "Lima", "Pune"], 50),
            "churned": rng.choice(["yes", "no"], 50),
        }
    )
    df.loc[3, "income"] = np.nan
    return df


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_an_s3_table_reads_as_the_same_file_on_disk(tmp_path, s3_bucket, table, suffix):
    local = tmp_path / f"train{suffix}"
    if suffix == ".parquet":
        table.to_parquet(local)
    elif suffix == ".jsonl":
        table.to_json(local, orient="records", lines=True)
    else:
        table.to_csv(local, index=False, sep="\t" if suffix == ".tsv" else ";")
    url = f"{s3_bucket}/data/train{suffix}"
    filesystem(error=ModelError).put_file(str(local), url)
    pd.testing.assert_frame_equal(read_table(url), read_table(local))


def test_a_config_keeps_an_s3_data_path_and_reads_it(tmp_path, s3_bucket, table):
    """data.path: s3://... is not resolved against the config's folder (`data_source`)."""
    url = f"{s3_bucket}/train.csv"
    filesystem(error=ModelError).pipe_file(url, table.to_csv(index=False).encode())
    config = FoundryConfig.model_validate(
        {"data": {"path": url}, "features": {"target": "churned"}}
    )
    loaded = LoadedConfig(config, tmp_path)
    assert loaded.data_source(config.data.path) == url
    assert loaded.data_source("train.csv") == tmp_path / "train.csv"
    from foundry.console import Reporter
    from foundry.data.dataset import load_splits

    splits, _ = load_splits(loaded, Reporter(quiet=True))
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(table)


def test_a_missing_or_unreadable_object_names_its_url(s3_bucket):
    with pytest.raises(DataError, match=f"data file not found: {s3_bucket}/nope.csv"):
        read_table(f"{s3_bucket}/nope.csv")
    filesystem(error=ModelError).pipe_file(f"{s3_bucket}/bad.parquet", b"not parquet")
    with pytest.raises(DataError, match=f"malformed parquet file {s3_bucket}/bad.parquet"):
        read_table(f"{s3_bucket}/bad.parquet")
    with pytest.raises(DataError, match="image folders must be local"):
        read_table(f"{s3_bucket}/images/")
