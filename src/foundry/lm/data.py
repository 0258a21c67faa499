"""Language-model data: files → text examples → token rows with a loss mask.

Two kinds of data, told apart by what the file holds (`lm` section names the columns):

    corpus         a `.txt` file (documents separated by blank lines), or a CSV / JSONL /
                   Parquet file with a `lm.text_column`. Documents are joined with EOS
                   between them and cut into blocks of `block_size` tokens; every token
                   is a target.
    instructions   JSONL (or a table) with `lm.prompt_column` + `lm.completion_column`,
                   or chat `lm.messages_column` ([{role, content}, ...]). A prompt /
                   completion pair is the chat [{user: prompt}, {assistant: completion}].
                   Conversations are rendered with the chat template; one row per
                   conversation. With `loss_on` auto / completion only assistant messages
                   (and the final EOS) are targets.

The contract the training loop and helper code rely on (`TokenData`):

    input_ids  int64 [N, L]   row i is what the model reads
    labels     int64 [N, L]   labels[i, t] = the token that should follow input_ids[i, :t+1],
                              or IGNORE (-100) where there is no loss (prompt, padding)

so `cross_entropy(logits.view(-1, V), labels.view(-1), ignore_index=-100)` is the loss.
Rows are right-padded with `pad_id`: under causal attention padding at the end never
changes the logits of the real tokens before it, so no attention mask is needed.

    data = load_lm_data(loaded)                       # LMData: kind + train/val/test
    tok = BPETokenizer.train(tokenizer_texts(data.train, template), vocab_size)
    train = encode_examples(data.train, tok, block_size=256, loss_on="auto")
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import torch
from torch import Tensor

from foundry.config import LoadedConfig
from foundry.config.schema import LMConfig, SplitConfig
from foundry.errors import ConfigError, DataError
from foundry.lm.tokenizer import END_OF_TURN, TokenizerLike

__all__ = [
    "DEFAULT_CHAT_TEMPLATE",
    "IGNORE",
    "Conversation",
    "LMData",
    "LMExamples",
    "TokenData",
    "encode_examples",
    "load_lm_data",
    "read_lm_file",
    "render_chat",
    "tokenizer_texts",
]

IGNORE = -100
"""Label of positions without loss (PyTorch's `cross_entropy` default ignore_index)."""

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '" + END_OF_TURN + "\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
"""`<|user|>\\nHi<|end|>\\n<|assistant|>\\n`: role markers and `<|end|>` are special tokens
of our BPE tokenizer; generation stops at `<|end|>`."""

Conversation = list[dict[str, str]]
"""Chat messages: [{"role": "user", "content": "..."}, ...]."""


# ---------------------------------------------------------------------- chat template


def render_chat(
    messages: Sequence[dict[str, str]],
    template: str | None = None,
    *,
    add_generation_prompt: bool = True,
    **variables: Any,
) -> str:
    """Messages → text by a Jinja chat template (Hugging Face's convention: the template
    sees `messages` and `add_generation_prompt`, plus `variables` such as `bos_token`).

    `template=None` uses `DEFAULT_CHAT_TEMPLATE`. With `add_generation_prompt` the text
    ends where the assistant's reply starts. Templates run sandboxed (a template from a
    downloaded tokenizer cannot reach Python objects).
    """
    try:
        compiled = _compile(template or DEFAULT_CHAT_TEMPLATE)
        return compiled.render(
            messages=list(messages), add_generation_prompt=add_generation_prompt, **variables
        )
    except ConfigError:
        raise
    except Exception as exc:  # jinja2's TemplateError, or what the template raises
        raise ConfigError(f"lm.chat_template: cannot render the messages: {exc}") from exc


@lru_cache(maxsize=16)
def _compile(template: str) -> Any:
    from jinja2 import TemplateSyntaxError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:  # HF templates call this to refuse input
        raise ConfigError(f"lm.chat_template refused the messages: {message}")

    # Hugging Face renders with these settings; templates are written for them.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(template)
    except TemplateSyntaxError as exc:
        raise ConfigError(f"lm.chat_template is not a valid Jinja template: {exc}") from exc


# ------------------------------------------------------------------------ reading


@dataclass(frozen=True)
class LMExamples:
    """The text examples of one split: documents (corpus) or conversations."""

    kind: Literal["corpus", "instructions"]
    items: list[Any]
    """`str` documents for a corpus, `Conversation`s for instructions."""

    def __len__(self) -> int:
        return len(self.items)

    def take(self, positions: Sequence[int]) -> LMExamples:
        return LMExamples(self.kind, [self.items[i] for i in positions])


@dataclass(frozen=True)
class LMData:
    """What `load_lm_data` read: one kind, three splits (val / test may be empty)."""

    kind: Literal["corpus", "instructions"]
    train: LMExamples
    val: LMExamples
    test: LMExamples
    source: Path
    pii: dict[str, Any] | None = None
    """What `data.pii` found in the texts (None when scanning is off)."""

    @property
    def sizes(self) -> dict[str, int]:
        """Documents / conversations per split."""
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}

    def summary(self, path: object) -> str:
        """The run's data line: `data: PATH (corpus; documents train/val/test = a/b/c)`."""
        unit = "documents" if self.kind == "corpus" else "conversations"
        return (
            f"data: {path} ({self.kind}; {unit} train/val/test = "
            f"{len(self.train)}/{len(self.val)}/{len(self.test)})"
        )


def load_lm_data(loaded: LoadedConfig) -> LMData:
    """Read `data.path` (and `data.val_path` / `data.test_path`) as LM data and split it.

    Splits are by document / conversation: `data.split` fractions with its seed, or the
    explicit files (whose fractions fold back into train, as for tables).
    """
    cfg = loaded.config
    data, lm = cfg.data, cfg.lm
    path = loaded.resolve(data.path)
    assert path is not None
    examples = read_lm_file(path, lm, data.format, data.delimiter)
    explicit = {}
    for key in ("val_path", "test_path"):
        extra = loaded.resolve(getattr(data, key))
        if extra is not None:
            other = read_lm_file(extra, lm, data.format, data.delimiter)
            if other.kind != examples.kind:
                raise DataError(
                    f"data.{key} ({extra}) holds {other.kind} data but data.path holds "
                    f"{examples.kind}; both must be the same kind"
                )
            explicit[key] = other
    pii = None
    if data.pii.enabled:
        examples, explicit, pii = scrub_examples(examples, explicit, data.pii)
    split = data.split
    fractions = {
        "train": split.train
        + (split.val if "val_path" in explicit else 0)
        + (split.test if "test_path" in explicit else 0),
        "val": 0.0 if "val_path" in explicit else split.val,
        "test": 0.0 if "test_path" in explicit else split.test,
    }
    train, val, test = split_examples(
        examples, SplitConfig(**{**split.model_dump(), **fractions}), path
    )
    return LMData(
        kind=examples.kind,
        train=train,
        val=explicit.get("val_path", val),
        test=explicit.get("test_path", test),
        source=path,
        pii=pii,
    )


def scrub_examples(
    examples: LMExamples, explicit: dict[str, LMExamples], config: Any
) -> tuple[LMExamples, dict[str, LMExamples], dict[str, Any]]:
    """`data.pii` on every document / message text: a language model memorises what it
    reads, so personal data is masked (hashed, dropped) before the tokenizer sees it.
    Returns the scrubbed examples and the merged report (its column is `text`)."""
    from foundry.data.scrub import PIIScrubber, merge_reports

    def texts(ex: LMExamples) -> list[str]:
        if ex.kind == "corpus":
            return list(ex.items)
        return [m["content"] for conversation in ex.items for m in conversation]

    def rebuilt(ex: LMExamples, new: list[str]) -> LMExamples:
        if ex.kind == "corpus":
            return LMExamples(ex.kind, new)
        it = iter(new)
        items = [[{**m, "content": next(it)} for m in conv] for conv in ex.items]
        return LMExamples(ex.kind, items)

    settings = lm_pii_settings(config)
    frame = pd.DataFrame({"text": texts(examples)}, dtype=object)
    scrubber = PIIScrubber.fit(frame, settings, target=None)
    scrubbed, report = scrubber.scrub(frame)
    reports = [report]
    out = rebuilt(examples, scrubbed["text"].tolist())
    others = {}
    for key, ex in explicit.items():
        done, extra = scrubber.scrub(pd.DataFrame({"text": texts(ex)}, dtype=object))
        reports.append(extra)
        others[key] = rebuilt(ex, done["text"].tolist())
    return out, others, merge_reports(reports)


def lm_pii_settings(config: Any) -> Any:
    """`data.pii` as it applies to LM texts: one free-text column, so nothing in it is
    an identifier column. A document can be a whole book: unless the config sets a cap,
    it is scanned whole (the scan is linear), never replaced as too long; the default
    cap protects serving workers, and corpus documents are not served."""
    update: dict[str, Any] = {"columns": ["text"], "identifiers": "report"}
    if "max_value_chars" not in config.model_fields_set:
        update["max_value_chars"] = None
    return config.model_copy(update=update)


def split_examples(
    examples: LMExamples, split: SplitConfig, path: Path
) -> tuple[LMExamples, LMExamples, LMExamples]:
    """Seeded train / val / test split of whole documents or conversations."""
    parts = split_positions(len(examples), split, path, examples.kind)
    train, val, test = (examples.take(parts[name].tolist()) for name in ("train", "val", "test"))
    return train, val, test


def split_positions(n: int, split: SplitConfig, path: Path, kind: str) -> dict[str, Any]:
    """The seeded split of `n` documents or conversations: split name → int64 positions
    (in the order the split draws them). Depends on `n` and `split` alone, so a corpus
    read as a stream (`lm.token_shards`) splits as one read whole."""
    from foundry.data import split_frame

    frame = pd.DataFrame({"i": range(n)})
    try:
        parts = split_frame(frame, split, None)
    except DataError as exc:
        unit = "documents" if kind == "corpus" else "conversations"
        raise DataError(
            f"{path}: {n} {unit} cannot be split as data.split asks: {exc.message}",
            hint="separate documents with blank lines, give data.val_path / data.test_path, "
            "or set data.split to {train: 1.0, val: 0, test: 0}",
        ) from exc
    return {
        name: part["i"].to_numpy()
        for name, part in zip(("train", "val", "test"), parts, strict=True)
    }


def read_lm_file(
    path: Path, lm: LMConfig, format: str = "auto", delimiter: str | None = None
) -> LMExamples:
    """One LM data file → its examples; the kind comes from the file's columns."""
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"data file is empty (0 bytes): {path}")
    suffix = path.suffix.lower()
    is_jsonl = format == "jsonl" or (format == "auto" and suffix in (".jsonl", ".ndjson"))
    if format == "auto" and suffix == ".txt":  # (read_table would take .txt for a CSV)
        examples = LMExamples("corpus", _read_text_documents(path))
    elif is_jsonl:  # read here, not by pandas: errors name the line
        examples = _records_to_examples(_read_jsonl_records(path), lm, path, unit="line")
    else:
        from foundry.data import read_table

        df = read_table(path, format, delimiter)
        records = df.astype(object).where(df.notna(), None).to_dict("records")
        # a CSV's first row is its header: row numbers match what an editor shows
        first = 2 if suffix in (".csv", ".tsv") or format == "csv" else 1
        examples = _records_to_examples(list(enumerate(records, first)), lm, path, unit="row")
    if not examples.items:
        raise DataError(f"{path}: no text in the data (every document is empty)")
    return examples


_BLANK_LINES = re.compile(r"\n[ \t\r\f\v]*\n")


def _read_text_documents(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from exc
    return [doc.strip() for doc in _BLANK_LINES.split(text) if doc.strip()]


def iter_jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file, read one at a time
    (lm.token_shards streams corpora larger than memory through it)."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {number}: not valid JSON: {exc.msg}") from exc
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}, line {number}: expected a JSON object, got {type(record).__name__}"
                )
            yield number, record


def _read_jsonl_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = list(iter_jsonl_records(path))
    if not records:
        raise DataError(f"{path}: no JSON records (the file holds only blank lines)")
    return records


def _records_to_examples(
    records: list[tuple[int, dict[str, Any]]], lm: LMConfig, path: Path, *, unit: str
) -> LMExamples:
    """Decide the kind from the first record's keys, then read every record as that kind."""
    keys = set(records[0][1])
    if lm.messages_column in keys:
        column = lm.messages_column
        return LMExamples(
            "instructions",
            [_messages(rec.get(column), path, f"{unit} {n}", column) for n, rec in records],
        )
    if lm.prompt_column in keys and lm.completion_column in keys:
        conversations = []
        for n, rec in records:
            where = f"{path}, {unit} {n}"
            prompt = _text_field(rec, lm.prompt_column, where, required=True)
            completion = _text_field(rec, lm.completion_column, where, required=True)
            conversations.append(
                [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
            )
        return LMExamples("instructions", conversations)
    if lm.text_column in keys:
        documents = []
        for n, rec in records:
            text = _text_field(rec, lm.text_column, f"{path}, {unit} {n}", required=False)
            if text and text.strip():  # empty rows of a corpus are skipped
                documents.append(text)
        return LMExamples("corpus", documents)
    found = ", ".join(sorted(map(str, keys))) or "none"
    raise DataError(
        f"{path}: no text column '{lm.text_column}' (lm.text_column), no "
        f"'{lm.prompt_column}' + '{lm.completion_column}' (lm.prompt_column / "
        f"lm.completion_column) and no '{lm.messages_column}' (lm.messages_column); "
        f"found: {found}"
    )


def _text_field(record: dict[str, Any], column: str, where: str, *, required: bool) -> str | None:
    value = record.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        if required:
            raise DataError(f"{where}: '{column}' is missing or empty")
        return None
    if not isinstance(value, str):
        raise DataError(f"{where}: '{column}' must be text, got {type(value).__name__} {value!r}")
    return value


def _messages(value: Any, path: Path, where: str, column: str) -> Conversation:
    place = f"{path}, {where}"
    if not isinstance(value, list) or not value:
        raise DataError(
            f"{place}: '{column}' must be a non-empty list of {{role, content}} messages, "
            f"got {type(value).__name__}"
        )
    messages: Conversation = []
    for i, message in enumerate(value):
        field = f"{column}[{i}]"
        if not isinstance(message, dict):
            raise DataError(f"{place}: {field} must be an object, got {type(message).__name__}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise DataError(f"{place}: {field}.role must be a non-empty string, got {role!r}")
        if not isinstance(content, str):
            raise DataError(f"{place}: {field}.content must be a string, got {content!r}")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(
            f"{place}: '{column}' has no message with role 'assistant', so nothing to learn"
        )
    return messages


# ---------------------------------------------------------------------- tokenizing


@dataclass(frozen=True)
class TokenData:
    """Token rows for training (see the module docstring for the layout)."""

    input_ids: Tensor
    """int64 [N, L], right-padded with the tokenizer's pad id."""
    labels: Tensor
    """int64 [N, L]: next-token targets, IGNORE where there is no loss."""

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def n_targets(self) -> int:
        """Tokens the loss covers."""
        return int((self.labels != IGNORE).sum())

    def target_counts(self, vocab_size: int) -> Tensor:
        """float64 [vocab_size]: how often each token id is a target."""
        targets = self.labels[self.labels != IGNORE]
        return torch.bincount(targets, minlength=vocab_size).double()


def tokenizer_texts(examples: LMExamples, template: str | None = None) -> Iterator[str]:
    """The texts a tokenizer is trained on: documents, or rendered conversations."""
    for item in examples.items:
        yield (
            item
            if examples.kind == "corpus"
            else render_chat(item, template, add_generation_prompt=False)
        )


def encode_examples(
    examples: LMExamples,
    tokenizer: TokenizerLike,
    *,
    block_size: int,
    loss_on: Literal["auto", "all", "completion"] = "auto",
    chat_template: str | None = None,
    **template_variables: Any,
) -> TokenData:
    """Examples → `TokenData` rows of at most `block_size` tokens.

    Corpus: blocks of exactly `block_size` (the last one padded). Instructions: one row per
    conversation, truncated to `block_size`; a conversation whose every target falls past
    the cut is dropped (with `loss_on: completion`).
    """
    if examples.kind == "corpus":
        if loss_on == "completion":
            raise ConfigError(
                "lm.loss_on is 'completion' but the data is a corpus (no prompts or "
                "completions); use auto or all"
            )
        return corpus_blocks(examples.items, tokenizer, block_size)
    return instruction_rows(
        examples.items,
        tokenizer,
        block_size=block_size,
        completion_only=loss_on != "all",
        chat_template=chat_template,
        **template_variables,
    )


def encode_splits(
    data: LMData,
    tokenizer: TokenizerLike,
    *,
    block_size: int,
    loss_on: Literal["auto", "all", "completion"] = "auto",
    chat_template: str | None = None,
    **template_variables: Any,
) -> dict[str, TokenData]:
    """`encode_examples` on each of train/val/test (what every LM family trains on)."""
    return {
        name: encode_examples(
            getattr(data, name),
            tokenizer,
            block_size=block_size,
            loss_on=loss_on,
            chat_template=chat_template,
            **template_variables,
        )
        for name in ("train", "val", "test")
    }


def corpus_blocks(documents: Sequence[str], tokenizer: TokenizerLike, block_size: int) -> TokenData:
    """Documents joined with EOS after each one, cut into rows of `block_size` inputs.

    Block k reads stream[k*B : k*B + B] and predicts stream[k*B + 1 : k*B + B + 1], so
    every token but the first is a target exactly once.
    """
    encode_batch = getattr(tokenizer, "encode_batch", None)  # parallel when offered
    encoded = encode_batch(list(documents)) if encode_batch else map(tokenizer.encode, documents)
    stream_list: list[int] = []
    for ids in encoded:
        stream_list.extend(ids)
        stream_list.append(tokenizer.eos_id)
    stream = torch.tensor(stream_list, dtype=torch.int64)
    n = len(stream)
    if n < 2:
        return _empty(block_size)
    n_blocks = math.ceil((n - 1) / block_size)
    padded = torch.full((n_blocks * block_size + 1,), tokenizer.pad_id, dtype=torch.int64)
    padded[:n] = stream
    rows = padded.unfold(0, block_size + 1, block_size)  # [n_blocks, block_size + 1]
    target_pos = torch.arange(n_blocks)[:, None] * block_size + torch.arange(1, block_size + 1)
    labels = rows[:, 1:].masked_fill(target_pos >= n, IGNORE)
    return TokenData(input_ids=rows[:, :-1].contiguous(), labels=labels.contiguous())


def instruction_rows(
    conversations: Sequence[Conversation],
    tokenizer: TokenizerLike,
    *,
    block_size: int,
    completion_only: bool = True,
    chat_template: str | None = None,
    **template_variables: Any,
) -> TokenData:
    """One row per conversation: the rendered chat, then EOS. With `completion_only` the
    targets are the assistant messages (as the template renders them, end marker
    included) and the EOS; the rest has IGNORE labels."""
    template = chat_template if chat_template is not None else tokenizer.chat_template
    rows: list[tuple[list[int], list[bool]]] = []
    for conversation in conversations:
        ids, targets = _conversation_tokens(conversation, tokenizer, template, template_variables)
        ids, targets = ids[: block_size + 1], targets[: block_size + 1]
        if not completion_only:
            targets = [True] * len(ids)
        if len(ids) >= 2 and any(targets[1:]):
            rows.append((ids, targets))
    if not rows:
        return _empty(block_size)
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width - 1), tokenizer.pad_id, dtype=torch.int64)
    labels = torch.full((len(rows), width - 1), IGNORE, dtype=torch.int64)
    for r, (ids, targets) in enumerate(rows):
        row = torch.tensor(ids)
        input_ids[r, : len(ids) - 1] = row[:-1]
        labels[r, : len(ids) - 1] = row[1:].masked_fill(~torch.tensor(targets[1:]), IGNORE)
    return TokenData(input_ids=input_ids, labels=labels)


def _conversation_tokens(
    messages: Conversation,
    tokenizer: TokenizerLike,
    template: str | None,
    variables: dict[str, Any],
) -> tuple[list[int], list[bool]]:
    """Token ids of a rendered conversation and, per id, whether it is an assistant target.

    The text is rendered prefix by prefix (messages[:i] + generation prompt, then
    messages[:i+1]) and the pieces are tokenized separately, so a reply's tokens are the
    ones the model produces after the generation prompt at inference time.
    """
    ids: list[int] = []
    targets: list[bool] = []
    done = ""  # text already turned into tokens

    def add(text: str, is_target: bool) -> None:
        piece = tokenizer.encode(text) if text else []
        ids.extend(piece)
        targets.extend([is_target] * len(piece))

    def render(upto: int, generation_prompt: bool) -> str:
        text = render_chat(
            messages[:upto], template, add_generation_prompt=generation_prompt, **variables
        )
        if not text.startswith(done):
            raise ConfigError(
                "lm.chat_template renders a conversation differently from its beginning "
                "(the text of messages[:i] is not a prefix of messages[:i+1]), so prompt "
                "and reply tokens cannot be told apart; use a template that renders "
                "incrementally"
            )
        return text

    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = render(i, True)
        add(head[len(done) :], False)
        done = head
        body = render(i + 1, False)
        add(body[len(done) :], True)
        done = body
    add(render(len(messages), False)[len(done) :], False)
    ids.append(tokenizer.eos_id)
    targets.append(True)
    return ids, targets


def _empty(block_size: int) -> TokenData:
    empty = torch.zeros((0, block_size), dtype=torch.int64)
    return TokenData(input_ids=empty, labels=empty.clone())
