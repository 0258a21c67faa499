"""Worst-case values for the PII patterns and the scan they replaced, shared by
tests/data/test_data_pii.py and benchmarks/pii.py."""

from __future__ import annotations

import ipaddress
import re

from foundry.data import pii


def _old_ipv4_valid(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def adversarial(n: int) -> dict[str, str]:
    """Values of about `n` characters that are worst cases for the patterns: long runs a
    pattern reads without matching (what made `re` backtrack), and values packed with
    matches or near-matches (what costs a finding or a failed check each).
    tests/data/test_data_pii.py scans them at 10 KB, 100 KB and 1 MB; benchmarks/pii.py
    measures them."""

    def fill(unit: str, prefix: str = "", suffix: str = "") -> str:
        return prefix + unit * max(1, (n - len(prefix) - len(suffix)) // len(unit)) + suffix

    return {
        "email: 'a@' + 'a.' * n": fill("a.", "a@"),
        "email: local part, no @": fill("a.") + "@",
        "email: dense": fill("a@b.cd "),
        "url: long path": fill("a", "http://"),
        "url: trailing punctuation": fill(".", "http://a"),
        "url: dense": fill("http://a.b "),
        "phone: digits and spaces": fill("1 "),
        "phone: brackets": fill("(1) "),
        "phone: dense": fill("+44 20 7946 0958, "),
        "credit_card: digits and dashes": fill("1-"),
        "credit_card: dense": fill("4111 1111 1111 1111 "),
        "iban: long groups": fill("WEST ", "GB82 "),
        "iban: dense": fill("GB82 WEST 1234 5698 7654 32 "),
        "ip_address: dotted digits": fill("1."),
        "ip_address: colons": fill("a:"),
        "ip_address: dense": fill("192.168.1.20 "),
        "other scripts": fill("é４\u00a0"),
    }


# The patterns and loop `find_pii` had before RE2 (Python `re`): the "before" of the
# benchmark's throughput table, and the reference the RE2 scan must agree with on ASCII
# text. Backtracking and a quadratic overlap check: run it on short texts only.
OLD_DETECTORS = [
    ("url", re.compile(r"\bhttps?://[^\s<>\"']+[^\s<>\"'.,;:!?)]", re.IGNORECASE), None),
    ("email", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
     None),
    ("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
     pii.iban_valid),
    ("credit_card", re.compile(r"\b\d(?:[ -]?\d){12,18}\b"), pii.luhn_valid),
    ("ip_address", re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), _old_ipv4_valid),
    ("ip_address", re.compile(r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}\b"), pii._ipv6_valid),
    ("phone", re.compile(r"(?<![\w+])\+?\(?\d[\d\s().-]{5,18}\d\b"), pii._phone_valid),
]


def old_find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each finding, as `find_pii` found them before RE2."""
    taken: list[tuple[int, int]] = []
    found = []
    for kind, pattern, valid in OLD_DETECTORS:
        for match in pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if valid is not None and not valid(match.group()):
                continue
            taken.append((start, end))
            found.append((kind, start, end))
    return sorted(found, key=lambda f: f[1])
