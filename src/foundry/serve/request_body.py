"""Request bodies in and response bodies out: media type (415), size (413), JSON (400),
and the large-body path that keeps the event loop answering.

A body larger than `serve.offload_body_bytes` is parsed and checked on a worker thread
(`app.Service`). A thread alone is not enough: `json.loads` is one C call that holds the
GIL from the first byte to the last (about 0.5 s for 30 MB), and the event loop cannot
run meanwhile. So `parse_json(..., yielding=True)` parses an array (or the array of
`{"records": [...]}`) one element per `raw_decode` call, and `encode_json(...,
yielding=True)` (and `body_hash`, for Idempotency-Key) encodes a list one element per
`dumps` call: between two
calls the interpreter hands the GIL to the loop (every 5 ms, `sys.getswitchinterval`),
so other requests wait milliseconds rather than the whole parse. The result is exactly
`json.loads` / `json.dumps` of the same text. And when the request ends, `release` frees
its records a piece at a time, on a thread, for the same reason.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

from fastapi import Request
from starlette.requests import ClientDisconnect

from foundry.serve.errors import ApiError

_WS = re.compile(r"[ \t\n\r]*")
"""JSON's whitespace (RFC 8259), as the json module skips it."""


def check_media_type(content_type: str | None) -> None:
    """ApiError 415 unless the body is declared JSON (`application/json`, `*+json`) in
    UTF-8; no Content-Type at all is taken as JSON (many clients send none)."""
    if content_type is None:
        return
    media, _, params = content_type.partition(";")
    media = media.strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ApiError(415, "unsupported_media_type",
                       f"the body is declared {media or 'empty'!r}; send JSON with "
                       "`Content-Type: application/json` (curl: --json, or -H "
                       "'Content-Type: application/json' with -d)", param="Content-Type")
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip(' "').lower() not in ("utf-8",
                                                                                    "utf8"):
            raise ApiError(415, "unsupported_media_type",
                           f"charset {value.strip()!r} is not accepted; JSON bodies are UTF-8 "
                           "(RFC 8259)", param="Content-Type")


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing a non-JSON media type (415) and more than `limit` bytes (413)
    by header and by actual count. A client that goes away while sending it is ApiError
    499 (answered to nobody; logged as one line)."""
    check_media_type(request.headers.get("content-type"))
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(size, limit)
            chunks.append(chunk)
    except ClientDisconnect:
        # The client hung up, or http_limits closed it at the body deadline.
        raise ApiError(499, "client_closed_request",
                       f"the connection closed after {size} bytes of the body") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        "body_too_large",
        f"the body has {'more than ' if size > limit else ''}{size} bytes; this server "
        f"accepts up to {limit} (serve.max_body_bytes)",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (send null for a missing number)")


_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json(body: bytes, *, yielding: bool = False) -> Any:
    """The parsed body: 415 `unsupported_media_type` unless it is UTF-8 (json.loads
    would guess UTF-16 and UTF-32 from the bytes), 400 `invalid_json` for anything
    json.loads refuses, including NaN / Infinity. yielding=True (on a worker thread, for
    large bodies): the same result, parsed a record at a time (module docstring)."""
    if not body:
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON record or list")
    # UTF-16 / UTF-32 without a BOM is valid UTF-8 (NUL bytes), so look first, as
    # json.loads does before it guesses.
    encoding = json.detect_encoding(body[:4])
    if encoding not in ("utf-8", "utf-8-sig"):
        raise ApiError(415, "unsupported_media_type",
                       f"the body looks like {encoding.upper()}; JSON bodies are UTF-8 "
                       "(RFC 8259)")
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ApiError(415, "unsupported_media_type",
                       f"the body is not UTF-8 (byte {exc.start}); JSON bodies are UTF-8 "
                       "(RFC 8259)") from None
    try:
        if not yielding:
            return _DECODER.decode(text)
        value, end = _value(text, _WS.match(text, 0).end(), 2)  # type: ignore[union-attr]
        end = _WS.match(text, end).end()  # type: ignore[union-attr]
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
        return value
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _value(text: str, i: int, depth: int) -> tuple[Any, int]:
    """The JSON value at `text[i]` (no whitespace before it) and the index after it.
    Arrays are taken apart while depth > 0 and objects at the top (depth 2), so the
    records of `[...]` and `{"records": [...]}` are one raw_decode call each."""
    first = text[i:i + 1]
    if first == "[" and depth > 0:
        items: list[Any] = []
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        if text[i:i + 1] == "]":
            return items, i + 1
        while True:
            item, i = _value(text, i, depth - 1)
            items.append(item)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            sep = text[i:i + 1]
            if sep == "]":
                return items, i + 1
            if sep != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    if first == "{" and depth == 2:
        members: dict[str, Any] = {}
        i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
        if text[i:i + 1] == "}":
            return members, i + 1
        while True:
            if text[i:i + 1] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double "
                                           "quotes", text, i)
            key, i = scanstring(text, i + 1)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            if text[i:i + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, i)
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
            members[key], i = _value(text, i, depth - 1)
            i = _WS.match(text, i).end()  # type: ignore[union-attr]
            sep = text[i:i + 1]
            if sep == "}":
                return members, i + 1
            if sep != ",":
                raise json.JSONDecodeError("Expecting ',' delimiter", text, i)
            i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    return _DECODER.raw_decode(text, i)


RELEASE_PIECE = 4096
"""Objects freed per step by `release`: about a millisecond of deallocation."""


def release(*lists: list[Any]) -> None:
    """Empty `lists` a piece at a time (on a worker thread). Freeing 200,000 parsed
    records is one C call that holds the GIL for ~0.3 s; wherever the last reference
    drops (on the event loop, when the request ends), every other request waits for it.
    Emptied here, the lists' owners later free nothing but empty lists."""
    for items in lists:
        while items:
            del items[-RELEASE_PIECE:]


def encode_json(content: Any, *, yielding: bool = False) -> bytes:
    """`content` as Starlette's JSONResponse encodes it (compact, UTF-8, no NaN);
    yielding=True: a dict's list members one element per dumps call (module docstring)."""
    if not yielding or not isinstance(content, dict):
        return _dumps(content).encode()
    parts = []
    for key, value in content.items():
        encoded = ("[" + ",".join(map(_dumps, value)) + "]" if isinstance(value, list)
                   else _dumps(value))
        parts.append(f"{_dumps(key)}:{encoded}")
    return ("{" + ",".join(parts) + "}").encode()


def _dumps(value: Any, *, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      sort_keys=sort_keys)


def body_hash(model: str, payload: Any, *, yielding: bool = False) -> str:
    """sha256 of the model name and the canonical JSON of the body (key order ignored).
    yielding=True: the same digest, a record per dumps call (module docstring)."""
    digest = hashlib.sha256(f"{model}\n".encode())
    for piece in _canonical(payload, 2 if yielding else 0):
        digest.update(piece.encode())
    return digest.hexdigest()


def _canonical(value: Any, depth: int) -> Iterator[str]:
    """The pieces of `json.dumps(value, sort_keys=True, compact)`, taken apart like
    `_value` parses: arrays while depth > 0, objects at the top."""
    if isinstance(value, list) and depth > 0:
        yield "["
        for i, item in enumerate(value):
            if i:
                yield ","
            yield from _canonical(item, depth - 1)
        yield "]"
    elif isinstance(value, dict) and depth == 2:
        yield "{"
        for i, key in enumerate(sorted(value)):
            yield ("," if i else "") + _dumps(key, sort_keys=True) + ":"
            yield from _canonical(value[key], depth - 1)
        yield "}"
    else:
        yield _dumps(value, sort_keys=True)
