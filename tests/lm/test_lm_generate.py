"""The generation engine: decoding rules on controlled logits, endings, stop strings,
UTF-8-safe streaming, batching with left padding, seeds, the cache-free path."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from lm_helpers import END, EOS, ByteTokenizer, ScriptedStep, tiny_gpt

from foundry.config.schema import GenerationConfig
from foundry.errors import ModelError
from foundry.lm.generate import GenerationEngine, pick_next_tokens

GREEDY = GenerationConfig(temperature=0, max_tokens=32)


def engine(scripts, **kwargs) -> GenerationEngine:
    return GenerationEngine(ScriptedStep(scripts), ByteTokenizer(), context_length=64, **kwargs)


def ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def params(**kwargs) -> GenerationConfig:
    return GenerationConfig(**{"temperature": 0, "max_tokens": 32, **kwargs})


# ------------------------------------------------------------------- sampling rules


def _gens(n=1, seed=0):
    return [torch.Generator().manual_seed(seed) for _ in range(n)]


def _draw(logits, p, n=3000, seen=None):
    """How often each token is picked in n draws (one batch of n identical rows)."""
    rows = logits.expand(n, -1)
    seen = seen.expand(n, -1) if seen is not None else None
    gens = [torch.Generator().manual_seed(i) for i in range(n)]
    return Counter(pick_next_tokens(rows, p, gens, seen).tolist())


def test_greedy_takes_the_argmax():
    logits = torch.tensor([[0.1, 2.0, 1.9], [5.0, 0.0, 0.0]])
    assert pick_next_tokens(logits, params(), _gens(2)).tolist() == [1, 0]


def test_temperature_sharpens_and_flattens():
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.1]]))
    plain = _draw(logits, GenerationConfig(temperature=1.0))
    assert abs(plain[0] / 3000 - 0.6) < 0.04 and abs(plain[2] / 3000 - 0.1) < 0.03
    cold = _draw(logits, GenerationConfig(temperature=0.25))  # p ∝ p^4: 0.6 → ~0.94
    assert cold[0] / 3000 > 0.9
    hot = _draw(logits, GenerationConfig(temperature=10.0))  # nearly uniform
    assert all(abs(hot[t] / 3000 - 1 / 3) < 0.05 for t in range(3))


def test_top_k_keeps_only_the_k_most_likely():
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1]]))
    counts = _draw(logits, GenerationConfig(top_k=2))
    assert set(counts) == {0, 1}
    assert abs(counts[0] / 3000 - 0.4 / 0.7) < 0.04  # renormalised over the two


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert set(_draw(logits, GenerationConfig(top_p=0.8))) == {0, 1}  # 0.5 + 0.3 reaches 0.8
    assert set(_draw(logits, GenerationConfig(top_p=0.81))) == {0, 1, 2}
    assert set(_draw(logits, GenerationConfig(top_p=0.1))) == {0}  # never empty


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, 1.5, -1.0, -1.2]])
    seen = torch.tensor([[True, False, True, False]])
    p = GenerationConfig(temperature=0, repetition_penalty=2.0)
    # token 0: 2.0 → 1.0 (below token 1's 1.5); token 2: -1.0 → -2.0
    assert pick_next_tokens(logits, p, _gens(), seen).item() == 1
    sampled = GenerationConfig(temperature=1.0, repetition_penalty=2.0)
    counts = _draw(logits, sampled, n=4000, seen=seen)
    expected = torch.softmax(torch.tensor([1.0, 1.5, -2.0, -1.2]), 0)
    for t in range(4):
        assert abs(counts[t] / 4000 - expected[t].item()) < 0.03


def test_same_seed_same_draws_and_rows_are_independent():
    logits = torch.zeros(3, 50)
    p = GenerationConfig(temperature=1.0)
    a = [pick_next_tokens(logits, p, g).tolist() for g in [_gens(3, 7)] for _ in range(5)]
    gens = _gens(3, 7)
    b = [pick_next_tokens(logits, p, gens).tolist() for _ in range(5)]
    assert a == b
    assert [row[0] for row in b] == [row[1] for row in b]  # same seed per row


# ------------------------------------------------------------------------- endings


def test_eos_and_end_of_turn_stop_and_are_not_text():
    [c] = engine([ids("hi") + [EOS]]).generate(["x"], params())
    assert (c.text, c.finish_reason, c.completion_tokens, c.prompt_tokens) == ("hi", "stop", 3, 1)
    [c] = engine([ids("ok") + [END]]).generate(["x"], params())
    assert (c.text, c.finish_reason) == ("ok", "stop")


def test_max_tokens_and_context_end_with_length():
    [c] = engine([ids("abcdefgh")]).generate(["x"], params(max_tokens=3))
    assert (c.text, c.finish_reason, c.completion_tokens) == ("abc", "length", 3)
    short = GenerationEngine(ScriptedStep([ids("abcdefgh")]), ByteTokenizer(), context_length=6)
    [c] = short.generate(["xyz"], params(max_tokens=30))
    assert (c.text, c.finish_reason) == ("abc", "length")  # 3 prompt + 3 new = context


def test_a_prompt_that_fills_the_context_is_refused():
    short = GenerationEngine(ScriptedStep([ids("a")]), ByteTokenizer(), context_length=4)
    with pytest.raises(ModelError, match="context is 4 tokens"):
        short.generate(["abcd"], params())


def test_stop_strings_end_generation_and_are_not_returned():
    # "END" arrives one byte per token: the stop spans three tokens
    eng = engine([ids("hello END world")])
    [c] = eng.generate(["x"], params(stop=["END"]))
    assert (c.text, c.finish_reason) == ("hello ", "stop")
    assert c.completion_tokens == len("hello END")
    # the earliest of several stop strings wins
    [c] = engine([ids("ab--cd##")]).generate(["x"], params(stop=["##", "--"]))
    assert c.text == "ab"


class PieceTokenizer(ByteTokenizer):
    """Ids 0..255 are bytes; 300+ are multi-character pieces."""

    PIECES = ["he", "llo", " S", "TO", "P!", " more"]
    vocab_size = 300 + len(PIECES)

    def decode(self, ids):
        return "".join(self.PIECES[i - 300] if i >= 300 else chr(i) for i in ids if i != EOS)


def test_stop_string_split_across_multi_character_tokens():
    step = ScriptedStep([[300, 301, 302, 303, 304, 305]], vocab_size=PieceTokenizer.vocab_size)
    eng = GenerationEngine(step, PieceTokenizer(), context_length=64)
    [c] = eng.generate(["p"], params(stop=["STOP"]))
    # "STOP" = " S" + "TO" + "P!": found once "P!" arrives, cut before it
    assert (c.text, c.finish_reason, c.completion_tokens) == ("hello ", "stop", 5)
    step = ScriptedStep([[300, 301, 302, 303, 304, 305]], vocab_size=PieceTokenizer.vocab_size)
    eng = GenerationEngine(step, PieceTokenizer(), context_length=64)
    deltas = list(eng.stream("p", params(stop=["STOP"])))
    assert [d.text for d in deltas] == ["he", "llo", " ", "", ""]  # "S", "TO" held back
    assert "".join(d.text for d in deltas) == "hello "


# ------------------------------------------------------------------------ streaming


def _stream(eng, prompt, p):
    deltas = list(eng.stream(prompt, p))
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert deltas[-1].finish_reason is not None
    return deltas


def test_stream_never_splits_a_multibyte_character():
    text = "añ€😀z"  # 1-, 2-, 3- and 4-byte characters
    deltas = _stream(engine([ids(text)]), "p", params())
    assert "".join(d.text for d in deltas) == text
    assert all("\ufffd" not in d.text for d in deltas)
    assert [d.completion_tokens for d in deltas] == list(range(1, len(ids(text)) + 2))
    # 😀 is 4 bytes: three deltas before it completes carry no text
    assert sum(1 for d in deltas[:-1] if d.text == "") == 1 + 2 + 3


def test_stream_holds_back_what_may_be_a_stop_string():
    deltas = _stream(engine([ids("aa<x<st<stop>rest")]), "p", params(stop=["<stop>"]))
    texts = [d.text for d in deltas]
    assert "".join(texts) == "aa<x<st"
    # a "<" is only sent once the next byte shows it does not start "<stop>"
    emitted = ""
    for d in deltas:
        emitted += d.text
        assert not emitted.endswith("<") or d.finish_reason is not None
    assert deltas[-1].finish_reason == "stop"


def test_stream_and_generate_agree():
    for script, p in [
        (ids("one two three") + [EOS], params()),
        (ids("one two three"), params(max_tokens=5)),
        (ids("one, two; three"), params(stop=[";"])),
    ]:
        [c] = engine([script]).generate(["p"], p)
        deltas = _stream(engine([script]), "p", p)
        assert "".join(d.text for d in deltas) == c.text
        assert deltas[-1].finish_reason == c.finish_reason
        assert deltas[-1].completion_tokens == c.completion_tokens


def test_closing_a_stream_stops_generation():
    step = ScriptedStep([ids("abcdefghij")])
    stream = GenerationEngine(step, ByteTokenizer(), context_length=64).stream("p", params())
    assert next(stream).text == "a"
    stream.close()
    assert len(step.calls) == 1


# -------------------------------------------------------------------------- batching


def test_batch_is_left_padded_with_mask_and_positions():
    step = ScriptedStep([ids("ab"), ids("cd")])
    eng = GenerationEngine(step, ByteTokenizer(), context_length=64)
    out = eng.generate(["long prompt", "hi"], params(max_tokens=2))
    assert [c.text for c in out] == ["ab", "cd"]
    first = step.calls[0]
    assert first["input_ids"].shape == (2, 11)
    assert first["attention_mask"][1].tolist() == [0] * 9 + [1] * 2
    assert first["positions"][1, 9:].tolist() == [0, 1]  # the short prompt starts at 0
    second = step.calls[1]
    assert second["input_ids"].shape == (2, 1)  # with the cache: one new token per row
    assert second["positions"][:, 0].tolist() == [11, 2]
    assert second["attention_mask"].shape == (2, 12)


def test_prompts_of_one_length_need_no_mask():
    step = ScriptedStep([ids("ab")])
    GenerationEngine(step, ByteTokenizer(), context_length=64).generate(["xy", "zw"], params())
    assert all(call["attention_mask"] is None for call in step.calls)
    assert step.calls[0]["positions"].tolist() == [[0, 1], [0, 1]]
    assert step.calls[1]["positions"].tolist() == [[2], [2]]


def test_rows_finish_independently():
    out = engine([ids("a") + [EOS], ids("bbbb")]).generate(["p", "q"], params(max_tokens=3))
    assert [(c.text, c.finish_reason) for c in out] == [("a", "stop"), ("bbb", "length")]


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_left_padded_batch_generates_what_each_prompt_does_alone(positions):
    model = tiny_gpt(positions, vocab_size=259)
    eng = GenerationEngine(model.step, ByteTokenizer(), context_length=48)
    prompts = ["a fairly long prompt", "hi", "mid size"]
    p = params(max_tokens=10)
    batched = eng.generate(prompts, p)
    alone = [eng.generate([prompt], p)[0] for prompt in prompts]
    assert batched == alone
    sampled = GenerationConfig(max_tokens=10, temperature=1.0, top_k=50, seed=3)
    assert eng.generate(prompts, sampled) == [eng.generate([x], sampled)[0] for x in prompts]


def test_seed_gives_the_same_text_batched_streamed_or_alone():
    model = tiny_gpt(vocab_size=259, seed=4)
    eng = GenerationEngine(model.step, ByteTokenizer(), context_length=48)
    p = GenerationConfig(max_tokens=12, temperature=1.2, top_p=0.95, seed=11)
    [alone] = eng.generate(["seed me"], p)
    assert eng.generate(["seed me"], p) == [alone]
    assert eng.generate(["other", "seed me"], p)[1] == alone
    assert "".join(d.text for d in eng.stream("seed me", p)) == alone.text
    others = {eng.generate(["seed me"], p.model_copy(update={"seed": s}))[0].text for s in range(5)}
    assert len(others) > 1  # the seed matters


def test_without_cache_the_tokens_are_the_same():
    model = tiny_gpt("learned", vocab_size=259, seed=5)
    cached = GenerationEngine(model.step, ByteTokenizer(), context_length=48)
    full = GenerationEngine(model.step, ByteTokenizer(), context_length=48, use_cache=False)
    p = params(max_tokens=15, repetition_penalty=1.3)
    assert cached.generate(["abc", "a longer one"], p) == full.generate(["abc", "a longer one"], p)


def test_generate_ids_needs_no_tokenizer():
    eng = GenerationEngine(
        ScriptedStep([[7, 8, 9]], after=1), context_length=16, pad_id=0, stop_ids=[1]
    )
    assert eng.generate_ids([[3, 4], [5]], params()) == [[7, 8, 9], [7, 8, 9]]


def test_bytewise_decoding_resumes_and_equals_the_whole_decode():
    """foundry's byte-level BPE is decoded from the last whole character (TextTracker):
    at every token the text must be the whole sequence's decode, including broken UTF-8
    (lone continuation bytes, cut multi-byte characters) and merged multi-byte tokens."""
    import random

    from foundry.lm.generate import TextTracker
    from foundry.lm.tokenizer import BPETokenizer

    corpus = ["añ€😀z naïve café 日本語 ok"] * 20 + ["the quick brown fox"] * 20
    tok = BPETokenizer.train(corpus, vocab_size=400, min_frequency=1)
    assert tok.decodes_bytewise
    rng = random.Random(0)
    for trial in range(40):
        tracker, tokens = TextTracker(tok, ["fox"] if trial % 2 else []), []
        for _ in range(60):
            tokens.append(rng.randrange(tok.vocab_size))
            if tracker.update(tokens):
                break
            assert tracker.final() == tok.decode(tokens)
