"""Personal data in text: find it with patterns and checksums, offline, in linear time.

    find_pii("mail me at ana@example.com")   # [Finding("email", 11, 26, "ana@example.com")]

Each kind is a regular expression for candidates plus, where the format has one, the
check that real values pass (Luhn for card numbers, ISO 13616 mod-97 for IBANs, octet
ranges for IPv4), so a 16-digit order number is not reported as a card. No model, no
download: the data stage can run it on every row, and serving on every request.

**Linear time.** Every value a client sends goes through these patterns, so one value
must never cost more than a few passes over it. Python's `re` backtracks: the email
pattern took minutes on `"a@" + "a." * 100_000` (200 KB), long enough for the server to
kill the worker and every request on it. The patterns run on RE2 (`google-re2`), whose
automaton reads each byte a bounded number of times whatever the input. A search is
linear; finding *all* matches is linear too when no match can make the engine read far
past its end, which holds for the built-in patterns (a URL or email domain stops at
the first character it cannot contain; the other kinds have a bounded length) and which
`compile_pattern` enforces on extra patterns by bounding their width. The numbers are in
benchmarks/pii.py and docs/BENCHMARKS.md.

RE2 reads `\\d`, `\\w`, `\\s` and `\\b` as ASCII, Python as Unicode. The built-in kinds
keep Python's reading: the text they run on is first folded, one character for one, to
ASCII (other digits to their ASCII digit, other spaces to "\\x1f", other letters to
"_", everything else to "\\x7f"), so `４１１１ １１１１ …` is still a card and offsets stay those
of the original text. Extra patterns run on the text as given, in RE2's syntax.

Extra kinds are patterns compiled (and checked) by `compile_pattern`
(`data.pii.patterns`, and a package's `pii_scrubber.patterns`):

    find_pii("ask EMP-004211", patterns={"employee_id": compile_pattern("employee_id",
                                                                        r"EMP-\\d{6}")})

This module finds; what to do with a finding (mask, hash, drop the column) and the
report of what was found where live in `foundry.data.scrub`.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

try:  # the parser behind `re`, read only to explain and measure extra patterns
    from re import _parser as _sre
except ImportError:  # Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef]

__all__ = [
    "CANDIDATE",
    "KINDS",
    "MAX_PATTERN_PROGRAM",
    "MAX_PATTERN_WIDTH",
    "MIN_PATTERN_WIDTH",
    "Finding",
    "PatternError",
    "compile_pattern",
    "find_pii",
    "iban_valid",
    "luhn_valid",
]


@dataclass(frozen=True)
class Finding:
    kind: str
    """email, phone, credit_card, iban, ip_address, url, or the name of an extra pattern."""
    start: int
    end: int
    """`text[start:end]` is the value found."""
    value: str


_LUHN_DOUBLED = [0, 2, 4, 6, 8, 1, 3, 5, 7, 9]


def luhn_valid(digits: str) -> bool:
    """The Luhn check every payment card number passes (ISO/IEC 7812)."""
    numbers = [int(c) for c in digits if c.isdigit()]
    if not 13 <= len(numbers) <= 19:
        return False
    # from the right: every other digit as is, the others doubled (digit sum: 7 -> 14 -> 5)
    return (sum(numbers[-1::-2]) + sum(_LUHN_DOUBLED[n] for n in numbers[-2::-2])) % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: move the country code and check digits to the end, letters to numbers
    (A=10 ... Z=35), and the whole number mod 97 must be 1."""
    compact = re.sub(r"\s", "", text).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def _ipv4_valid(text: str) -> bool:
    """What `ipaddress.IPv4Address` accepts (four octets 0-255, no leading zeros) for a
    match of the IPv4 pattern, at a tenth of its cost: a text of dotted digits is one
    candidate per 8 characters."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        p.isdigit() and int(p) <= 255 and (len(p) == 1 or p[0] != "0") for p in parts
    )


def _ipv6_valid(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_GROUPS = re.compile(r"\d+")
_SEPARATOR = re.compile(r"[\s().-]")
_DATE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4}")
_NOT_VERSION = re.compile(r"[\s()+-]")


def _phone_valid(text: str) -> bool:
    # `text` is one match of the phone pattern (at most 21 characters), so these `re`
    # calls cost a constant each
    groups = _GROUPS.findall(text)
    # 7-15 digits (E.164 allows 15); a bare run of digits with no separator or leading +
    # is more often an id or an amount than a phone number
    if not 7 <= sum(map(len, groups)) <= 15:
        return False
    has_shape = text.startswith("+") or bool(_SEPARATOR.search(text))
    # groups of four digits are how card and account numbers are written, not phones
    blocks_of_four = len(groups) >= 3 and all(len(g) == 4 for g in groups[:-1])
    is_date = bool(_DATE.fullmatch(text))
    # 3.14.512.1 is a version; 030.123.4567 is a phone
    is_version = "." in text and not _NOT_VERSION.search(text) and min(map(len, groups)) < 2
    return has_shape and not (blocks_of_four or is_date or is_version)


# ----------------------------------------------------------------------- RE2


def _options(*, ignore_case: bool = False, capture: bool = False) -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is explained by PatternError, not stderr
    options.case_sensitive = not ignore_case
    # only the whole match is read (one group for phone): no submatch work otherwise
    options.never_capture = not capture
    return options


def _re2(pattern: str, **options: bool) -> Any:
    return re2.compile(pattern, _options(**options))


@dataclass(frozen=True)
class _Detector:
    kind: str
    pattern: Any  # a compiled re2 pattern, run on the folded text's ASCII bytes
    valid: Callable[[str], bool] | None
    group: int = 0
    """The group holding the value (phone: group 1, after the character before it)."""


_S = r"\t-\r\x1c-\x20"
"""Python's `\\s` among ASCII characters (RE2's leaves out \\v and \\x1c-\\x1f); other
spaces are folded to "\\x1f" before the built-in kinds run."""

_DETECTORS = [
    # order matters: earlier kinds claim their characters first (a URL holding an email
    # or an IP is one URL)
    _Detector(
        "url", _re2(rf"\bhttps?://[^{_S}<>\"']+[^{_S}<>\"'.,;:!?)]", ignore_case=True), None
    ),
    _Detector(
        "email",
        _re2(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    _Detector(
        "iban",
        _re2(r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"),
        iban_valid,
    ),
    _Detector("credit_card", _re2(r"\b[0-9](?:[ -]?[0-9]){12,18}\b"), luhn_valid),
    _Detector("ip_address", _re2(r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b"), _ipv4_valid),
    _Detector("ip_address", _re2(r"\b(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{1,4}\b"), _ipv6_valid),
    # RE2 has no lookbehind: "not after a word character or +" is the character before
    # the number (or the start of the text), and the number is group 1
    _Detector(
        "phone",
        _re2(rf"(?:^|[^A-Za-z0-9_+])(\+?\(?[0-9][0-9{_S}().-]{{5,18}}[0-9])\b", capture=True),
        _phone_valid,
        group=1,
    ),
]

KINDS = tuple(dict.fromkeys(d.kind for d in _DETECTORS))
"""Every kind `find_pii` reports."""

_DIGIT = re.compile(r"\d")

CANDIDATE = re.compile(r"[\d@:]")
"""Every value of a built-in kind holds a digit, an `@` or a `:` (of `://` or IPv6): text
where this finds nothing holds none, and callers with many texts can skip it unscanned."""


class _Fold(dict):
    """`str.translate` table: each non-ASCII character to the ASCII one that plays its
    part in a Python pattern (digit, space, word character, anything else). Filled on
    first sight; only the Basic Multilingual Plane is kept (at most 65,536 entries), so
    a text of rare characters cannot grow it without bound."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        if char.isdecimal():
            folded = str(unicodedata.decimal(char))
        elif char.isspace():
            # a space to `\s`, but not the " " that card and IBAN groups are written with
            folded = "\x1f"
        elif char.isalnum() or char == "_":
            folded = "_"
        else:
            folded = "\x7f"
        if code < 0x10000:
            self[code] = folded
        return folded


_FOLD = _Fold((code, chr(code)) for code in range(128))  # ASCII stays as it is


def _fold(text: str) -> str:
    """`text` in ASCII, one character for one (see the module docstring)."""
    return text if text.isascii() else text.translate(_FOLD)


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


def _unclaimed(
    spans: list[tuple[int, int]], taken: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    """The spans overlapping none of `taken`. Both lists are sorted and hold disjoint
    spans, so one walk decides them all (a per-span look through every taken span was
    quadratic: 1 MB of emails is 150,000 findings)."""
    out, j = [], 0
    for start, end in spans:
        while j < len(taken) and taken[j][1] <= start:
            j += 1
        if j == len(taken) or end <= taken[j][0]:
            out.append((start, end))
    return out


def _user_spans(pattern: Any, text: str, ascii_bytes: bytes | None) -> list[tuple[int, int]]:
    """Non-empty match spans of an extra pattern, in characters of `text`."""
    # ASCII text: byte offsets are character offsets, and re2 skips its per-match
    # translation between the two
    matches = pattern.finditer(ascii_bytes if ascii_bytes is not None else text)
    # a pattern that can match nothing (`\d*`) would report every position
    return [span for m in matches if (span := m.span())[0] != span[1]]


def find_pii(
    text: str,
    kinds: tuple[str, ...] | list[str] = KINDS,
    *,
    patterns: Mapping[str, Any] | None = None,
) -> list[Finding]:
    """Personal data in `text`, in order of position; no two findings overlap (the kind
    listed first in `KINDS` wins a contested span). Time linear in `len(text)`.

    `patterns` adds kinds (name -> pattern from `compile_pattern`), found in every text
    whatever `kinds` says. They run after the built-in kinds, so a checked card number or
    phone number is never cut in two by a broader extra pattern.
    """
    folded = _fold(text)
    data = folded.encode("ascii")
    has_digit = _DIGIT.search(folded) is not None
    taken: list[tuple[int, int]] = []
    findings = []
    for d in _DETECTORS:
        if d.kind not in kinds or not _worth_running(d.kind, folded, has_digit):
            continue
        spans = _unclaimed([m.span(d.group) for m in d.pattern.finditer(data)], taken)
        # checked after claims: a card number's digits are no phone candidate to check
        found = spans if d.valid is None else [s for s in spans if d.valid(folded[s[0] : s[1]])]
        findings += [Finding(d.kind, s, e, text[s:e]) for s, e in found]
        taken = sorted(taken + found)  # two sorted runs: a linear merge
    if patterns:
        ascii_bytes = data if folded is text else None
        for kind, pattern in patterns.items():
            found = _unclaimed(_user_spans(pattern, text, ascii_bytes), taken)
            findings += [Finding(kind, s, e, text[s:e]) for s, e in found]
            taken = sorted(taken + found)
    return sorted(findings, key=lambda f: f.start)


# ----------------------------------------------------------------------- extra patterns

MAX_PATTERN_WIDTH = 100
"""Longest text (characters) an extra pattern may match. Finding every match reads at
most this far past each one, so a bounded width keeps a scan linear: `a(?:.*b)?` on
40,000 `a`s made 40,000 matches each reading to the end of the text (1.5 s, x4 per
doubling). Personal values (ids, account numbers, codes) are far shorter."""
MIN_PATTERN_WIDTH = 3
"""Shortest text an extra pattern may match. Every finding costs a few microseconds of
Python, so a pattern matching single letters (`[a-z]`) would make 1 MB of text a
million findings; no personal value is one or two characters."""
MAX_PATTERN_PROGRAM = 1_000
"""Largest compiled pattern (RE2 instructions) accepted. When a pattern's automaton
outgrows RE2's cache, RE2 falls back to simulating it, still linear but slower by up to
the program size: `a[ab]{97}c` (103 instructions) took 1.5 s on 1 MB of random `a`/`b`,
a 501-instruction alternation of five such 4.9 s, `\\p{L}{10,100}x` (~120,000) 16 s on
0.8 MB (shared 2-core machine). `EMP-\\d{6}` is 14, `[a-z]{1,100}` 203, `\\p{Lu}` 797."""

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_RE2_ONLY = re.compile(r"(\\\\)|\\[pP](?:\{[^}]*\}|[A-Za-z])|\\z")
"""RE2 escapes Python's parser lacks, swapped for one of equal width when measuring:
`\\p{L}` (one character) for `a`, `\\z` (end of text) for `$`."""

_WHY_NOT = [
    ("ASSERT", "a lookaround (`(?=`, `(?!`, `(?<=` or `(?<!`)"),
    ("ASSERT_NOT", "a lookaround (`(?=`, `(?!`, `(?<=` or `(?<!`)"),
    ("GROUPREF", "a backreference (`\\1`, `(?P=name)`)"),
    ("GROUPREF_EXISTS", "a conditional group (`(?(1)...)`)"),
    ("ATOMIC_GROUP", "an atomic group (`(?>...)`)"),
    ("POSSESSIVE_REPEAT", "a possessive quantifier (`*+`, `++`, `?+`)"),
]


class PatternError(ValueError):
    """An extra PII pattern that cannot run in linear time, or is no pattern at all.
    The message starts with the key (`data.pii.patterns.employee_id: ...`)."""


def compile_pattern(name: str, pattern: str, *, key: str = "data.pii.patterns") -> Any:
    """`pattern` compiled for `find_pii`, or PatternError saying what to change.

    The one check every extra pattern passes, from a config (`data.pii.patterns`) or a
    package (`pii_scrubber.patterns`, with `key` naming it): RE2 syntax (no lookarounds,
    backreferences, atomic groups or possessive quantifiers: they need backtracking),
    matches MIN_PATTERN_WIDTH to MAX_PATTERN_WIDTH characters, compiles to at most
    MAX_PATTERN_PROGRAM instructions. Such a pattern scans any text in time linear in
    its length, with a constant these bounds keep small.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PatternError(f"{key}: name {name!r} must be lower-case letters, digits, `_`")
    where = f"{key}.{name}"
    if not isinstance(pattern, str) or not pattern:
        raise PatternError(f"{where}: must be a non-empty regular expression (a string)")
    parsed, python_error = _parse(pattern)
    try:
        compiled = _re2(pattern)
    except re2.error as exc:
        raise PatternError(f"{where}: {_why_refused(parsed, python_error, exc)}") from None
    if parsed is None:
        raise PatternError(
            f"{where}: RE2 reads it but Python's parser does not ({python_error}), so its "
            "width cannot be checked; write it in syntax both read (RE2's `\\p{..}` and "
            "`\\z` are fine)"
        )
    low, high = parsed.getwidth()
    if high > MAX_PATTERN_WIDTH:
        length = "any length" if high >= _sre.MAXREPEAT else f"up to {high} characters"
        raise PatternError(
            f"{where}: can match text of {length}; PII patterns must match at most "
            f"{MAX_PATTERN_WIDTH} characters (so a scan stays linear in the text): bound "
            "each repetition, e.g. `\\d{1,12}` instead of `\\d+`"
        )
    if low < MIN_PATTERN_WIDTH:
        raise PatternError(
            f"{where}: can match {'the empty string' if low == 0 else f'{low} character(s)'}"
            f"; PII patterns must match at least {MIN_PATTERN_WIDTH} characters (a shorter "
            "match is no personal value, and costs a finding every character or two)"
        )
    if compiled.programsize > MAX_PATTERN_PROGRAM:
        raise PatternError(
            f"{where}: compiles to {compiled.programsize} RE2 instructions, more than "
            f"{MAX_PATTERN_PROGRAM}; use smaller repetition counts or narrower classes "
            "(`[A-Za-z]` instead of `\\p{L}`)"
        )
    return compiled


def _parse(pattern: str) -> tuple[Any, str | None]:
    """Python's parse tree of `pattern` (RE2-only escapes swapped for equal-width ones),
    or (None, why it failed)."""
    swapped = _RE2_ONLY.sub(
        lambda m: m.group(1) or ("$" if m.group(0) == "\\z" else "a"), pattern
    )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FutureWarning on `[[`: not the user's error
            return _sre.parse(swapped), None
    except re.error as exc:
        return None, str(exc)


def _why_refused(parsed: Any, python_error: str | None, exc: Exception) -> str:
    if parsed is not None:
        ops = _ops(parsed.data)
        for op, what in _WHY_NOT:
            if op in ops:
                return (
                    f"uses {what}, which cannot run in linear time; PII patterns run on "
                    "RE2, which has none of lookarounds, backreferences, conditionals, "
                    "atomic groups or possessive quantifiers: rewrite it without"
                )
    detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
    if python_error is not None:
        return f"not a regular expression ({python_error})"
    hint = "; write `\\z` for the end of the text" if "\\Z" in detail else ""
    return f"not in RE2's syntax ({detail}){hint}"


def _ops(data: Any) -> set[str]:
    """Names of every opcode in a parse tree (nested groups, branches, repeats)."""
    names: set[str] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, _sre.SubPattern):
            stack.append(item.data)
        elif isinstance(item, (list, tuple)):
            # an (opcode, argument) pair; opcodes are ints that carry a name
            if len(item) == 2 and isinstance(item[0], int) and hasattr(item[0], "name"):
                names.add(str(item[0]))
                stack.append(item[1])
            else:
                stack.extend(item)
    return names
