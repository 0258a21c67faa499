"""PII scrubbing of whole tables: values planted in text and category columns are masked,
hashed or removed, look-alikes stay, identifier columns are found, the report counts
what was planted and never repeats it, and predictions are scrubbed like training rows."""

from __future__ import annotations

import json
import random
import re
import time

import pandas as pd
import pytest

from foundry.config.schema import PIIConfig
from foundry.data.pii import luhn_valid
from foundry.data.scrub import PIIScrubber, format_report, merge_reports
from foundry.errors import ConfigError, ModelError

SALT_ENV = "FOUNDRY_PII_SALT"

PLANTED = {
    "email": ["ana.b@example.co.uk", "li.wei7@mail.example.org"],
    "phone": ["+44 20 7946 0958", "(415) 555-0132"],
    "credit_card": ["4111 1111 1111 1111", "5500-0000-0000-0004"],
    "iban": ["GB82 WEST 1234 5698 7654 32", "DE89370400440532013000"],
    "ip_address": ["192.168.1.20", "2001:db8::ff00:42:8329"],
    "url": ["https://example.com/a?b=1", "http://shop.example.org/item/42"],
}
DECOYS = [
    "order 1234567890123456 shipped",  # 16 digits failing Luhn
    "card 4111 1111 1111 1112 was declined",  # one digit off
    "IBAN GB82 WEST 1234 5698 7654 33 bounced",  # wrong check digits
    "version 1.2.300.4 released",
    "meeting at 12:30:45 on 2024-05-01",
    "total 1500000 EUR",
    "write to user at example dot com",
]
PLAN_EMAIL = "ops@example.com"
FILLER = (
    "the order arrived late and support was slow but the product itself works well "
    "enough for daily use overall happy with price quality"
)
N_ROWS = 60
NUMBERED = "numbered ids: the values differ only in their digits, {} form(s) without them"
"""The reason `foundry.data.infer.identifier_reason` gives for `CR-00017-B`-like columns."""


def planted_table() -> tuple[pd.DataFrame, dict[str, dict[str, int]]]:
    """60 rows: `comment` (free text with every kind planted, decoys, one missing value),
    `plan` (a category column, some rows an email), `email` (an identifier by name),
    `customer_ref` (near-unique), `sex` and `age` (ordinary inputs), `churned` (target).
    Returns the frame and the planted counts per column and kind."""
    comments: list[str | None] = []
    values = [(kind, v) for kind, vs in PLANTED.items() for v in vs]
    for i in range(N_ROWS):
        if i < len(values):
            kind, value = values[i]
            comments.append(f"Hi, reach me via {value} about {DECOYS[i % len(DECOYS)]}.")
        else:
            comments.append(f"No contact details, {DECOYS[i % len(DECOYS)]}, thanks.")
    # the same email again, with a phone: equal values must hash equally
    comments[20] = f"Again {PLANTED['email'][0]} or {PLANTED['phone'][0]} please"
    comments[21] = None
    counts = {kind: len(vs) for kind, vs in PLANTED.items()}
    counts["email"] += 1
    counts["phone"] += 1
    plan = ["free", "pro", PLAN_EMAIL] * (N_ROWS // 3)
    df = pd.DataFrame(
        {
            "comment": comments,
            "plan": pd.Series(plan, dtype="category"),
            "email": [f"user{i}@example.com" if i != 5 else None for i in range(N_ROWS)],
            "customer_ref": [f"CR-{i:05d}-{'ABC'[i % 3]}" for i in range(N_ROWS)],
            "sex": ["f", "m", "x"] * (N_ROWS // 3),
            "age": [20 + i % 50 for i in range(N_ROWS)],
            "churned": [i % 2 for i in range(N_ROWS)],
        }
    )
    return df, {"comment": counts, "plan": {"email": N_ROWS // 3}}


def all_planted_values(df: pd.DataFrame) -> list[str]:
    return [v for vs in PLANTED.values() for v in vs] + [PLAN_EMAIL] + list(df["email"].dropna())


def cells(df: pd.DataFrame) -> list[str]:
    return [str(v) for v in df.astype(object).to_numpy().ravel()]


@pytest.fixture
def salt(monkeypatch) -> str:
    monkeypatch.setenv(SALT_ENV, "pepper-1")
    return "pepper-1"


def test_fit_decides_scan_and_identifier_columns():
    df, _ = planted_table()
    scrubber = PIIScrubber.fit(df, PIIConfig(), target="churned")
    assert scrubber.identifier_columns == [
        {"column": "email", "reason": "name matches 'email'", "action": "drop"},
        {"column": "customer_ref", "reason": NUMBERED.format(3), "action": "drop"},
    ]
    # dropped identifier columns are not scanned; numbers and the target never are
    assert scrubber.scan_columns == ["comment", "plan", "sex"]
    assert scrubber.changes_values


@pytest.mark.parametrize("action", ["mask", "hash", "drop"])
@pytest.mark.parametrize("identifiers", ["drop", "hash"])
def test_every_planted_value_is_gone_and_decoys_stay(action, identifiers, salt):
    df, planted_counts = planted_table()
    before = df.copy()
    config = PIIConfig(action=action, identifiers=identifiers)
    out, report = PIIScrubber.fit(df, config, target="churned").scrub(df)

    pd.testing.assert_frame_equal(df, before)  # the input is not modified
    text = "\n".join(cells(out))
    for value in all_planted_values(df):
        assert value not in text, (action, value)
    for decoy in DECOYS:
        assert decoy in text, (action, decoy)
    assert out["comment"].isna().tolist() == df["comment"].isna().tolist()
    assert out["sex"].tolist() == df["sex"].tolist()
    assert isinstance(out["plan"].dtype, pd.CategoricalDtype)
    if identifiers == "drop":
        assert "email" not in out and "customer_ref" not in out
    else:
        assert out["email"].isna().tolist() == df["email"].isna().tolist()
        assert out["customer_ref"].nunique() == N_ROWS

    assert report["findings"] == planted_counts
    assert report["total"] == sum(n for c in planted_counts.values() for n in c.values())
    assert report["rows_scanned"] == N_ROWS
    assert report["columns_scanned"] == ["comment", "plan", "sex"]
    # 13 comment rows, 20 plan rows; rows 2, 5, 8, 11 and 20 hold both
    assert report["rows_with_pii"] == 13 + 20 - 5
    dumped = json.dumps(report)
    for value in all_planted_values(df) + list(df["customer_ref"]):
        assert value not in dumped


def test_mask_hash_and_drop_write_what_they_promise(salt):
    df = pd.DataFrame(
        {"note": ["mail ana@example.com now or call +1 415 555 0132", "ana@example.com"]}
    )
    masked, _ = PIIScrubber.fit(df, PIIConfig(), target=None).scrub(df)
    assert masked["note"].tolist() == ["mail [EMAIL] now or call [PHONE]", "[EMAIL]"]
    dropped, _ = PIIScrubber.fit(df, PIIConfig(action="drop"), target=None).scrub(df)
    assert dropped["note"].tolist() == ["mail now or call", ""]
    hashed, _ = PIIScrubber.fit(df, PIIConfig(action="hash"), target=None).scrub(df)
    first, second = hashed["note"]
    assert re.fullmatch(r"mail \[EMAIL:[0-9a-f]{8}\] now or call \[PHONE:[0-9a-f]{8}\]", first)
    assert first.split()[1] == second  # the same email, the same hash


def test_hash_is_stable_for_equal_values_and_depends_on_the_salt(monkeypatch):
    df, _ = planted_table()
    config = PIIConfig(action="hash", identifiers="hash")

    def run(salt: str) -> pd.DataFrame:
        monkeypatch.setenv(SALT_ENV, salt)
        return PIIScrubber.fit(df, config, target="churned").scrub(df)[0]

    out, again, other = run("pepper-1"), run("pepper-1"), run("pepper-2")
    tags = [re.search(r"\[EMAIL:([0-9a-f]{8})\]", out["comment"][i]).group(1) for i in (0, 20)]
    assert tags[0] == tags[1]
    assert tags[0] not in out["comment"][1]  # a different email
    pd.testing.assert_frame_equal(out, again)
    assert other["comment"][0] != out["comment"][0]
    assert not set(other["email"].dropna()) & set(out["email"].dropna())
    assert out["email"][5] is None or pd.isna(out["email"][5])


def test_report_only_changes_nothing():
    df, planted_counts = planted_table()
    config = PIIConfig(action="report", identifiers="report")
    scrubber = PIIScrubber.fit(df, config, target="churned")
    assert not scrubber.changes_values
    out, report = scrubber.scrub(df)
    pd.testing.assert_frame_equal(out, df)
    assert scrubber.transform(df) is df
    # reported identifier columns stay, so their values are scanned and counted too
    assert report["findings"] == {**planted_counts, "email": {"email": N_ROWS - 1}}
    assert report["columns_scanned"] == ["comment", "plan", "email", "customer_ref", "sex"]
    assert all(d["action"] == "report" for d in report["identifier_columns"])


def test_report_action_still_drops_identifier_columns():
    df, planted_counts = planted_table()
    scrubber = PIIScrubber.fit(df, PIIConfig(action="report"), target="churned")
    out, report = scrubber.scrub(df)
    assert scrubber.changes_values
    assert list(out.columns) == ["comment", "plan", "sex", "age", "churned"]
    assert out["comment"].equals(df["comment"])
    assert report["findings"] == planted_counts
    pd.testing.assert_frame_equal(scrubber.transform(df), out)


@pytest.mark.parametrize("action", ["mask", "hash", "drop"])
def test_prediction_input_is_scrubbed_like_training_rows(action, salt):
    df, _ = planted_table()
    config = PIIConfig(action=action, identifiers="hash")
    fitted = PIIScrubber.fit(df, config, target="churned")
    trained, _ = fitted.scrub(df)
    state = json.loads(json.dumps(fitted.state_dict()))
    assert "pepper" not in json.dumps(state)
    loaded = PIIScrubber.from_state(state)
    assert loaded.state_dict() == fitted.state_dict()

    rows = slice(10, 30)
    pred = df.drop(columns=["churned"]).iloc[rows]
    expected = trained.drop(columns=["churned"]).iloc[rows]
    got = loaded.transform(pred)
    pd.testing.assert_frame_equal(got, expected, check_categorical=False)
    # API records arrive as plain objects, some columns missing: same values
    records = pred.drop(columns=["plan"]).astype(object)
    got = loaded.transform(records)
    assert got.astype(str).to_numpy().tolist() == (
        expected.drop(columns=["plan"]).astype(str).to_numpy().tolist()
    )
    # the serving path: records as JSON dicts, scanned columns scrubbed the same way
    frame = pred.drop(columns=["plan"]).astype(object)
    scanned = [c for c in loaded.scan_columns if c in frame.columns]
    as_records = frame[scanned].where(frame[scanned].notna(), None).to_dict("records")
    served = pd.DataFrame(loaded.transform_records(as_records), index=frame.index)
    want = expected[scanned].where(expected[scanned].notna(), None).astype(object)
    assert served.to_numpy().tolist() == want.to_numpy().tolist()


def test_prediction_refuses_a_missing_or_different_salt(monkeypatch, salt):
    df, _ = planted_table()
    fitted = PIIScrubber.fit(df, PIIConfig(action="hash"), target="churned")
    loaded = PIIScrubber.from_state(json.loads(json.dumps(fitted.state_dict())))
    monkeypatch.setenv(SALT_ENV, "pepper-2")
    with pytest.raises(ModelError, match=f"{SALT_ENV}.*trained with"):
        loaded.transform(df)
    monkeypatch.delenv(SALT_ENV)
    with pytest.raises(ModelError, match=f"{SALT_ENV} is not set"):
        loaded.transform(df)
    # masking and dropping need no salt
    masked = PIIScrubber.fit(df, PIIConfig(), target="churned")
    PIIScrubber.from_state(masked.state_dict()).transform(df)


def test_fit_errors_name_the_env_var_and_the_column(monkeypatch):
    df, _ = planted_table()
    monkeypatch.delenv("MY_SALT", raising=False)
    with pytest.raises(ConfigError, match="data.pii.action.*MY_SALT"):
        PIIScrubber.fit(df, PIIConfig(action="hash", salt_env="MY_SALT"), target="churned")
    with pytest.raises(ConfigError, match="data.pii.identifiers.*MY_SALT"):
        PIIScrubber.fit(df, PIIConfig(identifiers="hash", salt_env="MY_SALT"), target="churned")
    with pytest.raises(ConfigError, match="data.pii.columns: column 'coment'") as info:
        PIIScrubber.fit(df, PIIConfig(columns=["coment"]), target="churned")
    assert "comment" in str(info.value)  # the hint lists what exists


def test_custom_pattern_is_a_kind_of_its_own():
    df = pd.DataFrame({"note": ["ask EMP-004211 or EMP-000007", "EMP-12 is short", None]})
    config = PIIConfig(patterns={"employee_id": r"EMP-\d{6}"}, kinds=["email"])
    out, report = PIIScrubber.fit(df, config, target=None).scrub(df)
    assert out["note"].tolist()[:2] == ["ask [EMPLOYEE_ID] or [EMPLOYEE_ID]", "EMP-12 is short"]
    assert report["findings"] == {"note": {"employee_id": 2}}
    assert report["kinds"] == ["email", "employee_id"]
    assert format_report(report) == ["PII: 2 employee_id values in 'note' (masked)"]


@pytest.mark.parametrize(
    ("action", "replaced"), [("mask", "[TOO_LONG]"), ("drop", ""), ("report", None)]
)
def test_values_over_the_cap_are_replaced_whole_unscanned(action, replaced):
    """`max_value_chars`: a longer value is one `too_long` finding, in training and in
    prediction input alike, whatever it holds (even no candidate character at all)."""
    long_text, long_mail = "x" * 61, "mail ana@example.com " * 3
    df = pd.DataFrame({"note": [long_text, long_mail, "mail ana@example.com", None] * 3})
    config = PIIConfig(action=action, max_value_chars=60)
    scrubber = PIIScrubber.fit(df, config, target=None)
    out, report = scrubber.scrub(df)
    assert report["findings"] == {"note": {"too_long": 6, "email": 3}}
    assert format_report(report)[0].startswith("PII: 6 values too long to scan, 3 emails")
    if replaced is None:  # report: counted, left as they are
        assert out["note"].tolist()[:2] == [long_text, long_mail]
    else:
        assert out["note"].tolist()[:2] == [replaced, replaced]
    # the package carries the cap; prediction input over it is replaced the same way
    loaded = PIIScrubber.from_state(json.loads(json.dumps(scrubber.state_dict())))
    assert loaded.max_value_chars == 60
    records = loaded.transform_records([{"note": long_text}, {"note": "short"}])
    want = long_text if replaced is None else replaced
    assert [r["note"] for r in records] == [want, "short"]


def test_a_package_without_a_cap_gets_the_default_one():
    df = pd.DataFrame({"note": ["mail ana@example.com"] * 3})
    state = PIIScrubber.fit(df, PIIConfig(), target=None).state_dict()
    del state["max_value_chars"]  # saved before the cap existed
    loaded = PIIScrubber.from_state(state)
    assert loaded.max_value_chars == PIIConfig().max_value_chars == 100_000
    huge = "a@" + "a." * 60_000
    assert loaded.transform_records([{"note": huge}]) == [{"note": "[TOO_LONG]"}]


@pytest.mark.parametrize(
    ("patterns", "why"),
    [
        ({"employee_id": r"(\d)\1{5}"}, "pii_scrubber.patterns.employee_id: uses a backreference"),
        ({"employee_id": r"(a+)+$"}, "pii_scrubber.patterns.employee_id: can match text of any"),
        ({"Bad": r"EMP-\d{6}"}, "pii_scrubber.patterns: name 'Bad'"),
        ("EMP-\\d+", "pii_scrubber.patterns: must be a mapping"),
    ],
)
def test_a_package_pattern_that_could_backtrack_is_refused_at_load(patterns, why):
    """A package's patterns run on every request: `from_state` checks them as the
    config's are checked, so a hostile foundry.json cannot bring a backtracking one."""
    df = pd.DataFrame({"note": ["ask EMP-004211"] * 3})
    state = PIIScrubber.fit(df, PIIConfig(patterns={"e": r"EMP-\d{6}"}), target=None).state_dict()
    state["patterns"] = patterns
    with pytest.raises(ModelError, match=re.escape(why)) as info:
        PIIScrubber.from_state(state)
    assert str(info.value).startswith("foundry.json: ")


def test_columns_target_and_keep_limit_what_is_touched():
    df, _ = planted_table()
    only = PIIScrubber.fit(df, PIIConfig(columns=["plan"]), target="churned")
    assert only.scan_columns == ["plan"]
    kept = PIIScrubber.fit(df, PIIConfig(), target="churned", keep=["customer_ref", "comment"])
    assert [d["column"] for d in kept.identifier_columns] == ["email"]
    assert "comment" not in kept.scan_columns
    # below 20 rows every value is unique: only names flag a column
    small = PIIScrubber.fit(df.head(10), PIIConfig(), target="churned")
    assert [d["column"] for d in small.identifier_columns] == ["email"]
    off = PIIScrubber.fit(df, PIIConfig(enabled=False), target="churned")
    assert not off.changes_values and off.scrub(df)[1]["total"] == 0


def test_identifier_columns_are_found_by_name_or_uniqueness():
    rng = random.Random(0)
    n = 200
    df = pd.DataFrame(
        {
            # identifiers
            "E-Mail": [f"u{i}@example.com" for i in range(n)],
            "Customer ID": [f"{i:08d}" for i in range(n)],
            "phone": [4155550000 + i for i in range(n)],  # numbers, flagged by name
            "ref": [f"R{rng.randrange(10**9):09d}" for _ in range(n)],
            "handle": [f"{rng.choice(['ana', 'li', 'jo'])}_{i}" for i in range(n)],
            # not identifiers
            "sex": [rng.choice("fm") for _ in range(n)],
            "country": [rng.choice(["DE", "FR", "US", "JP"]) for _ in range(n)],
            "comment": [f"review number {i} says the product is fine" for i in range(n)],
            "image": [f"img/{i}.png" for i in range(n)],
            "amount": [rng.random() for _ in range(n)],
            "row": list(range(n)),
            "product_name": [rng.choice(["desk", "chair"]) for _ in range(n)],
        }
    )
    flagged = {
        d["column"]: d["reason"]
        for d in PIIScrubber.fit(df, PIIConfig(), target=None).identifier_columns
    }
    assert flagged == {
        "E-Mail": "name matches 'e_mail'",
        "Customer ID": "name matches 'customer_id'",
        "phone": "name matches 'phone'",
        "ref": NUMBERED.format(1),
        "handle": NUMBERED.format(3),
    }


def test_identifier_hash_keeps_missing_and_equal_values(salt):
    df = pd.DataFrame({"customer_id": [12.0, None, 12.0, 7.0], "x": [1, 2, 3, 4]})
    out, report = PIIScrubber.fit(df, PIIConfig(identifiers="hash"), target=None).scrub(df)
    ids = out["customer_id"].tolist()
    assert ids[0] == ids[2] != ids[3] and pd.isna(ids[1])
    assert re.fullmatch(r"[0-9a-f]{16}", ids[0])
    assert format_report(report) == [
        "PII: identifier column 'customer_id' hashed (name matches 'customer_id')"
    ]


def test_reports_merge_and_format():
    df, planted_counts = planted_table()
    scrubber = PIIScrubber.fit(df, PIIConfig(), target="churned")
    parts = [scrubber.scrub(df.iloc[:30])[1], scrubber.scrub(df.iloc[30:])[1]]
    whole = scrubber.scrub(df)[1]
    assert merge_reports(parts) == whole
    assert merge_reports([whole]) == whole
    lines = format_report(whole)
    assert lines[0] == (
        "PII: 3 emails, 3 phone numbers, 2 card numbers, 2 IBANs, 2 IP addresses, 2 URLs "
        "in 'comment' (masked)"
    )
    assert lines[1] == "PII: 20 emails in 'plan' (masked)"
    assert lines[2:] == [
        "PII: identifier column 'email' dropped (name matches 'email')",
        f"PII: identifier column 'customer_ref' dropped ({NUMBERED.format(3)})",
    ]
    clean = scrubber.scrub(df[["sex", "churned"]])[1]
    assert format_report(clean) == ["PII: none found in 1 column (60 rows scanned)"]


# ---------------------------------------------------------------- measured quality


def _luhn_card(rng: random.Random) -> str:
    prefix = rng.choice(["4", "51", "37"])
    body = prefix + "".join(rng.choice("0123456789") for _ in range(15 - len(prefix)))
    number = next(body + d for d in "0123456789" if luhn_valid(body + d))
    return " ".join(number[i : i + 4] for i in range(0, 16, 4))


def _iban(rng: random.Random) -> str:
    country = rng.choice(["DE", "FR", "NL"])
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def _order_number(rng: random.Random) -> str:
    while luhn_valid(number := str(rng.randint(10**15, 10**16 - 1))):
        pass
    return number


def labelled_table(seed: int, n: int = 400) -> tuple[pd.DataFrame, list[str | None]]:
    """`note`: one planted value between two look-alikes per row; `channel` (category):
    an email in about a fifth of the rows. Returns the frame and each note's kind."""
    rng = random.Random(seed)
    makers = {
        "email": lambda: (
            f"{rng.choice(['ana', 'li.wei', 'j_smith'])}{rng.randint(1, 99)}@"
            f"{rng.choice(['example.com', 'mail.example.org', 'corp.co.uk'])}"
        ),
        "phone": lambda: rng.choice(
            [
                f"+1 {rng.randint(200, 999)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}",
                f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                f"+49 30 {rng.randint(1000000, 9999999)}",
            ]
        ),
        "credit_card": lambda: _luhn_card(rng),
        "iban": lambda: _iban(rng),
        "ip_address": lambda: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "url": lambda: (
            f"https://{rng.choice(['example.com', 'shop.example.org'])}/"
            f"{rng.choice(['a', 'item', 'x/y'])}?id={rng.randint(1, 999)}"
        ),
    }
    decoys = [
        lambda: f"order {_order_number(rng)}",
        lambda: f"at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        lambda: f"on 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(256, 999)}.1",
        lambda: f"total {rng.randint(1, 10**6)} EUR",
    ]
    notes, kinds = [], []
    for _ in range(n):
        kind = rng.choice([*makers, None])  # a sixth of the notes hold nothing
        value = makers[kind]() if kind else "nobody"
        notes.append(
            f"Note {rng.choice(decoys)()}; contact {value} please, {rng.choice(decoys)()}."
        )
        kinds.append(kind)
    channel = [
        makers["email"]() if rng.random() < 0.2 else rng.choice(["web", "phone"]) for _ in range(n)
    ]
    return pd.DataFrame({"note": notes, "channel": pd.Series(channel, dtype="category")}), kinds


def scrubber_precision_recall(seed: int) -> dict[str, tuple[float, float]]:
    """(precision, recall) per kind of `mask` on `labelled_table(seed)`: a hit is a
    planted value replaced by its own label; every label written counts as reported."""
    df, kinds = labelled_table(seed)
    out, _ = PIIScrubber.fit(df, PIIConfig(), target=None).scrub(df)
    truth: dict[str, int] = {}
    hits: dict[str, int] = {}
    reported: dict[str, int] = {}
    for kind, note in zip(kinds, out["note"], strict=True):
        for label in re.findall(r"\[([A-Z_]+)\]", note):
            reported[label.lower()] = reported.get(label.lower(), 0) + 1
        if kind:
            truth[kind] = truth.get(kind, 0) + 1
            hits[kind] = hits.get(kind, 0) + (f"contact [{kind.upper()}] please" in note)
    for before, after in zip(df["channel"], out["channel"], strict=True):
        planted = "@" in before
        truth["email"] += planted
        hits["email"] += planted and after == "[EMAIL]"
        reported["email"] += after == "[EMAIL]"
    return {k: (hits[k] / reported.get(k, 1), hits[k] / truth[k]) for k in truth}


@pytest.mark.parametrize("seed", [0, 1])
def test_scrubber_precision_and_recall_per_kind(seed):
    measured = scrubber_precision_recall(seed)
    print(
        f"\nseed {seed}: " + ", ".join(f"{k} P={p:.3f} R={r:.3f}" for k, (p, r) in measured.items())
    )
    for kind, (precision, recall) in measured.items():
        assert precision >= 0.95, (kind, precision)
        assert recall >= 0.95, (kind, recall)


def test_throughput_on_100k_rows():
    """Prints rows/s of `scrub` (no assertion on time): 100k rows of ~20-word text, 5%
    with PII, 30% with harmless numbers, plus a category column.
    Run: pytest tests/data/test_data_scrub.py -k throughput -s"""
    rng = random.Random(0)
    words = FILLER.split()
    n, planted = 100_000, 0
    texts = []
    for i in range(n):
        row = rng.choices(words, k=20)
        if rng.random() < 0.05:
            row.insert(10, f"ana{i}@example.com")
            planted += 1
        elif rng.random() < 0.3:
            row.insert(5, f"{rng.randint(1, 99)} items")
        texts.append(" ".join(row))
    plans = rng.choices(["free", "pro", "team", PLAN_EMAIL], k=n)
    df = pd.DataFrame({"comment": texts, "plan": pd.Series(plans, dtype="category")})
    scrubber = PIIScrubber.fit(df, PIIConfig(), target=None)
    start = time.perf_counter()
    out, report = scrubber.scrub(df)
    seconds = time.perf_counter() - start
    print(f"\nscrub: {n / seconds:,.0f} rows/s ({n} rows in {seconds:.2f} s)")
    assert report["findings"]["comment"] == {"email": planted}
    assert report["findings"]["plan"] == {"email": plans.count(PLAN_EMAIL)}
