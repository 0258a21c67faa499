"""One encoder per feature kind: fit on a training column, transform to numpy arrays.

Every encoder has the same small contract:

    Encoder.fit(col: pd.Series, config, ...) -> Encoder
    encoder.transform(col: pd.Series) -> np.ndarray      # vectorised over the column
    encoder.state() -> dict                              # JSON-able
    Encoder.from_state(d: dict) -> Encoder               # transform reproduced exactly

`foundry.data.preprocess.Preprocessor` orchestrates them.
"""
