"""Registry administration over HTTP, behind the admin token (see routes_admin).

    PUT    /admin/models/{name}/versions/{version}/tags/{tag}   tag a version
    DELETE /admin/models/{name}/versions/{version}/tags/{tag}   untag it
    PUT    /admin/models/{name}/aliases/{alias}   {version}     set or move an alias
    DELETE /admin/models/{name}/aliases/{alias}                 delete it
    DELETE /admin/models/{name}/versions/{version}?force=false  delete a version (409
                                                                while served or derived)
    GET    /admin/models/{name}/versions/{version}/export       the export .tar.gz
    POST   /admin/models/import?as=NAME   body: an export .tar.gz → the imported version

The same functions as `foundry models ...` (`Registry`, `foundry.registry.manage`), run on
a worker thread: they are database and file work.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from foundry.errors import ModelError
from foundry.registry.refs import MAX_VERSION
from foundry.serve.errors import ApiError

if TYPE_CHECKING:
    from foundry.registry import Registry
    from foundry.serve.app import Service

T = TypeVar("T")


class AliasRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    version: int = Field(ge=1, le=MAX_VERSION)
    """The version the alias names."""


def add_model_routes(router: APIRouter, service: Service) -> None:
    """Add the /admin/models routes to the admin router (its token check applies)."""
    security = {"security": [{"bearerAuth": []}]}

    def registry() -> Registry:
        from foundry.registry import Registry

        return Registry(service.home) if service.home is not None else Registry()

    @router.put("/models/{name}/versions/{version}/tags/{tag}", openapi_extra=security)
    async def tag_version(name: str, version: int, tag: str) -> Response:
        """Put a tag on a version (taken off any other version of the name)."""
        record = await _call(lambda: registry().tag(f"{name}:{version}", tag))
        return JSONResponse(record.to_dict())

    @router.delete("/models/{name}/versions/{version}/tags/{tag}", openapi_extra=security)
    async def untag_version(name: str, version: int, tag: str) -> Response:
        """Take a tag off a version."""
        record = await _call(lambda: registry().untag(f"{name}:{version}", tag))
        return JSONResponse(record.to_dict())

    @router.put("/models/{name}/aliases/{alias}", openapi_extra=security)
    async def set_alias(name: str, alias: str, body: AliasRequest) -> Response:
        """Point name:alias at a version (created, or moved in one step)."""
        record = await _call(lambda: registry().set_alias(name, alias, body.version))
        return JSONResponse({"alias": f"{name}:{alias}", "ref": record.ref})

    @router.delete("/models/{name}/aliases/{alias}", openapi_extra=security)
    async def delete_alias(name: str, alias: str) -> Response:
        """Delete an alias (the version stays)."""
        was = await _call(lambda: registry().remove_alias(name, alias))
        return JSONResponse({"alias": f"{name}:{alias}", "deleted": True, "version": was})

    @router.delete("/models/{name}/versions/{version}", openapi_extra=security)
    async def delete_version(name: str, version: int, force: bool = False) -> Response:
        """Delete a version's files and index row; 409 while a server serves it or other
        versions derive from it, unless force=true."""
        from foundry.registry.manage import delete_version as delete
        from foundry.serve.leases import served_refs

        def work() -> Any:
            reg = registry()
            served = served_refs(service.gate.store) if service.gate is not None else {}
            return delete(reg, f"{name}:{version}", served=served, force=force)

        done = await _call(work)
        return JSONResponse(
            {
                "deleted": done.record.ref,
                "aliases": list(done.aliases),
                "children": list(done.children),
                "served_by": done.served_by,
            }
        )

    @router.get(
        "/models/{name}/versions/{version}/export",
        openapi_extra=security,
        response_class=FileResponse,
    )
    async def export_version(name: str, version: int) -> Response:
        """The version as an export .tar.gz (what `foundry models export` writes)."""
        from foundry.registry.manage import export_version as export

        fd, tmp = tempfile.mkstemp(prefix="foundry-export-", suffix=".tar.gz")
        os.close(fd)
        try:
            result = await _call(lambda: export(registry(), f"{name}:{version}", tmp))
        except BaseException:
            os.unlink(tmp)
            raise
        return FileResponse(
            tmp,
            media_type="application/gzip",
            filename=f"{name}-{result.ref.split(':')[1]}.tar.gz",
            background=BackgroundTask(os.unlink, tmp),
        )

    @router.post("/models/import", status_code=201, openapi_extra=security)
    async def import_version(
        request: Request, as_name: str | None = Query(None, alias="as")
    ) -> Response:
        """Register the version an export .tar.gz (the request body) holds; 409 if its
        name:version exists (use ?as=NAME)."""
        from foundry.registry.manage import import_archive

        with tempfile.TemporaryDirectory(prefix="foundry-import-upload-") as folder:
            path = Path(folder) / "upload.tar.gz"
            with open(path, "wb") as f:  # streamed: an archive may be gigabytes
                async for chunk in request.stream():
                    f.write(chunk)
            record = await _call(lambda: import_archive(registry(), path, as_name=as_name))
        return JSONResponse(record.to_dict(), 201)


async def _call(fn: Callable[[], T]) -> T:
    """Run registry work on a worker thread; its ModelError as the API's error shape."""
    try:
        return await run_in_threadpool(fn)
    except ModelError as exc:
        text = exc.message
        if text.startswith("refusing to delete") or "already exists" in text:
            status, code = 409, "conflict"
        elif (
            text.startswith(("no model", "no version"))
            or "has no " in text
            or ("is not tagged" in text)
        ):
            status, code = 404, "not_found"
        else:
            status, code = 400, "invalid_request"
        raise ApiError(status, code, str(exc)) from None
