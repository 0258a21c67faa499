"""Streaming tabular data (foundry.data.shards / stream_fit / stream): hash splits that
never leak, statistics equal to the in-memory fit on the same rows, batches that hold
every training row once per epoch (split over ranks without overlap), and a streamed
model that trains, registers and serves like an in-memory one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from foundry.config import LoadedConfig
from foundry.config.schema import FeatureConfig, FoundryConfig, SplitConfig
from foundry.console import Reporter
from foundry.data.dataset import load_splits
from foundry.data.preprocess import Preprocessor
from foundry.data.stream import rank_pieces
from foundry.data.stream_fit import split_codes

ROWS = 3000


def make_table(rows: int = ROWS, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=rows)
    return pd.DataFrame(
        {
            "rid": np.arange(rows, dtype=np.float64),  # unique: identifies rows in batches
            "x": np.where(rng.random(rows) < 0.1, np.nan, x),
            "city": rng.choice(["a", "b", "c", "d"], rows),
            "member": rng.random(rows) < 0.4,
            "y": np.where(np.nan_to_num(x) + rng.normal(scale=0.5, size=rows) > 0, "yes", "no"),
        }
    )


@pytest.fixture(scope="module")
def table_dir(tmp_path_factory) -> Path:
    """One Parquet file of 8 row groups, and the same rows as 3 Parquet shards."""
    root = tmp_path_factory.mktemp("stream")
    df = make_table()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), root / "all.parquet",
                   row_group_size=ROWS // 8)  # fmt: skip
    (root / "shards").mkdir()
    for i, part in enumerate(np.array_split(np.arange(ROWS), 3)):
        pq.write_table(
            pa.Table.from_pandas(df.iloc[part], preserve_index=False),
            root / "shards" / f"part-{i}.parquet",
            row_group_size=400,
        )
    return root


def loaded_config(path: Path, model: str = "mlp", **data) -> LoadedConfig:
    cfg = {
        "name": "s",
        "data": {
            "path": str(path),
            "streaming": True,
            "pii": {"enabled": False},
            "stream": {"workers": 0, "sample_rows": 500, "block_rows": 256},
            **data,
        },
        "features": {
            "target": "y",
            "inputs": [{"name": n} for n in ("rid", "x", "city", "member")],
        },
        "model": {"type": model},
        "train": {"epochs": 1, "batch_size": 64},
        "evaluate": {
            "explain": {"permutation_importance": False},
            "calibration": {"temperature_scaling": False},
        },
    }
    return LoadedConfig(FoundryConfig.model_validate(cfg), path.parent)


def assert_same_state(got: Preprocessor, want: Preprocessor) -> None:
    """Equal preprocessing states; statistics equal to 1e-12 (moments merged over other
    block boundaries round differently in the last bits)."""
    a_state, b_state = got.state_dict(), want.state_dict()
    for a, b in zip(a_state["encoders"], b_state["encoders"], strict=True):
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], float):
                assert a[key] == pytest.approx(b[key], rel=1e-12), (a["name"], key)
            else:
                assert a[key] == b[key], (a["name"], key)
    assert a_state["target"] == b_state["target"]


@pytest.fixture(scope="module")
def streamed(table_dir):
    return load_splits(loaded_config(table_dir / "all.parquet"), Reporter(quiet=True))


def test_split_is_a_hash_of_the_key_or_row_and_its_fractions_hold():
    df = pd.DataFrame({"user": np.arange(20_000) % 5000, "v": np.arange(20_000)})
    by_row, _ = split_codes(df, SplitConfig(seed=1))
    assert np.array_equal(by_row, split_codes(df.iloc[::-1], SplitConfig(seed=1))[0][::-1])
    shares = np.bincount(by_row, minlength=3) / len(df)
    assert np.allclose(shares, [0.8, 0.1, 0.1], atol=0.02)
    assert not np.array_equal(by_row, split_codes(df, SplitConfig(seed=2))[0])  # seeded
    by_user, _ = split_codes(df, SplitConfig(key="user"))
    per_user = pd.Series(by_user).groupby(df["user"]).nunique()
    assert (per_user == 1).all()  # a key's rows share one split


def test_fitted_statistics_equal_the_in_memory_fit_on_the_same_rows(table_dir, streamed):
    splits, resolved = streamed
    df = make_table()
    codes, _ = split_codes(df, SplitConfig(), list(df.columns))
    in_memory = Preprocessor.fit(df[codes == 0].reset_index(drop=True), resolved)
    assert_same_state(splits.stream.preprocessor, in_memory)
    assert splits.rows == {
        name: int((codes == i).sum()) for i, name in enumerate(("train", "val", "test"))
    }


def test_samples_are_bounded_disjoint_and_independent_of_the_sharding(table_dir, streamed):
    splits, _ = streamed
    ids = {name: set(getattr(splits, name)["rid"]) for name in ("train", "val", "test")}
    assert len(ids["train"]) == 500 and len(ids["val"]) == splits.rows["val"] < 500
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    sharded, _ = load_splits(loaded_config(table_dir / "shards"), Reporter(quiet=True))
    assert len(sharded.stream.table.files) == 3
    assert sharded.rows == splits.rows
    assert sharded.stream.fingerprint == splits.stream.fingerprint
    assert_same_state(sharded.stream.preprocessor, splits.stream.preprocessor)
    pd.testing.assert_frame_equal(sharded.test, splits.test)


def test_each_epoch_streams_every_training_row_once_in_a_new_order(streamed):
    splits, _ = streamed
    stream = splits.stream
    df = make_table()
    codes, _ = split_codes(df, SplitConfig(), list(df.columns))
    want = stream.preprocessor.transform(df[codes == 0])["numeric"][:, 0]  # encoded rid
    orders = []
    for epoch in (1, 2):
        batches = list(stream.batches(epoch, 64))
        assert all(len(b["target"]) == 64 for b in batches[:-1])
        rid = np.concatenate([b["numeric"][:, 0].numpy() for b in batches])
        assert np.array_equal(np.sort(rid), np.sort(want.numpy()))
        orders.append(rid)
    assert not np.array_equal(orders[0], orders[1])
    assert stream.batches_per_epoch(64, 1) == -(-stream.n_rows // 64)


def assert_arrow_route_is_the_pandas_route(stream) -> None:
    """Every piece's encoded blocks (read, selected, scrubbed and encoded in Arrow) equal
    the pandas frames of its training rows, scrubbed and encoded, bit for bit."""
    for index, piece in enumerate(stream.table.pieces):
        mask = np.unpackbits(stream.masks[index]).view(bool)
        frames = list(stream.table.read(piece, stream.columns, stream.stream.block_rows))
        rows = pd.concat(frames, ignore_index=True)[mask[: sum(map(len, frames))]]
        want = stream.preprocessor.transform(stream.scrub(rows.reset_index(drop=True)))
        blocks = list(stream.encoded_blocks(index))
        for key, tensor in want.items():
            assert torch.equal(torch.cat([b[key] for b in blocks]), tensor), (index, key)


def test_workers_encode_from_arrow_what_the_pandas_route_encodes(streamed):
    stream = streamed[0].stream
    assert stream.needed == ["rid", "x", "city", "member", "y"]
    assert_arrow_route_is_the_pandas_route(stream)


def test_workers_scrub_personal_data_as_the_pandas_route_does(tmp_path):
    df = make_table(600, seed=2)
    df["contact"] = np.random.default_rng(3).choice(
        ["ann@example.com", "bob@example.org", "n/a", None], len(df)
    )
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "t.parquet",
                   row_group_size=200)  # fmt: skip
    loaded = loaded_config(tmp_path / "t.parquet", pii={"enabled": True})
    loaded.config.features.inputs.append(FeatureConfig(name="contact", type="category"))
    splits, _ = load_splits(loaded, Reporter(quiet=True))
    stream = splits.stream
    vocab = stream.preprocessor.encoders[-1].vocab
    assert "contact" in stream.scrub.scrubber.scan_columns and "n/a" in vocab
    assert not any("@" in key for key in vocab)  # masked before the vocabulary was fitted
    assert_arrow_route_is_the_pandas_route(stream)


def test_ranks_read_disjoint_shares_that_cover_the_table(streamed):
    stream = streamed[0].stream
    shares = [set(rank_pieces(len(stream.table.pieces), r, 3)) for r in range(3)]
    assert set.union(*shares) == set(range(len(stream.table.pieces)))
    assert sum(map(len, shares)) == len(stream.table.pieces)
    rows = [
        np.concatenate([b["numeric"][:, 0].numpy() for b in stream.batches(1, 64, rank=r, world=2)])
        for r in range(2)
    ]
    assert not set(rows[0]) & set(rows[1])
    assert len(rows[0]) + len(rows[1]) == stream.n_rows
    assert stream.batches_per_epoch(32, 2) == min(len(r) // 32 for r in rows)


def test_workers_stream_the_same_rows(streamed):
    stream = streamed[0].stream
    one = np.concatenate([b["numeric"][:, 0].numpy() for b in stream.batches(1, 64)])
    stream.stream = stream.stream.model_copy(update={"workers": 2})
    try:
        two = np.concatenate([b["numeric"][:, 0].numpy() for b in stream.batches(1, 64)])
    finally:
        stream.stream = stream.stream.model_copy(update={"workers": 0})
    assert np.array_equal(np.sort(one), np.sort(two))


def test_an_epoch_started_ahead_streams_what_it_would_have_streamed(streamed):
    # prefetch forks the workers early; the batches, and their order, must not change
    stream = streamed[0].stream
    stream.stream = stream.stream.model_copy(update={"workers": 2})
    me = psutil.Process()
    others = {p.pid for p in me.children()}  # servers a session fixture may have started

    def rid(batches) -> np.ndarray:
        return np.concatenate([b["numeric"][:, 0].numpy() for b in batches])

    def workers() -> list[psutil.Process]:
        alive = [p for p in me.children() if p.pid not in others and p.is_running()]
        return [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]

    try:
        want = rid(stream.batches(1, 64))
        stream.prefetch(1, 64)
        assert len(workers()) == 2  # already running, before the first batch is asked for
        assert np.array_equal(rid(stream.batches(1, 64)), want)
        stream.prefetch(2, 64)  # another epoch: stopped, epoch 1 read afresh
        assert np.array_equal(rid(stream.batches(1, 64)), want)
        stream.prefetch(1, 64)
        stream.discard_prefetch()  # a run that stopped early
        assert workers() == []
    finally:
        stream.stream = stream.stream.model_copy(update={"workers": 0})


def test_a_run_trains_the_same_weights_when_its_epoch_was_started_ahead(streamed, tmp_path):
    # starting a DataLoader draws from the global RNG, which dropout draws from too
    from foundry.models import build_model
    from foundry.training import fit

    stream = streamed[0].stream
    cfg = loaded_config(Path("unused.parquet")).config
    train = cfg.train.model_copy(update={"epochs": 2, "num_threads": 1})
    pre = stream.preprocessor
    weights = []
    for ahead in (False, True):
        torch.manual_seed(0)
        model = build_model(cfg.model, pre.schema, 2)  # an MLP with dropout
        if ahead:
            stream.prefetch(1, train.batch_size)
        result = fit(model, stream, None, train, pre.task, tmp_path / str(ahead), n_outputs=2,
                     progress=False)  # fmt: skip
        weights.append(result.state_dict)
    for key, tensor in weights[0].items():
        assert torch.equal(weights[1][key], tensor), key


def test_auto_streams_only_when_the_table_passes_the_memory_fraction(table_dir):
    say = Reporter(quiet=True)
    small, _ = load_splits(loaded_config(table_dir / "shards", streaming="auto"), say)
    assert small.stream is None and len(small.train) + len(small.val) + len(small.test) == ROWS
    tight = loaded_config(
        table_dir / "shards", streaming="auto", stream={"workers": 0, "memory_fraction": 1e-9}
    )
    assert load_splits(tight, say)[0].stream is not None


def test_a_streamed_model_trains_registers_and_serves_like_an_in_memory_one(table_dir):
    import foundry

    loaded = loaded_config(table_dir / "all.parquet")
    result = foundry.train(loaded, quiet=True, progress=False)
    assert result.metrics["accuracy"] > 0.6
    package = foundry.load(result.model_ref)
    rows = make_table().iloc[:50]
    records = rows.drop(columns="y").to_dict("records")
    np.testing.assert_allclose(
        package.outputs(pd.DataFrame(records)), result.model.outputs(pd.DataFrame(records)),
        rtol=1e-6,
    )  # fmt: skip
    import json

    manifest = json.loads((result.package_path / "foundry.json").read_text())
    assert sum(manifest["data"]["rows"].values()) == ROWS  # the table's, not the samples'


def test_gbm_trains_on_the_training_sample_and_says_so(table_dir, capsys):
    import foundry

    loaded = loaded_config(table_dir / "all.parquet", model="gbm")
    result = foundry.train(loaded, verbose=True, progress=False, register=False)
    captured = capsys.readouterr()
    said = " ".join((captured.err + captured.out).split())
    assert "gbm does not stream: it trains on a uniform sample of 500 of the" in said
    assert result.metrics["accuracy"] > 0.6


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_text_shards_stream_every_row(tmp_path, fmt):
    df = make_table(600, seed=1)
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        path = tmp_path / f"part-{i}.{fmt}"
        if fmt == "csv":
            df.iloc[part].to_csv(path, index=False)
        else:
            df.iloc[part].to_json(path, orient="records", lines=True)
    splits, resolved = load_splits(loaded_config(tmp_path / f"part-*.{fmt}"), Reporter(quiet=True))
    assert [f.type for f in resolved.inputs] == ["number", "number", "category", "binary"]
    assert sum(splits.rows.values()) == 600 and len(splits.stream.table.pieces) == 3
    rid = np.concatenate([b["numeric"][:, 0].numpy() for b in splits.stream.batches(1, 64)])
    assert len(np.unique(rid)) == splits.rows["train"] == splits.stream.n_rows
