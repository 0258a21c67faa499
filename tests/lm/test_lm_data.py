"""LM data: reading corpora and instructions, chat templates, token rows and loss masks,
and errors that name the file, line and field."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from lm_helpers import EOS, PAD, ByteTokenizer

from foundry.config import load_config
from foundry.config.schema import LMConfig
from foundry.errors import ConfigError, DataError
from foundry.lm.data import (
    IGNORE,
    LMExamples,
    corpus_blocks,
    encode_examples,
    instruction_rows,
    load_lm_data,
    read_lm_file,
    render_chat,
    tokenizer_texts,
)

LM = LMConfig()
TOK = ByteTokenizer()


def write_jsonl(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


# ---------------------------------------------------------------------- chat template


def test_default_chat_template_layout():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert render_chat(messages) == (
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi<|end|>\n<|assistant|>\n"
    )
    assert render_chat(messages, add_generation_prompt=False).endswith("Hi<|end|>\n")


def test_custom_template_and_variables():
    template = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}"
    text = render_chat([{"role": "user", "content": "x"}], template, bos_token="<s>")
    assert text == "<s>[user] x\n"


def test_template_errors_name_the_config_key():
    with pytest.raises(ConfigError, match="lm.chat_template"):
        render_chat([{"role": "user", "content": "x"}], "{% for %}")
    refusing = "{{ raise_exception('only user turns') }}"
    with pytest.raises(ConfigError, match="only user turns"):
        render_chat([{"role": "user", "content": "x"}], refusing)


# --------------------------------------------------------------------------- reading


def test_txt_documents_are_separated_by_blank_lines(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("first doc\nstill first\n\n  \nsecond doc\n\n\n\nthird\n")
    examples = read_lm_file(path, LM)
    assert examples.kind == "corpus"
    assert examples.items == ["first doc\nstill first", "second doc", "third"]


def test_tables_with_a_text_column_are_corpora(tmp_path):
    df = pd.DataFrame({"body": ["one", None, "two", "  "], "id": [1, 2, 3, 4]})
    df.to_csv(tmp_path / "c.csv", index=False)
    df.to_parquet(tmp_path / "c.parquet")
    write_jsonl(tmp_path / "c.jsonl", [{"body": "one"}, {"body": "two"}])
    lm = LMConfig(text_column="body")
    for name in ("c.csv", "c.parquet", "c.jsonl"):
        examples = read_lm_file(tmp_path / name, lm)
        assert (examples.kind, examples.items) == ("corpus", ["one", "two"]), name


def test_prompt_completion_and_messages_are_conversations(tmp_path):
    pc = read_lm_file(write_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Q", "completion": "A"}]), LM)
    assert pc.kind == "instructions"
    assert pc.items == [[{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]]
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    msgs = read_lm_file(write_jsonl(tmp_path / "m.jsonl", [{"messages": chat}]), LM)
    assert (msgs.kind, msgs.items) == ("instructions", [chat])


def test_missing_column_names_every_option(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"body": "x"}])
    with pytest.raises(DataError, match=r"no text column 'text' \(lm.text_column\).*found: body"):
        read_lm_file(path, LM)


def test_empty_files_and_empty_corpora(tmp_path):
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_lm_file(tmp_path / "e.txt", LM)
    (tmp_path / "blank.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="no text"):
        read_lm_file(tmp_path / "blank.txt", LM)
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no JSON records"):
        read_lm_file(tmp_path / "blank.jsonl", LM)
    with pytest.raises(DataError, match="not found"):
        read_lm_file(tmp_path / "missing.txt", LM)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"messages": "hi"}, r"line 2: 'messages' must be a non-empty list"),
        ({"messages": [{"role": "user"}]}, r"line 2: messages\[0\].content must be a string"),
        ({"messages": [{"content": "x"}]}, r"line 2: messages\[0\].role must be a non-empty"),
        ({"messages": ["x"]}, r"line 2: messages\[0\] must be an object"),
        ({"messages": [{"role": "user", "content": "x"}]}, "line 2: .*no message with role"),
    ],
)
def test_bad_messages_name_file_line_and_field(tmp_path, record, message):
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path = write_jsonl(tmp_path / "chat.jsonl", [good, record])
    with pytest.raises(DataError, match=message) as info:
        read_lm_file(path, LM)
    assert "chat.jsonl" in str(info.value)


def test_bad_values_name_the_line(tmp_path):
    path = write_jsonl(
        tmp_path / "pc.jsonl",
        [{"prompt": "a", "completion": "b"}, {"prompt": "a", "completion": None}],
    )
    with pytest.raises(DataError, match="line 2: 'completion' is missing"):
        read_lm_file(path, LM)
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": 5}])
    with pytest.raises(DataError, match="line 1: 'text' must be text, got int"):
        read_lm_file(path, LM)
    (tmp_path / "broken.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match="broken.jsonl, line 2: not valid JSON"):
        read_lm_file(tmp_path / "broken.jsonl", LM)


def test_split_by_document_is_seeded_and_explicit_files_win(tmp_path):
    (tmp_path / "c.txt").write_text("\n\n".join(f"doc {i}" for i in range(50)))
    loaded = load_config({"data": {"path": str(tmp_path / "c.txt")}, "model": {"type": "gpt"}})
    a, b = load_lm_data(loaded), load_lm_data(loaded)
    assert (len(a.train), len(a.val), len(a.test)) == (40, 5, 5)
    assert a.test.items == b.test.items
    assert sorted(a.train.items + a.val.items + a.test.items) == sorted(
        f"doc {i}" for i in range(50)
    )

    (tmp_path / "v.txt").write_text("val one\n\nval two")
    loaded = load_config(
        {
            "data": {"path": str(tmp_path / "c.txt"), "val_path": str(tmp_path / "v.txt")},
            "model": {"type": "gpt"},
        }
    )
    data = load_lm_data(loaded)
    assert data.val.items == ["val one", "val two"] and len(data.train) == 45


def test_too_few_documents_to_split(tmp_path):
    (tmp_path / "one.txt").write_text("a single document with no blank line")
    loaded = load_config({"data": {"path": str(tmp_path / "one.txt")}, "model": {"type": "gpt"}})
    with pytest.raises(DataError, match="1 documents cannot be split"):
        load_lm_data(loaded)


# ------------------------------------------------------------------------- token rows


def test_corpus_blocks_predict_every_token_once():
    docs = ["abc", "defgh"]  # stream: a b c EOS d e f g h EOS (10 tokens)
    data = corpus_blocks(docs, TOK, block_size=4)
    stream = [*b"abc", EOS, *b"defgh", EOS]
    assert data.input_ids.shape == (3, 4)
    assert data.input_ids[0].tolist() == stream[0:4]
    assert data.labels[0].tolist() == stream[1:5]
    assert data.input_ids[1].tolist() == stream[4:8]
    # the last block is padded; padding has no label
    assert data.input_ids[2].tolist() == [stream[8], stream[9], PAD, PAD]
    assert data.labels[2].tolist() == [stream[9], IGNORE, IGNORE, IGNORE]
    targets = data.labels[data.labels != IGNORE].tolist()
    assert targets == stream[1:]


def test_instruction_loss_covers_only_the_completion():
    conv = [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "Yes."}]
    data = instruction_rows([conv], TOK, block_size=64)
    ids, labels = data.input_ids[0], data.labels[0]
    # the row: generation prompt, then the reply as the template renders it, then EOS
    prompt = TOK.encode(render_chat([conv[0]], add_generation_prompt=True))
    reply = TOK.encode("Yes.<|end|>\n")
    full = prompt + reply + [EOS]
    assert ids.tolist() == full[:-1]
    # targets: exactly the reply and EOS (label t is the token after input t)
    assert (labels[: len(prompt) - 1] == IGNORE).all()
    assert labels[len(prompt) - 1 :].tolist() == reply + [EOS]


def test_multi_turn_chat_masks_every_non_assistant_part():
    conv = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "U1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "U2"},
        {"role": "assistant", "content": "A2"},
    ]
    data = instruction_rows([conv], TOK, block_size=256)
    targets = TOK.decode([t for t in data.labels[0].tolist() if t != IGNORE])
    assert targets == "A1<|end|>\nA2<|end|>\n"  # ByteTokenizer has no special ids: plain text
    assert data.labels[0][data.labels[0] != IGNORE][-1].item() == EOS


def test_loss_on_all_and_padding_rows():
    convs = [
        [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
        [{"role": "user", "content": "longer"}, {"role": "assistant", "content": "reply"}],
    ]
    examples = LMExamples("instructions", convs)
    everything = encode_examples(examples, TOK, block_size=128, loss_on="all")
    completion = encode_examples(examples, TOK, block_size=128, loss_on="auto")
    assert everything.n_targets > completion.n_targets
    short = everything.input_ids[0]
    real = len(TOK.encode(render_chat(convs[0], add_generation_prompt=False))) + 1 - 1
    assert (short[real:] == PAD).all() and (everything.labels[0][real:] == IGNORE).all()


def test_truncation_drops_conversations_with_nothing_left_to_learn():
    conv = [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y"}]
    assert len(instruction_rows([conv], TOK, block_size=16)) == 0
    assert len(instruction_rows([conv], TOK, block_size=16, completion_only=False)) == 1


def test_loss_on_completion_needs_instructions():
    with pytest.raises(ConfigError, match="lm.loss_on is 'completion'"):
        encode_examples(LMExamples("corpus", ["x"]), TOK, block_size=8, loss_on="completion")


def test_non_incremental_template_is_refused():
    # renders the last message first: earlier text is not a prefix of later text
    template = "{% for m in messages|reverse %}{{ m.content }}|{% endfor %}"
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    with pytest.raises(ConfigError, match="renders a conversation differently"):
        instruction_rows([conv], TOK, block_size=64, chat_template=template)


def test_tokenizer_texts_render_conversations():
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    texts = list(tokenizer_texts(LMExamples("instructions", [conv])))
    assert texts == ["<|user|>\nq<|end|>\n<|assistant|>\na<|end|>\n"]
    assert list(tokenizer_texts(LMExamples("corpus", ["doc"]))) == ["doc"]
    assert torch.equal(corpus_blocks([], TOK, 4).input_ids, torch.zeros(0, 4, dtype=torch.int64))


def test_pii_in_documents_and_messages_is_masked_before_tokenizing():
    from foundry.config.schema import PIIConfig
    from foundry.lm.data import scrub_examples

    corpus = LMExamples("corpus", ["write to ada@example.com today", "nothing here"])
    chats = LMExamples(
        "instructions",
        [[{"role": "user", "content": "my card is 4111 1111 1111 1111"},
          {"role": "assistant", "content": "noted, call +44 20 7946 0958"}]],
    )
    out, others, report = scrub_examples(corpus, {"test_path": corpus}, PIIConfig())
    assert out.items == ["write to [EMAIL] today", "nothing here"]
    assert others["test_path"].items == out.items
    assert report["findings"]["text"]["email"] == 2
    assert "ada@example.com" not in str(report)
    out, _, report = scrub_examples(chats, {}, PIIConfig())
    assert out.items[0][0] == {"role": "user", "content": "my card is [CREDIT_CARD]"}
    assert out.items[0][1]["content"] == "noted, call [PHONE]"
    assert out.items[0][1]["role"] == "assistant"


def test_a_long_corpus_document_is_scanned_whole_not_replaced():
    """`data.pii.max_value_chars` guards serving workers; corpus documents are not served,
    so a book-length one is scanned (linear time) unless the config sets a cap itself."""
    from foundry.config.schema import PIIConfig
    from foundry.lm.data import scrub_examples

    book = LMExamples("corpus", ["word " * 30_000 + "mail ana@example.com", "short"])
    out, _, report = scrub_examples(book, {}, PIIConfig())
    assert out.items[0].endswith("word mail [EMAIL]") and report["findings"] == {
        "text": {"email": 1}
    }
    out, _, report = scrub_examples(book, {}, PIIConfig(max_value_chars=100_000))
    assert out.items[0] == "[TOO_LONG]" and report["findings"] == {"text": {"too_long": 1}}
