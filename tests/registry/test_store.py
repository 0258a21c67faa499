"""Registry: versions, references, listing, lineage, failures, database URL."""

from __future__ import annotations

import json
import os
from datetime import timezone
from pathlib import Path

import pytest
import torch
from sqlalchemy.engine import make_url

import foundry.registry
import foundry.registry.store as store_mod
from foundry.errors import ModelError
from foundry.registry import Registry, default_home

pytestmark = pytest.mark.usefixtures("db_backend")  # SQLite and PostgreSQL (conftest.py)


def _register(reg: Registry, name: str = "iris", **kw):
    args = {
        "weights": {"w": torch.full((2, 3), float(len(name))), "b": torch.arange(3)},
        "manifest": {"task": {"target": "y", "task": "multiclass"}, "fingerprint": "abc123"},
        "metrics": {"accuracy": 0.9, "confusion_matrix": [[1, 0], [0, 1]]},
        "card": f"# {name}\n",
    }
    args.update(kw)
    return reg.register(name, **args)


def test_register_then_resolve_every_form(foundry_home):
    reg = Registry()
    assert reg.home == foundry_home.resolve()
    r1 = _register(reg, description="first", tags=["tabular", "demo"])
    assert (r1.name, r1.version, r1.ref) == ("iris", 1, "iris:1")
    assert r1.path == foundry_home.resolve() / "models" / "iris" / "1"
    assert r1.task == "multiclass" and r1.fingerprint == "abc123"
    assert r1.tags == ("tabular", "demo") and r1.description == "first"
    assert r1.size_bytes == sum(p.stat().st_size for p in r1.path.iterdir())
    assert r1.created_at.tzinfo is not None and r1.created_at.utcoffset().total_seconds() == 0
    r2 = _register(reg)
    assert r2.version == 2
    assert reg.resolve("iris") == reg.resolve("iris:latest") == reg.resolve("iris:2")
    assert reg.resolve("iris:1") == r1
    # a fresh Registry (another process) sees the same store
    again = Registry().resolve("iris:1")
    assert again.created_at == r1.created_at and again.metrics == r1.metrics


def test_manifest_records_name_version_parent_and_weights_round_trip():
    reg = Registry()
    _register(reg)
    pkg = reg.load("iris")
    assert pkg.manifest["name"] == "iris" and pkg.manifest["version"] == 1
    assert pkg.manifest["parent"] is None
    assert torch.equal(pkg.weights["w"], torch.full((2, 3), 4.0))
    assert torch.equal(pkg.weights["b"], torch.arange(3))
    assert pkg.metrics["confusion_matrix"] == [[1, 0], [0, 1]]
    assert reg.load(pkg.path).manifest == pkg.manifest  # a package directory loads too
    assert reg.load(str(pkg.path)).card == "# iris\n"


def test_list_versions_and_lineage():
    reg = Registry()
    _register(reg, "adult")
    _register(reg, "adult")
    child = _register(reg, "adult-int8", parent="adult")  # pinned to the latest: adult:2
    grandchild = _register(reg, "adult-pruned", parent="adult-int8:1")
    assert child.parent == "adult:2"
    assert reg.load("adult-int8").manifest["parent"] == "adult:2"

    listed = reg.list_models()
    assert [(r.ref, r.version_count) for r in listed] == [
        ("adult:2", 2),
        ("adult-int8:1", 1),
        ("adult-pruned:1", 1),
    ]
    assert [r.version for r in reg.versions("adult")] == [1, 2]
    assert [r.ref for r in reg.lineage(grandchild.ref)] == [
        "adult-pruned:1",
        "adult-int8:1",
        "adult:2",
    ]
    assert [r.ref for r in reg.lineage("adult:1")] == ["adult:1"]
    json.dumps([r.to_dict() for r in listed])


def test_unknown_parent_is_refused_before_writing(foundry_home):
    reg = Registry()
    with pytest.raises(ModelError, match="no model named 'nope'"):
        _register(reg, "child", parent="nope:1")
    assert not (foundry_home / "models" / "child").exists()


def test_unknown_name_suggests_close_match():
    reg = Registry()
    _register(reg, "iris")
    _register(reg, "adult")
    with pytest.raises(ModelError) as info:
        reg.resolve("irsi:latest")
    message = str(info.value)
    assert "no model named 'irsi'" in message
    assert "did you mean 'iris'?" in message
    assert "adult, iris" in message
    with pytest.raises(ModelError, match="did you mean 'adult'"):
        reg.versions("adul")


def test_unknown_version_lists_existing_ones():
    reg = Registry()
    _register(reg)
    _register(reg)
    with pytest.raises(ModelError) as info:
        reg.resolve("iris:7")
    assert "no version 7" in str(info.value)
    assert "existing versions: 1, 2" in str(info.value)
    assert "iris:2" in str(info.value)


def test_empty_store_errors_without_creating_files(foundry_home):
    reg = Registry()
    with pytest.raises(ModelError, match="empty"):
        reg.resolve("iris")
    with pytest.raises(ModelError, match="empty"):
        reg.load("iris:2")
    assert reg.list_models() == []
    assert not foundry_home.exists()


@pytest.mark.parametrize("ref", ["iris:1abc", ":3", ""])
def test_bad_refs(ref):
    with pytest.raises(ModelError, match="name:latest"):
        Registry().resolve(ref)


def test_invalid_name_is_refused():
    with pytest.raises(ModelError, match="invalid model name"):
        _register(Registry(), "../escape")


def test_failed_package_write_leaves_no_half_package(foundry_home):
    reg = Registry()
    _register(reg)
    with pytest.raises(ModelError):
        _register(reg, weights={"w": "not a tensor"})
    assert sorted(p.name for p in (foundry_home / "models" / "iris").iterdir()) == ["1"]
    assert reg.resolve("iris").version == 1


def test_failed_row_insert_removes_the_package(foundry_home, monkeypatch):
    reg = Registry()
    _register(reg)

    def boom(task):
        raise RuntimeError("database went away")

    with monkeypatch.context() as patch:
        patch.setattr(store_mod, "_task_name", boom)
        with pytest.raises(RuntimeError, match="database went away"):
            _register(reg)
    assert sorted(p.name for p in (foundry_home / "models" / "iris").iterdir()) == ["1"]
    assert _register(reg).version == 2


_REFUSE_INSERTS = {  # a trigger that rejects every new row
    "sqlite": [
        "CREATE TRIGGER refuse BEFORE INSERT ON model_versions "
        "BEGIN SELECT RAISE(ABORT, 'quota exceeded'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'quota exceeded'; END $$",
        "CREATE TRIGGER refuse BEFORE INSERT ON model_versions "
        "FOR EACH ROW EXECUTE FUNCTION refuse()",
    ],
}


def test_database_refusing_the_insert_removes_the_package(foundry_home, db_backend):
    reg = Registry()
    _register(reg)
    with reg._get_engine().begin() as conn:
        for statement in _REFUSE_INSERTS[db_backend]:
            conn.exec_driver_sql(statement)
    with pytest.raises(ModelError, match="quota exceeded"):
        _register(reg)
    assert sorted(p.name for p in (foundry_home / "models" / "iris").iterdir()) == ["1"]
    assert [r.version for r in reg.versions("iris")] == [1]


def test_orphan_directory_from_a_crash_is_skipped(foundry_home):
    reg = Registry()
    _register(reg)
    (foundry_home / "models" / "iris" / "2").mkdir()  # a crash after rename, before insert
    (foundry_home / "models" / "iris" / "2" / "foundry.json").write_text("{}")
    assert _register(reg).version == 3
    assert [r.version for r in reg.versions("iris")] == [1, 3]


def test_non_finite_metrics_are_stored_as_null():
    reg = Registry()
    rec = _register(reg, metrics={"r2": float("nan"), "mae": 1.5})
    assert rec.metrics == {"r2": None, "mae": 1.5}
    assert reg.load(rec.ref).metrics == {"r2": None, "mae": 1.5}


def test_delete_needs_an_explicit_version(foundry_home):
    reg = Registry()
    first = _register(reg)
    _register(reg)
    with pytest.raises(ModelError, match="name the version"):
        reg.delete("iris")
    assert reg.delete("iris:1") == first
    assert not first.path.exists()
    assert [r.version for r in reg.versions("iris")] == [2]
    assert [p.name for p in (foundry_home / "models" / "iris").iterdir()] == ["2"]


def test_url_argument_uses_another_database(tmp_path, foundry_home):
    other = tmp_path / "other" / "index.db"
    reg = Registry(url=f"sqlite:///{other}")
    _register(reg)
    assert other.exists()
    assert not (foundry_home / "foundry.db").exists()
    assert (foundry_home / "models" / "iris" / "1").is_dir()  # packages still under home
    with pytest.raises(ModelError):
        Registry().resolve("iris")  # the default index does not know it


@pytest.mark.sqlite_only
def test_database_url_env_var(tmp_path, monkeypatch, foundry_home):
    other = tmp_path / "env.db"
    monkeypatch.setenv("FOUNDRY_DATABASE_URL", f"sqlite:///{other}")
    _register(Registry())
    assert other.exists() and not (foundry_home / "foundry.db").exists()
    assert Registry().resolve("iris").version == 1
    assert Registry(url=f"sqlite:///{tmp_path / 'third.db'}").list_models() == []


def test_bad_database_url_is_a_model_error():
    with pytest.raises(ModelError, match="database URL"):
        Registry(url="nosuchdialect://x").list_models()


@pytest.mark.sqlite_only
def test_sqlite_uses_wal(foundry_home):
    reg = Registry()
    _register(reg)
    with reg._get_engine().connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    reg.close()


def test_default_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_HOME", str(tmp_path / "h"))
    assert default_home() == (tmp_path / "h").resolve()
    monkeypatch.delenv("FOUNDRY_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_home() == tmp_path.resolve() / ".foundry"
    reg = Registry()
    monkeypatch.chdir(Path("/"))
    assert reg.home == tmp_path.resolve() / ".foundry"  # fixed at construction


def test_public_surface():
    assert sorted(foundry.registry.__all__) == sorted(
        [
            "Registry",
            "ModelRecord",
            "Package",
            "parse_ref",
            "read_package",
            "write_package",
            "default_home",
            "is_package_dir",
        ]
    )
    for name in foundry.registry.__all__:
        assert hasattr(foundry.registry, name)


def test_created_at_is_utc():
    assert _register(Registry()).created_at.tzinfo == timezone.utc


def test_created_at_is_utc_whatever_the_database_session_time_zone(db_backend, monkeypatch):
    if db_backend == "postgresql":  # PostgreSQL answers in the session's TimeZone
        url = make_url(os.environ["FOUNDRY_DATABASE_URL"])
        options = f"{url.query.get('options', '')} -ctimezone=America/New_York".strip()
        monkeypatch.setenv("FOUNDRY_DATABASE_URL", url.update_query_dict(
            {"options": options}).render_as_string(hide_password=False))
    written = _register(Registry())
    read = Registry().resolve("iris:1")
    assert read.created_at == written.created_at
    assert read.created_at.tzinfo == timezone.utc
    assert read.to_dict()["created_at"].endswith("+00:00")


def test_a_tag_names_one_version_and_moves(foundry_home):
    reg = Registry()
    _register(reg, tags=["demo"])
    _register(reg)
    _register(reg)
    with pytest.raises(ModelError, match="no version of model 'iris' is tagged 'compressed'") as e:
        reg.resolve("iris:compressed")
    assert "its tags: demo" in e.value.hint
    assert reg.tag("iris:2", "compressed").tags == ("compressed",)
    assert reg.resolve("iris:compressed").version == 2
    moved = reg.tag("iris:3", "compressed")
    assert moved.ref == "iris:3" and reg.resolve("iris:compressed").version == 3
    assert reg.resolve("iris:2").tags == () and reg.resolve("iris:1").tags == ("demo",)
    assert Registry().resolve("iris:compressed").version == 3  # stored, not cached
    assert reg.load("iris:compressed").manifest["version"] == 3
    for bad in ("latest", "3x", "a b"):
        with pytest.raises(ModelError, match="invalid tag"):
            reg.tag("iris:1", bad)
    with pytest.raises(ModelError, match="name the version"):
        reg.delete("iris:compressed")
    with pytest.raises(ModelError, match="no model named 'irs'"):
        reg.resolve("irs:compressed")
