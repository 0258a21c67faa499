from __future__ import annotations

import pandas as pd
import pytest
import torch

from foundry.config.schema import FeatureConfig
from foundry.data import Preprocessor, ResolvedFeatures

TEXTS = ["The cat sat on the mat", "the dog ate the bone", "a cat and a dog", None]


def fit(**text) -> Preprocessor:
    df = pd.DataFrame({"t": TEXTS, "y": [0, 1, 0, 1]})
    f = FeatureConfig(name="t", type="text", text=text)
    return Preprocessor.fit(df, ResolvedFeatures(inputs=[f], target="y", target_type="binary"))


def encode(pre: Preprocessor, texts: list[str | None]) -> torch.Tensor:
    return pre.transform(pd.DataFrame({"t": texts}), with_target=False)["text:t"]


def test_word_tokenizer_pads_truncates_and_marks_unknown() -> None:
    pre = fit(tokenizer="word", max_length=4)
    ids = encode(pre, ["THE cat zebra", "the dog ate the bone", None])
    assert ids.dtype == torch.int64 and ids.shape == (3, 4)
    vocab = pre.encoders[0].tokenizer.get_vocab()
    assert vocab["[PAD]"] == 0 and vocab["[UNK]"] == 1
    assert ids[0].tolist() == [vocab["the"], vocab["cat"], 1, 0]  # lowercased; zebra unknown
    assert ids[1].tolist() == [vocab["the"], vocab["dog"], vocab["ate"], vocab["the"]]
    assert ids[2].tolist() == [0, 0, 0, 0]  # missing text is all padding
    text = pre.schema.text[0]
    assert (text.name, text.max_length) == ("t", 4) and text.vocab_size == len(vocab)


def test_word_tokenizer_case_and_min_frequency() -> None:
    pre = fit(tokenizer="word", lowercase=False, min_frequency=2, max_length=3)
    vocab = pre.encoders[0].tokenizer.get_vocab()
    assert "the" in vocab and "The" not in vocab and "mat" not in vocab
    assert encode(pre, ["The mat"])[0].tolist() == [1, 1, 0]


@pytest.mark.parametrize("max_length", [3, 12])
def test_bpe_tokenizer(max_length: int) -> None:
    pre = fit(tokenizer="bpe", vocab_size=60, max_length=max_length)
    ids = encode(pre, ["the cat", "a dog ate the mat and the bone " * 3])
    assert ids.shape == (2, max_length)
    assert (ids[0] > 1).sum() >= 2  # known subwords
    assert (ids[1] != 0).all()  # long text: truncated, no padding
    if max_length > 3:
        assert ids[0, -1] == 0  # short text: padded
    assert pre.schema.text[0].vocab_size <= 60
