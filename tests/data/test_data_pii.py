"""PII detection: checksums, and precision / recall per kind on a generated labelled
corpus that mixes real-format values with look-alikes (order numbers, failed checksums,
dates, amounts, version strings)."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter

import pytest
from tests.data.pii_adversarial import adversarial, old_find_pii

from foundry.config.schema import PIIConfig
from foundry.data.pii import (
    CANDIDATE,
    KINDS,
    PatternError,
    compile_pattern,
    find_pii,
    iban_valid,
    luhn_valid,
)


def luhn_number(rng: random.Random, prefix: str, length: int = 16) -> str:
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    for check in "0123456789":
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def not_luhn(rng: random.Random) -> str:
    while luhn_valid(number := str(rng.randint(10**15, 10**16 - 1))):
        pass
    return number


def grouped(number: str) -> str:
    """'4111111111111111' → '4111 1111 1111 1111', as cards are printed."""
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def iban(rng: random.Random, country: str = "DE") -> str:
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    # check digits: 98 - (bban + country + "00" as a number mod 97)
    number = int("".join(str(int(c, 36)) for c in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def test_checksums():
    assert luhn_valid("4111 1111 1111 1111") and luhn_valid("5500-0000-0000-0004")
    assert not luhn_valid("4111 1111 1111 1112") and not luhn_valid("1234")
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("XX00")


def test_each_kind_is_found_where_it_is():
    text = (
        "Write to ana.b@example.co.uk or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, seen from 192.168.1.20 and 2001:db8::ff00:42:8329, "
        "details at https://example.com/a?b=1."
    )
    found = {(f.kind, f.value) for f in find_pii(text)}
    assert found == {
        ("email", "ana.b@example.co.uk"),
        ("phone", "+44 20 7946 0958"),
        ("credit_card", "4111 1111 1111 1111"),
        ("iban", "GB82 WEST 1234 5698 7654 32"),
        ("ip_address", "192.168.1.20"),
        ("ip_address", "2001:db8::ff00:42:8329"),
        ("url", "https://example.com/a?b=1"),
    }
    for f in find_pii(text):
        assert text[f.start : f.end] == f.value
    assert [f.kind for f in find_pii(text, kinds=("email",))] == ["email"]


def test_extra_patterns_are_kinds_of_their_own():
    patterns = {
        "employee_id": compile_pattern("employee_id", r"EMP-\d{6}"),
        "digits": compile_pattern("digits", r"\d{3,4}"),
    }
    text = "EMP-004211 called from +44 20 7946 0958"
    found = [(f.kind, f.value) for f in find_pii(text, kinds=("phone",), patterns=patterns)]
    # "digits" matches digits inside the other two: found kinds keep their spans
    assert found == [("employee_id", "EMP-004211"), ("phone", "+44 20 7946 0958")]


def test_the_candidate_hint_holds_for_every_kind():
    """`CANDIDATE` lets callers skip text unscanned, so every kind must contain one of its
    characters, including an IPv6 address written with letters only."""
    text = (
        "Write to ana.b@example.co.uk or call +44 20 7946 0958; card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, seen from fe::ab and 2001:db8::1, "
        "details at https://example.com/a?b=1."
    )
    found = find_pii(text)
    assert {f.kind for f in found} == set(KINDS)
    assert ("ip_address", "fe::ab") in {(f.kind, f.value) for f in found}
    assert all(CANDIDATE.search(f.value) for f in found)


def test_look_alikes_are_not_reported():
    decoys = [
        "order 1234567890123456 shipped",  # 16 digits failing Luhn
        "card 4111 1111 1111 1112",  # one digit off
        "IBAN GB82 WEST 1234 5698 7654 33",  # check digits wrong
        "version 1.2.300.4 released",  # not an IPv4 (300)
        "meeting at 12:30:45 on 2024-05-01",
        "total 1500000 EUR",
        "id 20240501",
    ]
    for text in decoys:
        assert find_pii(text) == [], text


@pytest.mark.parametrize("seed", [0, 1])
def test_precision_and_recall_per_kind_on_a_generated_corpus(seed):
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
        "credit_card": lambda: grouped(luhn_number(rng, rng.choice(["4", "51", "37"]))),
        "iban": lambda: iban(rng, rng.choice(["DE", "FR", "NL"])),
        "ip_address": lambda: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "url": lambda: (
            f"https://{rng.choice(['example.com', 'shop.example.org'])}/"
            f"{rng.choice(['a', 'item', 'x/y'])}?id={rng.randint(1, 999)}"
        ),
    }
    decoys = [
        # a 16-digit order number that happens to pass Luhn (1 in 10) is, to any
        # detector, a card number: the decoys are the other nine
        lambda: f"order {not_luhn(rng)}",
        lambda: f"at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        lambda: f"on 2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
        lambda: f"version {rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(256, 999)}.1",
        lambda: f"total {rng.randint(1, 10**6)} EUR",
    ]
    truth: dict[str, int] = dict.fromkeys(KINDS, 0)
    hits: dict[str, int] = dict.fromkeys(KINDS, 0)
    reported: dict[str, int] = dict.fromkeys(KINDS, 0)
    for _ in range(300):
        kind = rng.choice(list(makers))
        value = makers[kind]()
        decoy = rng.choice(decoys)()
        text = f"Note {decoy}; contact {value} please, {rng.choice(decoys)()}."
        truth[kind] += 1
        for f in find_pii(text):
            reported[f.kind] += 1
            if f.kind == kind and f.value == value:
                hits[kind] += 1
    for kind in KINDS:
        recall = hits[kind] / truth[kind]
        precision = hits[kind] / reported[kind] if reported[kind] else 1.0
        assert recall >= 0.95, (kind, recall)
        assert precision >= 0.95, (kind, precision)


# --------------------------------------------------------------------- linear time


def _in_child(fn, guard_s: float):
    """`fn()`'s result, computed in a forked child; AssertionError when it has not
    finished after `guard_s`. A backtracking scan of these values takes minutes, a
    linear one milliseconds: the guard is generous, not a timing measurement."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=lambda: child.send(fn()))
    proc.start()
    ready = parent.poll(guard_s)
    proc.kill() if not ready else None
    proc.join()
    assert ready, f"still scanning after {guard_s:g} s"
    return parent.recv()


def _expected(case: str, text: str) -> tuple[str | None, int]:
    """(kind, count) each adversarial value holds (None: nothing)."""
    return {
        "email: dense": ("email", text.count("@")),
        "url: long path": ("url", 1),
        "url: dense": ("url", text.count("http://")),
        "phone: digits and spaces": ("phone", text.count("1") // 10),  # 10 digits a phone
        "phone: dense": ("phone", text.count("+44")),
        "credit_card: digits and dashes": ("phone", text.count("1") // 10),  # fail Luhn
        "credit_card: dense": ("credit_card", text.count("4111")),
        "iban: dense": ("iban", text.count("GB82")),
        "ip_address: dotted digits": ("ip_address", text.count("1") // 4),
        "ip_address: colons": ("ip_address", 1),
        "ip_address: dense": ("ip_address", text.count("192.")),
    }.get(case, (None, 0))


def _kind_counts(texts: dict[str, str]) -> dict[str, dict[str, int]]:
    return {case: dict(Counter(f.kind for f in find_pii(t))) for case, t in texts.items()}


def _assert_found_what_they_hold(texts: dict[str, str], counts: dict[str, dict[str, int]]):
    for case, text in texts.items():
        kind, n = _expected(case, text)
        assert counts[case] == ({kind: n} if kind else {}), case


@pytest.mark.parametrize("chars", [10_000, 100_000])
@pytest.mark.parametrize("case", list(adversarial(100)))
def test_adversarial_values_scan_in_linear_time(case, chars):
    """Each built-in pattern's worst cases (long runs it reads without matching, values
    packed with matches or near-matches) finish and find exactly what they hold. With
    Python's `re` several took minutes at 100 KB ("a@" + "a." * n, "1." * n, ...)."""
    texts = {case: adversarial(chars)[case]}
    # RE2: under 0.3 s for any of them on a loaded 2-core machine; `re`: ~40 s at 100 KB
    # for five of them (x4 per doubling), an hour at 1 MB
    _assert_found_what_they_hold(texts, _in_child(lambda: _kind_counts(texts), 20))


@pytest.mark.slow
def test_adversarial_values_of_1_mb_scan_in_linear_time():
    texts = adversarial(1_000_000)
    _assert_found_what_they_hold(texts, _in_child(lambda: _kind_counts(texts), 120))


def test_extra_patterns_scan_adversarial_values_in_linear_time():
    employee = compile_pattern("employee_id", r"EMP-\d{6}")
    texts = {"near misses": "EMP-" * 25_000, "dense": "EMP-123456 " * 10_000}

    def scan():
        patterns = {"employee_id": employee}
        return {k: len(find_pii(t, [], patterns=patterns)) for k, t in texts.items()}

    assert _in_child(scan, 60) == {"near misses": 0, "dense": 10_000}


def test_ascii_findings_are_those_of_the_old_patterns():
    """On ASCII text the RE2 scan reports exactly what the Python `re` patterns did
    (random texts built from the formats' pieces and look-alikes)."""
    rng = random.Random(0)
    pieces = list("aZx09183 .-@:/()+,;_%\t\n\x0b") + [
        "http://", "https://", "GB82", "4111 1111 1111 1111", "192.168.1.20", "1.2.300.4",
        "+44 20 7946 0958", "ana@ex.com", "fe::ab", "2001:db8::1", "DE89370400440532013000",
    ]
    for _ in range(3_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 30)))
        assert [(f.kind, f.start, f.end) for f in find_pii(text)] == old_find_pii(text), text


def test_other_scripts_digits_and_spaces_count_as_before():
    """RE2 reads \\d and \\s as ASCII; the built-in kinds fold other digits and spaces
    first, so these are found as Python's Unicode `re` found them (offsets unchanged)."""
    text = "カード ４１１１ １１１１ １１１１ １１１１、電話 +44\u00a020\u00a07946\u00a00958 です"
    found = [(f.kind, f.value) for f in find_pii(text)]
    assert found == [
        ("credit_card", "４１１１ １１１１ １１１１ １１１１"),
        ("phone", "+44\u00a020\u00a07946\u00a00958"),
    ]
    # a card followed by a non-breaking space keeps its end: NBSP is a space, not " "
    assert [f.value for f in find_pii("4111 1111 1111 1111\u00a01")] == ["4111 1111 1111 1111"]


# --------------------------------------------------------------------- extra patterns


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        (r"(\d)\1", "uses a backreference"),
        (r"(?P<x>ab)(?P=x)", "uses a backreference"),
        (r"(?<!x)EMP-\d{6}", "uses a lookaround"),
        (r"EMP-(?=\d)\d{6}", "uses a lookaround"),
        (r"(?>EMP)-\d{6}", "uses an atomic group"),
        (r"EMP-\d{6}+", "uses a possessive quantifier"),
        (r"EMP-\d+", "can match text of any length"),
        (r"a(?:.*b)?", "can match text of any length"),
        (r"\d{1,200}", "can match text of up to 200 characters"),
        (r"\d{0,6}", "can match the empty string"),
        (r"[a-z]{1,9}", "can match 1 character(s)"),
        (r"\p{L}{3,100}", "compiles to"),
        (r"EMP-[0-9", "not a regular expression"),
        (r"EMP\Z", "write `\\z`"),
    ],
)
def test_extra_patterns_that_cannot_run_in_linear_time_are_refused(pattern, why):
    with pytest.raises(PatternError, match="^data.pii.patterns.employee_id: ") as info:
        compile_pattern("employee_id", pattern)
    assert why in str(info.value)
    # the config refuses it when it loads, naming the key
    with pytest.raises(ValueError, match=r"data\.pii\.patterns\.employee_id: "):
        PIIConfig(patterns={"employee_id": pattern})


def test_extra_pattern_names_and_re2_syntax():
    with pytest.raises(PatternError, match="name 'Employee' must be lower-case"):
        compile_pattern("Employee", r"EMP-\d{6}")
    with pytest.raises(PatternError, match=r"^pii_scrubber\.patterns\.x: "):
        compile_pattern("x", r"(a)\1", key="pii_scrubber.patterns")
    # RE2-only syntax that Python's parser lacks is measured as its equal-width stand-in
    names = compile_pattern("names", r"\p{Lu}[a-zñú]{2,20}\z")
    assert [f.value for f in find_pii("Hola Ñandú", [], patterns={"names": names})] == ["Ñandú"]
