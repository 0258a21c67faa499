"""The API's documentation pages, whole without a network: `/docs` (Swagger UI) and
`/redoc` (ReDoc), with their scripts, styles and icon served by foundry itself.

FastAPI's own pages load Swagger UI and ReDoc from a CDN (and ReDoc's fonts from Google),
so on a machine with no way out they are blank. The same pages are built here with
FastAPI's `get_swagger_ui_html` / `get_redoc_html` and local URLs under ASSETS_PATH,
where the files of the `fastapi-offline` package (MIT; it ships swagger-ui-dist 5 and
ReDoc 2, the versions FastAPI's pages name, with their license headers) are served as
static files. Only that package's `static/` folder is used, not its app factory.

    GET /docs                     Swagger UI
    GET /docs/oauth2-redirect     Swagger UI's OAuth2 redirect page
    GET /redoc                    ReDoc
    GET /docs-assets/{file}       swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js,
                                  favicon.png
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/docs-assets"


def assets_directory() -> Path:
    """The folder of Swagger UI / ReDoc files that fastapi-offline ships."""
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def add_api_docs(app: FastAPI) -> None:
    """/docs, /redoc and their assets on `app`, which was made with `docs_url=None,
    redoc_url=None` (FastAPI's CDN pages off)."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = f"{app.title} API"
    redirect = "/docs/oauth2-redirect"
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_directory()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=title,
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
            oauth2_redirect_url=redirect,
            # No "valid" badge: Swagger UI would send the spec to validator.swagger.io
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url,
            title=title,
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
