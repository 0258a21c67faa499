"""S3-compatible object storage (AWS S3, MinIO, Ceph, R2, moto) through fsspec's s3fs.

Two users: the registry's shared artifact store (`foundry.registry.artifacts`,
``FOUNDRY_ARTIFACTS=s3://bucket/prefix``) and data paths written as ``s3://bucket/key``
(`foundry.data.load`). Where the server is and who we are come from the settings every
AWS tool reads (botocore's chain):

    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   credentials (AWS_SESSION_TOKEN too), or
    AWS_PROFILE / ~/.aws, or an instance role
    AWS_DEFAULT_REGION                          the bucket's region
    AWS_ENDPOINT_URL (AWS_ENDPOINT_URL_S3)      a server that is not AWS (MinIO, moto, ...)
    FOUNDRY_S3_ENDPOINT_URL                     the same for foundry alone; wins over them

Why s3fs rather than pyarrow's S3FileSystem (already installed with pyarrow): pandas reads
``s3://`` URLs through fsspec (`storage_options`) and pyarrow datasets take an fsspec
filesystem (`pyarrow.fs.FSSpecHandler`), so data readers need no S3 code of their own;
botocore's credential and endpoint chain is the one the rest of a team's AWS tools
use; and pyarrow's S3 is the AWS C++ SDK as process-wide state (initialised once,
`pyarrow.fs.finalize_s3` before exit). The price is aiobotocore + botocore + aiohttp
(~45 MB installed, most of it botocore's service descriptions), hence the `s3` extra;
nothing here imports s3fs until a URL is used. Like every fsspec async filesystem it is
not fork-safe: open objects in the process that uses them.
"""

from __future__ import annotations

import os
from typing import Any

from foundry.errors import FoundryError

ENDPOINT_ENV = "FOUNDRY_S3_ENDPOINT_URL"
SCHEMES = ("s3://",)
"""URL forms read through object storage; everything else is a local path."""


def is_url(path: object) -> bool:
    """True for an object-storage URL (``s3://bucket/key``); False for local paths."""
    return isinstance(path, str) and path.startswith(SCHEMES)


def split_url(url: str, *, error: type[FoundryError], what: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ("bucket", "a/b"), the key without a trailing '/'. A URL
    without a bucket raises `error` naming `what` (the setting it came from)."""
    if not is_url(url):
        raise error(f"{what} {url!r} is not an s3:// URL", hint="e.g. s3://my-bucket/foundry")
    bucket, _, key = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise error(f"{what} {url!r} names no bucket", hint="e.g. s3://my-bucket/foundry")
    return bucket, key.strip("/")


def storage_options() -> dict[str, Any]:
    """fsspec options for s3fs (also pandas' `storage_options`): FOUNDRY_S3_ENDPOINT_URL
    as the endpoint when set (botocore reads AWS_ENDPOINT_URL and the credentials
    itself). Listings are not cached: another process may add or remove objects."""
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint}
    return options


def filesystem(*, error: type[FoundryError]) -> Any:
    """An s3fs filesystem configured from the environment (fsspec reuses one instance per
    set of options). `error` is raised, with the install line, when s3fs is missing."""
    from foundry.extras import install_command

    try:
        import s3fs
    except ModuleNotFoundError as exc:
        if exc.name != "s3fs":  # a broken install: the extra's command would not fix it
            raise
        raise error(  # the line foundry.extras.require gives, in the caller's error type
            f"s3:// paths need s3fs (not installed); install it with: {install_command('s3')}"
        ) from None
    return s3fs.S3FileSystem(**storage_options())


def describe_failure(exc: BaseException) -> str:
    """One line for an object-storage failure, with what usually causes it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    name = type(exc).__name__
    if isinstance(exc, FileNotFoundError):
        return f"not found ({text})"
    if isinstance(exc, PermissionError) or "credential" in text.lower():
        return (
            f"access denied ({text}); check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "or AWS_PROFILE"
        )
    if "connect" in text.lower() or "endpoint" in text.lower():
        return f"cannot reach the server ({text}); check {ENDPOINT_ENV} or AWS_ENDPOINT_URL"
    return f"{name}: {text}"
