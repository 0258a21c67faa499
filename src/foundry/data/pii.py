"""Personal data in text: find it with patterns and checksums, offline.

    find_pii("mail me at ana@example.com")   # [Finding("email", 11, 26, "ana@example.com")]

Each kind is a regular expression for candidates plus, where the format has one, the
check that real values pass (Luhn for card numbers, ISO 13616 mod-97 for IBANs, octet
ranges for IPv4), so a 16-digit order number is not reported as a card. No model, no
download: the data stage can run it on every row.

Extra kinds are plain patterns the caller compiles (`data.pii.patterns`):

    find_pii("ask EMP-004211", patterns={"employee_id": re.compile(r"EMP-\\d{6}")})

This module finds; what to do with a finding (mask, hash, drop the column) and the
report of what was found where live in `foundry.data.scrub`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

__all__ = ["CANDIDATE", "KINDS", "Finding", "find_pii", "iban_valid", "luhn_valid"]


@dataclass(frozen=True)
class Finding:
    kind: str
    """email, phone, credit_card, iban, ip_address, url, or the name of an extra pattern."""
    start: int
    end: int
    """`text[start:end]` is the value found."""
    value: str


def luhn_valid(digits: str) -> bool:
    """The Luhn check every payment card number passes (ISO/IEC 7812)."""
    numbers = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(numbers) <= 19:
        return False
    total = 0
    for i, n in enumerate(reversed(numbers)):
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: move the country code and check digits to the end, letters to numbers
    (A=10 ... Z=35), and the whole number mod 97 must be 1."""
    compact = re.sub(r"\s", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ipv4_valid(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _ipv6_valid(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _phone_valid(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    # 7-15 digits (E.164 allows 15); a bare run of digits with no separator or leading +
    # is more often an id or an amount than a phone number
    has_shape = text.startswith("+") or bool(re.search(r"[\s().-]", text))
    # groups of four digits are how card and account numbers are written, not phones
    groups = re.findall(r"\d+", text)
    blocks_of_four = len(groups) >= 3 and all(len(g) == 4 for g in groups[:-1])
    is_date = bool(re.fullmatch(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4}", text))
    # 3.14.512.1 is a version; 030.123.4567 is a phone
    is_version = "." in text and not re.search(r"[\s()+-]", text) and min(map(len, groups)) < 2
    return 7 <= len(digits) <= 15 and has_shape and not (blocks_of_four or is_date or is_version)


_DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    # order matters: earlier kinds claim their characters first (a URL holding an email
    # or an IP is one URL)
    ("url", re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE), None),
    (
        "email",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    (
        "iban",
        re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        iban_valid,
    ),
    ("credit_card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), luhn_valid),
    ("ip_address", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), _ipv4_valid),
    ("ip_address", re.compile(r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}\b"), _ipv6_valid),
    ("phone", re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,18}\d\b"), _phone_valid),
]

KINDS = tuple(dict.fromkeys(kind for kind, _, _ in _DETECTORS))
"""Every kind `find_pii` reports."""

_DIGIT = re.compile(r"\d")

CANDIDATE = re.compile(r"[\d@:]")
"""Every value of a built-in kind holds a digit, an `@` or a `:` (of `://` or IPv6): text
where this finds nothing holds none, and callers with many texts can skip it unscanned."""


def _worth_running(kind: str, text: str, has_digit: bool) -> bool:
    """False when `text` lacks a character every value of `kind` contains. Most cells of
    free text hold no PII, and these `in` checks cost far less than the patterns."""
    if kind == "url":
        return "://" in text
    if kind == "email":
        return "@" in text
    if kind == "ip_address":
        # an IPv6 address can be all letters ("fe::ab"), never without a colon
        return has_digit or ":" in text
    return has_digit  # iban, credit_card, phone


def find_pii(
    text: str,
    kinds: tuple[str, ...] | list[str] = KINDS,
    *,
    patterns: Mapping[str, re.Pattern[str]] | None = None,
) -> list[Finding]:
    """Personal data in `text`, in order of position; no two findings overlap (the kind
    listed first in `KINDS` wins a contested span).

    `patterns` adds kinds (name -> compiled pattern), found in every text whatever
    `kinds` says. They run after the built-in kinds, so a checked card number or phone
    number is never cut in two by a broader extra pattern.
    """
    taken: list[tuple[int, int]] = []
    findings = []
    has_digit = _DIGIT.search(text) is not None
    for kind, pattern, valid in _DETECTORS:
        if kind not in kinds or not _worth_running(kind, text, has_digit):
            continue
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if valid is not None and not valid(match.group()):
                continue
            taken.append((start, end))
            findings.append(Finding(kind, start, end, match.group()))
    for kind, pattern in (patterns or {}).items():
        for match in pattern.finditer(text):
            start, end = match.span()
            # a pattern that can match nothing (`\d*`) would report every position
            if start == end or any(start < e and s < end for s, e in taken):
                continue
            taken.append((start, end))
            findings.append(Finding(kind, start, end, match.group()))
    return sorted(findings, key=lambda f: f.start)
