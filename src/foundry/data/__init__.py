"""Data: read a table, infer feature types, split, fingerprint, encode to tensors.

df = read_table(path)
resolved = infer_features(df, config.features)
train, val, test = split_frame(df, config.data.split, stratify_on=...)
pre = Preprocessor.fit(train, resolved, base_dir)
encoded = pre.transform(pre.prepare(train))      # dict[str, Tensor], see data/schema.py
"""

from foundry.data.augment import augment_images
from foundry.data.fingerprint import fingerprint
from foundry.data.infer import ResolvedFeatures, infer_features, infer_type
from foundry.data.load import read_table
from foundry.data.preprocess import Preprocessor
from foundry.data.schema import InputSchema, TaskInfo
from foundry.data.split import split_frame

__all__ = [
    "InputSchema",
    "Preprocessor",
    "ResolvedFeatures",
    "TaskInfo",
    "augment_images",
    "fingerprint",
    "infer_features",
    "infer_type",
    "read_table",
    "split_frame",
]
