"""`PIIScrubber`: the `data.pii` settings applied to a table, fitted once, reapplied at
prediction time.

    scrubber = PIIScrubber.fit(train_df, config.data.pii, target="churned")
    train_df, report = scrubber.scrub(train_df)    # new frame + JSON report of counts
    json.dumps(scrubber.state_dict())              # goes into the model package
    PIIScrubber.from_state(state).transform(df)    # prediction input, scrubbed alike
    for line in format_report(merge_reports([train_report, test_report])): print(line)

Two things are decided at fit time and kept: which columns are scanned for values
(`scan_columns`) and which whole columns identify a person (`identifier_columns`).
Values are found by `foundry.data.pii.find_pii`; each is masked (`[EMAIL]`), replaced
by a salted hash (`[EMAIL:3f9a0c12]`), removed, or only counted. The salt comes from the
environment (`data.pii.salt_env`) and is never stored: the state keeps a fingerprint so
that a model asked to predict with a different salt refuses instead of silently hashing
values into codes it never saw.

A value longer than `data.pii.max_value_chars` is not scanned: it is one finding of
kind `too_long` and gets the action whole (masked, hashed, removed or counted). Scanning
is linear in the value (`foundry.data.pii`); the cap bounds what one value can cost, and
handling the whole value keeps "nothing unscanned reaches the model" true, where a
scan of its first part would let the rest through, and windows cut values in two.

Reports hold counts, column names and reasons, never a value that was found.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from foundry.config.schema import PIIConfig
from foundry.data.infer import identifier_reason
from foundry.data.personal import find_personal_columns
from foundry.data.pii import CANDIDATE, Finding, PatternError, compile_pattern, find_pii
from foundry.errors import ConfigError, DataError, ModelError

__all__ = ["PIIScrubber", "format_report", "merge_reports"]

STATE_FORMAT = 1
"""Bumped when `state_dict()`'s layout changes incompatibly."""
VALUE_HASH_HEX = 8
"""Hex digits of the hash that replaces a value inside text (`[EMAIL:3f9a0c12]`)."""
COLUMN_HASH_HEX = 16
"""Hex digits of the hash that replaces a whole identifier value: 64 bits keep a million
distinct ids collision-free (32 bits would merge about a hundred pairs of them)."""
TOO_LONG = "too_long"
"""The finding a value longer than `max_value_chars` is, whole and unscanned."""
DEFAULT_MAX_VALUE_CHARS = PIIConfig.model_fields["max_value_chars"].default
"""The cap of a package saved before the cap existed: its inputs are hostile all the same."""


def _normalise_name(name: object) -> str:
    return re.sub(r"[\s-]+", "_", str(name).strip().lower())


def _fingerprint(salt: str) -> str:
    # a fingerprint, not the salt: enough to tell two salts apart, useless to hash with
    return hashlib.sha256(b"foundry-pii-salt\0" + salt.encode()).hexdigest()[:12]


def _is_scannable(dtype: Any) -> bool:
    return (
        isinstance(dtype, (pd.CategoricalDtype, pd.StringDtype))
        or pd.api.types.is_object_dtype(dtype)
        or pd.api.types.is_string_dtype(dtype)
    )


class PIIScrubber:
    """Fitted `data.pii` settings; see the module docstring. Build with `fit` or
    `from_state`; the state is JSON and holds no salt."""

    def __init__(
        self,
        *,
        action: str,
        kinds: Sequence[str],
        patterns: dict[str, str],
        identifiers: str,
        salt_env: str,
        salt_fingerprint: str | None,
        scan_columns: Sequence[str],
        identifier_columns: Sequence[dict[str, str]],
        max_value_chars: int | None = DEFAULT_MAX_VALUE_CHARS,
    ) -> None:
        self.action = action
        self.kinds = tuple(kinds)
        self.patterns = dict(patterns)
        self.identifiers = identifiers
        self.salt_env = salt_env
        self.salt_fingerprint = salt_fingerprint
        self.scan_columns = list(scan_columns)
        self.identifier_columns = [dict(d) for d in identifier_columns]
        self.max_value_chars = max_value_chars
        # PatternError for a pattern that could not run in linear time (from_state turns
        # it into a ModelError; a config's patterns were checked when it loaded)
        self._compiled = {name: compile_pattern(name, p) for name, p in self.patterns.items()}
        self._salt: str | None = None

    # ------------------------------------------------------------------- fit

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        config: PIIConfig,
        *,
        target: str | None,
        keep: Sequence[str] = (),
    ) -> PIIScrubber:
        """Decide the columns to scan and the identifier columns of `df`.

        `target` and `keep` (columns later stages need as they are, e.g. a split's group
        column) are never flagged as identifiers nor scanned unless `config.columns`
        names them. Reads the salt from `config.salt_env` when anything will be hashed.
        """
        protected = {c for c in (target, *keep) if c is not None}
        if not config.enabled:
            return cls._from_config(config, scan_columns=[], identifier_columns=[])
        if config.columns is not None:
            missing = [c for c in config.columns if c not in df.columns]
            if missing:
                raise ConfigError(
                    f"data.pii.columns: column '{missing[0]}' is not in the data",
                    hint="available columns: " + ", ".join(map(str, df.columns)),
                )

        absent = [c for c in config.keep_columns if c not in df.columns]
        if absent:
            raise ConfigError(
                f"data.pii.keep_columns: column '{absent[0]}' is not in the data",
                hint="available columns: " + ", ".join(map(str, df.columns)),
            )
        identifier_columns = []
        id_names = {_normalise_name(n) for n in config.identifier_names}
        # names, birth dates, addresses, national ids (foundry.data.personal)
        personal = (
            {d["column"]: d for d in find_personal_columns(df, skip=protected)}
            if config.personal
            else {}
        )
        for name in df.columns:
            if name in protected:
                continue
            found = personal.get(str(name))
            if found is not None and found["kind"] != "record_id":
                reason = found["reason"]
            elif _normalise_name(name) in id_names:
                reason = f"name matches '{_normalise_name(name)}'"
            elif found is not None:
                reason = found["reason"]
            elif _is_scannable(df[name].dtype) and (why := identifier_reason(df[name])):
                # the rule `foundry init` and feature inference drop identifiers by: UUIDs,
                # hashes, numbered and near-random ids; package names or paths stay
                reason = why
            else:
                continue
            if name in config.keep_columns:
                # the user's choice, said out loud wherever the scan is reported
                identifier_columns.append(
                    {"column": str(name), "reason": reason, "action": "report",
                     "kept": "data.pii.keep_columns"}  # fmt: skip
                )
                continue
            identifier_columns.append(
                {"column": str(name), "reason": reason, "action": config.identifiers}
            )

        # a dropped or hashed identifier column has no values left to scan
        replaced = {d["column"] for d in identifier_columns if d["action"] != "report"}
        if config.columns is not None:
            scan = [c for c in config.columns if c not in replaced]
        else:
            scan = [
                str(c)
                for c in df.columns
                if c not in protected and c not in replaced and _is_scannable(df[c].dtype)
            ]

        scrubber = cls._from_config(
            config, scan_columns=scan, identifier_columns=identifier_columns
        )
        if scrubber._needs_salt:
            salt = os.environ.get(config.salt_env)
            if not salt:
                what = "action" if config.action == "hash" and scan else "identifiers"
                raise ConfigError(
                    f"data.pii.{what} is 'hash' but the environment variable "
                    f"{config.salt_env} is not set",
                    hint=f"set {config.salt_env} to a secret string and keep it: predictions "
                    "need the same salt (data.pii.salt_env names the variable)",
                )
            scrubber._salt = salt
            scrubber.salt_fingerprint = _fingerprint(salt)
        return scrubber

    @classmethod
    def _from_config(
        cls, config: PIIConfig, *, scan_columns: list[str], identifier_columns: list[dict]
    ) -> PIIScrubber:
        return cls(
            action=config.action,
            kinds=list(config.kinds),
            patterns=dict(config.patterns),
            identifiers=config.identifiers,
            salt_env=config.salt_env,
            salt_fingerprint=None,
            scan_columns=scan_columns,
            identifier_columns=identifier_columns,
            max_value_chars=config.max_value_chars,
        )

    # ------------------------------------------------------------------- properties

    @property
    def changes_values(self) -> bool:
        """False when scrubbing only counts (transform then returns its input as is)."""
        return (self.action != "report" and bool(self.scan_columns)) or any(
            d["action"] != "report" for d in self.identifier_columns
        )

    @property
    def all_kinds(self) -> list[str]:
        return list(dict.fromkeys([*self.kinds, *self.patterns]))

    @property
    def _needs_salt(self) -> bool:
        return (self.action == "hash" and bool(self.scan_columns)) or any(
            d["action"] == "hash" for d in self.identifier_columns
        )

    def _salt_for(self, error: type[Exception]) -> str:
        if self._salt is not None:
            return self._salt
        salt = os.environ.get(self.salt_env)
        if not salt:
            raise error(
                f"this model hashes personal data with a salt, and the environment "
                f"variable {self.salt_env} is not set",
                hint=f"set {self.salt_env} to the salt the model was trained with",
            )
        if _fingerprint(salt) != self.salt_fingerprint:
            raise error(
                f"the salt in {self.salt_env} is not the one this model was trained with "
                "(its fingerprint differs), so hashed values would not match",
                hint=f"set {self.salt_env} to the salt the model was trained with",
            )
        self._salt = salt
        return salt

    # ------------------------------------------------------------------- apply

    def scrub(self, df: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
        """Training rows scrubbed (a new frame; `df` is not modified) and the report of
        what was found where (JSON; counts, never values)."""
        out, findings, rows = self._apply(df, error=ConfigError)
        report = {
            "action": self.action,
            "kinds": self.all_kinds,
            "rows_scanned": len(df),
            "columns_scanned": [c for c in self.scan_columns if c in df.columns],
            "findings": findings,
            "rows_with_pii": rows,
            "total": sum(n for counts in findings.values() for n in counts.values()),
            "identifier_columns": [
                dict(d) for d in self.identifier_columns if d["column"] in df.columns
            ],
        }
        return out, report

    def transform(self, df: pd.DataFrame) -> pd.DataFrame:
        """Prediction input scrubbed like the training rows. Columns absent from `df` are
        skipped; with `hash`, the salt must be the training one (ModelError otherwise)."""
        if not self.changes_values:
            return df
        # with `report`, the values are left alone and nobody reads the counts
        return self._apply(df, error=ModelError, scan=self.action != "report")[0]

    def transform_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """API records (one dict per row) scrubbed as `transform` scrubs a frame of them:
        new dicts where a value changes, the same dicts otherwise. Identifier columns
        are not model inputs, so a request never carries them to the model."""
        if not self.changes_values or self.action == "report":
            return records
        columns = [c for c in self.scan_columns if any(c in r for r in records)]
        if not columns:
            return records
        salt = self._salt_for(ModelError) if self.action == "hash" else None
        out = []
        for record in records:
            changed = None
            for column in columns:
                value = record.get(column)
                if type(value) is not str:
                    continue
                found = self._find(value, prefilter=True)
                if found:
                    changed = changed if changed is not None else dict(record)
                    changed[column] = self._replace(value, found, salt)
            out.append(record if changed is None else changed)
        return out

    def _apply(
        self, df: pd.DataFrame, *, error: type[Exception], scan: bool = True
    ) -> tuple[pd.DataFrame, dict[str, dict[str, int]], int]:
        present_ids = [d for d in self.identifier_columns if d["column"] in df.columns]
        columns = [c for c in self.scan_columns if c in df.columns] if scan else []
        hashes = (self.action == "hash" and bool(columns)) or any(
            d["action"] == "hash" for d in present_ids
        )
        salt = self._salt_for(error) if hashes else None

        out = df.copy(deep=False)  # new columns are assigned, never written into
        findings: dict[str, dict[str, int]] = {}
        row_has_pii = np.zeros(len(df), dtype=bool)
        for column in columns:
            series, counts, hit = self._scrub_column(df[column], salt)
            if self.action != "report":
                out[column] = series
            if counts:
                findings[column] = counts
            row_has_pii |= hit

        # each column's own action: one the user keeps (data.pii.keep_columns) is "report"
        for d in present_ids:
            if d["action"] == "drop":
                out = out.drop(columns=d["column"])
            elif d["action"] == "hash":
                out[d["column"]] = _hash_column(df[d["column"]], salt or "")
        return out, findings, int(row_has_pii.sum())

    def _scrub_column(
        self, col: pd.Series, salt: str | None
    ) -> tuple[pd.Series, dict[str, int], np.ndarray]:
        """`col` scrubbed, the findings per kind (counted per row) and which rows had any.

        Each distinct value is scanned once and the result mapped back: a category column
        of a million rows costs as many scans as it has categories."""
        codes, uniques = _distinct(col)
        n_rows = np.bincount(codes[codes >= 0], minlength=len(uniques))

        new_values: list[object] = list(uniques)
        kind_counts: dict[str, int] = {}
        has_pii = np.zeros(len(uniques), dtype=bool)
        for i in self._candidates(uniques):
            value = uniques[i]
            found = self._find(value)
            if found:
                has_pii[i] = True
                for f in found:
                    kind_counts[f.kind] = kind_counts.get(f.kind, 0) + int(n_rows[i])
                new_values[i] = self._replace(value, found, salt)
        hit = np.zeros(len(col), dtype=bool)
        valid = codes >= 0
        hit[valid] = has_pii[codes[valid]]
        counts = {k: n for k, n in kind_counts.items() if n}
        if self.action == "report" or not has_pii.any():
            return col, counts, hit
        return _rebuild(col, codes, new_values), counts, hit

    def _find(self, value: str, *, prefilter: bool = False) -> list[Finding]:
        """What `value` holds: find_pii's findings, or the whole value as `too_long`.
        `prefilter`: skip a value where no built-in kind can be (see `_candidates`)."""
        if self.max_value_chars is not None and len(value) > self.max_value_chars:
            return [Finding(TOO_LONG, 0, len(value), value)]
        if prefilter and not self._compiled and not CANDIDATE.search(value):
            return []
        return find_pii(value, self.kinds, patterns=self._compiled)

    def _candidates(self, uniques: list[object]) -> np.ndarray:
        """Positions of the strings in `uniques` worth scanning. Most free text holds no
        PII and no digit, `@` or `:`; one vectorised test skips it (with find_pii's own
        per-kind checks, 56k -> ~140k rows/s on chatty text). Extra patterns can match
        anything, so with them every string is scanned."""
        values = pd.Series(uniques, dtype=object)
        is_str = values.map(type).eq(str)
        if self._compiled:
            return np.flatnonzero(is_str.to_numpy())
        # object dtype: Python's `re`, whose \d matches the same digits the kinds do
        # (`.str` refuses a column without a single string, e.g. booleans in object dtype)
        text = values.where(is_str, "").astype(str)
        hint = text.str.contains(CANDIDATE, na=False)
        if self.max_value_chars is not None:  # replaced whole, whatever they hold
            hint |= text.str.len() > self.max_value_chars
        return np.flatnonzero((is_str & hint).to_numpy())

    def _replace(self, text: str, found: list[Finding], salt: str | None) -> str:
        if self.action == "report":
            return text
        if self.action == "drop":
            return _remove(text, found)
        pieces, pos = [], 0
        for f in found:
            label = f.kind.upper()
            if self.action == "hash":
                label = f"{label}:{_hmac(salt or '', f.value, VALUE_HASH_HEX)}"
            pieces += [text[pos : f.start], f"[{label}]"]
            pos = f.end
        pieces.append(text[pos:])
        return "".join(pieces)

    # ------------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        """Everything `from_state` needs, as JSON values; the salt is not among them."""
        return {
            "format": STATE_FORMAT,
            "action": self.action,
            "kinds": list(self.kinds),
            "patterns": dict(self.patterns),
            "identifiers": self.identifiers,
            "salt_env": self.salt_env,
            "salt_fingerprint": self.salt_fingerprint,
            "scan_columns": list(self.scan_columns),
            "identifier_columns": [dict(d) for d in self.identifier_columns],
            "max_value_chars": self.max_value_chars,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PIIScrubber:
        if state.get("format") != STATE_FORMAT:
            raise ModelError(
                f"PII scrubbing state format {state.get('format')!r} is not supported "
                f"(expected {STATE_FORMAT})",
                hint="retrain the model with this version of foundry",
            )
        # a package's patterns run on every request: checked as a config's are (one
        # check, `compile_pattern`), so a hostile or outdated one is refused at load
        patterns = state.get("patterns") or {}
        try:
            if not isinstance(patterns, dict):
                raise PatternError("pii_scrubber.patterns: must be a mapping of name: pattern")
            for name, pattern in patterns.items():
                compile_pattern(name, pattern, key="pii_scrubber.patterns")
        except PatternError as exc:
            raise ModelError(
                f"foundry.json: {exc}",
                hint="retrain the model with this version of foundry, or remove the "
                "pattern from the package",
            ) from None
        fields = {k: v for k, v in state.items() if k != "format"}
        # a package from before the cap gets today's default: its inputs are just as hostile
        fields.setdefault("max_value_chars", DEFAULT_MAX_VALUE_CHARS)
        return cls(**fields)


# ----------------------------------------------------------------------- helpers


def _hmac(salt: str, value: str, hex_digits: int) -> str:
    return hmac.new(salt.encode(), value.encode(), hashlib.sha256).hexdigest()[:hex_digits]


def _remove(text: str, found: list[Finding]) -> str:
    """`text` without the found values, closing the gap each leaves: "mail ana@x.com
    now" -> "mail now", not "mail  now". Other spacing in the text is left alone."""
    segments = [text[: found[0].start]]
    segments += [text[a.end : b.start] for a, b in pairwise(found)]
    segments.append(text[found[-1].end :])
    out = segments[0]
    for segment in segments[1:]:
        # a value was removed between `out` and `segment`
        if segment.startswith(" ") and (out == "" or out.endswith(" ")):
            segment = segment[1:]
        out += segment
    if segments[-1] == "" and out.endswith(" "):
        out = out[:-1]
    return out


def _hash_value(value: object, salt: str) -> str:
    # 12 and 12.0 are the same id (a float column is what an int column with gaps becomes)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _hmac(salt, str(value), COLUMN_HASH_HEX)


def _hash_column(col: pd.Series, salt: str) -> pd.Series:
    """Every non-missing value replaced by its salted hash; missing stays missing."""
    codes, uniques = _distinct(col)
    hashed = [v if _is_missing(v) else _hash_value(v, salt) for v in uniques]
    keep_dtype = isinstance(col.dtype, (pd.CategoricalDtype, pd.StringDtype))
    return _rebuild(col, codes, hashed, dtype=col.dtype if keep_dtype else object)


def _is_missing(value: object) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _distinct(col: pd.Series) -> tuple[np.ndarray, list[object]]:
    """(codes, uniques) with `col[i] == uniques[codes[i]]`, code -1 where missing."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy(), list(col.cat.categories)
    try:
        codes, index = pd.factorize(col, use_na_sentinel=True)
        return codes, list(index)
    except TypeError:  # unhashable cells (lists, dicts read from JSON): one by one
        values = col.to_list()
        codes = np.array([-1 if _is_missing(v) else i for i, v in enumerate(values)])
        return codes, values


def _rebuild(
    col: pd.Series, codes: np.ndarray, new_values: list[object], *, dtype: Any = None
) -> pd.Series:
    """A column like `col` (same index, name, dtype unless `dtype` is given) whose
    distinct value `i` became `new_values[i]`; missing cells stay missing."""
    if isinstance(col.dtype, pd.CategoricalDtype):
        # masking merges categories ("[EMAIL]"): factorize the new names, remap codes
        new_codes, categories = pd.factorize(pd.Series(new_values))
        remapped = np.where(codes >= 0, new_codes[np.maximum(codes, 0)], -1)
        return pd.Series(
            pd.Categorical.from_codes(remapped, categories=categories),
            index=col.index,
            name=col.name,
        )
    lookup = np.empty(len(new_values), dtype=object)
    lookup[:] = new_values
    values = col.to_numpy(dtype=object, copy=True)
    valid = codes >= 0
    values[valid] = lookup[codes[valid]]
    return pd.Series(values, index=col.index, name=col.name, dtype=dtype or col.dtype)


# ----------------------------------------------------------------------- reports


def merge_reports(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One report for several scrubbed frames (train, val, test): counts summed, columns
    and identifier columns listed once each."""
    reports = list(reports)
    if not reports:
        raise DataError("merge_reports: no reports to merge", hint="pass at least one report")
    findings: dict[str, dict[str, int]] = {}
    columns: dict[str, None] = {}
    identifiers: dict[str, dict] = {}
    for r in reports:
        columns.update(dict.fromkeys(r["columns_scanned"]))
        for column, counts in r["findings"].items():
            into = findings.setdefault(column, {})
            for kind, n in counts.items():
                into[kind] = into.get(kind, 0) + n
        for d in r["identifier_columns"]:
            identifiers.setdefault(d["column"], dict(d))
    return {
        "action": reports[0]["action"],
        "kinds": list(dict.fromkeys(k for r in reports for k in r["kinds"])),
        "rows_scanned": sum(r["rows_scanned"] for r in reports),
        "columns_scanned": list(columns),
        "findings": findings,
        "rows_with_pii": sum(r["rows_with_pii"] for r in reports),
        "total": sum(r["total"] for r in reports),
        "identifier_columns": list(identifiers.values()),
    }


_KIND_NAMES = {
    "email": ("email", "emails"),
    "phone": ("phone number", "phone numbers"),
    "credit_card": ("card number", "card numbers"),
    "iban": ("IBAN", "IBANs"),
    "ip_address": ("IP address", "IP addresses"),
    "url": ("URL", "URLs"),
    TOO_LONG: ("value too long to scan", "values too long to scan"),
}
_DONE = {"mask": "masked", "hash": "hashed", "drop": "removed", "report": "left as is"}


def _count(kind: str, n: int) -> str:
    one, many = _KIND_NAMES.get(kind, (f"{kind} value", f"{kind} values"))
    return f"{n} {one if n == 1 else many}"


def format_report(report: dict[str, Any]) -> list[str]:
    """Short console lines, e.g. "PII: 14 emails, 3 phone numbers in 'comment' (masked)"
    and "PII: identifier column 'email' dropped (name matches 'email')"."""
    lines = []
    done = _DONE[report["action"]]
    for column, counts in report["findings"].items():
        found = ", ".join(_count(k, n) for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines.append(f"PII: {found} in '{column}' ({done})")
    if not report["findings"] and report["columns_scanned"]:
        n = len(report["columns_scanned"])
        columns = f"{n} column{'s' if n > 1 else ''} ({report['rows_scanned']} rows scanned)"
        # "none found" only when no column was taken as personal either
        lines.append(
            f"PII: no {', '.join(report['kinds'])} values found inside {columns}"
            if report["identifier_columns"]
            else f"PII: none found in {columns}"
        )
    for d in report["identifier_columns"]:
        if d.get("kept"):
            lines.append(
                f"PII: identifier column '{d['column']}' kept as an input ({d['reason']}) "
                f"because {d['kept']} lists it; remove it from there to drop it"
            )
        elif d["action"] == "report":
            lines.append(
                f"PII: identifier column '{d['column']}' kept ({d['reason']}); "
                "set data.pii.identifiers to drop or hash to remove it"
            )
        else:
            verb = "dropped" if d["action"] == "drop" else "hashed"
            lines.append(f"PII: identifier column '{d['column']}' {verb} ({d['reason']})")
    return lines
