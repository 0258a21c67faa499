from __future__ import annotations

import pytest

from foundry.errors import ModelError
from foundry.registry import is_package_dir, parse_ref


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("adult", ("adult", "latest")),
        ("adult:latest", ("adult", "latest")),
        ("adult:3", ("adult", 3)),
        ("adult-int8.v2:12", ("adult-int8.v2", 12)),
        (" adult:1 ", ("adult", 1)),
        ("adult:compressed", ("adult", "compressed")),
        ("adult:prod-2", ("adult", "prod-2")),
    ],
)
def test_parse_ref_accepted_forms(ref, expected):
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "adult:3abc",
        "adult:a.b",
        ":3",
        "",
        "   ",
        "adult:0",
        "adult:-1",
        "adult:1.5",
        "adult:",
        "a/b",
        "../x",
        "a b",
        "adult:3:4",
        "adult:٣",
    ],
)
def test_bad_refs_name_the_accepted_forms(ref):
    with pytest.raises(ModelError) as info:
        parse_ref(ref)
    assert "name:latest" in str(info.value)


def test_is_package_dir(tmp_path):
    assert not is_package_dir(tmp_path)
    assert not is_package_dir(tmp_path / "missing")
    (tmp_path / "model.safetensors").write_bytes(b"")
    (tmp_path / "foundry.json").write_text("{}")
    assert is_package_dir(tmp_path)
