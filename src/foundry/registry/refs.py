"""Model references: ``name``, ``name:latest``, ``name:<version>`` or ``name:<alias or tag>``.

An alias (``production``: `Registry.set_alias`, one index row per alias) names the version
it points to; a tag (``compressed``, ``int8``) names the newest version carrying it. Both
move from version to version (an alias wins over a tag of the same name); versions never
change. docs/REGISTRY.md has the commands."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from foundry.errors import ModelError

Version = int | Literal["latest"] | str
"""A version number >= 1, "latest", or a tag."""

ACCEPTED_FORMS = (
    "'name', 'name:latest', 'name:<version>' with a version >= 1 (e.g. 'adult:3') or "
    "'name:<alias or tag>' (e.g. 'adult:production')"
)
_TAG = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

# A name becomes a directory under <home>/models/, so it is kept to characters that are
# safe in paths and URLs; starting with a letter or digit rules out '.', '..' and '-x'.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")

PACKAGE_FILES = ("model.safetensors", "foundry.json", "metrics.json", "card.md")
"""Files every model package holds."""


def validate_name(name: str) -> str:
    """Return ``name`` if it can name a model, else raise ModelError saying what is allowed."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ModelError(
            f"invalid model name {name!r}",
            hint="use up to 128 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it can tag a version, else raise ModelError saying what is allowed."""
    if not isinstance(tag, str) or not _TAG.fullmatch(tag) or tag == "latest":
        raise ModelError(
            f"invalid tag {tag!r}",
            hint="use up to 64 letters, digits, '_' or '-', starting with a letter "
            "('latest' is reserved)",
        )
    return tag


MAX_VERSION = 2**31 - 1
"""The largest version number: the index's version column is a 32-bit integer on
PostgreSQL (a larger number in a reference is refused, never sent to the database)."""


def parse_ref(ref: str) -> tuple[str, Version]:
    """Split a reference into ``(name, version)``; version is an int >= 1, "latest" or a
    tag."""
    if not isinstance(ref, str) or not ref.strip():
        raise ModelError(f"empty model reference {ref!r}", hint=f"use {ACCEPTED_FORMS}")
    name, sep, version = ref.strip().partition(":")
    if not _NAME.fullmatch(name):
        raise ModelError(f"invalid model reference {ref!r}", hint=f"use {ACCEPTED_FORMS}")
    if not sep or version == "latest":
        return name, "latest"
    if version.isascii() and _TAG.fullmatch(version):
        return name, version
    if not version.isascii() or not version.isdigit() or not 1 <= int(version) <= MAX_VERSION:
        raise ModelError(
            f"invalid version {version!r} in model reference {ref!r}",
            hint=f"use {ACCEPTED_FORMS}",
        )
    return name, int(version)


def format_ref(name: str, version: Version) -> str:
    return f"{name}:{version}"


def is_package_dir(path: str | Path) -> bool:
    """True if ``path`` is a directory that looks like a model package (weights + manifest)."""
    p = Path(path)
    return p.is_dir() and (p / "model.safetensors").is_file() and (p / "foundry.json").is_file()
