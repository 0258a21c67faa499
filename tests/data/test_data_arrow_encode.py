"""`Preprocessor.transform_arrow` (what streaming workers encode record batches with)
gives the same tensors, bit for bit, as `Preprocessor.transform` on the batch's pandas
frame: every kind of input the streaming path takes, missing values, unseen categories,
columns Arrow holds as dictionaries, and both kinds of target."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from foundry.config.schema import FeaturesConfig
from foundry.data.infer import infer_features
from foundry.data.preprocess import Preprocessor
from foundry.errors import DataError

ROWS = 400


def raw_table(rows: int, seed: int, *, unseen: bool) -> pa.Table:
    """Columns of each type streaming reads, with gaps; `unseen` puts values no
    training row has into the categories (and a label of the regression target)."""
    rng = np.random.default_rng(seed)
    gaps = rng.random(rows) < 0.15
    x = rng.normal(size=rows)
    count = rng.integers(-50, 50, rows)
    city = rng.choice(["a", "b", "c", "d", *(["zz"] if unseen else [])], rows).astype(object)
    city[rng.random(rows) < 0.1] = None
    level = rng.integers(0, 4 + unseen, rows).astype(float)  # an int category with gaps
    level[gaps] = np.nan
    words = rng.choice(["red fox", "blue", "Red sky", "", "grey dog jumps"], rows).astype(object)
    words[rng.random(rows) < 0.1] = None
    plan = rng.choice(["free", "paid"], rows).astype(object)
    plan[rng.random(rows) < 0.1] = None
    return pa.table(
        {
            "x": pa.array(np.where(gaps, np.nan, x)),  # NaN, not null
            "x32": pa.array(x.astype(np.float32), mask=rng.random(rows) < 0.1),  # nulls
            "count": pa.array(count),  # int64, no gaps
            "count_gaps": pa.array(count, mask=gaps),  # int64 with nulls
            "city": pa.array(city, type=pa.string()),
            "level": pa.array(level),
            "code": pa.array(rng.integers(0, 6 + 2 * unseen, rows)),  # int category
            "member": pa.array(rng.random(rows) < 0.4),  # binary bool
            "plan": pa.array(plan, type=pa.string()),  # binary string with gaps
            "words": pa.array(words, type=pa.string()),
            "label": pa.array(rng.choice(["no", "yes"], rows)),
            "amount": pa.array(x * 3 + 1),
        }
    )


INPUTS = [
    {"name": "x", "number": {"missing": "median"}},
    {"name": "x32", "number": {"normalization": "minmax", "missing": "zero"}},
    {"name": "count"},
    {"name": "count_gaps", "number": {"missing": "mean"}},
    {"name": "city", "type": "category"},
    {"name": "level", "type": "category", "category": {"missing": "most_frequent"}},
    {"name": "code", "type": "category", "category": {"min_frequency": 60}},  # rare → 0
    {"name": "member", "type": "binary"},
    {"name": "plan", "type": "binary", "category": {"missing": "most_frequent"}},
    {"name": "words", "type": "text", "text": {"max_length": 4}},
]


@pytest.fixture(scope="module", params=["label", "amount"])
def fitted(request) -> tuple[Preprocessor, pa.RecordBatch]:
    """A preprocessor fitted on one table (classification or regression target), and a
    batch of new rows to encode."""
    target = request.param
    other = "amount" if target == "label" else "label"
    train = raw_table(ROWS, 0, unseen=False).drop_columns([other]).to_pandas()
    features = FeaturesConfig.model_validate({"target": target, "inputs": INPUTS})
    pre = Preprocessor.fit(train, infer_features(train, features))
    batch = raw_table(ROWS, 1, unseen=True).drop_columns([other]).to_batches()[0]
    return pre, batch


def assert_identical(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        assert torch.equal(got[key], want[key]), key


def test_arrow_encoding_is_the_pandas_encoding_bit_for_bit(fitted):
    pre, batch = fitted
    want = pre.transform(batch.to_pandas())
    assert {"numeric", "categorical", "text:words", "target"} <= set(want)
    assert_identical(pre.transform_arrow(batch), want)
    for enc in [*pre.encoders, pre.target]:  # each column took the Arrow route
        assert enc.transform_arrow(batch.column(enc.name)) is not None, enc.name
    codes = pre.transform_arrow(batch)["categorical"]
    assert (codes == 0).any(), "the batch should hold unseen / rare categories"


def test_dictionary_columns_and_selected_rows_encode_the_same(fitted):
    pre, batch = fitted
    # Parquet's dictionary pages arrive as dictionary arrays (pandas: categoricals)
    names = ["city", "code", "member", "plan"]
    columns = [pc.dictionary_encode(c) if n in names else c
               for n, c in zip(batch.schema.names, batch.columns, strict=True)]  # fmt: skip
    dictionary = pa.RecordBatch.from_arrays(columns, names=batch.schema.names)
    want = pre.transform(batch.to_pandas())
    assert_identical(pre.transform_arrow(dictionary), want)
    assert_identical(pre.transform(dictionary.to_pandas()), want)
    keep = np.random.default_rng(2).random(batch.num_rows) < 0.7  # as a worker selects
    assert_identical(
        pre.transform_arrow(batch.filter(keep)),
        pre.transform(batch.to_pandas()[keep].reset_index(drop=True)),
    )


def test_a_block_whose_column_is_all_missing_encodes_the_same(fitted):
    pre, batch = fitted
    # a row group's dictionary of a column holding nulls only is empty
    nulls = pa.DictionaryArray.from_arrays(
        pa.nulls(batch.num_rows, pa.int32()), pa.array([], pa.string())
    )
    for name in ("city", "plan"):
        i = batch.schema.get_field_index(name)
        empty = batch.set_column(i, name, nulls)
        assert_identical(pre.transform_arrow(empty), pre.transform(empty.to_pandas()))


def test_a_bad_target_value_raises_the_pandas_error(fitted):
    pre, batch = fitted
    name = pre.target.name
    values = batch.column(name).to_pylist()
    values[3] = None
    broken = batch.set_column(batch.schema.get_field_index(name), name, pa.array(values))
    with pytest.raises(DataError, match=f"target column '{name}' is missing in 1 row.*row 3"):
        pre.transform_arrow(broken)
