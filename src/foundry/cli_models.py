"""`foundry models ...`: browse and change the model registry.

    list | show REF | verify [REF]            read (show: tags, aliases, lineage)
    tag REF TAG | untag REF TAG               labels on a version (`name:TAG` resolves)
    alias NAME ALIAS VERSION [--delete]       `name:ALIAS` → that version, moved atomically
    delete NAME:VERSION [--force]             refused while served or derived from
    export REF OUT.tar.gz | import ARCHIVE [--as NAME]

Each command is a thin wrapper over `Registry` or `foundry.registry.manage`; the admin
API (`foundry.serve.routes_models`) calls the same functions.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from foundry.errors import ConfigError, FoundryError

models_app = typer.Typer(help="Browse and change the model registry.", no_args_is_help=True)


def _out(text: str) -> None:
    typer.echo(text)


@models_app.command("list")
def models_list(json_out: bool = typer.Option(False, "--json")) -> None:
    """Every model name with its latest version."""
    from foundry.registry import Registry

    registry = Registry()
    records = registry.list_models()
    if json_out:
        _out(json.dumps([_record_json(r) for r in records]))
        return
    if not records:
        _out(f"no models registered in {registry.home} yet — run `foundry train CONFIG`")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"models in {registry.home}")
    for col in ("name", "latest", "task", "created (UTC)", "key metric"):
        table.add_column(col)
    for r in records:
        table.add_row(
            r.name,
            str(r.version),
            r.task or "",
            r.created_at.strftime("%Y-%m-%d %H:%M"),
            _key_metric(r.metrics),
        )
    Console().print(table)


@models_app.command("show")
def models_show(
    model: str = typer.Argument(..., help="name, name:latest or name:VERSION."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """One model version: where it lives, its lineage, data and metrics."""
    from foundry.registry import Registry

    registry = Registry()
    record = registry.resolve(model)
    info = _record_json(record)
    info["versions"] = [r.version for r in registry.versions(record.name)]
    info["aliases"] = {a: f"{record.name}:{v}" for a, v in registry.aliases(record.name).items()}
    info["lineage"] = [r.ref for r in registry.lineage(record.ref)]
    if json_out:
        _out(json.dumps(info, default=str))
        return
    rows = [
        (k, info[k])
        for k in (
            "ref",
            "path",
            "created_at",
            "task",
            "parent",
            "fingerprint",
            "size_bytes",
            "tags",
            "aliases",
            "versions",
            "lineage",
        )
    ]
    rows += [(k, f"{v:.4f}") for k, v in record.metrics.items() if isinstance(v, float)]
    rows += [  # fairness mitigation: the metrics above are of the decisions returned
        (f"{k} unmitigated", f"{v:.4f}")
        for k, v in (record.metrics.get("unmitigated") or {}).items()
        if isinstance(v, float)
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        _out(f"{key:>{width}}: {value}")


@models_app.command("verify")
def models_verify(
    model: str | None = typer.Argument(
        None, help="name:VERSION, name, or nothing for every version in the registry."
    ),
) -> None:
    """Check model packages against the sha256 of every file recorded at registration
    (what every load checks); exits 1 if any differs."""
    from foundry.registry import Registry

    registry = Registry()
    refs = (
        [registry.resolve(model).ref]
        if model and ":" in model
        else [
            r.ref
            for name in ([model] if model else [m.name for m in registry.list_models()])
            for r in registry.versions(name)
        ]
    )
    failed = 0
    for ref in refs:
        try:
            checked = registry.verify(ref)
        except FoundryError as exc:
            failed += 1
            typer.echo(f"FAILED {ref}: {exc}", err=True)
            continue
        _out(
            f"ok     {ref}"
            if checked
            else f"ok     {ref} (registered before checksums: nothing to compare)"
        )
    if failed:
        raise typer.Exit(1)


def _record_json(r) -> dict:
    return {
        "ref": r.ref,
        "name": r.name,
        "version": r.version,
        "path": str(r.path),
        "created_at": r.created_at.isoformat(),
        "task": r.task,
        "parent": r.parent,
        "fingerprint": r.fingerprint,
        "size_bytes": r.size_bytes,
        "tags": list(r.tags),
        "metrics": r.metrics,
    }


def _key_metric(metrics: dict) -> str:
    """The version's headline metric: of the decisions it returns, with the unmitigated
    value beside it when fairness mitigation changes them."""
    for key in ("accuracy", "rmse"):
        if isinstance(metrics.get(key), float):
            text = f"{key} {metrics[key]:.4f}"
            without = (metrics.get("unmitigated") or {}).get(key)
            if isinstance(without, float):
                text += f" ({without:.4f} unmitigated)"
            return text
    return ""


@models_app.command("tag")
def models_tag(
    model: str = typer.Argument(..., help="The version to tag: name:VERSION (or any ref)."),
    tag: str = typer.Argument(..., help="Letters, digits, '_' or '-'; 'latest' is reserved."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Put TAG on a version (taken off any other version of the name): name:TAG then
    resolves to it everywhere a model reference is accepted."""
    from foundry.registry import Registry

    record = Registry().tag(model, tag)
    _out(
        json.dumps(_record_json(record))
        if json_out
        else f"{record.name}:{tag} → {record.ref}  (tags: {', '.join(record.tags)})"
    )


@models_app.command("untag")
def models_untag(
    model: str = typer.Argument(..., help="name:VERSION (or name:TAG)."),
    tag: str = typer.Argument(..., help="The tag to take off."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Take TAG off a version."""
    from foundry.registry import Registry

    record = Registry().untag(model, tag)
    _out(
        json.dumps(_record_json(record))
        if json_out
        else f"untagged {record.ref}  (tags: {', '.join(record.tags) or 'none'})"
    )


@models_app.command("alias")
def models_alias(
    name: str = typer.Argument(..., help="Model name."),
    alias: str = typer.Argument(..., help="Alias, e.g. production or staging."),
    version: int | None = typer.Argument(None, min=1, help="The version it names."),
    remove: bool = typer.Option(False, "--delete", help="Delete the alias instead."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Point NAME:ALIAS at VERSION (create it, or move it in one step: servers started
    after that and every command resolve NAME:ALIAS to the new version)."""
    from foundry.registry import Registry

    registry = Registry()
    if remove:
        was = registry.remove_alias(name, alias)
        _out(
            json.dumps({"alias": f"{name}:{alias}", "deleted": True, "version": was})
            if json_out
            else f"deleted {name}:{alias} (was {name}:{was})"
        )
        return
    if version is None:
        raise ConfigError(
            f"give the version {name}:{alias} should name, e.g. "
            f"`foundry models alias {name} {alias} 3` (or --delete)"
        )
    record = registry.set_alias(name, alias, version)
    _out(
        json.dumps({"alias": f"{name}:{alias}", "ref": record.ref})
        if json_out
        else f"{name}:{alias} → {record.ref}"
    )


@models_app.command("delete")
def models_delete(
    model: str = typer.Argument(..., help="name:VERSION (a version number, not an alias)."),
    force: bool = typer.Option(
        False,
        "--force",
        help="Delete even if a running server serves it or other versions derive from it.",
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Delete one version: its package files and its index row (and aliases naming it).
    Refused while a running `foundry serve` serves it or other versions derive from it
    (compressed variants), unless --force."""
    from foundry.registry import Registry
    from foundry.registry.manage import delete_version

    registry = Registry()
    done = delete_version(registry, model, served=served_refs(registry), force=force)
    if json_out:
        _out(
            json.dumps(
                {
                    "deleted": done.record.ref,
                    "aliases": list(done.aliases),
                    "children": list(done.children),
                    "served_by": done.served_by,
                }
            )
        )
        return
    _out(
        f"deleted {done.record.ref}"
        + (f"; removed aliases {', '.join(done.aliases)}" if done.aliases else "")
        + (f"; {', '.join(done.children)} keep a deleted parent" if done.children else "")
        + (f"; still loaded by {done.served_by} server(s)" if done.served_by else "")
    )


def served_refs(registry) -> dict[str, int]:
    """{pinned ref: live serving processes} from the serving tables of the registry's
    database (`foundry.serve.leases`)."""
    from foundry.serve.leases import served_refs as live_refs
    from foundry.serve.store import ServeStore

    store = ServeStore(home=registry.home, url=registry.url)
    try:
        return live_refs(store)
    finally:
        store.close()


@models_app.command("export")
def models_export(
    model: str = typer.Argument(..., help="Model reference: name:VERSION, name:ALIAS..."),
    out: Path = typer.Argument(..., help="The .tar.gz to write."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Write one version as a .tar.gz: its package files and the sha256 of each, which
    `foundry models import` checks."""
    from foundry.registry import Registry
    from foundry.registry.manage import export_version

    result = export_version(Registry(), model, out)
    _out(
        json.dumps(
            {
                "ref": result.ref,
                "path": str(result.path),
                "files": result.files,
                "bytes": result.bytes,
            }
        )
        if json_out
        else f"wrote {result.path} ({result.ref}: {result.files} files, {result.bytes} bytes)"
    )


@models_app.command("import")
def models_import(
    archive: Path = typer.Argument(..., help="A .tar.gz `foundry models export` wrote."),
    as_name: str | None = typer.Option(
        None, "--as", help="Register it under this name (keeps its version number)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Register the version an export archive holds, after checking every file against
    its sha256; refused if its name:version exists (import it --as another name)."""
    from foundry.registry import Registry
    from foundry.registry.manage import import_archive

    record = import_archive(Registry(), archive, as_name=as_name)
    _out(json.dumps(_record_json(record)) if json_out else f"imported {record.ref}")
