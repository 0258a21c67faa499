"""`foundry keys ...` and `foundry usage ...`: API keys and billing from the shell.

    foundry keys create --name acme --plan starter [--models a,b] [--expires 30d]
    foundry keys list [--json]
    foundry keys revoke fdy_abcd1234          (or the key id)
    foundry keys rotate fdy_abcd1234 [--grace-hours 24]
    foundry keys new-encryption-key            a master key for FOUNDRY_ENCRYPTION_KEY
    foundry keys rotate-encryption --new-key-file NEW   (docs/SECURITY.md)
    foundry keys decrypt report.html -o plain.html
    foundry usage report [--period 2026-11] [--format table|csv|json] [--output FILE]

They use the same database as `foundry serve` (FOUNDRY_DATABASE_URL or
`<FOUNDRY_HOME>/foundry.db`). Plans are the built-ins plus a config's `serve.plans`
(`--config`). New keys go to stdout alone (so `KEY=$(foundry keys create ...)` works) and
are never shown again; everything else the commands say goes to stderr.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from foundry.serve.gate import Gate

keys_app = typer.Typer(
    help="Create, list, revoke and rotate API keys (only their hashes are stored).",
    no_args_is_help=True,
)
usage_app = typer.Typer(help="Usage and billing reports.", no_args_is_help=True)

_CONFIG_HELP = "Config YAML whose `serve:` section adds plans (default: the built-in plans)."


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """User errors as one `error: ...` line on stderr and exit status 2, never a traceback."""
    from foundry.errors import FoundryError
    from foundry.serve.errors import ApiError

    try:
        yield
    except ApiError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    except FoundryError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _gate(config: Path | None) -> Gate:
    from foundry.config.load import load_serve_config
    from foundry.serve.gate import Gate

    return Gate(load_serve_config(config).all_plans())


def _say(text: str) -> None:
    typer.echo(text, err=True)


# ----------------------------------------------------------------------------- keys


@keys_app.command("create")
def keys_create(
    name: str = typer.Option(..., "--name", help="Who the key is for (listings and bills)."),
    plan: str = typer.Option(
        ..., "--plan", help="trial, starter, pro, enterprise, or a plan from --config."
    ),
    models: str | None = typer.Option(
        None, "--models", help="Comma-separated models the key may call (default: the plan's)."
    ),
    expires: str | None = typer.Option(
        None,
        "--expires",
        help="Lifetime such as 30d, 12h or 90m (default: the plan's expires_days, else never).",
    ),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the key and its record as JSON."),
) -> None:
    """Make a key and print it: this is the only time it is shown."""
    with _one_line_errors():
        model_list = [m.strip() for m in models.split(",")] if models is not None else None
        created = _gate(config).create_key(name, plan, models=model_list, expires=expires)
    if json_out:
        _print_json(created.to_dict())
        return
    typer.echo(created.key)
    record = created.record
    expiry = f"expires {_day(record.expires_at)}" if record.expires_at else "never expires"
    _say(
        f"created key {record.id} {record.prefix} for {record.name!r} on plan {record.plan} "
        f"({expiry}). Store it now: it cannot be shown again."
    )


@keys_app.command("list")
def keys_list(
    json_out: bool = typer.Option(False, "--json", help="Print the keys as JSON."),
) -> None:
    """Every key with its prefix, plan and status (never the key itself)."""
    from foundry.serve.gate import Gate

    with _one_line_errors():
        # Listing needs no plan definitions: any plan name is shown as stored.
        records = Gate().list_keys()
    if json_out:
        _print_json([r.to_dict() for r in records])
        return
    if not records:
        _say("no API keys yet — make one with `foundry keys create --name NAME --plan trial`")
        return
    header = ("id", "prefix", "name", "plan", "status", "created", "expires", "models")
    lines = [
        (
            str(r.id),
            r.prefix,
            r.name,
            r.plan,
            r.status if r.status != "grace" else f"grace until {_minute(r.grace_until)}",
            _day(r.created_at),
            _day(r.expires_at) if r.expires_at else "never",
            ",".join(r.models) if r.models else "plan's",
        )
        for r in records
    ]
    typer.echo(_columns([header, *lines]), nl=False)


@keys_app.command("revoke")
def keys_revoke(
    key: str = typer.Argument(..., help="Key id, prefix (fdy_abcd1234) or the whole key."),
) -> None:
    """Stop a key now (and the older keys it was rotated from)."""
    from foundry.serve.gate import Gate

    with _one_line_errors():
        record = Gate().revoke_key(key)
    typer.echo(f"revoked key {record.id} {record.prefix} ({record.name})")


@keys_app.command("rotate")
def keys_rotate(
    key: str = typer.Argument(..., help="Key id, prefix (fdy_abcd1234) or the whole key."),
    grace_hours: float | None = typer.Option(
        None,
        "--grace-hours",
        help="Hours the old key keeps working (default: serve.rotate_grace_hours, 24).",
    ),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the new key as JSON."),
) -> None:
    """Replace a key: print the new one (shown once); the old one works for a grace period."""
    with _one_line_errors():
        from foundry.config.load import load_serve_config

        serve = load_serve_config(config)
        from foundry.serve.gate import Gate

        gate = Gate(serve.all_plans())
        hours = serve.rotate_grace_hours if grace_hours is None else grace_hours
        old = gate.get_key(key)
        created = gate.rotate_key(key, grace_hours=hours)
    if json_out:
        _print_json({**created.to_dict(), "replaces": old.prefix})
        return
    typer.echo(created.key)
    _say(
        f"key {old.prefix} rotated to {created.record.prefix} (id {created.record.id}); the "
        f"old key works for {hours:g} more hours. Store the new key now: it cannot be "
        "shown again."
    )


# ------------------------------------------------------------------ encryption at rest


@keys_app.command("new-encryption-key")
def keys_new_encryption_key() -> None:
    """Print a new master key for FOUNDRY_ENCRYPTION_KEY (32 random bytes, base64)."""
    import foundry.crypto as crypto

    typer.echo(crypto.new_key())
    _say("keep it in a secret store: without it nothing written under it can be read")


@keys_app.command("rotate-encryption")
def keys_rotate_encryption(
    new_key_file: Path = typer.Option(
        ..., "--new-key-file", help="File holding the new master key (base64; "
        "`foundry keys new-encryption-key > FILE`)."),
    paths: list[Path] | None = typer.Argument(
        None, help="More files or folders to re-wrap (default: the registry home, the "
        "run folders its index recorded and the token_shards folders beside them)."),
) -> None:
    """Re-wrap every encrypted file's data key under a new master key (headers only, the
    payloads are not rewritten) and re-encrypt the database's encrypted fields. The
    current key(s) come from FOUNDRY_ENCRYPTION_KEY / FOUNDRY_ENCRYPTION_KEY_FILE."""
    with _one_line_errors():
        import foundry.crypto as crypto
        from foundry.registry import Registry
        from foundry.serve.keys import rotate_field_encryption
        from foundry.serve.store import ServeStore

        ring = crypto.keyring()
        if ring is None:
            raise crypto.EncryptionError(
                "no current key: set FOUNDRY_ENCRYPTION_KEY (or _FILE) to the key the data "
                "was written with")
        new = crypto.MasterKey.parse(new_key_file.read_text(encoding="utf-8"),
                                     source=str(new_key_file))
        ring = crypto.Keyring((*ring.keys, new))  # files a stopped rotation already moved
        registry = Registry()
        names = [record.name for record in registry.list_models()]
        run_dirs = registry.run_dirs(names)
        # LM token shards live beside the runs (<output_dir>/token_shards), not inside
        shards = [run.parent / "token_shards" for run in run_dirs]
        roots = [registry.home, *run_dirs, *shards, *(paths or [])]
        files = sum(crypto.rotate_tree(root, new, ring) for root in dict.fromkeys(roots)
                    if root.exists())
        fields = rotate_field_encryption(ServeStore(), new, ring)
    _say(f"re-wrapped {files} file(s) and re-encrypted {fields} database field(s) under key "
         f"{new.key_id.hex()}; now set FOUNDRY_ENCRYPTION_KEY (or _FILE) to the new key")


@keys_app.command("decrypt")
def keys_decrypt(
    path: Path = typer.Argument(..., help="A file foundry wrote encrypted (a report, a table)."),
    output: Path | None = typer.Option(None, "--output", "-o",
                                       help="Write the plaintext here [default: stdout]."),
) -> None:
    """Print (or write) the plaintext of a file foundry encrypted, e.g. an HTML report."""
    import sys

    with _one_line_errors():
        import foundry.crypto as crypto

        plain = crypto.read_bytes(path)
    if output is None:
        sys.stdout.buffer.write(plain)
    else:
        output.write_bytes(plain)


# ---------------------------------------------------------------------------- usage


@usage_app.callback()
def _usage_group() -> None:
    """Usage and billing reports from the metered usage events."""


@usage_app.command("report")
def usage_report(
    period: str | None = typer.Option(
        None, "--period", help="Month to bill as YYYY-MM (default: the current UTC month)."
    ),
    fmt: str = typer.Option("table", "--format", help="table, csv or json."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    config: Path | None = typer.Option(None, "--config", help=_CONFIG_HELP),
) -> None:
    """Per key: requests, units, included, overage and amount due (integer cents)."""
    with _one_line_errors():
        if fmt not in ("table", "csv", "json"):
            from foundry.errors import ConfigError

            raise ConfigError(f"--format must be table, csv or json, got {fmt!r}")
        report = _gate(config).usage_report(period)
    if fmt == "json":
        text = report.to_json() + "\n"
    elif fmt == "csv":
        text = report.to_csv()
    else:
        text = _report_table(report)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        _say(f"wrote {len(report.rows)} rows for {report.period} to {output}")


def _report_table(report: Any) -> str:
    from foundry.serve.billing import format_cents

    header = ("key", "name", "plan", "requests", "units", "included", "overage", "due")
    rows = [
        (
            r.key,
            r.name,
            r.plan,
            str(r.requests),
            str(r.units),
            str(r.included_units),
            str(r.overage_units),
            format_cents(r.amount_due_cents),
        )
        for r in report.rows
    ]
    t = report.totals
    total = (
        "TOTAL",
        "",
        "",
        str(t["requests"]),
        str(t["units"]),
        "",
        str(t["overage_units"]),
        format_cents(t["amount_due_cents"]),
    )
    body = _columns([header, *rows, total], right=frozenset({3, 4, 5, 6, 7}))  # numbers align right
    text = f"usage for {report.period} (UTC)\n{body}"
    voided = report.voided
    if voided["requests"]:
        text += (f"\nvoided (their process died before settling them; not billed): "
                 f"{voided['requests']} requests, {voided['units']} units\n")
    return text


def _columns(table: list[tuple[str, ...]], right: frozenset[int] = frozenset()) -> str:
    """Rows of cells as aligned plain-text columns (no wrapping, unlike a rich table)."""
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines = []
    for row in table:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _print_json(value: Any) -> None:
    import json

    typer.echo(json.dumps(value, indent=2))


def _day(ts: float | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts or 0, timezone.utc).strftime("%Y-%m-%d")


def _minute(ts: float | None) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts or 0, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
