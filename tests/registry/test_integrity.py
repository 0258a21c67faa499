"""A package is what was registered, or it does not load (foundry.registry.integrity).

One small model is trained per module; each test works on its own copy of the registry
home, changes one thing the way a corrupted disk or a hostile hand would, and loads it
through the real paths: `foundry.load`, `Registry.load`, `foundry serve`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from tests.serve.serve_app_support import shared_toy

import foundry
from foundry.errors import FoundryError, ModelError
from foundry.registry import Registry
from foundry.serve.loadtest import free_port


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return shared_toy(tmp_path_factory)


@pytest.fixture
def home(toy, tmp_path, monkeypatch) -> Path:
    """A copy of the toy's registry home, this test's to change (and FOUNDRY_HOME)."""
    copy = tmp_path / "home"
    shutil.copytree(toy.home, copy)
    monkeypatch.setenv("FOUNDRY_HOME", str(copy))
    return copy


def _package(home: Path, ref: str = "toy:1") -> Path:
    return Registry(home).resolve(ref).path


def _corrupt_same_size(path: Path) -> None:
    """Flip the last 64 bytes (tensor data, not the safetensors header): the file still
    parses and has the same size."""
    data = bytearray(path.read_bytes())
    data[-64:] = bytes(b ^ 0x5A for b in data[-64:])
    path.write_bytes(bytes(data))


def _sql(home: Path, statement: str) -> None:
    engine = create_engine(f"sqlite:///{home / 'foundry.db'}")
    with engine.begin() as conn:
        conn.execute(text(statement))
    engine.dispose()


# ------------------------------------------------------------------ what is recorded


def test_registration_records_every_file_and_the_manifest(home):
    registry = Registry(home)
    record = registry.resolve("toy:1")
    manifest = json.loads((record.path / "foundry.json").read_text())
    files = sorted(p.relative_to(record.path).as_posix() for p in record.path.rglob("*")
                   if p.is_file() and p.name != "foundry.json")
    assert sorted(manifest["files"]) == files
    assert {"model.safetensors", "metrics.json", "card.md", "card.json"} <= set(files)
    weights = record.path / "model.safetensors"
    assert manifest["files"]["model.safetensors"]["bytes"] == weights.stat().st_size
    import hashlib

    assert manifest["files"]["model.safetensors"]["sha256"] == hashlib.sha256(
        weights.read_bytes()).hexdigest()
    assert record.manifest_sha256 == hashlib.sha256(
        (record.path / "foundry.json").read_bytes()).hexdigest()
    assert record.run_dir is not None and (record.run_dir / "COMPLETED").is_file()
    # The package read back hands out the model's manifest, not the list of files.
    package = registry.load("toy:1")
    assert "files" not in package.manifest and package.checksums == manifest["files"]


# ------------------------------------------------------------------ refused at load


def test_same_size_corruption_of_the_weights_is_refused_at_load(home):
    weights = _package(home) / "model.safetensors"
    size = weights.stat().st_size
    _corrupt_same_size(weights)
    assert weights.stat().st_size == size
    with pytest.raises(ModelError) as caught:
        foundry.load("toy:1")
    message = str(caught.value)
    assert "toy:1" in message and str(weights) in message and "corrupt" in message
    assert "restore the package" in message or "train and register" in message
    with pytest.raises(ModelError, match="model.safetensors"):
        Registry(home).load("toy")


def test_a_changed_manifest_is_refused_even_with_checksums_that_match(home):
    path = _package(home) / "foundry.json"
    manifest = json.loads(path.read_text())
    # A hand edit that also keeps the file list consistent: only the index catches it.
    manifest.setdefault("calibration", {})["temperature"] = 50.0
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    with pytest.raises(ModelError, match="changed after registration") as caught:
        foundry.load("toy:1")
    assert str(path) in str(caught.value)
    # Every other reader of the manifest refuses it too.
    from foundry.lm.load import read_manifest

    with pytest.raises(ModelError, match="changed after registration"):
        read_manifest("toy:1", registry=Registry(home))


def test_a_file_added_to_a_package_is_refused(home):
    (_package(home) / "extra.json").write_text("{}")
    with pytest.raises(ModelError, match="extra.json"):
        foundry.load("toy:1")


def test_a_missing_listed_file_is_refused(home):
    (_package(home) / "card.json").unlink()
    with pytest.raises(ModelError, match="card.json.*missing"):
        Registry(home).load("toy:1")


def test_a_package_read_by_path_is_checked_against_its_own_list(home):
    package = _package(home)
    _corrupt_same_size(package / "model.safetensors")
    with pytest.raises(ModelError, match="corrupt"):
        foundry.load(package)


def test_a_package_registered_before_checksums_loads_with_a_note(home, caplog):
    package = _package(home)
    path = package / "foundry.json"
    manifest = json.loads(path.read_text())
    del manifest["files"]
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    _sql(home, "UPDATE model_versions SET manifest_sha256 = NULL, run_dir = NULL")
    with caplog.at_level(logging.WARNING, logger="foundry.registry"):
        predictor = foundry.load("toy:1")
    assert predictor.ref == "toy:1"
    assert any("before packages carried file checksums" in r.getMessage()
               for r in caplog.records)


def test_the_index_path_cannot_leave_the_store(home, tmp_path):
    outside = tmp_path / "elsewhere" / "pkg"
    shutil.copytree(_package(home), outside)
    _sql(home, "UPDATE model_versions SET path = '../elsewhere/pkg'")
    with pytest.raises(ModelError, match="outside"):
        Registry(home).load("toy:1")
    with pytest.raises(ModelError, match="outside"):
        Registry(home).delete("toy:1")
    assert outside.is_dir()  # delete removed nothing outside the store


def test_a_symlink_out_of_the_package_is_refused(home, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text('{"password": "hunter2"}')
    package = _package(home)
    # A listed file swapped for a link to a file outside, with a matching checksum list.
    (package / "card.json").unlink()
    os.symlink(secret, package / "card.json")
    with pytest.raises(ModelError):
        Registry(home).load("toy:1")


def test_paths_inside_the_manifest_stay_in_the_package(toy):
    from foundry.registry.integrity import Confinement, inside

    package = _package(toy.home)
    assert inside(package / "model.safetensors", [package]) is not None
    assert inside(package / ".." / ".." / "..", [package]) is None
    assert inside("/etc/passwd", [package]) is None
    with pytest.raises(ModelError, match="/etc/passwd"):
        Confinement([package]).require("/etc/passwd", what="the ONNX file")


def test_a_manifest_onnx_file_outside_the_package_is_not_opened(toy, tmp_path):
    from foundry.predictor import load_network
    from foundry.registry.package import Package

    package = Registry(toy.home).load("toy:1")
    hostile = Package(
        path=package.path, weights=package.weights, card=package.card, metrics={},
        manifest={**package.manifest, "compression": {"method": "onnx", "file": "/etc/passwd",
                                                     "input_names": ["x"]}},
    )
    with pytest.raises(ModelError, match="outside"):
        load_network(hostile, None, None, 1)


def test_a_manifest_hf_directory_outside_the_package_is_not_opened(toy):
    from foundry.lm.hf_model import load_hf_network
    from foundry.registry.package import Package

    package = Registry(toy.home).load("toy:1")
    hf = {"task": "embedding", "weights": "full", "directory": "../../../../../etc",
          "source": "x", "max_length": 8}
    hostile = Package(path=package.path, weights={}, card="", metrics={},
                      manifest={**package.manifest, "hf": hf})
    with pytest.raises(ModelError, match="outside"):
        load_hf_network(hostile)


# ------------------------------------------------------------------ serving


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_foundry_serve_refuses_a_corrupted_package_at_startup(home, tmp_path, workers):
    # Two workers: checked before they start (a worker failing its start-up would be
    # restarted by uvicorn's supervisor, and the server never exit).
    _corrupt_same_size(_package(home) / "model.safetensors")
    env = {**os.environ, "FOUNDRY_HOME": str(home)}
    env.pop("FOUNDRY_DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundry", "serve", "toy", "--port", str(free_port()),
         "--workers", str(workers)],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its workers are stopped with it if the test times out
    )
    try:
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0, output
    assert "model.safetensors" in output and "corrupt" in output


# ------------------------------------------------------------------ PII patterns


def _scrubber_state(patterns: dict[str, str]) -> dict:
    """A PII scrubber's state as a package stores it, masking `patterns` in `color`."""
    from foundry.data.scrub import STATE_FORMAT

    return {"format": STATE_FORMAT, "action": "mask", "kinds": ["email"],
            "patterns": patterns, "identifiers": "drop", "salt_env": "FOUNDRY_PII_SALT",
            "salt_fingerprint": None, "scan_columns": ["color"], "identifier_columns": []}


def _validates_patterns() -> bool:
    """Whether PIIScrubber.from_state refuses a backtracking pattern (the `pii` side of
    issue 14 item 1, which this package-side test relies on)."""
    from foundry.data.scrub import PIIScrubber

    try:
        PIIScrubber.from_state(_scrubber_state({"bad": "(a+)+$"}))
    except (FoundryError, ValueError):
        return True
    return False


@pytest.mark.parametrize("pattern", ["(a+)+$", r"(\w)\1"])
def test_a_package_with_a_backtracking_pii_pattern_is_refused_at_load(toy, tmp_path, pattern):
    if not _validates_patterns():
        pytest.skip("PIIScrubber.from_state does not validate patterns yet (issue 14 item 1)")
    package = Registry(toy.home).load("toy:1")
    scrubber = _scrubber_state({"employee_id": pattern})
    Registry().register("hostile", weights=package.weights,
                        manifest={**package.manifest, "pii_scrubber": scrubber},
                        metrics=package.metrics)
    with pytest.raises(ModelError) as caught:
        foundry.load("hostile:1")
    message = str(caught.value)  # the model, and the pattern by its key path
    assert "hostile:1" in message and "pii_scrubber.patterns.employee_id" in message


def test_models_verify_names_the_changed_file(home, capsys, monkeypatch):
    from foundry.cli import main

    def verify(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["foundry", "models", "verify", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    assert verify() == (0, "ok     toy:1\n", "")
    _corrupt_same_size(_package(home) / "model.safetensors")
    code, out, err = verify("toy")
    assert code == 1 and out == ""
    assert err.startswith("FAILED toy:1: ") and "model.safetensors" in err
