"""Admin endpoint: add a music file to the library (admin token only).

The uploaded file is checked by decoding, then kept in the server's music folder as
`<music dir>/<sha256[:2]>/<sha256>/<name>.<ext>`: the folder is named by the content hash, the extension by the
container FFmpeg detected, and `<name>` is the client's file name reduced to letters, digits, "-" and "_" (it
becomes the track id, as with `mgsv library add`). The library records that path, so the file must stay there.
Adding runs on the model worker: AST encoding is model work, and the library takes one writer at a time.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import PurePosixPath
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from mgsv.errors import BusyError, MgsvError
from mgsv.serve.auth import get_runtime, require_admin
from mgsv.serve.ground_api import ERRORS, multipart_body, track_out
from mgsv.serve.http_errors import ApiError
from mgsv.serve.media_checks import inspect_music
from mgsv.serve.runtime import Runtime
from mgsv.serve.schemas import AddTrackResponse
from mgsv.serve.uploads import ReceivedUpload, receive_upload

log = logging.getLogger("mgsv.serve")

# Container format (FFmpeg's first name for it) -> file extension of the kept copy.
EXTENSIONS = {"ogg": ".ogg", "mp3": ".mp3", "flac": ".flac", "wav": ".wav", "mov": ".m4a", "matroska": ".mka",
              "aiff": ".aiff", "aac": ".aac", "w64": ".w64", "asf": ".wma"}  # fmt: skip

# Retry-After of an upload refused because another process holds the library's writer lock: an `mgsv library add`
# encodes a track in seconds to a minute (docs/serve.md), so a retry soon is likely to find the library free.
LIBRARY_BUSY_RETRY_AFTER_S = 30

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=ERRORS, tags=["admin"])


def safe_stem(filename: str | None) -> str:
    """A file-name stem made only of [A-Za-z0-9_-] from the client's file name ("track" if nothing is left)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:60] or "track"


def _extension(container_format: str) -> str:
    first = container_format.split(",")[0].strip().lower()
    return EXTENSIONS.get(first, ".audio")


def _add_job(runtime: Runtime, upload: ReceivedUpload, container_format: str) -> tuple[int, AddTrackResponse]:
    """Keep the file and add it to the library: (HTTP status, response)."""
    from mgsv.files.hashing import content_hash

    library = runtime.require_library()
    digest = content_hash(upload.path)
    folder = runtime.settings.uploaded_music_dir / digest[:2] / digest
    target = folder / f"{safe_stem(upload.filename)}{_extension(container_format)}"
    created = not folder.exists()
    if created:
        folder.mkdir(parents=True)
        shutil.move(upload.path, target)  # a rename on one file system, a copy across two
    else:
        existing = sorted(p for p in folder.iterdir() if p.is_file())
        target = existing[0] if existing else target
        if not existing:
            shutil.move(upload.path, target)
    try:
        report = library.add_files([target], runtime.ast_encoder)
    except BusyError as exc:  # e.g. an `mgsv library add` is writing: the same upload succeeds once it is done
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(
            503, "busy", f"the library is being changed by another process; retry in {LIBRARY_BUSY_RETRY_AFTER_S} s",
            {"Retry-After": str(LIBRARY_BUSY_RETRY_AFTER_S)},
        ) from exc
    except MgsvError as exc:  # e.g. --ast makes tokens of another spec than the library's: the server's setup
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        log.error("adding an uploaded track failed: %s", exc)
        raise ApiError(500, "cannot_add_track", f"the server cannot add tracks: {exc}") from exc
    except BaseException:
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if report.added:
        warnings = [w.reason for w in report.warnings]
        log.info("admin added track %s (%s)", report.added[0].id, target)
        return 201, AddTrackResponse(added=True, track=track_out(report.added[0]), warnings=warnings)
    if created:
        shutil.rmtree(folder, ignore_errors=True)  # nothing refers to this copy
    if report.already:
        return 200, AddTrackResponse(added=False, track=track_out(library.track(report.already[0][1])))
    reason = report.failures[0].reason if report.failures else "the library did not add it"
    raise ApiError(422, "cannot_add_track", f"the uploaded file cannot be added: {reason}")


@router.post(
    "/tracks",
    response_model=AddTrackResponse,
    status_code=201,
    summary="Add a music file to the library (201: added, 200: the same content was already there)",
    openapi_extra=multipart_body("file", "a music file (any format FFmpeg or libsndfile decodes)"),
)
async def add_track(request: Request, response: Response, runtime: Annotated[Runtime, Depends(get_runtime)]):
    runtime.require_library()
    limits = runtime.settings.limits
    with runtime.model_queue.reserve() as ticket:
        scratch = runtime.temp.scratch()
        ticket.on_done(scratch.remove)
        upload = await receive_upload(
            request,
            scratch.file("upload"),
            file_field="file",
            max_bytes=limits.max_upload_bytes,
            idle_seconds=limits.upload_idle_seconds,
        )
        _, container_format = await run_in_threadpool(inspect_music, upload.path)
        status, body = await ticket.run(_add_job, runtime, upload, container_format)
    response.status_code = status
    return body
