"""The shared artifact store: packages in an S3-compatible bucket (a real moto server),
the index in one database, several homes each with its own cache
(`foundry.registry.artifacts`)."""

from __future__ import annotations

import threading

import pytest
import torch

from foundry.errors import ModelError
from foundry.objectstore import filesystem
from foundry.registry import Registry

WEIGHTS = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(3)}


@pytest.fixture
def homes(tmp_path, s3_bucket):
    """Registries on three homes sharing one SQLite index and one artifact store."""
    url = f"sqlite:///{tmp_path / 'index.db'}"
    store = f"{s3_bucket}/team"

    def home(name: str, artifacts: str | None = store) -> Registry:
        return Registry(tmp_path / name, url, artifacts=artifacts)

    return home


def _register(registry: Registry, name: str = "churn", weights=WEIGHTS):
    return registry.register(
        name,
        weights=weights,
        manifest={"task": "binary"},
        metrics={"auc": 0.9},
        files={"tokenizer.json": '{"v": 1}'},
    )


def _keys(registry: Registry, record) -> list[str]:
    """The bucket keys of `record`'s package."""
    rel = record.path.relative_to(registry.home).as_posix()
    return filesystem(error=ModelError).find(f"{registry.artifacts.url[5:]}/{rel}/")


def _objects(registry: Registry, record) -> list[str]:
    """The file names of `record`'s package in the bucket."""
    return sorted(key.rpartition(f"/{record.path.name}/")[2] for key in _keys(registry, record))


def test_a_model_registered_in_one_home_loads_from_another(homes):
    a, b = homes("a"), homes("b")
    record = _register(a)
    assert _objects(a, record) == [
        "card.json",
        "card.md",
        "foundry.json",
        "metrics.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    package = b.load("churn:1")
    assert package.path == b.home / record.path.relative_to(a.home)  # b's own cache
    assert all(torch.equal(package.weights[k], v) for k, v in WEIGHTS.items())
    assert package.manifest["name"] == "churn" and package.metrics == {"auc": 0.9}
    assert b.verify("churn") is True
    # Later loads read the cache: with the bucket emptied, b still loads it ...
    filesystem(error=ModelError).rm(_keys(a, record))
    assert torch.equal(b.load("churn").weights["w"], WEIGHTS["w"])
    # ... and a home with no copy names the object that is missing.
    with pytest.raises(
        ModelError,
        match=r"s3://.*/team/models/churn/1-\w+/foundry\.json is "
        "not in the artifact store",
    ):
        homes("c").load("churn")


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        ("model.safetensors", r"model\.safetensors is corrupt or was changed"),
        ("foundry.json", r"foundry\.json was changed after registration"),
    ],
)
def test_a_changed_object_is_refused_naming_its_url(homes, changed, message):
    a, c = homes("a"), homes("c")
    record = _register(a)
    fs = filesystem(error=ModelError)
    [key] = [k for k in _keys(a, record) if k.endswith("/" + changed)]
    data = bytearray(fs.cat_file(key))
    data[-2] ^= 0xFF  # same size: only the checksum can tell
    fs.pipe_file(key, bytes(data))
    with pytest.raises(ModelError, match=message) as caught:
        c.load("churn:1")
    assert f"s3://{key} " in str(caught.value)  # the object, by its URL
    # Nothing unverified entered c's cache: the next load checks the bucket again.
    assert not (c.home / "models" / "churn").exists() or not any(
        (c.home / "models" / "churn").iterdir()
    )
    assert torch.equal(a.load("churn:1").weights["w"], WEIGHTS["w"])  # a's copy is intact


def test_delete_removes_the_row_then_the_objects(homes):
    a, b = homes("a"), homes("b")
    first, second = _register(a), _register(a, weights={"w": torch.zeros(2)})
    b.load("churn:1")
    b.delete("churn:1")
    assert _keys(a, first) == []
    assert [r.version for r in a.versions("churn")] == [2]
    assert len(_objects(a, second)) == 6  # the other version's objects stay
    assert not (b.home / first.path.relative_to(a.home)).exists()


def test_a_store_that_cannot_be_written_leaves_no_row(homes):
    a = homes("a", artifacts="s3://no-such-bucket-foundry/x")
    with pytest.raises(
        ModelError,
        match=r"cannot write the model package to "
        r"s3://no-such-bucket-foundry/x/models/churn/1-",
    ):
        _register(a)
    assert a.list_models() == []
    assert [p.name for p in (a.home / "models" / "churn").iterdir()] == []


def test_a_row_the_database_refuses_takes_its_upload_back(homes):
    """Upload first, then the row: when the row is refused the objects are removed, so
    the bucket holds no package that no row names."""
    a = homes("a")
    first = _register(a)
    with a._get_engine().begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON model_versions "
            "BEGIN SELECT RAISE(ABORT, 'quota exceeded'); END"
        )
    with pytest.raises(ModelError, match="quota exceeded"):
        _register(a)
    fs = filesystem(error=ModelError)
    assert {k.split("/")[4] for k in fs.find(f"{a.artifacts.url[5:]}/models/")} == {first.path.name}
    assert [r.version for r in a.versions("churn")] == [1]


def test_a_home_without_the_store_says_which_setting_is_missing(homes):
    _register(homes("a"))
    with pytest.raises(ModelError, match="FOUNDRY_ARTIFACTS is not set"):
        homes("b", artifacts="").load("churn")


def test_concurrent_registrations_from_two_homes_get_distinct_versions(homes):
    """Two homes race for the same version numbers: the index lets one row in per number,
    and the loser's upload never overwrites the winner's objects."""
    registries, errors = [homes("a"), homes("b")], []

    def register(i: int) -> None:
        try:
            for j in range(3):
                _register(registries[i], weights={"w": torch.full((4,), 10.0 * i + j)})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    c = homes("c")
    values = sorted(float(c.load(f"churn:{v}").weights["w"][0]) for v in range(1, 7))
    assert values == [0.0, 1.0, 2.0, 10.0, 11.0, 12.0]


def test_digests_follow_a_renamed_folder_until_a_file_changes(tmp_path):
    """`integrity.moved`: a fetched package is hashed once, in its hidden folder; after the
    rename into the cache the digests still answer, and a later write is hashed again."""
    import hashlib
    import os

    from foundry.registry import integrity

    before, after = tmp_path / ".tmp-fetch", tmp_path / "1-abc"
    before.mkdir()
    (before / "model.safetensors").write_bytes(b"x" * 1000)
    integrity.clear_cache()
    digest = integrity.sha256_file(before / "model.safetensors")
    os.rename(before, after)
    integrity.moved(before, after)
    with integrity._digests_lock:
        assert [k[0] for k in integrity._digests] == [str(after.resolve() / "model.safetensors")]
    assert integrity.sha256_file(after / "model.safetensors") == digest
    (after / "model.safetensors").write_bytes(b"y" * 999)
    assert (
        integrity.sha256_file(after / "model.safetensors") == hashlib.sha256(b"y" * 999).hexdigest()
    )
