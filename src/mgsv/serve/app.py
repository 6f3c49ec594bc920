"""The FastAPI application of `mgsv serve`: `create_app(settings)` wires the API, the web page and the limits.

    from mgsv.serve.app import create_app
    from mgsv.serve.settings import ServeSettings
    app = create_app(ServeSettings(library=Path("lib"), checkpoint=Path("ckpt"), api_token="..."))
    # uvicorn.run(app, host="127.0.0.1", port=8000)

Routes (all JSON errors share one shape, see http_errors.py):
    GET  /                                   the web page (or the A/B study page); static, no data in it
    GET  /v1/health                          liveness, no token
    GET  /v1/ready                           200 once the model and library are loaded, else 503
    GET  /v1/openapi.json                    the OpenAPI schema
    GET  /v1/tracks                          the library
    GET  /v1/tracks/{id}/preview             MP3 of a moment (?start_s=&end_s=)
    GET  /v1/tracks/{id}/peaks|beats|audio   the timeline's waveform (?width=), beat times, whole-track MP3
    POST /v1/ground                          multipart video -> top-k moments + upload_id
    POST /v1/reground                        upload_id + options -> the same upload grounded again (no upload)
    POST /v1/alternatives                    upload_id + track + moments to avoid -> other moments of the track
    POST /v1/render                          upload_id + moment -> MP4
    POST /v1/admin/tracks                    multipart music file -> library (admin token)
    /v1/ab/...                               the A/B study (--ab-study mode, which has no grounding routes)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mgsv import __version__
from mgsv.serve import ab_api, admin_api, ground_api, timeline_api
from mgsv.serve.auth import get_runtime, require_user
from mgsv.serve.http_errors import REQUEST_ID_HEADER, error_response, install_error_handlers
from mgsv.serve.jobs import QueueFull
from mgsv.serve.runtime import Runtime
from mgsv.serve.schemas import Health, Ready
from mgsv.serve.settings import ServeSettings

log = logging.getLogger("mgsv.serve")

EXPIRE_EVERY_S = 30.0
# The page loads only its own files; media come from the API as blobs (fetched with the token).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


class RequestIdAndHeaders:
    """ASGI middleware: a request id for logs and error bodies, and security headers on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == _REQUEST_ID for name, _ in headers):
                    headers.append((_REQUEST_ID, rid.encode()))
                headers.extend(SECURITY_HEADERS)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def static_dir() -> Any:
    """The folder of the web page's files (inside the installed package)."""
    return resources.files("mgsv.serve").joinpath("static")


async def _expire_uploads(runtime: Runtime) -> None:
    while True:
        await asyncio.sleep(EXPIRE_EVERY_S)
        try:
            await run_in_threadpool(runtime.uploads.expire)
        except OSError:  # keep sweeping: one failed unlink must not stop expiry for the server's lifetime
            log.exception("removing expired uploads failed")


def create_app(settings: ServeSettings) -> FastAPI:
    """The application for these settings (checked here; the bind address is checked by the CLI)."""
    settings.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        runtime.start_loading()
        expiry = asyncio.create_task(_expire_uploads(runtime))
        try:
            yield
        finally:
            expiry.cancel()
            runtime.close()

    study_mode = settings.ab_study is not None
    app = FastAPI(
        title="mgsv",
        version=__version__,
        summary="Music grounding by short video: which track, and which moment of it, fits a video.",
        description=(
            "Send `Authorization: Bearer <token>` on every endpoint but /v1/health when the server has an API "
            'token. Errors are JSON: `{"error": code, "message": text, "request_id": id}`.'
        ),
        lifespan=lifespan,
        docs_url=None,  # FastAPI's docs pages load their scripts from a CDN; the schema is at /v1/openapi.json
        redoc_url=None,
        openapi_url=None,
    )
    install_error_handlers(app)

    @app.exception_handler(QueueFull)
    async def _queue_full(request, exc: QueueFull) -> JSONResponse:
        return error_response(
            request,
            503,
            "busy",
            f"the server is busy (its {exc.name} queue is full); retry in {exc.retry_after} s",
            {"Retry-After": str(exc.retry_after)},
        )

    app.add_middleware(RequestIdAndHeaders)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Retry-After", REQUEST_ID_HEADER, "Content-Disposition"],
        )

    @app.get("/v1/health", response_model=Health, tags=["status"], summary="Liveness (no token needed)")
    def health() -> Health:
        return Health(version=__version__)

    @app.get(
        "/v1/ready",
        response_model=Ready,
        tags=["status"],
        summary="200 once the model and library are loaded; 503 while loading or if loading failed",
        responses={503: {"model": Ready}},
        dependencies=[Depends(require_user)],
    )
    def ready(runtime: Annotated[Runtime, Depends(get_runtime)]) -> JSONResponse:
        body = Ready(**runtime.readiness())
        headers = {"Retry-After": "5"} if body.status == "loading" else None
        return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503, headers=headers)

    @app.get("/v1/openapi.json", include_in_schema=False, dependencies=[Depends(require_user)])
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    if study_mode:
        app.include_router(ab_api.router)
    else:
        app.include_router(ground_api.router)
        app.include_router(timeline_api.router)
        app.include_router(admin_api.router)

    page = "ab.html" if study_mode else "index.html"

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(static_dir().joinpath(page)), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(static_dir())), name="static")
    return app
