"""Reading a config: YAML file → `key=value` overrides → pydantic validation → readable errors."""

from __future__ import annotations

import contextlib
import copy
import difflib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from foundry.config.schema import FoundryConfig, ModelConfig, ServeConfig
from foundry.errors import ConfigError

_ARCHS: dict[str, type[BaseModel]] = {
    cls.model_fields["type"].default: cls
    for cls in typing.get_args(typing.get_args(ModelConfig)[0])
}
"""model.type → its section, read from the schema's union (an error inside `model:` names
`model.budget`, not pydantic's `model.auto.budget`)."""


@dataclass(frozen=True)
class LoadedConfig:
    """A validated config and the folder its relative paths are resolved against."""

    config: FoundryConfig
    base_dir: Path

    def resolve(self, path: str | None) -> Path | None:
        if path is None:
            return None
        p = Path(path).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def data_source(self, path: str | None) -> Path | str | None:
        """A data path for `read_table`: an ``s3://`` URL as it is, else `resolve`."""
        from foundry.objectstore import is_url

        return path if is_url(path) else self.resolve(path)


def load_config(
    source: str | Path | dict[str, Any], overrides: list[str] | None = None
) -> LoadedConfig:
    """Load and validate a config from a YAML file or a dict, applying `a.b.c=value` overrides."""
    if isinstance(source, dict):
        # a deep copy: overrides write into nested sections, never into the caller's dict
        raw, base_dir, origin = copy.deepcopy(source), Path.cwd(), "config"
    else:
        path = Path(source)
        raw, base_dir, origin = read_yaml(path), path.resolve().parent, str(path)
    for item in overrides or []:
        apply_override(raw, item)
    return LoadedConfig(validate_config(raw, origin=origin), base_dir)


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's top-level mapping, or a ConfigError naming the file."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def load_serve_config(path: Path | None, overrides: dict[str, Any] | None = None) -> ServeConfig:
    """The `serve:` section of a config file (other sections are neither read nor checked),
    with `overrides` (e.g. `--port` from the command line) applied and validated."""
    raw = read_yaml(path) if path is not None else {}
    section = raw.get("serve") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: serve must be a mapping of settings")
    merged = dict(section)
    for key, value in (overrides or {}).items():  # a nested override (tls) adds to its section
        both = isinstance(value, dict) and isinstance(section.get(key), dict)
        merged[key] = {**section[key], **value} if both else value
    try:
        return ServeConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        origin = path or "command line"
        message = format_error({**err, "loc": ("serve", *err["loc"])})
        raise ConfigError(f"{origin}: {message}{more}") from None


def validate_config(raw: dict[str, Any], *, origin: str = "config") -> FoundryConfig:
    model = raw.get("model")
    if isinstance(model, dict) and "type" not in model:
        raw = {**raw, "model": {"type": "mlp", **model}}  # mlp is the documented default
    try:
        return FoundryConfig.model_validate(raw)
    except ValidationError as exc:
        lines = [format_error(err) for err in exc.errors()]
        first = lines[0]
        more = f" (and {len(lines) - 1} more: {'; '.join(lines[1:4])})" if len(lines) > 1 else ""
        raise ConfigError(f"{origin}: {first}{more}") from None


def format_error(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    arch = None
    # Discriminated unions put the tag in the path (model.mlp.layers): drop it.
    if len(loc) >= 2 and loc[0] == "model" and loc[1] in _ARCHS:
        arch = loc.pop(1)
    # serve.models entries are told apart by shape (schema.ServedModelEntry): drop that tag
    if loc[:2] == ["serve", "models"] and len(loc) >= 4 and loc[3] in ("ref", "upstream"):
        loc.pop(3)
    key = ".".join(loc) or "(top level)"
    if err["type"] == "union_tag_invalid":
        return f"{key}.type: unknown model type (allowed: {', '.join(_ARCHS)})"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], arch)
        hint = difflib.get_close_matches(loc[-1], allowed, n=1)
        suggestion = f"; did you mean '{hint[0]}'?" if hint else ""
        return f"unknown key '{key}'{suggestion} (allowed: {', '.join(sorted(allowed))})"
    if err["type"] == "missing":
        return f"missing required key '{key}'"
    got = err.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {got!r})"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{key}: {msg}{got_text}"


def _allowed_keys(loc: list[str], arch: str | None) -> list[str]:
    """Field names of the section at `loc` (best effort through lists and unions)."""
    model: type[BaseModel] | None = FoundryConfig
    for part in loc:
        if model is None or part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        model = _ARCHS[arch or "mlp"] if part == "model" else _section_type(field.annotation)
    return list(model.model_fields) if model else []


def _section_type(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _section_type(arg)
        if found is not None:
            return found
    return None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (`3e-4`, `[64, 32]`).
    A section's existing key with dots in it is one step of the path:
    `tune.params.train.optimizer.lr.low=1e-4` sets `low` of `tune.params["train.optimizer.lr"]`."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    # YAML 1.1 reads 3e-4 as a string; numbers are what users mean.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else int(value)
    node = raw
    # A key that itself holds dots (tune.params' "train.optimizer.lr") is matched as one
    # step when the section has it: the longest such key wins.
    while len(parts) > 1 and ".".join(parts) not in node:
        width = next(
            (n for n in range(len(parts) - 1, 1, -1) if ".".join(parts[:n]) in node), 1
        )
        part, parts = ".".join(parts[:width]), parts[width:]
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{item}': '{part}' is not a section")
        node = child
    node[".".join(parts)] = value


def dump_config(config: FoundryConfig) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (every default filled in)."""
    return config.model_dump(mode="json")
