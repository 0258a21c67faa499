"""One encoder per feature kind: fit on a training column, transform to numpy arrays.

Every encoder has the same small contract:

    Encoder.fit(col: pd.Series, config, ...) -> Encoder
    encoder.transform(col: pd.Series) -> np.ndarray      # vectorised over the column
    encoder.encode_list(values: list) -> np.ndarray      # Python values (API records):
                                                         # transform's array, bit for bit
    encoder.transform_arrow(arr: pa.Array) -> np.ndarray | None   # a streamed Arrow
                                # column: transform's array, bit for bit (None: use pandas)
    encoder.state() -> dict                              # JSON-able
    Encoder.from_state(d: dict) -> Encoder               # transform reproduced exactly

`encode_list` skips pandas and Arrow, whose tens of µs per call dominate a request of a
few records: numbers, text and images share `transform`'s arithmetic, tokenizer call and
normalisation; categories look keys (`scalar_key`, as `category_keys` makes them) up in
a dict instead of Arrow's `index_in`. `transform_arrow` skips pandas the other way, for
the blocks streaming DataLoader workers encode (`foundry.data.stream`): numbers straight
from the Arrow buffer, categories by `index_in` over strings or over a column's distinct
values (`arrow_lookup`). Images have none (they do not stream from a table).
`foundry.data.preprocess.Preprocessor` orchestrates them.
"""
