"""PII detection: checksums, and precision / recall per kind on a generated labelled
corpus that mixes real-format values with look-alikes (order numbers, failed checksums,
dates, amounts, version strings)."""

from __future__ import annotations

import random

import pytest

from foundry.data.pii import CANDIDATE, KINDS, compile_pattern, find_pii, iban_valid, luhn_valid


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
        "digits": compile_pattern("digits", r"\d{1,4}"),
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
