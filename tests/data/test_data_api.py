from __future__ import annotations

import foundry.data


def test_public_names() -> None:
    assert sorted(foundry.data.__all__) == sorted(
        [
            "read_table",
            "infer_type",
            "infer_features",
            "ResolvedFeatures",
            "split_frame",
            "fingerprint",
            "Preprocessor",
            "augment_images",
            "InputSchema",
            "TaskInfo",
        ]
    )
    for name in foundry.data.__all__:
        assert getattr(foundry.data, name) is not None
