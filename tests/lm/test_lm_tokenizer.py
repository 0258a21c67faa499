"""The byte-level BPE tokenizer we train for our GPT."""

from __future__ import annotations

import pytest

from foundry.errors import DataError, ModelError
from foundry.lm.tokenizer import SPECIAL_TOKENS, BPETokenizer, TokenizerLike

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Über café — naïve résumé, 東京 and 😀 emoji.",
    "the the the quick quick brown brown fox",
] * 20


@pytest.fixture(scope="module")
def tok() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=320)


def test_is_a_tokenizer_like_with_special_ids(tok):
    assert isinstance(tok, TokenizerLike)
    assert tok.eos_id == 0 and tok.pad_id == 1
    assert tok.stop_ids == (0, SPECIAL_TOKENS.index("<|end|>"))
    assert tok.vocab_size <= 320


def test_round_trip_is_exact_for_any_text(tok):
    for text in [*CORPUS[:3], "never seen: ζ ∂ 🚀\n\ttabs  and  spaces ", "", " leading"]:
        assert tok.decode(tok.encode(text)) == text


def test_learned_merges_make_common_words_single_tokens(tok):
    assert len(tok.encode("the quick brown fox")) < len("the quick brown fox") / 2


def test_special_token_strings_are_one_id(tok):
    ids = tok.encode("<|user|>\nhi<|end|>\n<|endoftext|>")
    assert ids[0] == tok._tok.token_to_id("<|user|>")
    assert tok.eos_id in ids and tok.stop_ids[1] in ids


def test_json_round_trip(tok):
    again = BPETokenizer.from_json(tok.to_json())
    assert again.encode(CORPUS[1]) == tok.encode(CORPUS[1])
    assert again.info() == tok.info()


def test_training_is_deterministic():
    a = BPETokenizer.train(CORPUS, vocab_size=320).to_json()
    assert BPETokenizer.train(CORPUS, vocab_size=320).to_json() == a


def test_errors_name_the_problem():
    with pytest.raises(DataError, match="vocab_size is 100"):
        BPETokenizer.train(CORPUS, vocab_size=100)
    with pytest.raises(ModelError, match="tokenizer.json"):
        BPETokenizer.from_json("{not json")
