"""Streamed shards in object storage (`data.path: s3://bucket/prefix/` or a glob) against
a real S3-compatible server: the same rows, statistics and model as the same shards on
disk, the size-based streaming decision, and errors that name the URL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tests.data.test_data_stream import assert_same_state, make_table

from foundry.config import LoadedConfig
from foundry.config.schema import FoundryConfig
from foundry.console import Reporter
from foundry.data.dataset import load_splits
from foundry.errors import DataError, ModelError
from foundry.objectstore import filesystem

ROWS = 1200
QUIET = Reporter(quiet=True)


def config(path: str | Path, base: Path, **data) -> LoadedConfig:
    """A tiny MLP, one epoch, streamed with `data.stream.workers` DataLoader workers."""
    cfg = {
        "name": "s3s",
        "data": {
            "path": str(path),
            "streaming": True,
            "pii": {"enabled": False},
            "stream": {"workers": 0, "sample_rows": 400, "block_rows": 256},
            **data,
        },
        "features": {"target": "y", "inputs": [{"name": n} for n in ("rid", "x", "city")]},
        "model": {"type": "mlp", "layers": [8]},
        "train": {"epochs": 1, "batch_size": 64},
        "evaluate": {
            "explain": {"permutation_importance": False},
            "calibration": {"temperature_scaling": False},
        },
    }
    return LoadedConfig(FoundryConfig.model_validate(cfg), base)


@pytest.fixture
def shards(tmp_path, s3_bucket) -> tuple[Path, str]:
    """The same 3 Parquet shards (row groups of 200 rows) on disk and under
    `<bucket>/table/`, and beside the prefix `table-notes.txt` (.txt reads as CSV): the
    prefix `table`, with or without its '/', is a folder and must not take it in."""
    local = tmp_path / "table"
    local.mkdir()
    df = make_table(ROWS, seed=3)
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        table = pa.Table.from_pandas(df.iloc[part], preserve_index=False)
        pq.write_table(table, local / f"part-{i}.parquet", row_group_size=200)
    prefix = f"{s3_bucket}/table"
    fs = filesystem(error=ModelError)
    fs.put([str(p) for p in sorted(local.iterdir())], f"{prefix}/")
    fs.pipe_file(f"{s3_bucket}/table-notes.txt", b"not a shard")
    return local, prefix


def test_an_s3_prefix_streams_and_trains_the_model_the_local_shards_train(tmp_path, shards):
    import foundry

    local, prefix = shards
    # training reads through a DataLoader worker, which opens the objects itself (s3fs
    # is not fork-safe)
    on_disk = config(local, tmp_path, stream={"workers": 1, "block_rows": 256})
    in_s3 = config(f"{prefix}/", tmp_path, stream={"workers": 1, "block_rows": 256})
    want, _ = load_splits(on_disk, QUIET)
    got, _ = load_splits(in_s3, QUIET)
    assert got.stream.table.files == [f"{prefix}/part-{i}.parquet" for i in range(3)]
    assert len(got.stream.table.pieces) == 6  # 400 rows a shard, row groups of 200
    assert got.rows == want.rows and sum(got.rows.values()) == ROWS
    assert got.stream.fingerprint == want.stream.fingerprint
    assert_same_state(got.stream.preprocessor, want.stream.preprocessor)
    for a, b in zip(got.stream.batches(1, 64), want.stream.batches(1, 64), strict=True):
        assert a.keys() == b.keys()
        for key in a:  # the same encoded rows in the same order
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

    results = [
        foundry.train(loaded, run_dir=tmp_path / name, quiet=True, progress=False, register=False)
        for name, loaded in (("disk", on_disk), ("s3", in_s3))
    ]
    (disk,), (s3,) = (r.history for r in results)
    assert s3["train_loss"] == pytest.approx(disk["train_loss"], rel=1e-6)
    assert s3["val_loss"] == pytest.approx(disk["val_loss"], rel=1e-6)
    assert s3["rows_per_rank"] == disk["rows_per_rank"] == [got.stream.n_rows]  # one process
    assert results[1].metrics["log_loss"] == pytest.approx(results[0].metrics["log_loss"])
    assert results[1].metrics["confusion_matrix"] == results[0].metrics["confusion_matrix"]


@pytest.mark.parametrize("fmt", ["parquet", "csv", "jsonl"])
def test_an_s3_glob_streams_every_row_of_its_shards(tmp_path, s3_bucket, fmt):
    df = make_table(900, seed=4)
    fs = filesystem(error=ModelError)
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        rows = df.iloc[part]
        if fmt == "parquet":
            data = pa.BufferOutputStream()
            pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), data)
            body = data.getvalue().to_pybytes()
        elif fmt == "csv":
            body = rows.to_csv(index=False, sep=";").encode()  # the delimiter is sniffed
        else:
            body = rows.to_json(orient="records", lines=True).encode()
        fs.pipe_file(f"{s3_bucket}/data/part-{i}.{fmt}", body)
    fs.pipe_file(f"{s3_bucket}/data/other.{fmt}", body)  # the glob leaves it out
    splits, resolved = load_splits(config(f"{s3_bucket}/data/part-*.{fmt}", tmp_path), QUIET)
    assert [f.type for f in resolved.inputs] == ["number", "number", "category"]
    assert len(splits.stream.table.files) == 3 and sum(splits.rows.values()) == len(df)
    rid = np.concatenate([b["numeric"][:, 0].numpy() for b in splits.stream.batches(1, 64)])
    assert len(np.unique(rid)) == splits.rows["train"] == splits.stream.n_rows


def test_auto_weighs_the_listed_size_of_s3_shards(tmp_path, shards):
    _, prefix = shards
    small, _ = load_splits(config(prefix, tmp_path, streaming="auto"), QUIET)
    assert small.stream is None and len(small.train) + len(small.val) + len(small.test) == ROWS
    tight = config(prefix, tmp_path, streaming="auto",
                   stream={"workers": 0, "memory_fraction": 1e-9})  # fmt: skip
    assert load_splits(tight, QUIET)[0].stream is not None


def test_a_wrong_bucket_prefix_glob_or_credentials_is_an_error_naming_the_url(
    tmp_path, s3_bucket, monkeypatch, request
):
    from foundry.data.shards import open_shards

    filesystem(error=ModelError).pipe_file(f"{s3_bucket}/data/a.parquet", b"not parquet")
    filesystem(error=ModelError).pipe_file(f"{s3_bucket}/ok/a.csv", b"a,b\n1,2\n")
    listed = open_shards(f"{s3_bucket}/ok/", "auto", None)  # before the credentials go
    cases = {
        "s3://no-such-foundry-bucket/data/": "bucket 'no-such-foundry-bucket' does not exist",
        f"{s3_bucket}/nothing/": f"no object or prefix {s3_bucket}/nothing/",
        f"{s3_bucket}/data/*.csv": f"no object matches the glob {s3_bucket}/data/\\*.csv",
        f"{s3_bucket}/data/": f"cannot read {s3_bucket}/data/a.parquet as Parquet",
    }
    for url, message in cases.items():
        with pytest.raises(DataError, match=message) as raised:
            load_splits(config(url, tmp_path), QUIET)
        if "Parquet" not in message:
            assert "FOUNDRY_S3_ENDPOINT_URL" in (raised.value.hint or "")
    # no credentials anywhere botocore looks (and no instance metadata to wait for); a
    # fresh filesystem, as a new process would have (fsspec caches one with a session)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)  # after the env returns
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(DataError, match=f"cannot list data.path {s3_bucket}/data/: access denied"):
        load_splits(config(f"{s3_bucket}/data/", tmp_path), QUIET)
    with pytest.raises(DataError, match=f"cannot read {s3_bucket}/ok/a.csv: access denied"):
        next(listed.read(listed.pieces[0], None, 10))  # a worker reading a listed shard


def test_a_parquet_piece_fetches_its_row_group_not_the_object(s3_bucket, monkeypatch):
    import s3fs

    from foundry.data.shards import open_shards

    rng = np.random.default_rng(0)  # random floats: row groups as big compressed as not
    table = pa.table({"a": rng.normal(size=40_000), "b": rng.normal(size=40_000)})
    data = pa.BufferOutputStream()
    pq.write_table(table, data, row_group_size=4_000)  # 10 row groups of ~64 KB
    body = data.getvalue().to_pybytes()
    filesystem(error=ModelError).pipe_file(f"{s3_bucket}/big.parquet", body)
    sharded = open_shards(f"{s3_bucket}/big.parquet", "auto", None)
    assert [p.rows for p in sharded.pieces] == [4_000] * 10

    fetched: list[int] = []  # what s3fs asks the server for (the real call, counted)
    fetch = s3fs.core.S3File._fetch_range

    def counted(self, start, end):
        fetched.append(end - start)
        return fetch(self, start, end)

    monkeypatch.setattr(s3fs.core.S3File, "_fetch_range", counted)
    frames = list(sharded.read(sharded.pieces[6], ["a"], 1_000))
    np.testing.assert_array_equal(
        np.concatenate([f["a"].to_numpy() for f in frames]), table["a"].to_numpy()[24_000:28_000]
    )
    # pyarrow's 64 KiB read of the footer, then column a of row group 6 (~38 KB): not the
    # ~750 KB object
    assert 0 < sum(fetched) < len(body) / 5 and len(fetched) == 2
