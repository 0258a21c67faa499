"""Registry changes from outside a run: tags, aliases, guarded delete, export / import."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch

from foundry.errors import ModelError
from foundry.registry import Registry
from foundry.registry.manage import delete_version, export_version, import_archive
from foundry.serve.leases import Lease, served_refs
from foundry.serve.store import ServeStore


def _register(reg: Registry, name: str = "adult", **kw):
    args = {
        "weights": {"w": torch.arange(6.0).reshape(2, 3) + len(name)},
        "manifest": {"task": {"target": "y", "task": "binary"}},
        "metrics": {"accuracy": 0.8},
        "card": f"# {name}\n",
    }
    args.update(kw)
    return reg.register(name, **args)


@pytest.mark.usefixtures("db_backend")
def test_tags_and_aliases_resolve_and_move():
    reg = Registry()
    for _ in range(3):
        _register(reg)
    assert reg.tag("adult:1", "reviewed").tags == ("reviewed",)
    assert reg.resolve("adult:reviewed").version == 1
    reg.tag("adult:2", "reviewed")  # a tag names one version at a time
    assert reg.resolve("adult:1").tags == () and reg.resolve("adult:reviewed").version == 2
    assert reg.untag("adult:2", "reviewed").tags == ()
    with pytest.raises(ModelError, match="not tagged 'reviewed'"):
        reg.untag("adult:2", "reviewed")

    assert reg.set_alias("adult", "production", 1).ref == "adult:1"
    assert reg.resolve("adult:production").version == 1
    assert reg.set_alias("adult", "production", 3).ref == "adult:3"  # moved, not added
    assert reg.resolve("adult:production").version == 3
    assert reg.aliases("adult") == {"production": 3}
    reg.tag("adult:1", "production")  # an alias wins over a tag of the same name
    assert reg.resolve("adult:production").version == 3
    with pytest.raises(ModelError, match="has no version 9"):
        reg.set_alias("adult", "staging", 9)
    with pytest.raises(ModelError, match="invalid tag 'latest'"):
        reg.set_alias("adult", "latest", 1)
    assert reg.remove_alias("adult", "production") == 3
    assert reg.resolve("adult:production").version == 1  # the tag again
    with pytest.raises(ModelError, match="has no alias 'production'"):
        reg.remove_alias("adult", "production")


def test_delete_refuses_a_served_or_derived_version_unless_forced(foundry_home):
    reg = Registry()
    parent = _register(reg)
    child = _register(reg, "adult-int8", parent="adult:1")
    reg.set_alias("adult", "production", 1)
    with pytest.raises(ModelError, match="adult-int8:1 derives from it"):
        delete_version(reg, "adult:1", served={})
    with pytest.raises(ModelError, match="name the version"):
        delete_version(reg, "adult:production", served={})

    # What a running server records (foundry.serve.app records its pinned refs).
    store = ServeStore(home=reg.home)
    lease = Lease(store)
    lease.start()
    lease.record_models(["adult-int8:1"])
    assert served_refs(store) == {"adult-int8:1": 1}
    with pytest.raises(ModelError, match="1 running serving process serve it"):
        delete_version(reg, "adult-int8:1", served=served_refs(store))
    lease.release()  # the server stopped
    assert served_refs(store) == {}
    store.close()

    done = delete_version(reg, "adult-int8:1", served={})
    assert done.record.ref == "adult-int8:1" and not child.path.exists()
    done = delete_version(reg, "adult:1", served={})  # no child left
    assert done.aliases == ("production",) and not parent.path.exists()
    with pytest.raises(ModelError, match="no model named 'adult'"):
        reg.resolve("adult:production")
    assert not any(p.name.startswith(".tmp") for p in (foundry_home / "models").rglob("*"))


def test_force_deletes_a_parent_and_keeps_its_children():
    reg = Registry()
    _register(reg)
    _register(reg, "adult-int8", parent="adult:1")
    done = delete_version(reg, "adult:1", served={"adult:1": 2}, force=True)
    assert done.children == ("adult-int8:1",) and done.served_by == 2
    assert [r.ref for r in reg.lineage("adult-int8:1")] == ["adult-int8:1"]


@pytest.fixture
def exported(tmp_path) -> tuple[Registry, Path]:
    reg = Registry(tmp_path / "source")
    _register(reg)
    _register(
        reg, files={"tokenizer.json": '{"vocab": [1, 2]}'}, tags=["int8"], description="second"
    )
    return reg, export_version(reg, "adult:2", tmp_path / "adult-2.tar.gz").path


def test_export_then_import_keeps_name_version_files_and_tags(exported, tmp_path):
    source, archive = exported
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        header = json.load(tar.extractfile("export.json"))
    assert names[0] == "export.json" and "package/model.safetensors" in names
    assert set(header["files"]) == {n for n in names if n.startswith("package/")}

    target = Registry(tmp_path / "target")
    record = import_archive(target, archive)
    assert (record.ref, record.tags, record.description) == ("adult:2", ("int8",), "second")
    imported, original = target.load("adult:2"), source.load("adult:2")
    assert torch.equal(imported.weights["w"], original.weights["w"])
    assert (Path(imported.path) / "tokenizer.json").read_text() == '{"vocab": [1, 2]}'
    assert imported.manifest["imported"]["from"] == "adult:2"
    assert target.verify("adult:2")

    with pytest.raises(ModelError, match="adult:2 already exists.*--as NAME"):
        import_archive(target, archive)
    assert import_archive(target, archive, as_name="adult-copy").ref == "adult-copy:2"


def _rewrite(archive: Path, out: Path, change) -> Path:
    """A copy of `archive` with `change(name, data) -> (name, data) | None` applied."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for member in src:
            data = src.extractfile(member).read()
            changed = change(member.name, data)
            if changed is None:
                continue
            info = tarfile.TarInfo(changed[0])
            info.size = len(changed[1])
            dst.addfile(info, io.BytesIO(changed[1]))
    return out


def test_import_refuses_a_tampered_or_incomplete_archive(exported, tmp_path):
    _, archive = exported
    target = Registry(tmp_path / "target")

    def flip(name, data):  # same size, one byte changed: only the hash sees it
        if name == "package/model.safetensors":
            data = data[:-1] + bytes([data[-1] ^ 1])
        return name, data

    tampered = _rewrite(archive, tmp_path / "tampered.tar.gz", flip)
    with pytest.raises(ModelError, match="package/model.safetensors does not match its sha256"):
        import_archive(target, tampered)
    dropped = _rewrite(
        archive,
        tmp_path / "dropped.tar.gz",
        lambda n, d: None if n == "package/metrics.json" else (n, d),
    )
    with pytest.raises(ModelError, match="package/metrics.json listed in export.json but missing"):
        import_archive(target, dropped)
    with pytest.raises(ModelError, match="no model named 'adult'"):
        target.resolve("adult")


def test_import_rejects_path_traversal_and_links(exported, tmp_path):
    _, archive = exported
    target = Registry(tmp_path / "target")
    escape = _rewrite(
        archive,
        tmp_path / "escape.tar.gz",
        lambda n, d: ("package/../../evil.json", d) if n.endswith("card.md") else (n, d),
    )
    with pytest.raises(ModelError, match=r"'package/\.\./\.\./evil.json' points outside"):
        import_archive(target, escape)
    linked = tmp_path / "link.tar.gz"
    with tarfile.open(archive) as src, tarfile.open(linked, "w:gz") as dst:
        for member in src:
            dst.addfile(member, src.extractfile(member))
        link = tarfile.TarInfo("package/passwd.json")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    with pytest.raises(ModelError, match="'package/passwd.json' is a link"):
        import_archive(target, linked)
    assert not (tmp_path / "evil.json").exists()
    assert not list(tmp_path.rglob("evil.json"))


def test_import_and_delete_with_a_shared_artifact_store(exported, tmp_path, s3_bucket):
    """Through `Registry.register` / `delete`, so the objects in the bucket follow: an
    import in one home keeps its version number and loads in another; a delete there
    removes the version for both."""
    _, archive = exported
    url = f"sqlite:///{tmp_path / 'index.db'}"
    a = Registry(tmp_path / "a", url, artifacts=f"{s3_bucket}/team")
    b = Registry(tmp_path / "b", url, artifacts=f"{s3_bucket}/team")
    assert import_archive(a, archive).ref == "adult:2"
    with pytest.raises(ModelError, match="adult:2 already exists"):
        import_archive(b, archive)
    assert torch.equal(b.load("adult:2").weights["w"], a.load("adult:2").weights["w"])
    b.set_alias("adult", "production", 2)
    assert delete_version(b, "adult:2", served={}).aliases == ("production",)
    with pytest.raises(ModelError, match="no model named 'adult'"):
        a.resolve("adult:production")
