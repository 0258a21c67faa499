"""One encoder per feature kind: fit on a training column, transform to numpy arrays.

Every encoder has the same small contract:

    Encoder.fit(col: pd.Series, config, ...) -> Encoder
    encoder.transform(col: pd.Series) -> np.ndarray      # vectorised over the column
    encoder.encode_list(values: list) -> np.ndarray      # Python values (API records):
                                                         # transform's array, bit for bit
    encoder.state() -> dict                              # JSON-able
    Encoder.from_state(d: dict) -> Encoder               # transform reproduced exactly

`encode_list` skips pandas and Arrow, whose tens of µs per call dominate a request of a
few records: numbers, text and images share `transform`'s arithmetic, tokenizer call and
normalisation; categories look keys (`scalar_key`, as `category_keys` makes them) up in
a dict instead of Arrow's `index_in`. `foundry.data.preprocess.Preprocessor` orchestrates
them.
"""
