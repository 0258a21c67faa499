"""The one config schema. Every field is documented right under it; the same text is the
CLI's `foundry config-docs` output and docs/CONFIG.md.

A config has a `name` (the registry name of the model it produces) and five sections:
`data`, `features`, `model`, `train`, `evaluate`. Only `data` and a target are required;
everything else has a default or is inferred from the data.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

FeatureType = Literal["number", "binary", "category", "text", "image"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, use_attribute_docstrings=True
    )


# --------------------------------------------------------------------------- data


class SplitConfig(Section):
    train: float = Field(0.8, gt=0, le=1)
    """Fraction of rows used for training when no explicit files are given."""
    val: float = Field(0.1, ge=0, lt=1)
    """Fraction of rows held out for validation (early stopping, model selection)."""
    test: float = Field(0.1, ge=0, lt=1)
    """Fraction of rows held out for the final evaluation."""
    stratify: bool = True
    """Keep class proportions equal across splits (classification targets only)."""
    seed: int = 42
    """Seed of the shuffle; the same seed and data give the same split."""
    key: str | None = None
    """Streamed data (`data.streaming`): the column whose value decides a row's split by
    a seeded hash (rows sharing a key share a split); `None` hashes the whole row, so
    duplicate rows share a split too. In-memory splits ignore it."""

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + val + test must sum to 1, got {self.train} + {self.val} + "
                f"{self.test} = {total:g}"
            )
        return self


PIIKind = Literal["email", "phone", "credit_card", "iban", "ip_address", "url"]
PII_KINDS: tuple[str, ...] = ("email", "phone", "credit_card", "iban", "ip_address", "url")

IDENTIFIER_NAMES: list[str] = [
    # not `name` alone: a person's name is found by column name *and* values
    # (foundry.data.personal), and `name` of a package or command is a useful text input
    "first_name",
    "last_name",
    "full_name",
    "surname",
    "email",
    "e_mail",
    "phone",
    "phone_number",
    "mobile",
    "ssn",
    "social_security_number",
    "passport",
    "iban",
    "account_number",
    "card_number",
    "credit_card",
    "address",
    "street",
    "ip",
    "ip_address",
    "user_id",
    "customer_id",
    "patient_id",
]


class PIIConfig(Section):
    """Personal data in the training table, found before anything is fitted on it: values
    inside text and category columns, and whole columns that identify a person."""

    enabled: bool = True
    """Scan the data (the report lands in the run directory and the model card)."""
    action: Literal["mask", "hash", "drop", "report"] = "mask"
    """What happens to each value found: `mask` replaces it by its kind (`[EMAIL]`),
    `hash` by a salted hash (`[EMAIL:3f9a0c12]`, equal values stay equal), `drop`
    removes it, `report` only counts it. Predictions apply the same rule to their input."""
    kinds: list[PIIKind] = list(PII_KINDS)
    """Kinds to look for: email, phone, credit_card (Luhn-checked), iban (mod-97
    checked), ip_address (IPv4 and IPv6), url."""
    patterns: dict[str, str] = {}
    """Extra kinds as `name: regular expression` (e.g. `employee_id: 'EMP-\\d{6}'`), in
    RE2 syntax so that a scan is linear in the text: no lookarounds, backreferences,
    atomic groups or possessive quantifiers; `\\d`, `\\w`, `\\s`, `\\b` are ASCII
    (`\\p{Nd}`, `\\p{L}` for other scripts). Each must match 3 to 100 characters
    (`\\d{1,12}`, not `\\d+`) and compile to at most 1,000 RE2 instructions. A pattern
    breaking a rule is refused when the config loads, with the reason."""
    max_value_chars: int | None = Field(100_000, ge=1)
    """Longest value scanned. A longer text or category value is never scanned: it is
    replaced whole, as one finding of kind `too_long` (`[TOO_LONG]` with `mask`, removed
    with `drop`; counted in the report), in training and in every prediction input, so
    nothing unscanned reaches the model. Scanning is linear (~0.2 s for 100,000
    characters of the worst text, packed with card numbers or IPs, on a busy 2-core
    machine; ~1 ms for ordinary text): the cap bounds what one value can cost a serving
    worker. `null`: no cap. Language-model corpus documents are not served and have no
    cap unless this is set."""
    columns: list[str] | None = None
    """Columns to scan; `None`: every text and category column."""
    identifiers: Literal["drop", "hash", "report"] = "drop"
    """Columns that identify a person or a row (opaque near-unique strings: UUIDs, hex
    hashes, numbered or near-random ids; or a name in `identifier_names`): `drop` removes
    them from the inputs, `hash` keeps a salted hash of each value, `report` only lists
    them. Near-unique strings with structure (package names, paths, URLs) are inputs."""
    identifier_names: list[str] = IDENTIFIER_NAMES
    """Column names (compared lower-case, spaces and dashes as `_`) taken as identifiers."""
    personal: bool = True
    """Also take as identifier columns those holding person names, birth dates, postal
    addresses, national id numbers (SSN, NIR, BSN, DNI, CPF, codice fiscale, Steuer-ID)
    and per-row record ids, found by column name (English, French, German, Spanish,
    Portuguese, Italian, Dutch) and by values (name shapes, dates with human ages, street
    shapes, id checksums); see docs/TRUST.md. They are handled as `identifiers` says."""
    keep_columns: list[str] = []
    """Columns never taken as identifiers nor personal data, whatever their name or values
    (e.g. a `name` column that names products). Reported as kept, in the run's output and
    the card."""
    salt_env: str = "FOUNDRY_PII_SALT"
    """Environment variable holding the salt of `hash`; required when anything is hashed
    (training and prediction). The salt is never stored, only a fingerprint of it."""

    @model_validator(mode="after")
    def _patterns_compile(self) -> PIIConfig:
        if not self.patterns:  # and no import of foundry.data while this module loads
            return self
        # the check PIIScrubber.from_state also applies to a package's patterns
        from foundry.data.pii import compile_pattern

        for name, pattern in self.patterns.items():
            compile_pattern(name, pattern)  # PatternError is a ValueError naming the key
        return self


class ImageLoadingConfig(Section):
    """How training images reach the model (image folders and image columns)."""

    loading: Literal["auto", "memory", "lazy"] = "auto"
    """`memory`: decode every training image once into one float32 array (fastest
    epochs; memory grows with the number of images); `lazy`: keep paths and decode each
    batch in DataLoader workers (memory flat in the number of images); `auto`: memory
    while the decoded training images take at most 1 GiB, else lazy."""
    workers: int | None = Field(None, ge=0)
    """DataLoader worker processes decoding lazy batches; `None`: CPU cores - 1, at most
    4; 0 decodes in the training process."""


class StreamConfig(Section):
    memory_fraction: float = Field(0.25, gt=0, le=1)
    """`streaming: auto` streams when the estimated in-memory size of the table (its
    decoded size x 4: the frame, its splits and their encoded tensors live together)
    passes this fraction of the memory available to the process."""
    workers: int = Field(2, ge=0, le=64)
    """DataLoader worker processes reading and encoding row groups (0: in the training
    process). Each holds at most `shuffle_buffer / workers` rows."""
    shuffle_buffer: int = Field(262_144, ge=1)
    """Rows held for shuffling (in all workers together); together with a fresh shard /
    row-group order each epoch, the rows of a batch come from all over the table."""
    block_rows: int = Field(65_536, ge=64)
    """Rows decoded at a time from a row group or a CSV / JSONL shard."""
    sample_rows: int = Field(100_000, ge=100)
    """Size of the uniform samples kept in memory: of the validation split (validated
    on every epoch), the test split (the evaluation), and the training split (medians,
    text vocabularies, leakage checks, and families that do not stream, e.g. gbm)."""
    max_categories: int = Field(100_000, ge=10)
    """Distinct values counted per category column; past it the rarest counts are
    pruned (the vocabulary is then approximate: a heavy-hitters sketch)."""


class DataConfig(Section):
    path: str
    """Training data: a CSV, Parquet or JSONL file, or an image folder laid out as
    `class_name/*.png`. Relative paths are resolved against the config file's folder."""
    format: Literal["auto", "csv", "parquet", "jsonl", "image_folder"] = "auto"
    """File format; `auto` decides from the extension (a directory is an image folder)."""
    val_path: str | None = None
    """Explicit validation file; when set, `split.val` is ignored."""
    test_path: str | None = None
    """Explicit test file; when set, `split.test` is ignored."""
    split: SplitConfig = SplitConfig()
    """How rows are split into train/val/test when explicit files are not given."""
    delimiter: str | None = None
    """CSV delimiter; `None` sniffs it from the first lines."""
    pii: PIIConfig = PIIConfig()
    """Personal data: found, masked / hashed / dropped, and reported."""
    images: ImageLoadingConfig = ImageLoadingConfig()
    """Training images decoded once into memory, or per batch by DataLoader workers."""
    streaming: Literal["auto"] | bool = "auto"
    """Read the training rows from disk batch by batch instead of into memory (docs/
    DATA.md): `auto` streams when the table's estimated in-memory size passes
    `stream.memory_fraction` of the memory available; `true` / `false` force either.
    With streaming, `path` may be a directory or a glob of Parquet / CSV / JSONL shards,
    on disk or in S3 (`s3://bucket/prefix/`, `s3://bucket/prefix/*.parquet`)."""
    stream: StreamConfig = StreamConfig()
    """How streamed data is read, shuffled and sampled."""


# ----------------------------------------------------------------------- features


class NumberPreprocessing(Section):
    normalization: Literal["standard", "minmax", "none"] = "standard"
    """`standard`: (x - mean) / std; `minmax`: (x - min) / (max - min); statistics come
    from the training split only."""
    missing: Literal["mean", "median", "zero", "drop_row", "error"] = "mean"
    """How missing values (empty, NaN) are filled; `error` refuses them."""


class CategoryPreprocessing(Section):
    min_frequency: int = Field(1, ge=1)
    """Categories seen fewer times than this in training map to the unknown token."""
    max_categories: int | None = Field(None, ge=1)
    """Keep only the most frequent categories (the rest map to the unknown token)."""
    missing: Literal["category", "most_frequent", "drop_row"] = "category"
    """`category`: missing is its own category; `most_frequent`: fill with the mode."""


class TextPreprocessing(Section):
    tokenizer: Literal["word", "bpe"] = "word"
    """`word`: whitespace/punctuation words; `bpe`: byte-pair encoding trained on the
    training split (both through the `tokenizers` library)."""
    vocab_size: int = Field(10_000, ge=10)
    """Largest vocabulary kept (including the padding and unknown tokens)."""
    max_length: int = Field(128, ge=1)
    """Token sequences are truncated or padded to this length."""
    lowercase: bool = True
    """Lower-case text before tokenising."""
    min_frequency: int = Field(1, ge=1)
    """Tokens seen fewer times than this map to the unknown token."""


class AugmentConfig(Section):
    flip: bool = False
    """Random horizontal flips (p = 0.5) during training."""
    crop: int = Field(0, ge=0)
    """Random crops after padding each side by this many pixels (0 = off)."""
    rotate: float = Field(0.0, ge=0, le=180)
    """Random rotations of up to this many degrees either way (0 = off)."""


class ImagePreprocessing(Section):
    height: int | None = Field(None, ge=1)
    """Images are resized to this height; `None` takes the first image's size."""
    width: int | None = Field(None, ge=1)
    """Images are resized to this width; `None` takes the first image's size."""
    channels: Literal[1, 3] | None = None
    """1 = grayscale, 3 = RGB; `None` takes the first image's mode."""
    normalization: Literal["standard", "unit"] = "standard"
    """`unit`: pixels / 255; `standard`: per-channel mean/std of the training split."""
    augment: AugmentConfig = AugmentConfig()
    """Augmentations applied to training batches only."""


class FeatureConfig(Section):
    name: str
    """Column name in the data (for image folders: `image` and `label`)."""
    type: FeatureType | None = None
    """number, binary, category, text or image; `None` infers it from the data."""
    number: NumberPreprocessing = NumberPreprocessing()
    """Preprocessing of number features."""
    category: CategoryPreprocessing = CategoryPreprocessing()
    """Preprocessing of category (and binary) features."""
    text: TextPreprocessing = TextPreprocessing()
    """Preprocessing of text features."""
    image: ImagePreprocessing = ImagePreprocessing()
    """Preprocessing of image features."""


class LeakageConfig(Section):
    """Target leakage: inputs that record the outcome instead of predicting it (see
    docs/TRUST.md for the rules). `foundry init` leaves them out of `features.inputs`,
    `train` warns when one is still an input, and the card lists them."""

    enabled: bool = True
    """Check every column of the table before training."""
    threshold: float = Field(0.98, gt=0.5, le=1)
    """A column that alone predicts the target this well on held-out rows is a leak:
    ROC AUC (binary), balanced accuracy (several classes) or R² (numbers) of a one-column
    model (a small decision tree, or the target rate per category), out of fold."""
    allow: list[str] = []
    """Columns known to be legitimate inputs although the check names them: `train` no
    longer warns about them (the card still lists them, as allowed)."""


class FeaturesConfig(Section):
    target: str | None = None
    """The column to predict. Its type decides the task: binary / category →
    classification, number → regression. Required except for language models trained
    on a corpus (model `gpt`, or `hf` with task `causal_lm`; see the `lm` section)."""
    target_type: Literal["binary", "category", "number"] | None = None
    """Force the task type; `None` infers it from the target column."""
    inputs: list[FeatureConfig] | None = None
    """Input features; `None` uses every other column with an inferred type."""
    exclude: list[str] = []
    """Columns never used as inputs (identifiers, leaks)."""
    leakage: LeakageConfig = LeakageConfig()
    """Inputs that give the answer away (they record the outcome): found, left out by
    `foundry init`, warned about by `train`, listed on the card."""


class RecommendConfig(Section):
    """An interactions table: one row per (user, item) event, optionally weighted and
    timed. Read by the recommender models (`model.type` popularity, mf, two_tower)."""

    user: str = "user"
    """Column naming who interacted (any id: numbers are read as text)."""
    item: str = "item"
    """Column naming what they interacted with."""
    weight: str | None = None
    """Column of interaction strength (play count, rating, 1); None: every row counts 1.
    Repeated (user, item) rows add up."""
    time: str | None = None
    """Column of when it happened (a number or a date); needed by `split: temporal`."""
    split: Literal["temporal", "random"] = "temporal"
    """How each user's interactions are held out: `temporal` holds out their latest
    (what recommending the next items needs), `random` a seeded random sample."""
    test: float = Field(0.2, gt=0, lt=1)
    """Fraction of each user's interactions held out for the final evaluation (at least
    one for a user with two or more; a user's only interaction stays in training)."""
    val: float = Field(0.0, ge=0, lt=1)
    """Fraction of each user's interactions held out for validation (before the test
    ones in time), for choosing hyper-parameters without touching test."""
    seed: int = 42
    """Seed of the random split (and of ties in time); the same seed gives the same split."""
    k: int = Field(10, ge=1, le=1000)
    """Length of the list the ranking metrics score (Recall@k, NDCG@k, ...)."""
    exclude_seen: bool = True
    """Leave out items a user already interacted with in training (metrics and serving)."""
    item_features: str | None = None
    """A table of item features (relative to the config): the `item` column and any
    others, each value a token (`a|b` splits into two, e.g. genres). Read by
    `two_tower`; its items without interactions are recommended from their features."""
    user_features: str | None = None
    """A table of user features (relative to the config): the `user` column and any
    others (categories, numbers, text tokens as in `item_features`). Read by
    `two_tower`'s user tower: a user unseen in training who brings features gets
    recommendations from them (`user_features` in a recommend request)."""
    index: Literal["auto", "exact", "approximate"] = "auto"
    """Retrieval of a user's top k: `exact` scores every item (a full read of the item
    matrix a query: 49 ms at 10⁶ items), `approximate` a FAISS IVF index over int8 item
    vectors with the candidates rescored exactly (needs the `recommend` extra), `auto`
    approximate from `index_above` items on."""
    index_above: int = Field(200_000, ge=1)
    """Catalogue size from which `index: auto` builds the approximate index."""
    index_recall: float = Field(0.95, gt=0, le=1)
    """The approximate index's target overlap with exact top 10 on sample users: it
    probes more cells until it gets there (measured recall is in the package)."""

    @model_validator(mode="after")
    def _held_out_leaves_training(self) -> RecommendConfig:
        if self.test + self.val >= 1:
            raise ValueError(
                f"test + val must leave interactions to train on; got {self.test} + "
                f"{self.val} = {self.test + self.val:g}"
            )
        return self


# -------------------------------------------------------------------------- model

Activation = Literal["relu", "gelu", "tanh", "sigmoid"]


class MLPConfig(Section):
    type: Literal["mlp"] = "mlp"
    """Multi-layer perceptron over number, binary and category features."""
    layers: list[Annotated[int, Field(ge=1)]] = [128, 64]
    """Hidden layer widths, input to output; `[]` is a linear model."""
    activation: Activation = "relu"
    """Activation after each hidden layer."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout probability after each hidden layer."""
    batch_norm: bool = False
    """Batch normalisation before each activation."""
    embedding_dim: int | None = Field(None, ge=1)
    """Width of category embeddings; `None` picks min(16, round(1.6 * n^0.56))."""


class ConvBlock(Section):
    filters: int = Field(32, ge=1)
    """Output channels of this convolution."""
    kernel_size: int = Field(3, ge=1)
    """Square kernel size (padding keeps the spatial size)."""
    pool: Literal["max", "avg", "none"] = "max"
    """2x2 pooling after the convolution."""


class CNNConfig(Section):
    type: Literal["cnn"] = "cnn"
    """Convolutional network for one image input (other tabular inputs join at the head)."""
    conv: list[ConvBlock] = [ConvBlock(filters=32), ConvBlock(filters=64)]
    """Convolution blocks: conv → (batch-norm) → activation → pool."""
    layers: list[Annotated[int, Field(ge=1)]] = [128]
    """Fully connected widths after global pooling / flattening."""
    activation: Activation = "relu"
    """Activation in conv blocks and dense layers."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout after each hidden dense layer."""
    batch_norm: bool = True
    """Batch normalisation in conv blocks."""
    global_pool: bool = True
    """Global average pooling after the conv blocks (else flatten)."""


class TextModelConfig(Section):
    type: Literal["text"] = "text"
    """Text classifier/regressor for one text input."""
    encoder: Literal["bow", "cnn", "transformer"] = "cnn"
    """`bow`: mean of token embeddings; `cnn`: 1-D convolutions + max pooling;
    `transformer`: a small transformer encoder with learned positions, mean-pooled."""
    embedding_dim: int = Field(64, ge=1)
    """Token embedding width (d_model for the transformer)."""
    filters: int = Field(64, ge=1)
    """CNN: channels per kernel size."""
    kernel_sizes: list[Annotated[int, Field(ge=1)]] = [3, 4, 5]
    """CNN: kernel widths (in tokens)."""
    num_layers: int = Field(2, ge=1)
    """Transformer: encoder layers."""
    num_heads: int = Field(4, ge=1)
    """Transformer: attention heads (must divide embedding_dim)."""
    layers: list[Annotated[int, Field(ge=1)]] = []
    """Fully connected widths between the encoder and the head."""
    activation: Activation = "relu"
    """Activation in dense layers."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout in the encoder and dense layers."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> TextModelConfig:
        if self.encoder == "transformer" and self.embedding_dim % self.num_heads:
            raise ValueError(
                f"embedding_dim ({self.embedding_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        return self


class GPTConfig(Section):
    type: Literal["gpt"] = "gpt"
    """A decoder-only transformer trained from scratch on a text corpus, with a BPE
    tokenizer trained on the same corpus (foundry.models.gpt)."""
    n_layers: int = Field(4, ge=1)
    """Transformer blocks."""
    d_model: int = Field(256, ge=8)
    """Width of the residual stream (token embedding size)."""
    n_heads: int = Field(4, ge=1)
    """Attention heads (must divide d_model)."""
    context_length: int = Field(256, ge=2)
    """Longest sequence (prompt + generated tokens) the model attends over."""
    positions: Literal["rope", "learned"] = "rope"
    """`rope`: rotary position embeddings in attention; `learned`: a learned position
    embedding added to the token embedding."""
    dropout: float = Field(0.1, ge=0, lt=1)
    """Dropout on attention weights and residual branches during training."""
    vocab_size: int = Field(4096, ge=64)
    """Size of the BPE vocabulary trained on the corpus (special tokens included)."""
    tie_embeddings: bool = True
    """Share the input embedding with the output projection."""

    @model_validator(mode="after")
    def _heads_divide_width(self) -> GPTConfig:
        if self.d_model % self.n_heads:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.positions == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"rope needs an even head size; d_model / n_heads = {self.d_model // self.n_heads}"
            )
        return self


class LoRAConfig(Section):
    r: int = Field(8, ge=1)
    """Rank of the low-rank update matrices."""
    alpha: float = Field(16.0, gt=0)
    """The update is scaled by alpha / r."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the input of the low-rank branch."""
    target_modules: list[str] | None = None
    """Names (or name suffixes) of the linear layers to adapt, e.g. `[query, value]`
    (BERT) or `[q_proj, v_proj]` (Llama); `None` lets peft pick for the architecture."""


class HFModelConfig(Section):
    type: Literal["hf"] = "hf"
    """A pretrained Hugging Face transformers model, from the hub or a local directory.
    Remote code is never run (`trust_remote_code` is off)."""
    name_or_path: str
    """Hub id (`sentence-transformers/all-MiniLM-L6-v2`) or a local directory holding
    config.json, safetensors weights and tokenizer files. Relative paths are resolved
    against the config file's folder."""
    task: Literal["auto", "classification", "regression", "causal_lm", "embedding"] = "auto"
    """`auto`: `causal_lm` for decoder models (GPT-2, Llama...) trained on a corpus or on
    instructions, else classification / regression from `features.target`."""
    head: Literal["pooled", "sequence_classification"] = "pooled"
    """Encoder tasks: `pooled` puts a linear head on pooled hidden states (any encoder,
    sentence-transformers checkpoints included); `sequence_classification` loads
    AutoModelForSequenceClassification."""
    pooling: Literal["mean", "cls"] = "mean"
    """How token states become one vector (pooled head, embeddings)."""
    max_length: int = Field(128, ge=1)
    """Tokens per example; longer inputs are truncated."""
    lora: LoRAConfig | None = None
    """Train only low-rank adapters (peft) and save only them; `None` fine-tunes every
    weight."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) to pin."""


class GBMConfig(Section):
    type: Literal["gbm"] = "gbm"
    """Gradient-boosted decision trees (LightGBM) over number, binary and category
    features: categories go in as LightGBM's native categorical features (codes of the
    training vocabulary), missing numbers as missing (LightGBM learns which way they go).
    The defaults are LightGBM's own, plus early stopping on the validation split. The
    `train` section's `seed` and `num_threads` apply (`None`: one LightGBM thread per
    50,000 training rows: more threads slow small tables down); its network
    settings (epochs, batch size, optimizer, loss) do not."""
    objective: Literal[
        "auto", "binary", "multiclass", "regression", "regression_l1", "huber"
    ] = "auto"
    """`auto`: `binary` (log loss) for two classes, `multiclass` (softmax) for more,
    `regression` (L2) for a number target; `regression_l1` and `huber` are the robust
    regression losses."""
    n_estimators: int = Field(1000, ge=1)
    """Most boosting rounds (LightGBM's `num_boost_round`); early stopping usually ends
    far sooner. Without a validation split every round is trained."""
    early_stopping_rounds: int | None = Field(50, ge=1)
    """Stop when the validation loss has not improved for this many rounds and keep the
    best round; `None` trains all `n_estimators` rounds."""
    refit: bool = True
    """After early stopping, train once more on the train + validation rows for the best
    round count x (train + val rows) / train rows (at least 100 rounds for a classifier,
    at most n_estimators), and package that booster: it learns from every non-test row,
    as LightGBM alone fitted on them would (on small tables the held-out tenth is worth
    accuracy: `benchmarks/gbm_defaults.py`). The temperature and fairness thresholds are
    still fitted on validation outputs of the early-stopped booster, which never saw
    those rows. `false`: package the early-stopped booster."""
    learning_rate: float = Field(0.1, gt=0)
    """Shrinkage applied to each tree (smaller: more rounds, often a little better)."""
    num_leaves: int = Field(31, ge=2, le=131072)
    """Most leaves per tree: the main capacity setting."""
    max_depth: int = Field(-1, ge=-1)
    """Deepest tree; -1: no limit (num_leaves bounds the tree instead)."""
    min_child_samples: int = Field(20, ge=1)
    """Fewest training rows in a leaf (LightGBM's `min_data_in_leaf`)."""
    feature_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of the inputs each tree may split on (column subsampling)."""
    bagging_fraction: float = Field(1.0, gt=0, le=1)
    """Fraction of the training rows each bagging round draws (needs bagging_freq > 0)."""
    bagging_freq: int = Field(0, ge=0)
    """Redraw the bagging sample every this many rounds; 0: no bagging."""
    lambda_l1: float = Field(0.0, ge=0)
    """L1 penalty on leaf values."""
    lambda_l2: float = Field(0.0, ge=0)
    """L2 penalty on leaf values."""
    class_weight: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    """Classification: weight each training row by its class. `balanced`: rows / (classes
    x rows of the class), so every class weighs the same in total; a map `{class label:
    weight}` (unlisted classes weigh 1); `None`: every row weighs 1."""
    max_cat_to_onehot: int = Field(4, ge=1)
    """Category inputs with at most this many values are split one-vs-rest; larger ones
    by LightGBM's sorted-gradient partition."""
    seed: int | None = None
    """Seed of LightGBM's sampling (bagging, feature fraction); `None`: `train.seed`."""

    @model_validator(mode="after")
    def _bagging_needs_a_frequency(self) -> GBMConfig:
        if self.bagging_fraction < 1 and self.bagging_freq == 0:
            raise ValueError(
                "bagging_fraction < 1 has no effect while bagging_freq is 0; "
                "set bagging_freq (e.g. 1) to draw a new sample every round"
            )
        return self


class NGramConfig(Section):
    type: Literal["ngram"] = "ngram"
    """A linear text classifier over TF-IDF n-grams, trained in seconds on a CPU by
    scikit-learn: every text input becomes word n-grams (split on punctuation too, so
    `python3-foo`, `libbar-perl`, `a/b/c.py` and URLs give useful words) and character
    n-grams, TF-IDF weighted (sublinear tf, L2 norm); category and binary inputs are
    one-hot, number inputs standardised as for every model. Stored as JSON (vocabulary,
    settings) and safetensors (idf, weights); no pickle. The `train` section's `seed`
    applies; its network settings (epochs, batch size, optimizer, loss) do not."""
    word_ngrams: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = (1, 2)
    """Word n-gram lengths (shortest, longest); `None`: no word n-grams."""
    char_ngrams: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] | None = (2, 4)
    """Character n-gram lengths inside word boundaries (scikit-learn's `char_wb`);
    `None`: no character n-grams."""
    lowercase: bool = True
    """Lower-case texts before counting n-grams."""
    min_df: int = Field(1, ge=1)
    """An n-gram enters the vocabulary when at least this many training rows have it.
    1 (every n-gram) measured best (`benchmarks/ngram_text.py`); 2 or more halves the
    vocabulary and the package for ~0.1-0.2 points of accuracy."""
    max_features: int | None = Field(200_000, ge=1)
    """Most n-grams per text input and kind (word / char), the most frequent kept: bounds
    the package (~10 bytes of JSON per n-gram) on a large corpus; `None`: no limit."""
    hash_features: int | None = Field(None, ge=16)
    """Hash n-grams into this many columns per text input and kind instead of fitting a
    vocabulary (no vocabulary stored: a small package on a huge vocabulary; colliding
    n-grams share a weight); `None`: a fitted vocabulary."""
    head: Literal["svm", "logistic"] = "svm"
    """The linear head. `svm`: a linear SVM (LIBLINEAR, one-vs-rest, squared hinge),
    the fastest and usually the most accurate; its scores become probabilities by
    sigmoid / softmax, scaled by the temperature calibration fits. `logistic`: logistic
    regression (softmax over the classes), probabilities by construction, slower.
    Number targets always get ridge regression."""
    C: float = Field(0.5, gt=0)
    """Inverse regularisation strength (larger: fits the training rows more closely);
    ridge regression uses alpha = 1 / (2 C)."""
    max_iter: int = Field(1000, ge=1)
    """Most solver iterations."""
    class_weight: Literal["balanced"] | dict[str, Annotated[float, Field(gt=0)]] | None = None
    """Classification: weight each training row by its class. `balanced`: rows / (classes
    x rows of the class), so every class weighs the same in total; a map `{class label:
    weight}` (unlisted classes weigh 1); `None`: every row weighs 1."""

    @model_validator(mode="after")
    def _some_ngrams_and_ordered_ranges(self) -> NGramConfig:
        if self.word_ngrams is None and self.char_ngrams is None:
            raise ValueError("word_ngrams and char_ngrams are both None: set at least one")
        for key in ("word_ngrams", "char_ngrams"):
            low_high = getattr(self, key)
            if low_high is not None and low_high[0] > low_high[1]:
                raise ValueError(
                    f"{key}: the shortest length {low_high[0]} is above the longest "
                    f"{low_high[1]}; write [shortest, longest]"
                )
        return self


# The model search's candidates: name → the model section it trains (a `model.type` and
# the settings that make it that candidate). Default order: cheapest and strongest first,
# so that a short budget still trains the ones most likely to win.
AUTO_CANDIDATES: dict[str, dict[str, Any]] = {
    "gbm": {"type": "gbm"},
    "ngram": {"type": "ngram"},
    "mlp": {"type": "mlp"},
    "text": {"type": "text", "encoder": "cnn"},
    "text-transformer": {"type": "text", "encoder": "transformer"},
    "cnn": {"type": "cnn"},
}
CandidateName = Literal["gbm", "ngram", "mlp", "text", "text-transformer", "cnn"]
_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|sec|m|min|h)?\s*$")
_SECONDS = {None: 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


class AutoConfig(Section):
    type: Literal["auto"] = "auto"
    """A time-budgeted model search: train the candidates that fit the data (gbm and mlp
    for tables; n-gram, text CNN and text transformer for text; cnn for images) on the
    same train / validation split, one after another until the budget is spent, and
    register the best by the validation metric (accuracy for classification, RMSE for
    regression) as its own model type, with the leaderboard in its manifest."""
    budget: float = Field(300.0, gt=0)
    """Wall-clock seconds for the search: a duration (`30s`, `5m`, `1h`) or a number of
    seconds. A candidate starts only while budget is left and gets its share of what is
    left (left / candidates still to try); a network or booster that would run past its
    share stops at its best epoch / round so far. The winner's evaluation and packaging
    come after the budget."""
    candidates: list[CandidateName] | None = None
    """Which candidates to try, in this order; `None`: those that fit the inputs,
    cheapest / strongest first: `[gbm, mlp]` for a table, `[ngram, text,
    text-transformer]` with a text input, `[cnn]` with an image input."""
    overrides: dict[CandidateName, dict[str, Any]] = {}
    """Model settings per candidate, e.g. `{mlp: {layers: [64]}, gbm: {num_leaves: 15}}`
    (the keys of that model type's section)."""
    ensemble: Literal["if_better", "always", "never"] = "if_better"
    """With two or more trained candidates, also build a weighted ensemble of them
    (Caruana's greedy selection on the validation predictions) and register it (model
    type `ensemble`) when its validation metric beats the best single candidate's
    (`if_better`), whatever it scores (`always`), or never."""

    @field_validator("budget", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        if isinstance(value, str):
            match = _DURATION.match(value)
            if match is None:
                raise ValueError(
                    f"{value!r} is not a duration; write it like 30s, 5m, 1h or a number "
                    "of seconds"
                )
            return float(match.group(1)) * _SECONDS[match.group(2)]
        return value

    @model_validator(mode="after")
    def _overrides_are_model_settings(self) -> AutoConfig:
        from pydantic import TypeAdapter, ValidationError

        adapter = TypeAdapter(ModelConfig)
        for name, settings in self.overrides.items():
            if "type" in settings:
                raise ValueError(f"overrides.{name}: leave out 'type' (the candidate sets it)")
            try:
                adapter.validate_python({**AUTO_CANDIDATES[name], **settings})
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(str(p) for p in err["loc"][1:])
                problem = ("not a setting of this model type" if err["type"] == "extra_forbidden"
                           else err["msg"].removeprefix("Value error, "))
                raise ValueError(f"overrides.{name}.{key}: {problem}") from None
        return self


class EnsembleConfig(Section):
    type: Literal["ensemble"] = "ensemble"
    """A weighted average of other models' probabilities (values for regression), written
    by a model search (`type: auto`, `ensemble`); its package holds each member's."""
    members: list[CandidateName] = []
    """The candidates it averages, in the order of `weights`."""
    weights: list[float] = []
    """Each member's weight (they sum to 1)."""


class PopularityConfig(Section):
    type: Literal["popularity"] = "popularity"
    """Recommends the items most users interacted with in training, the same list for
    everyone: the baseline every recommender is measured against. Reads
    the `recommend` section."""


class MFConfig(Section):
    type: Literal["mf"] = "mf"
    """Matrix factorization for implicit feedback, fitted by alternating least squares
    (Hu, Koren & Volinsky 2008): a user's score for an item is the dot product of their
    factor vectors. Reads the `recommend` section."""
    factors: int = Field(64, ge=1, le=1024)
    """Length of each user and item vector (larger fits more taste, costs more)."""
    iterations: int = Field(15, ge=1)
    """ALS sweeps (each solves every user, then every item, by 3 conjugate-gradient
    steps warm-started from the last sweep, as the `implicit` library does)."""
    regularization: Annotated[float, Field(ge=0)] | Literal["auto"] = 0.05
    """L2 penalty λ on the factors (added to each row's normal equations); `auto`: chosen
    with `alpha: auto` (the pair), from 0.1, 3 and 30."""
    alpha: Annotated[float, Field(gt=0)] | Literal["auto"] = 20.0
    """Confidence of an observed interaction: alpha × weight, as the `implicit` library
    computes it (an unobserved pair has confidence 1; 20 beat 5 and 10 on the Debian
    graph's validation split: benchmarks/recommend.py). `auto` (what `foundry
    init` writes): 0.25, 1, 4, 16 and 40 are fitted (3 sweeps each) on the training
    interactions less each user's latest 10% (with each auto regularization) and the
    best NDCG@k on those is kept. The best value depends on the data: 40 on the sparse
    Debian graph, 1 on dense 1-5 star ratings (a generated MovieLens-shaped table)."""
    seed: int | None = None
    """Seed of the initial factors; None: `train.seed`."""


class TwoTowerConfig(Section):
    type: Literal["two_tower"] = "two_tower"
    """A user tower (an id embedding) and an item tower (an id embedding plus the mean
    of the item's feature embeddings, from `recommend.item_features`), trained in
    PyTorch with in-batch softmax. Items with features but no interactions (new items)
    get a vector from their features alone, so they are recommended too."""
    dim: int = Field(64, ge=1, le=1024)
    """Length of the user and item vectors."""
    epochs: int = Field(10, ge=1)
    """Passes over the training interactions."""
    batch_size: int = Field(1024, ge=2)
    """Interactions per step; the other items of a batch are each row's negatives."""
    lr: float = Field(0.01, gt=0)
    """Adam's learning rate."""
    temperature: float = Field(0.1, gt=0)
    """Divides the scores in the softmax (lower: sharper)."""
    id_dropout: float = Field(0.5, ge=0, le=1)
    """Share of steps' items whose id embedding is left out, so the feature part learns
    to stand alone (what a new item has)."""
    seed: int | None = None
    """Seed of the initial weights and batches; None: `train.seed`."""


RECOMMENDER_TYPES = ("popularity", "mf", "two_tower")
"""`model.type` values trained on an interactions table (the `recommend` section)."""


ModelConfig = Annotated[
    MLPConfig | CNNConfig | TextModelConfig | GPTConfig | HFModelConfig | GBMConfig
    | NGramConfig | AutoConfig | EnsembleConfig | PopularityConfig | MFConfig
    | TwoTowerConfig,
    Field(discriminator="type"),
]

# -------------------------------------------------------------------------- train


class OptimizerConfig(Section):
    type: Literal["sgd", "adagrad", "rmsprop", "adam", "adamw"] = "adam"
    """Optimizer from torch.optim."""
    lr: float = Field(1e-3, gt=0)
    """Peak learning rate (reached after warm-up)."""
    weight_decay: float = Field(0.0, ge=0)
    """L2 penalty (decoupled for adamw)."""
    momentum: float = Field(0.0, ge=0, lt=1)
    """SGD and RMSProp momentum."""
    nesterov: bool = False
    """SGD: Nesterov momentum (needs momentum > 0)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam/AdamW moment decay rates."""

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and (self.type != "sgd" or self.momentum <= 0):
            raise ValueError("nesterov needs type: sgd and momentum > 0")
        return self


class SchedulerConfig(Section):
    type: Literal["constant", "step", "exponential", "linear", "cosine"] = "constant"
    """Learning-rate schedule after warm-up, stepped once per batch."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up from 0 to `lr` over this many optimizer steps."""
    warmup_epochs: float = Field(0.0, ge=0)
    """Warm-up length in epochs (added to warmup_steps)."""
    step_size: int = Field(1, ge=1)
    """step: multiply by `gamma` every `step_size` epochs."""
    gamma: float = Field(0.1, gt=0, le=1)
    """step / exponential: decay factor (exponential: per epoch)."""
    min_lr: float = Field(0.0, ge=0)
    """linear / cosine: learning rate at the last step."""


class EarlyStoppingConfig(Section):
    metric: str = "val_loss"
    """Validation metric to watch (`val_loss`, `val_accuracy`, `val_roc_auc`, `val_rmse`...)."""
    mode: Literal["auto", "min", "max"] = "auto"
    """`auto`: minimise losses and errors, maximise everything else."""
    patience: int | None = Field(5, ge=1)
    """Stop after this many epochs without improvement; `None` never stops early."""
    min_delta: float = Field(0.0, ge=0)
    """Smallest change that counts as an improvement."""


class PrivacyConfig(Section):
    """Differentially private training (DP-SGD, Opacus): each example's gradient is
    clipped and Gaussian noise is added, calibrated so the whole run spends at most
    `target_epsilon`.

    DP-SGD wants other settings than ordinary training: large batches (a few percent of
    the rows or more: the noise is added once per batch), a higher learning rate (Adam
    ~1e-2), and a fixed number of epochs (`train.early_stopping.patience: null`), since
    the noise is calibrated to spend the budget over the planned epochs and stopping
    early leaves it unused. Supported for mlp, cnn and text models; not for gpt or hf."""

    target_epsilon: float = Field(gt=0)
    """Privacy budget of the whole run (smaller is more private; 1-10 is common)."""
    delta: float | None = Field(None, gt=0, lt=1)
    """Probability the guarantee fails; `None`: 1 / (10 x training rows)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Per-example gradient clipping norm."""
    accountant: Literal["prv", "rdp"] = "prv"
    """Privacy accountant: `prv` (tighter) or `rdp`."""


class TrainConfig(Section):
    epochs: int = Field(20, ge=1)
    """Largest number of passes over the training split."""
    batch_size: int = Field(128, ge=1)
    """Rows per optimizer step."""
    loss: Literal["auto", "cross_entropy", "bce", "mse", "mae", "huber"] = "auto"
    """`auto`: cross_entropy for classification, mse for regression. `bce` needs a
    binary target (one output logit)."""
    optimizer: OptimizerConfig = OptimizerConfig()
    """Optimizer and its hyper-parameters."""
    scheduler: SchedulerConfig = SchedulerConfig()
    """Learning-rate schedule."""
    grad_clip: float | None = Field(None, gt=0)
    """Clip the global gradient norm to this value."""
    early_stopping: EarlyStoppingConfig = EarlyStoppingConfig()
    """Early stopping on a validation metric; the best epoch's weights are kept."""
    seed: int = 42
    """Seed for weights, shuffling, dropout and augmentation."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "fp32"
    """`bf16`: autocast on CPU or CUDA; `fp16`: CUDA AMP with a grad scaler; `auto`:
    fp16 AMP on CUDA, fp32 on CPU."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train; `auto` takes CUDA when present."""
    deterministic: bool = True
    """Ask PyTorch for deterministic kernels (bit-for-bit repeatable on CPU)."""
    num_threads: int | None = Field(None, ge=1)
    """CPU threads for PyTorch; `None` keeps PyTorch's default (one per core), less one
    per worker decoding lazy images (`data.images.workers`), which needs a core to itself."""
    gradient_accumulation: int = Field(1, ge=1)
    """Micro-batches whose gradients are summed before each optimizer step (effective
    batch = batch_size x gradient_accumulation)."""
    privacy: PrivacyConfig | None = None
    """Train with differential privacy (mlp, cnn, text models); `None`: not private."""


class GenerationConfig(Section):
    """How a language model generates text (defaults for `foundry generate` and the API)."""

    max_tokens: int = Field(64, ge=1)
    """Most new tokens per completion."""
    temperature: float = Field(1.0, ge=0)
    """Softmax temperature; 0 = greedy decoding."""
    top_k: int | None = Field(None, ge=1)
    """Sample only among the k most likely tokens."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Nucleus sampling: the smallest set of tokens whose probability reaches top_p."""
    repetition_penalty: float = Field(1.0, gt=0)
    """> 1 makes tokens already in the sequence less likely (CTRL-style)."""
    stop: list[str] = []
    """Generation ends before any of these strings; they are not returned."""
    seed: int | None = None
    """Seed for sampling; the same seed and prompt give the same text."""


class LMConfig(Section):
    """Language-model data and generation (model `gpt`, or `hf` with task `causal_lm`).

    Data: a `.txt` file (documents separated by blank lines), or a CSV / JSONL / Parquet
    file with a text column: a corpus. A JSONL file with `prompt` + `completion` or chat
    `messages` ([{role, content}, ...]) is instruction data: prompts are rendered with the
    chat template and the loss covers the completion tokens only.
    """

    text_column: str = "text"
    """Corpus column holding the text."""
    prompt_column: str = "prompt"
    """Instruction data: the prompt column."""
    completion_column: str = "completion"
    """Instruction data: the completion column."""
    messages_column: str = "messages"
    """Chat data: the column of message lists."""
    chat_template: str | None = None
    """Jinja template for chat messages; `None`: the tokenizer's own template if it has
    one, else a plain `<|role|>` layout."""
    loss_on: Literal["auto", "all", "completion"] = "auto"
    """Tokens the loss covers: `auto` = completion tokens for instruction data, every
    token for a corpus."""
    block_size: int | None = Field(None, ge=2)
    """Training sequence length in tokens; `None`: the model's context_length (gpt) or
    max_length (hf)."""
    generation: GenerationConfig = GenerationConfig()
    """Generation defaults."""


class MitigationConfig(Section):
    constraint: Literal["demographic_parity", "equalized_odds"] = "demographic_parity"
    """What the post-processing equalises across groups: selection rates, or true and
    false positive rates."""
    objective: Literal["accuracy_score", "balanced_accuracy_score"] = "accuracy_score"
    """What the group thresholds maximise under the constraint."""
    tolerance: float | None = Field(None, ge=0, le=1)
    """Demographic parity only: the groups' selection rates may still differ by this much
    (Fairlearn's `tol`). `None`: exact parity, which costs the most accuracy when the
    groups' base rates differ; e.g. 0.05 keeps most of the accuracy."""

    @model_validator(mode="after")
    def _tolerance_for_parity(self) -> MitigationConfig:
        if self.tolerance is not None and self.constraint != "demographic_parity":
            raise ValueError(
                "evaluate.fairness.mitigation.tolerance needs constraint "
                "demographic_parity (Fairlearn cannot relax equalized odds)"
            )
        return self


class FairnessConfig(Section):
    sensitive_features: list[str] = []
    """Columns whose groups are compared (they need not be model inputs): accuracy,
    selection rate, TPR and FPR per group, demographic parity and equalized odds gaps."""
    positive_class: str | None = None
    """Binary targets: the class that counts as selected; `None`: the second class in
    sorted order (1, true, yes, >50K...)."""
    mitigation: MitigationConfig | None = None
    """Fit group thresholds (Fairlearn `ThresholdOptimizer`) on the validation split; they
    are saved with the model and applied when a prediction supplies the sensitive
    features. Binary classifiers only."""


class CalibrationConfig(Section):
    temperature_scaling: bool = True
    """Fit a temperature on the validation split and divide the logits by it at prediction
    (probabilities become calibrated; the predicted class does not change)."""
    bins: int = Field(15, ge=2)
    """Equal-width confidence bins of the expected calibration error."""


class ExplainConfig(Section):
    permutation_importance: bool = True
    """Global feature importance: the drop in the validation metric when a column is
    shuffled."""
    repeats: int = Field(5, ge=1)
    """Shuffles per column."""
    max_rows: int = Field(2000, ge=10)
    """Validation rows used (a random sample beyond this)."""
    steps: int = Field(50, ge=2)
    """Integrated-gradients steps for local attributions (`foundry explain`, the
    `/explain` route)."""


class EvaluateConfig(Section):
    split: Literal["test", "val", "train"] = "test"
    """Which split the final metrics are computed on."""
    fairness: FairnessConfig = FairnessConfig()
    """Per-group audit and mitigation (classifiers)."""
    calibration: CalibrationConfig = CalibrationConfig()
    """Expected calibration error and temperature scaling (classifiers)."""
    explain: ExplainConfig = ExplainConfig()
    """Feature importance and local attributions."""


class CardConfig(Section):
    """Fields of the model card that only a person can write."""

    intended_use: str = ""
    """Who should use the model, for what."""
    limitations: str = ""
    """Where it is known to fail or must not be used."""
    owner: str = ""
    """Team or person to contact."""
    license: str = ""
    """Terms the model is offered under."""


# ----------------------------------------------------------------------- compress

CompressMethod = Literal["int8", "onnx", "onnx_int8", "prune", "distill", "sparsity"]


class PruneConfig(Section):
    amount: float = Field(0.5, gt=0, lt=1)
    """Fraction of the hidden units (MLP) or filters (CNN) of each layer removed: the
    ones with the smallest weights. The same fraction of weights is zeroed by `sparsity`."""
    finetune_epochs: int = Field(3, ge=0)
    """Epochs of fine-tuning after structured pruning (the training config's loop, at
    `finetune_lr`)."""
    finetune_lr: float | None = Field(None, gt=0)
    """Learning rate of the fine-tune; `None`: a tenth of `train.optimizer.lr`."""


class DistillConfig(Section):
    student: ModelConfig | None = None
    """Architecture of the student (e.g. `{type: mlp, layers: [64]}`); required for the
    `distill` method. It reads the teacher's preprocessed inputs."""
    teacher: str | None = None
    """Registry reference of the teacher; `None`: the model being compressed."""
    alpha: float = Field(0.5, ge=0, le=1)
    """Weight of the loss on the true labels; 1 - alpha goes to matching the teacher."""
    temperature: float = Field(2.0, gt=0)
    """Softens both distributions before they are compared (Hinton et al. use 2-20)."""
    epochs: int | None = Field(None, ge=1)
    """Student training epochs; `None`: `train.epochs`."""

    @model_validator(mode="after")
    def _student_is_a_network(self) -> DistillConfig:
        if isinstance(self.student, GBMConfig | NGramConfig):
            raise ValueError(
                "student: distillation trains a network on the teacher's outputs; a "
                f"{self.student.type} student cannot be trained that way (use type: mlp)"
            )
        return self


class CompressConfig(Section):
    """`foundry compress` / the compress stage of `foundry run`: variants of a trained
    model, each registered as a new version with its parent, measured side by side."""

    methods: list[CompressMethod] = ["int8", "onnx", "onnx_int8"]
    """Variants to build. `int8`: Linear layers in int8 with dynamic activation scales
    (PyTorch); `onnx`: ONNX Runtime, fp32; `onnx_int8`: ONNX Runtime dynamic int8;
    `prune`: structured pruning + fine-tune (MLP, CNN); `distill`: a smaller student
    trained on the teacher's outputs; `sparsity`: unstructured magnitude pruning, reported
    only (zeros do not speed up dense CPU kernels)."""
    max_accuracy_drop: float | None = Field(None, ge=0, le=1)
    """Budget for the loss of quality (0.01 = one point of accuracy; regression: of R²;
    a GPT: a 1% higher perplexity, relative to the parent's): the fastest variant within
    it is tagged `name:compressed`. `None`: tag nothing."""
    data: str | None = None
    """Labelled file the variants are measured on; `None`: the training config's
    `evaluate.split` of its own data."""
    repeats: int = Field(30, ge=3)
    """Timed forward passes per latency measurement (the median is reported)."""
    prune: PruneConfig = PruneConfig()
    """Settings of the `prune` and `sparsity` methods."""
    distill: DistillConfig = DistillConfig()
    """Settings of the `distill` method."""

    @model_validator(mode="after")
    def _student_for_distill(self) -> CompressConfig:
        if "distill" in self.methods and self.distill.student is None:
            raise ValueError(
                "compress.distill.student is required by the distill method: the smaller "
                "model to train, e.g. {type: mlp, layers: [64]}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"compress.methods lists a method twice: {self.methods}")
        return self


# -------------------------------------------------------------------------- serve


class PlanConfig(Section):
    """What a customer on this plan pays and may do. Money is integer cents."""

    price_cents: int = Field(0, ge=0)
    """Monthly price in cents (4900 = $49.00)."""
    included_units: int = Field(1000, ge=0)
    """Units (records predicted; tokens for language models) included per period."""
    overage_cents_per_1k: int = Field(0, ge=0)
    """Price of 1,000 units beyond the included ones, in cents (rounded up per period)."""
    hard_limit: bool = False
    """Refuse requests beyond `included_units` (429 `quota_exceeded`) instead of billing
    overage."""
    requests_per_minute: int = Field(60, ge=1)
    """Token-bucket rate limit per key (bursts up to this many)."""
    tokens_per_minute: int | None = Field(None, ge=1)
    """Language models: a second bucket for tokens (prompt + max_tokens of each request,
    bursts up to this many); `None`: no token rate limit."""
    max_records_per_request: int = Field(100, ge=1)
    """Largest list of records one predict request may carry (413 beyond)."""
    models: list[str] | None = None
    """Models keys on this plan may call; `None` allows every served model."""
    expires_days: int | None = Field(None, ge=1)
    """Keys on this plan expire this many days after creation (trials)."""


BUILTIN_PLANS: dict[str, PlanConfig] = {
    "trial": PlanConfig(
        price_cents=0,
        included_units=1_000,
        hard_limit=True,
        requests_per_minute=60,
        tokens_per_minute=10_000,
        max_records_per_request=100,
        expires_days=14,
    ),
    "starter": PlanConfig(
        price_cents=4_900,
        included_units=100_000,
        overage_cents_per_1k=50,
        requests_per_minute=600,
        tokens_per_minute=100_000,
        max_records_per_request=500,
    ),
    "pro": PlanConfig(
        price_cents=19_900,
        included_units=1_000_000,
        overage_cents_per_1k=30,
        requests_per_minute=3_000,
        tokens_per_minute=1_000_000,
        max_records_per_request=1_000,
    ),
    "enterprise": PlanConfig(
        price_cents=99_900,
        included_units=10_000_000,
        overage_cents_per_1k=10,
        requests_per_minute=20_000,
        max_records_per_request=5_000,
    ),
}


class BatchingConfig(Section):
    enabled: bool = True
    """Coalesce concurrent requests for a model into one forward pass."""
    max_batch_size: int = Field(64, ge=1)
    """Most records in one forward pass."""
    max_wait_ms: float = Field(2.0, ge=0)
    """Longest a request waits for others to join its batch."""


class UpstreamConfig(Section):
    """A language model answered by another OpenAI-compatible engine (vLLM, TGI,
    llama.cpp's server, another `foundry serve`) and sold through this server's keys,
    plans, quotas, idempotency and usage report (foundry.serve.upstream). An entry of
    `serve.models`: `{name: chat, upstream: http://gpu-1:8000/v1, model: Qwen/Qwen2.5-7B}`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    """The model name clients call here (`model` in their requests, plans' `models`)."""
    upstream: str
    """Base URL of the engine's OpenAI API, up to and including its `/v1`
    (`http://10.0.0.5:8000/v1`); `/completions` and `/chat/completions` are appended."""
    model: str | None = None
    """The model id the upstream serves (what it lists in its own `/v1/models`);
    `None`: the same as `name`."""
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """Name of the environment variable holding the upstream's API key (sent to it as
    `Authorization: Bearer ...`); the key itself never goes in the YAML. `None`: no key."""
    max_tokens: int = Field(256, ge=1)
    """Completion tokens a request gets when it sets no `max_tokens`; sent to the
    upstream, so every request has a bound to reserve against the quota."""
    context_length: int | None = Field(None, ge=1)
    """Shown in `GET /v1/models`; `None`: not shown (the upstream enforces its own)."""
    connect_timeout_s: float = Field(5.0, gt=0)
    """Seconds to open a connection to the upstream; then 504 `upstream_timeout`."""
    timeout_s: float = Field(120.0, gt=0)
    """Seconds to wait for the upstream's next bytes (the whole answer when not
    streaming, the first token, each later chunk); then 504 `upstream_timeout`."""
    max_connections: int = Field(64, ge=1)
    """Open connections to the upstream per worker process; a request beyond them waits
    up to `timeout_s` for one, then 503 `upstream_busy` with Retry-After."""

    @field_validator("upstream")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+(/\S*)?$", v):
            raise ValueError("must be the engine's base URL, like http://10.0.0.5:8000/v1")
        return v


ServedModelEntry = Annotated[
    Annotated[str, Tag("ref")] | Annotated[UpstreamConfig, Tag("upstream")],
    # by shape, so a mistyped upstream entry's error names its key, not "not a string"
    Discriminator(lambda v: "ref" if isinstance(v, str) else "upstream"),
]
"""A `serve.models` entry: a registry reference, or an upstream engine."""


class LMServeConfig(Section):
    """How a served language model shares its engine between requests (continuous
    batching, `foundry.lm.continuous`; docs/SERVING.md)."""

    max_concurrent: int = Field(32, ge=1)
    """Streams generated together: the KV-cache slots, allocated once per model
    (memory: max_concurrent x layers x 2 x kv_heads x (context + 1) x head_dim x 4
    bytes; the example GPT: 16 MB at 32). 1 = the one-at-a-time engine: each request
    has the model's thread to itself until it ends."""
    max_queue: int = Field(64, ge=0)
    """Requests that may wait for a slot; beyond them a request is refused with 503
    `server_busy` and `Retry-After`, so a burst does not pile up unbounded latency."""
    max_batch_tokens: int = Field(256, ge=1)
    """Tokens one engine step computes (one per running stream, plus prompt chunks of
    new requests, one chunk at least): bounds how long a burst of new prompts delays
    the tokens of running streams."""
    prefill_chunk: int = Field(64, ge=1)
    """A prompt is read this many tokens per forward pass, so a long prompt delays the
    running streams by one chunk per step rather than its whole length."""
    retry_after_s: int = Field(1, ge=1)
    """`Retry-After` of a 503 when the queue is full."""
    engine: Literal["process", "thread"] = "process"
    """Where the continuous-batching engine runs: `process`, a process of its own per
    model and worker (the server process tokenizes and streams; the engine process only
    runs steps, so neither waits for the other's GIL); `thread`, a thread of the server
    process (one process less, for a model too small to be worth one)."""
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    """Where served language models run: `cuda` (the first GPU), `auto` (CUDA when
    present, else the CPU) or `cpu`."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights, activations and KV cache of served language models: `bfloat16` halves
    their memory and is what GPUs run fastest; tokens are sampled from float32 logits
    either way. A row's tokens stay the same alone or batched only in float32 on CPU."""


class TLSConfig(Section):
    """HTTPS (docs/SECURITY.md): TLS 1.2+ terminated by foundry itself, on the one port it
    listens on; with a certificate there is no plain-HTTP listener."""

    cert: str | None = None
    """PEM certificate (chain) the server presents (`--tls-cert`). With `key`: HTTPS."""
    key: str | None = None
    """PEM private key of `cert` (`--tls-key`)."""
    client_ca: str | None = None
    """PEM certificate of a CA (`--tls-client-ca`): /admin routes then also need a client
    certificate it signed, presented in the TLS handshake (mutual TLS); prediction
    clients need none."""
    https_only: bool = False
    """Refuse to start without `cert` and `key` (`--https-only`), so a deployment that lost
    its certificate never serves in clear."""
    hsts_max_age_s: int = Field(31_536_000, ge=0)
    """`Strict-Transport-Security: max-age` sent with every HTTPS answer (one year):
    browsers then refuse plain HTTP to this host."""

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TLSConfig:
        if bool(self.cert) != bool(self.key):
            raise ValueError("give both cert and key (--tls-cert and --tls-key)")
        if self.client_ca and not self.cert:
            raise ValueError("client_ca needs cert and key: mutual TLS is TLS")
        if self.https_only and not self.cert:
            raise ValueError(
                "https_only is set but no certificate is: give --tls-cert and --tls-key "
                "(serve.tls.cert, serve.tls.key)"
            )
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.cert)


class ServeConfig(Section):
    host: str = "127.0.0.1"
    """Interface to bind (127.0.0.1 keeps the API on this machine)."""
    port: int = Field(8000, ge=0, le=65535)
    """TCP port."""
    workers: int = Field(1, ge=1)
    """uvicorn worker processes; they share the database, so quotas hold across them."""
    models: list[ServedModelEntry] = []
    """Models to serve: registry references (`name`, `name:3`; the CLI arguments add to
    these), or language models answered by another OpenAI-compatible engine
    (`{name, upstream, model, api_key_env}`, see `serve.models` below)."""
    batching: BatchingConfig = BatchingConfig()
    """Dynamic batching defaults for every model."""
    model_batching: dict[str, BatchingConfig] = {}
    """Per-model batching settings, by model name."""
    plans: dict[str, PlanConfig] = {}
    """Plans by name; these replace or add to the built-ins trial, starter, pro, enterprise."""
    max_body_bytes: int = Field(1_000_000, ge=1)
    """Largest request body accepted (413 beyond)."""
    offload_body_bytes: int = Field(65_536, ge=0)
    """Predict and explain bodies larger than this are parsed and checked on a worker
    thread, a record at a time, so the event loop keeps answering the worker's other
    requests meanwhile; smaller ones are parsed on the loop, which they hold for a few
    milliseconds at most (a 64 KB body of Adult records: 1-3 ms), about what a worker
    thread would cost them in switching (Python hands the GIL over every 5 ms)."""
    header_timeout_s: float = Field(10.0, gt=0)
    """Seconds a client may take to send a request's line and headers, counted from its
    first byte (from the connection, for its first request); then 408 `request_timeout`
    and the connection is closed, so clients that trickle headers cannot hold
    connections (slowloris)."""
    body_timeout_s: float = Field(30.0, gt=0)
    """Seconds a request's whole body may take to arrive after its headers; then 408 and
    the connection is closed. Raise it with `max_body_bytes` for large bodies on slow
    links (1 MB at 1 Mbit/s takes 8 s)."""
    max_connections: int | None = Field(1000, ge=1)
    """Open connections one worker process serves; a request on a connection beyond them
    is answered 503 `server_busy` with `Retry-After`. Below the usual 1,024 open-file
    limit, which the database, logs and model files share. None: no cap."""
    metrics: Literal["public", "admin", "off"] = "admin"
    """Who may read `GET /metrics` (model names, request counts, latencies): `admin`
    needs `Authorization: Bearer <FOUNDRY_ADMIN_TOKEN>` (Prometheus sends it with
    `authorization: {credentials: ...}`); `public` anyone who reaches the port; `off`
    nobody (404)."""
    rotate_grace_hours: float = Field(24.0, ge=0)
    """After `foundry keys rotate`, the old key keeps working this long."""
    lm: LMServeConfig = LMServeConfig()
    """Language models: continuous batching and its bounds."""
    tls: TLSConfig = TLSConfig()
    """HTTPS: certificate, key, mutual TLS for /admin, HSTS (docs/SECURITY.md)."""

    @model_validator(mode="after")
    def _plan_names_fit_the_database(self) -> ServeConfig:
        for name in self.plans:  # keys store their plan's name in a 64-character column
            if not name or len(name) > 64:
                raise ValueError(
                    f"serve.plans: plan name {name[:80]!r} must have 1 to 64 characters"
                )
        return self

    @model_validator(mode="after")
    def _upstream_names_once(self) -> ServeConfig:
        names = [m.name for m in self.upstreams()]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"serve.models: upstream name(s) {twice} given more than once")
        return self

    def all_plans(self) -> dict[str, PlanConfig]:
        return {**BUILTIN_PLANS, **self.plans}

    def model_refs(self) -> list[str]:
        """The registry references in `models` (not the upstreams)."""
        return [m for m in self.models if isinstance(m, str)]

    def upstreams(self) -> list[UpstreamConfig]:
        """The upstream engines in `models`."""
        return [m for m in self.models if isinstance(m, UpstreamConfig)]


# --------------------------------------------------------------------------- cost


class CostConfig(Section):
    """Unit economics (`foundry cost MODEL`, docs/ECONOMICS.md): machine prices turn the
    measured training time and serving throughput into money. Money here is float US
    dollars (or `currency`), not the integer cents of plans."""

    currency: str = "USD"
    """Label printed with every amount; the prices below are in this currency."""
    train_machine_per_hour: float = Field(0.10, ge=0)
    """Price of the training machine per hour. Default: an on-demand 2-vCPU cloud VM
    (AWS c6i.large $0.085/h, GCP e2-standard-2 $0.067/h; rounded up); a GPU machine
    costs about ten times more (AWS g5.xlarge, one A10G: ~$1.01/h)."""
    serve_machine_per_hour: float = Field(0.10, ge=0)
    """Price of one serving machine per hour (default: the same 2-vCPU VM)."""
    serve_utilization: float = Field(0.5, gt=0, le=1)
    """Share of a serving machine's measured capacity that is sold on average. Traffic
    peaks at about twice its mean and machines are sized for the peak, and latency
    grows fast beyond ~70% load, so about half the capacity earns money."""
    fixed_monthly: float = Field(0.0, ge=0)
    """Other fixed costs per month (monitoring, storage, staff share), added to one
    serving machine running all month when counting break-even customers."""
    markup: float = Field(3.0, ge=1)
    """Cost-plus pricing: suggested price = cost × markup (3: a 67% gross margin)."""
    value_per_1k: float | None = Field(None, ge=0)
    """Value-based pricing: what 1,000 units (predictions; tokens for language models)
    are worth to a customer; `None`: no value-based suggestion."""
    value_share: float = Field(0.2, gt=0, le=1)
    """Share of that value the price captures (10-30% is the usual rule of thumb)."""
    competitor_prices_per_1k: dict[str, float] = {}
    """Competitive pricing: competitors' prices per 1,000 units by name, e.g.
    `{vendor_a: 1.5, vendor_b: 0.8}`; empty: no competitive suggestion."""
    competitive_undercut: float = Field(0.1, ge=0, lt=1)
    """Competitive pricing: price this fraction below the median competitor (never below
    cost)."""
    measure: Literal["server", "model"] = "server"
    """How `foundry cost` measures the serving throughput (`--measure`): `server` starts a
    real `foundry serve` on a temporary copy of the model (HTTP, JSON, keys, metering,
    batching; your registry, keys and usage are not touched) and takes the best of 1, 8
    and 32 concurrent clients, one record per request; `model` times the model in
    process: seconds faster, but it leaves out everything around the model and so
    understates the cost (by 40-45% for a small MLP, benchmarks/cost.py). Language and
    embedding models are measured in process either way."""
    throughput_batch: Literal["single", "serving"] = "single"
    """With `measure: model`, which in-process throughput the cost uses: `single` (one
    record per forward pass, a lone request; the higher, safer cost) or `serving` (full
    batches of `serve.batching.max_batch_size`, reached only when requests queue)."""
    measure_seconds: float = Field(2.0, gt=0)
    """Seconds each measured case runs: each client count (server), each batch size
    (model)."""

    @model_validator(mode="after")
    def _competitor_prices_valid(self) -> CostConfig:
        for name, price in self.competitor_prices_per_1k.items():
            if not price >= 0:  # also refuses NaN
                raise ValueError(
                    f"competitor_prices_per_1k.{name} must be >= 0, got {price}"
                )
        return self


# --------------------------------------------------------------------------- tune


class ParamSpec(Section):
    """One searched config key: `{type: choice, values: [...]}`, `{type: int, low: 32,
    high: 256, step: 32}`, `{type: float, low: 0.0, high: 0.5}` or
    `{type: log_float, low: 1e-4, high: 1e-1}`."""

    type: Literal["choice", "int", "float", "log_float"]
    """`choice`: one of `values`; `int` / `float`: uniform in [low, high]; `log_float`:
    uniform in log space (learning rates, weight decay)."""
    values: list[Any] | None = None
    """`choice`: the candidates (numbers, strings, `null`, or lists such as layer sizes)."""
    low: float | None = None
    """`int`, `float`, `log_float`: the smallest value (> 0 for log_float)."""
    high: float | None = None
    """`int`, `float`, `log_float`: the largest value (included)."""
    step: float | None = Field(None, gt=0)
    """`int`, `float`: spacing of the values (int: 1 when unset; float: continuous)."""

    @model_validator(mode="after")
    def _range_is_valid(self) -> ParamSpec:
        if self.type == "choice":
            if not self.values:
                raise ValueError("type choice needs a non-empty `values` list")
            if (self.low, self.high, self.step) != (None, None, None):
                raise ValueError("type choice takes `values`, not low / high / step")
            return self
        if self.values is not None:
            raise ValueError(f"type {self.type} takes low and high, not `values`")
        if self.low is None or self.high is None:
            raise ValueError(f"type {self.type} needs `low` and `high`")
        if self.low >= self.high:
            raise ValueError(f"low must be < high, got low={self.low:g} and high={self.high:g}")
        if self.type == "log_float" and self.low <= 0:
            raise ValueError(f"log_float needs low > 0, got low={self.low:g}")
        if self.type == "log_float" and self.step is not None:
            raise ValueError("log_float takes no step")
        whole = (self.low, self.high, self.step or 1)
        if self.type == "int" and not all(float(v).is_integer() for v in whole):
            raise ValueError("type int needs whole numbers for low, high and step")
        return self


class PrunerConfig(Section):
    """Stops unpromising trials early, from the metric each epoch reports."""

    type: Literal["none", "median", "hyperband"] = "median"
    """`median`: stop a trial whose epoch value is worse than the median of earlier
    trials at that epoch; `hyperband`: successive halving over epoch budgets from
    `min_epochs` to `train.epochs`; `none`: every trial runs to the end."""
    startup_trials: int = Field(5, ge=0)
    """median: trials that always run to the end before any is pruned."""
    warmup_epochs: int = Field(0, ge=0)
    """median: epochs of every trial that are never pruned."""
    min_epochs: int = Field(1, ge=1)
    """hyperband: the smallest budget, in epochs."""
    reduction_factor: int = Field(3, ge=2)
    """hyperband: one in `reduction_factor` trials goes on to each next budget."""


class TuneConfig(Section):
    """`foundry tune`: hyper-parameter search (Optuna). Each trial trains the config with
    its params applied as `key=value` overrides; the study lives in a database so
    processes on one or several machines share it."""

    params: dict[str, ParamSpec] = Field(min_length=1)
    """Search space: dotted config keys (`train.optimizer.lr`, `model.layers`) mapped to
    a range or a list of choices."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """`tpe`: Bayesian (Tree-structured Parzen Estimator); `random`; `grid`: every
    combination (choice and int params only)."""
    pruner: PrunerConfig = PrunerConfig()
    """Early stopping of bad trials from their per-epoch validation metric."""
    metric: str | None = None
    """Per-epoch validation metric to optimise: `val_loss`, `accuracy` / `val_accuracy`,
    `rmse`... `None`: `val_loss`. The trial's value is the metric at the epoch whose
    weights are kept."""
    direction: Literal["auto", "minimize", "maximize"] = "auto"
    """`auto`: minimise losses and errors, maximise everything else."""
    n_trials: int | None = Field(20, ge=1)
    """Trials this command runs (split among `n_jobs` workers); `None`: until `timeout`,
    or, with the grid sampler, until every point is tried."""
    timeout: float | None = Field(None, gt=0)
    """Time budget in seconds: no trial starts after it (running ones finish)."""
    n_jobs: int = Field(1, ge=1)
    """Worker processes on this machine, each running trials with cores / n_jobs torch
    threads (`foundry tune --jobs`)."""
    storage: str | None = None
    """Optuna RDB storage URL shared by every process of the study: `None` is a SQLite
    file in the tune output folder (one machine); `postgresql://user:pass@host/db`
    spreads trials over machines."""
    study_name: str | None = None
    """Name of the study in the storage; `None`: the config's `name`. Processes that use
    the same storage and name add trials to one study."""
    seed: int | None = None
    """Sampler seed; `None`: `train.seed` (worker i of `--jobs` adds i)."""

    @model_validator(mode="after")
    def _search_can_end(self) -> TuneConfig:
        if self.sampler == "grid":
            for key, spec in self.params.items():
                if spec.type not in ("choice", "int"):
                    raise ValueError(
                        f"the grid sampler searches choice and int params only; "
                        f"tune.params.{key} is {spec.type}"
                    )
        elif self.n_trials is None and self.timeout is None:
            raise ValueError("n_trials or timeout must be set, or the search never ends")
        return self


def _tune_key_problem(config: FoundryConfig, key: str) -> str | None:
    """Why the dotted `key` is not a setting of `config`, or None when it is one."""
    import difflib
    import types
    import typing

    if key.split(".")[0] in ("tune", "name"):
        return "the tune section and the model name cannot be searched"
    section: type[BaseModel] | None = FoundryConfig
    parts = key.split(".")
    for i, part in enumerate(parts):
        where = ".".join(parts[:i])
        if section is None:
            return f"'{where}' is a value, not a section"
        if part not in section.model_fields:
            hint = difflib.get_close_matches(part, list(section.model_fields), n=1)
            suggestion = f"; did you mean '{'.'.join([*parts[:i], hint[0]])}'?" if hint else ""
            return f"not a config key{suggestion}"
        annotation = section.model_fields[part].annotation
        section = type(config.model) if where == "" and part == "model" else None
        # a section, or an optional one (`PrivacyConfig | None`); lists and dicts are values
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        for arg in (annotation, *(typing.get_args(annotation) if union else ())):
            if section is None and isinstance(arg, type) and issubclass(arg, BaseModel):
                section = arg
    if section is not None:
        return f"'{key}' is a section; search the keys inside it"
    return None


# --------------------------------------------------------------------------- tracking


class MLflowTrackConfig(Section):
    uri: str | None = None
    """MLflow tracking URI: a server (`http://127.0.0.1:5000`) or a local store
    (`sqlite:///mlflow.db`, a folder). Default: the MLFLOW_TRACKING_URI environment
    variable."""
    experiment: str | None = None
    """Experiment the run goes into (created if missing). Default: the config's `name`."""
    run_name: str | None = None
    """Name of the MLflow run. Default: the run directory's name."""
    artifacts: bool = True
    """Upload the model card, metrics and config files of the run as artifacts."""


class TrackConfig(Section):
    """Experiment trackers a training run also reports to. A tracker that fails (server
    down) is warned about once and dropped: it never fails the run."""

    mlflow: MLflowTrackConfig | None = None
    """Log params (the flattened config), per-epoch metrics (gbm: every few rounds), the
    final metrics and the card to MLflow (`pip install 'foundry-mlops[tracking]'`)."""
    tensorboard: bool = False
    """Write TensorBoard event files to `<run_dir>/tensorboard` (`tensorboard --logdir
    runs`): per-epoch and final metrics, the config as text."""


class FoundryConfig(Section):
    """A whole pipeline: data → features → model → train → evaluate → registry."""

    name: str = Field("model", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=128)
    """Registry name of the trained model (letters, digits, `_`, `.`, `-`)."""
    description: str = ""
    """Free text stored with the model."""
    data: DataConfig
    """Where the data comes from and how it is split."""
    features: FeaturesConfig = FeaturesConfig()
    """What to predict and from which columns (language models on a corpus need none)."""
    model: ModelConfig = MLPConfig()
    """Architecture; `type` picks one of mlp, cnn, text, gpt, hf, gbm, ngram, auto (a
    model search), ensemble, popularity, mf, two_tower."""
    recommend: RecommendConfig = RecommendConfig()
    """Recommenders only (`model.type` popularity, mf, two_tower): the interactions
    table's user, item, weight and time columns, the held-out split and k."""
    lm: LMConfig = LMConfig()
    """Language models only: corpus / instruction columns, chat template, generation."""
    train: TrainConfig = TrainConfig()
    """Training loop settings."""
    evaluate: EvaluateConfig = EvaluateConfig()
    """Final evaluation settings."""
    card: CardConfig = CardConfig()
    """Model card fields (intended use, limitations, owner, license)."""
    compress: CompressConfig = CompressConfig()
    """Compressed variants (`foundry compress`; `foundry run` builds them when the config
    has this section)."""
    serve: ServeConfig = ServeConfig()
    """How `foundry serve` exposes models: batching, plans, limits."""
    cost: CostConfig = CostConfig()
    """Machine prices and pricing inputs for `foundry cost` (unit economics)."""
    output_dir: str = "runs"
    """Folder for run directories (checkpoints, metrics.jsonl); relative to the config."""
    tune: TuneConfig | None = None
    """Hyper-parameter search run by `foundry tune` (`train` and `run` ignore it)."""
    track: TrackConfig = TrackConfig()
    """Experiment tracking: MLflow and TensorBoard (off unless set)."""

    @property
    def is_language_model(self) -> bool:
        """Trained on text as token sequences (corpus or instructions), not on a target."""
        model = self.model
        if isinstance(model, GPTConfig):
            return True
        if isinstance(model, HFModelConfig):
            if model.task in ("causal_lm", "embedding"):
                return True
            return model.task == "auto" and self.features.target is None
        return False

    @property
    def is_recommender(self) -> bool:
        """Trained on an interactions table (the `recommend` section), not on a target."""
        return isinstance(self.model, PopularityConfig | MFConfig | TwoTowerConfig)

    @model_validator(mode="after")
    def _privacy_only_for_our_models(self) -> FoundryConfig:
        if self.train.privacy is not None and (
            isinstance(self.model, GPTConfig | HFModelConfig | GBMConfig | NGramConfig)
            or self.is_recommender
        ):
            raise ValueError(
                f"train.privacy: differentially private training is built for mlp, cnn and "
                f"text models, not for model type '{self.model.type}'; remove train.privacy "
                f"or pick one of those"
            )
        return self

    @model_validator(mode="after")
    def _tune_params_are_config_keys(self) -> FoundryConfig:
        for key in self.tune.params if self.tune is not None else ():
            problem = _tune_key_problem(self, key)
            if problem is not None:
                raise ValueError(f"tune.params.{key}: {problem}")
        return self

    @model_validator(mode="after")
    def _target_unless_language_model(self) -> FoundryConfig:
        needs_target = not (self.is_language_model or self.is_recommender)
        if self.features.target is None and needs_target:
            raise ValueError(
                "features.target is required: the column to predict (only language "
                "models, model type gpt or hf with task causal_lm, and recommenders, model "
                "type popularity, mf or two_tower, train without one)"
            )
        return self
