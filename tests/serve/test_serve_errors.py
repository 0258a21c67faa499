"""Every error the HTTP layer answers, in the one error format, and record validation."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tests.serve.serve_app_support import bearer, make_app, serving

from foundry.serve.errors import ApiError
from foundry.serve.schemas import InputSpec, RecordValidator

pytestmark = pytest.mark.anyio


@pytest.fixture
def app_gate(toy, tmp_path):
    return make_app(toy, tmp_path / "gate", max_body_bytes=4_000)


@pytest.fixture
def key(app_gate):
    return app_gate[1].create_key("acme", "test").key


def _error(response, status: int, code: str, param: str | None = "ANY") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    assert error["message"]
    if param != "ANY":
        assert error["param"] == param, error
    return error


RECORD = {"age": 40.0, "income": 51.5, "color": "red", "member": "yes"}


async def test_bad_json_is_400(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    async with serving(app) as client:
        broken = await client.post(url, content=b'{"age": ', headers=bearer(key))
        empty = await client.post(url, content=b"", headers=bearer(key))
        nan = await client.post(url, content=b'{"age": NaN}', headers=bearer(key))
    for response in (broken, empty, nan):
        error = _error(response, 400, "invalid_json")
        assert error["type"] == "invalid_request_error"
    assert "NaN" in nan.json()["error"]["message"]


async def test_schema_errors_are_422_naming_the_field(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    cases = [
        ({**RECORD, "colour": "red"}, "invalid_field", "colour"),
        ({k: v for k, v in RECORD.items() if k != "income"}, "missing_field", "income"),
        ({**RECORD, "age": "forty"}, "invalid_field", "age"),
        ({**RECORD, "age": True}, "invalid_field", "age"),
        (
            b'{"age": 1e400, "income": 1, "color": "red", "member": "no"}',
            "invalid_field",
            "age",
        ),  # 1e400 parses as inf
        ({**RECORD, "age": 1e300}, "invalid_field", "age"),  # overflows float32 when scaled
        ({**RECORD, "color": ["red"]}, "invalid_field", "color"),
        ([RECORD, {**RECORD, "member": {"x": 1}}], "invalid_field", "[1].member"),
        ({"records": [RECORD, RECORD, {**RECORD, "agee": 3}]}, "invalid_field", "records[2].agee"),
        ({"record": {**RECORD, "age": "x"}}, "invalid_field", "record.age"),
        ([RECORD, 5], "invalid_field", "[1]"),
        ({"records": "all"}, "invalid_field", "records"),
        ([], "invalid_field", None),
        ("just a string", "invalid_field", None),
    ]
    async with serving(app) as client:
        for body, code, param in cases:
            if isinstance(body, bytes):
                response = await client.post(url, content=body, headers=bearer(key))
            else:
                response = await client.post(url, json=body, headers=bearer(key))
            error = _error(response, 422, code, param)
            if param and "." in param:
                assert param.rsplit(".", 1)[1] in error["message"]
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
    assert usage["units_used"] == 0  # refused before admission: nothing charged
    hint = await _message(app, url, key, {**RECORD, "colour": "red"})
    assert "did you mean 'color'" in hint


async def _message(app, url, key, body) -> str:
    async with serving(app) as client:
        return (await client.post(url, json=body, headers=bearer(key))).json()["error"]["message"]


async def test_authentication_errors(toy, app_gate, key):
    app, gate = app_gate
    url = f"/v1/models/{toy.name}/predict"
    revoked = gate.create_key("gone", "test")
    gate.revoke_key(revoked.record.prefix)
    restricted = gate.create_key("narrow", "only_other").key
    async with serving(app) as client:
        missing = await client.post(url, json=RECORD)
        invalid = await client.post(url, json=RECORD, headers=bearer("fdy_" + "x" * 32))
        garbage = await client.post(url, json=RECORD, headers={"Authorization": "Basic abc"})
        gone = await client.post(url, json=RECORD, headers=bearer(revoked.key))
        not_allowed = await client.post(url, json=RECORD, headers=bearer(restricted))
    assert _error(missing, 401, "missing_api_key")["type"] == "authentication_error"
    _error(invalid, 401, "invalid_api_key")
    _error(garbage, 401, "invalid_api_key")
    assert _error(gone, 403, "key_revoked")["type"] == "permission_error"
    _error(not_allowed, 403, "model_not_allowed", "model")
    assert missing.headers["x-request-id"]


async def test_unknown_model_route_and_method(toy, app_gate, key):
    app, _ = app_gate
    async with serving(app) as client:
        predict = await client.post("/v1/models/nope/predict", json=RECORD, headers=bearer(key))
        detail = await client.get("/v1/models/nope")
        route = await client.get("/v2/anything")
        method = await client.delete(f"/v1/models/{toy.name}/predict")
    for response in (predict, detail):
        error = _error(response, 404, "model_not_found", "model")
        assert error["type"] == "not_found_error" and toy.name in error["message"]
    _error(route, 404, "not_found")
    _error(method, 405, "method_not_allowed")


async def test_body_too_large_and_too_many_records_are_413(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    big = b'{"records": [' + b",".join([b'{"age": 1.0}'] * 400) + b"]}"

    async def chunks():  # no Content-Length: the counted bytes decide
        for i in range(0, len(big), 500):
            yield big[i : i + 500]

    async with serving(app) as client:
        declared = await client.post(url, content=big, headers=bearer(key))
        streamed = await client.post(url, content=chunks(), headers=bearer(key))
        too_many = await client.post(url, json=[RECORD] * 51, headers=bearer(key))  # plan: 50
        at_limit = await client.post(url, json=[RECORD] * 50, headers=bearer(key))
    _error(declared, 413, "body_too_large")
    _error(streamed, 413, "body_too_large")
    error = _error(too_many, 413, "too_many_records", "records")
    assert "50" in error["message"]
    assert at_limit.status_code == 200


async def test_rate_limit_and_quota_are_429_with_headers(toy, app_gate):
    app, gate = app_gate
    url = f"/v1/models/{toy.name}/predict"
    slow = gate.create_key("slow", "slow").key  # 2 requests per minute
    capped = gate.create_key("capped", "capped").key  # 3 units, hard limit
    async with serving(app) as client:
        for _ in range(2):
            assert (await client.post(url, json=RECORD, headers=bearer(slow))).status_code == 200
        limited = await client.post(url, json=RECORD, headers=bearer(slow))
        first = await client.post(url, json=[RECORD, RECORD], headers=bearer(capped))
        over = await client.post(url, json=[RECORD, RECORD], headers=bearer(capped))
    error = _error(limited, 429, "rate_limit_exceeded")
    assert error["type"] == "rate_limit_error"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit-requests"] == "2"
    assert limited.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.status_code == 200
    _error(over, 429, "quota_exceeded")
    assert over.headers["x-should-retry"] == "false"
    assert "x-ratelimit-limit-requests" in over.headers


async def test_a_failing_model_answers_500_and_charges_nothing(toy, app_gate, key, caplog):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    async with serving(app) as client:
        batcher = app.state.service.batchers[toy.name]

        def explode(records):
            raise RuntimeError("secret internals /srv/model.bin")

        batcher._forward = explode
        response = await client.post(url, json=RECORD, headers=bearer(key))
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()
    error = _error(response, 500, "internal_error")
    assert error["type"] == "server_error"
    assert "secret" not in error["message"]
    assert usage["units_used"] == 0
    assert "secret internals" in caplog.text  # logged for the operator


async def test_an_unexpected_error_is_a_500_in_the_error_format(toy, app_gate, key):
    app, gate = app_gate

    def broken(key_info):
        raise KeyError("bug")

    gate.usage = broken
    async with serving(app) as client:
        response = await client.get("/v1/usage", headers=bearer(key))
        still_alive = await client.get("/healthz")
    _error(response, 500, "internal_error")
    assert still_alive.status_code == 200


# ---------------------------------------------------------------- validator units


def _validator(*specs: tuple[str, str, bool]) -> RecordValidator:
    return RecordValidator("m", [InputSpec(*s) for s in specs])


def _png(size=(4, 3), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, (10, 200, 30) if mode == "RGB" else 77).save(buf, format=fmt)
    return buf.getvalue()


def test_validator_casts_categories_and_builds_one_frame():
    v = _validator(("n", "number", True), ("c", "category", True), ("t", "text", True))
    records = v.records_of([{"n": 1, "c": 3.0, "t": "hi"}, {"n": None, "c": None, "t": None}])
    v.validate(records)
    assert records.items[0]["c"] == "3"  # the training key of 3 / 3.0
    frame = v.frame(records.items)
    assert list(frame.columns) == ["n", "c", "t"]
    assert frame["n"].dtype == np.float64 and np.isnan(frame["n"][1])
    assert frame["c"].tolist()[0] == "3" and pd.isna(frame["c"][1])


def test_validator_refuses_null_where_the_feature_needs_a_value():
    v = _validator(("n", "number", False))
    with pytest.raises(ApiError) as info:
        v.validate(v.records_of({"n": None}))
    assert info.value.status == 422 and info.value.param == "n"
    v = _validator(("t", "text", True))
    with pytest.raises(ApiError, match="must be a string"):
        v.validate(v.records_of({"t": 5}))


def test_images_are_base64_png_or_jpeg_only():
    v = _validator(("img", "image", False))
    png = base64.b64encode(_png()).decode()
    jpeg = "data:image/jpeg;base64," + base64.b64encode(_png(fmt="JPEG")).decode()
    for text in (png, jpeg):
        records = v.records_of({"img": text})
        v.validate(records)
        assert isinstance(records.items[0]["img"], bytes)
    gif = base64.b64encode(_png(fmt="GIF", mode="L")).decode()
    for bad in (
        "https://example.com/cat.png",
        "not base64!",
        gif,
        base64.b64encode(b"\x89PNG broken").decode(),
        None,
    ):
        with pytest.raises(ApiError) as info:
            v.validate(v.records_of({"img": bad}))
        assert info.value.param == "img"


def test_image_bytes_encode_like_image_files(tmp_path):
    """Serving decodes base64 bytes to exactly the tensor training reads from files."""
    from foundry.config.schema import ImagePreprocessing
    from foundry.data.encoders.image import ImageEncoder
    from foundry.serve.served_model import image_tensor

    paths = []
    for i, size in enumerate([(6, 5), (9, 7)]):
        path = tmp_path / f"{i}.png"
        path.write_bytes(_png(size))
        paths.append(str(path))
    enc = ImageEncoder.fit(pd.Series(paths), "img", ImagePreprocessing(height=5, width=6))
    from_files = enc.transform(pd.Series(paths))
    from_bytes = image_tensor(enc, [Path(p).read_bytes() for p in paths])
    np.testing.assert_array_equal(from_files, from_bytes)


# ---------------------------------------------------------------- nothing crashes

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=12,
)
_records = st.fixed_dictionaries(
    {},
    optional={
        "age": _json_values,
        "income": _json_values,
        "color": _json_values,
        "member": _json_values,
        "extra": _json_values,
    },
)


def test_random_bodies_get_an_answer_in_the_error_format_never_a_crash(toy, tmp_path):
    """Fuzzed bodies: every answer is 200 or a 4xx in the error format; no 500."""
    from fastapi.testclient import TestClient

    app, gate = make_app(toy, tmp_path / "gate")
    key = gate.create_key("fuzz", "test").key
    url = f"/v1/models/{toy.name}/predict"

    with TestClient(app, raise_server_exceptions=False) as client:

        @settings(
            max_examples=60,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(
            body=_json_values | _records | st.lists(_records, max_size=3) | st.binary(max_size=40)
        )
        def check(body):
            if isinstance(body, bytes):
                response = client.post(url, content=body, headers=bearer(key))
            else:
                response = client.post(url, json=body, headers=bearer(key))
            assert response.status_code in (200, 400, 413, 415, 422), response.text
            if response.status_code != 200:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
        assert client.get("/healthz").status_code == 200


# ------------------------------------------------------------------ hostile input (issue 14)


async def test_a_caller_without_a_key_gets_401_before_any_field_is_named(toy, app_gate):
    """The body is not read before the key is checked: a bad body from an unknown caller
    is a 401, never a 422 that lists the model's fields."""
    app, gate = app_gate
    url = f"/v1/models/{toy.name}/predict"
    restricted = gate.create_key("narrow", "only_other").key
    bad = {**RECORD, "colour": "red"}
    async with serving(app) as client:
        anonymous = await client.post(url, json=bad)
        wrong = await client.post(url, json=bad, headers=bearer("fdy_" + "x" * 32))
        not_json = await client.post(url, content=b"{oops", headers={"content-type": "text/plain"})
        explain = await client.post(f"/v1/models/{toy.name}/explain", json={"records": [bad]})
        not_allowed = await client.post(url, json=bad, headers=bearer(restricted))
    for response in (anonymous, not_json, explain):
        error = _error(response, 401, "missing_api_key")
        assert "color" not in error["message"] and "age" not in error["message"]
    _error(wrong, 401, "invalid_api_key")
    _error(not_allowed, 403, "model_not_allowed", "model")


async def test_bodies_that_are_not_utf8_json_are_415(toy, app_gate, key):
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    record = b'{"age": 40, "income": 1, "color": "red", "member": "no"}'
    cases = [
        (record, {"content-type": "text/plain"}),
        (record, {"content-type": "application/x-www-form-urlencoded"}),
        (record, {"content-type": "application/json; charset=utf-16"}),
        (record.decode().encode("utf-16"), {"content-type": "application/json"}),
        (record.decode().encode("utf-16-le"), {}),
        (b"\xff\xfe{}", {}),
    ]
    async with serving(app) as client:
        for body, headers in cases:
            response = await client.post(url, content=body, headers={**bearer(key), **headers})
            error = _error(response, 415, "unsupported_media_type")
            assert error["type"] == "invalid_request_error"
            assert "JSON" in error["message"] or "UTF-8" in error["message"]
        fine = [
            await client.post(url, content=record, headers={**bearer(key), **headers})
            for headers in (
                {},
                {"content-type": "application/json"},
                {"content-type": "application/json; charset=UTF-8"},
                {"content-type": "application/merge-patch+json"},
            )
        ]
    assert [r.status_code for r in fine] == [200] * 4, [r.text for r in fine]


async def test_a_binary_input_takes_only_its_training_values(toy, app_gate, key):
    """`member` was trained on "no" / "yes": anything else used to be taken as unknown
    (0.5) and answered; now it is a 422 naming the field and the accepted values."""
    app, _ = app_gate
    url = f"/v1/models/{toy.name}/predict"
    async with serving(app) as client:
        refused = [
            await client.post(url, json={**RECORD, "member": value}, headers=bearer(key))
            for value in ("maybe", 1, True, "Yes", "")
        ]
        accepted = [
            await client.post(url, json={**RECORD, "member": value}, headers=bearer(key))
            for value in ("yes", "no", None)
        ]
    for response in refused:
        error = _error(response, 422, "invalid_field", "member")
        assert "'no' or 'yes' or null" in error["message"], error
    assert [r.status_code for r in accepted] == [200] * 3


def test_a_binary_input_trained_on_booleans_or_numbers_takes_their_json_spellings():
    validator = RecordValidator(
        "m",
        [
            InputSpec("flag", "binary", True, values=("False", "True")),
            InputSpec("bit", "binary", True, values=("0", "1")),
        ],
    )
    from foundry.serve.schemas import Records

    records = Records(
        [{"flag": True, "bit": 1}, {"flag": "False", "bit": 0.0}, {"flag": None, "bit": "1"}],
        "",
        True,
    )
    validator.validate(records)
    assert records.items == [
        {"flag": "True", "bit": "1"},
        {"flag": "False", "bit": "0"},
        {"flag": None, "bit": "1"},
    ]
    for bad in ({"flag": "true", "bit": 1}, {"flag": True, "bit": 2}, {"flag": 1, "bit": 1}):
        with pytest.raises(ApiError) as caught:
            validator.validate(Records([bad], "", False))
        assert caught.value.status == 422


@pytest.mark.parametrize("exposure", ["admin", "public", "off"])
async def test_metrics_exposure_is_a_setting(toy, tmp_path, exposure):
    app, _ = make_app(toy, tmp_path / "gate", admin_token="admin-secret", metrics=exposure)
    async with serving(app) as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers=bearer("nope"))
        admin = await client.get("/metrics", headers=bearer("admin-secret"))
        documented = "/metrics" in (await client.get("/openapi.json")).json()["paths"]
    if exposure == "admin":
        _error(anonymous, 401, "missing_api_key")
        _error(wrong, 401, "invalid_api_key")
        assert admin.status_code == 200 and "foundry_requests_total" in admin.text
    elif exposure == "public":
        assert anonymous.status_code == wrong.status_code == admin.status_code == 200
    else:
        for response in (anonymous, admin):
            _error(response, 404, "not_found")
    assert documented == (exposure != "off")


async def test_metrics_behind_the_admin_token_say_how_when_there_is_none(toy, tmp_path):
    app, _ = make_app(toy, tmp_path / "gate")  # the default: serve.metrics = admin
    async with serving(app) as client:
        response = await client.get("/metrics")
    assert "serve.metrics: public" in _error(response, 403, "admin_disabled")["message"]


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "age": st.one_of(
                    st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers()
                ),
                "color": st.text(max_size=5),
                "member": st.sampled_from(["yes", "no", None]),
            }
        ),
        max_size=5,
    ),
    st.sampled_from(["list", "records", "record"]),
    st.sampled_from(["", " ", "\n\t "]),
)
@settings(max_examples=200, deadline=None)
def test_the_record_at_a_time_parser_equals_json_loads(records, shape, ws):
    """parse_json(yielding=True), the large-body path, gives json.loads's result."""
    import json

    from foundry.serve.request_body import parse_json

    payload = {
        "list": records,
        "records": {"records": records},
        "record": {"record": records[0] if records else {}},
    }[shape]
    text = json.dumps(payload, indent=1 if ws else None).replace("\n", "\n" + ws)
    body = (ws + text + ws).encode()
    assert parse_json(body, yielding=True) == json.loads(body) == parse_json(body)
    from foundry.serve.request_body import body_hash

    assert body_hash("m", payload, yielding=True) == body_hash("m", payload)


def test_the_record_at_a_time_parser_refuses_what_json_loads_refuses():
    from foundry.serve.request_body import encode_json, parse_json

    for body in (
        b"[1,2",
        b"[1 2]",
        b'{"records": [1,]}',
        b'{"a" 1}',
        b"[NaN]",
        b"[1] x",
        b'{"records": [{"a": 1}], }',
        b"{1: 2}",
        b"[,]",
    ):
        for yielding in (False, True):
            with pytest.raises(ApiError) as caught:
                parse_json(body, yielding=yielding)
            assert caught.value.code == "invalid_json", body
    content = {"model": "m:1", "predictions": [{"label": "ü", "p": 0.5}] * 3, "usage": {"n": 3}}
    from starlette.responses import JSONResponse

    assert encode_json(content, yielding=True) == JSONResponse(content).body


def test_release_empties_lists_in_pieces():
    from foundry.serve.request_body import RELEASE_PIECE, release

    records = [{"i": i} for i in range(RELEASE_PIECE * 2 + 3)]
    predictions = [[i] for i in range(5)]
    release(records, predictions, [])
    assert records == [] and predictions == []
