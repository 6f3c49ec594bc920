"""The grounding API: list tracks, ground an uploaded video (again, with other options), more moments of a track,
preview a moment, render a moment under the video.

Moments are addressed by track id + start + end, checked against the library; the server looks the track's file
up itself. Uploaded videos are addressed by the `upload_id` the grounding response returned (see kept_uploads.py,
which also keeps the model's encoding of each, so that grounding again and more moments skip decoding and CLIP).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from mgsv.errors import InputError, MissingExtraError, OptionError, name_options
from mgsv.features.store import UnknownIdsError
from mgsv.serve.auth import get_runtime, require_user
from mgsv.serve.http_errors import ApiError, ErrorBody
from mgsv.serve.jobs import Ticket
from mgsv.serve.kept_uploads import KeptUpload
from mgsv.serve.media_checks import VideoInfo, inspect_video, peek_video_duration
from mgsv.serve.preview import MEDIA_TYPE as PREVIEW_MEDIA_TYPE
from mgsv.serve.preview import encode_preview
from mgsv.serve.runtime import Runtime
from mgsv.serve.schemas import (
    AlternativesRequest,
    AlternativesResponse,
    GroundForm,
    GroundResponse,
    MomentOut,
    RegroundRequest,
    RenderRequest,
    TrackList,
    TrackOut,
    VideoOut,
)
from mgsv.serve.uploads import receive_upload

if TYPE_CHECKING:
    from mgsv.search.grounder import EncodedVideo, GroundedMoment, Grounder, GroundingResult
    from mgsv.search.library import MusicLibrary, Track
    from mgsv.search.options import GroundOptions

log = logging.getLogger("mgsv.serve")

END_TOLERANCE_S = 0.05  # = mgsv.media.render.END_TOLERANCE: rounding in moments and header durations

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
T = TypeVar("T")

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "missing or invalid API token",
        404: "unknown track, upload or endpoint",
        413: "upload larger than the server's limit",
        415: "not a video / not multipart",
        422: "invalid parameters, video too long, moment outside the track, or track shorter than the video",
        503: "queue full or model still loading (see Retry-After)",
    }.items()
}

router = APIRouter(prefix="/v1", dependencies=[Depends(require_user)], responses=ERRORS)


def multipart_body(file_field: str, description: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """OpenAPI description of a multipart body that `receive_upload` parses itself."""
    properties = {file_field: {"type": "string", "format": "binary", "description": description}}
    properties.update(options or {})
    schema = {"type": "object", "required": [file_field], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def track_out(track: Track) -> TrackOut:
    """A library track without its server path."""
    data = track.to_dict()
    return TrackOut(**{name: data[name] for name in TrackOut.model_fields})


def find_track(library: MusicLibrary, track_id: str) -> Track:
    """The track with this id; ApiError 404 if there is none. The id is only ever a database key."""
    from mgsv.features.store import UnknownIdsError

    try:
        return library.track(track_id)
    except UnknownIdsError as exc:
        raise ApiError(404, "unknown_track", f"no track with id {track_id!r} in the library") from exc


def check_moment(track: Track, start: float, end: float) -> None:
    """Refuse a moment that is not a real interval inside the track (422)."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ApiError(422, "invalid_moment", "start_s and end_s must be finite numbers of seconds")
    if start < 0 or end <= start:
        raise ApiError(422, "invalid_moment", f"the moment must satisfy 0 <= start_s < end_s, got {start:g}-{end:g} s")
    if end > track.duration + END_TOLERANCE_S:
        raise ApiError(
            422,
            "moment_outside_track",
            f"the moment {start:g}-{end:g} s is outside track {track.id!r}, which is {track.duration:.2f} s long",
        )


def check_track_file(track: Track) -> Path:
    """The track's file, which must still be where it was added from (500 otherwise: the server's problem)."""
    path = Path(track.path)
    if not path.is_file():
        log.error("track %s: its file %s is missing", track.id, path)
        raise ApiError(500, "track_file_missing", f"the file of track {track.id!r} is missing on the server")
    return path


# -- status and library -------------------------------------------------------------------------------------------


@router.get("/tracks", response_model=TrackList, tags=["library"], summary="List the library's tracks")
def list_tracks(runtime: RuntimeDep) -> TrackList:
    tracks = [track_out(t) for t in runtime.require_library().tracks()]
    return TrackList(count=len(tracks), tracks=tracks)


@router.get(
    "/tracks/{track_id}/preview",
    response_class=Response,
    tags=["library"],
    summary="A short MP3 of a moment of a track",
    responses={200: {"content": {PREVIEW_MEDIA_TYPE: {}}, "description": "the preview (at most a few seconds)"}},
)
async def preview(
    track_id: str,
    runtime: RuntimeDep,
    start_s: Annotated[float, Query(ge=0, description="seconds of the track")],
    end_s: Annotated[float, Query(gt=0, description="seconds of the track; previews stop after the server's limit")],
) -> Response:
    library = runtime.require_library()
    track = await run_in_threadpool(find_track, library, track_id)
    check_moment(track, start_s, end_s)
    path = check_track_file(track)
    seconds = min(end_s - start_s, runtime.settings.limits.preview_seconds)
    with runtime.media_queue.reserve() as ticket:
        try:
            data = await ticket.run(encode_preview, path, start_s, seconds)
        except InputError as exc:
            # The decoder's text can hold the server's path of the file: it goes to the log only.
            log.error("track %s: preview failed: %s", track.id, exc)
            raise ApiError(500, "track_unreadable", f"track {track.id!r} cannot be decoded on the server") from exc
    return Response(
        data,
        media_type=PREVIEW_MEDIA_TYPE,
        headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": 'inline; filename="preview.mp3"'},
    )


# -- grounding ----------------------------------------------------------------------------------------------------


def _options_schema() -> dict[str, Any]:
    schema = GroundForm.model_json_schema()
    return schema["properties"]


def parse_ground_options(fields: dict[str, str]) -> GroundOptions:
    """The form fields as the grounding service's options (empty fields count as absent); ApiError 422 if invalid."""
    given = {name: value for name, value in fields.items() if value.strip() != ""}
    try:
        form = GroundForm.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, "invalid_field", problems) from exc
    return ground_options(form)


def ground_options(form: GroundForm) -> GroundOptions:
    """A validated form as the grounding service's options; ApiError 422 if the service refuses them."""
    from mgsv.search.filters import TrackFilter
    from mgsv.search.options import GroundOptions

    return service_options(lambda: GroundOptions(
        top=form.top, fit_duration=form.fit_duration, snap=form.snap, window_start=form.window_start,
        filters=TrackFilter.parse(form.min_duration, form.licences, form.tags), alternatives=form.alternatives,
        diverse=form.diverse, diverse_cosine=form.diverse_cosine,
    ))


def service_options(build: Callable[[], T]) -> T:
    """`build()` (options of the service), its refusals as ApiError 422 naming the field."""
    try:
        return build()
    except OptionError as exc:
        raise ApiError(422, "invalid_field", name_options(str(exc))) from exc
    except MissingExtraError as exc:
        raise ApiError(422, "snap_unavailable", f"this server cannot snap to beats: {exc}") from exc


def _encode(grounder: Grounder, video: Path | EncodedVideo, window_start: float) -> EncodedVideo:
    """A kept encoding as it is, or a video file decoded and encoded (its problems are the upload's: 422)."""
    if not isinstance(video, Path):
        return video
    try:
        return grounder.encode(video, window_start)
    except InputError as exc:
        if exc.where == str(video):
            raise ApiError(422, "cannot_ground", f"the uploaded video: {exc.problem}") from exc
        raise


def _ground_job(
    runtime: Runtime, video: Path | EncodedVideo, options: GroundOptions
) -> tuple[EncodedVideo, GroundingResult, float]:
    """Encode (unless kept) and ground on a model worker: (the encoding, the result, seconds)."""
    grounder = runtime.require_grounder()
    started = time.perf_counter()
    encoded = _encode(grounder, video, options.window_start)
    try:
        result = grounder.ground_encoded(encoded, options)
    except InputError as exc:
        if exc.where == encoded.source:
            raise ApiError(422, "cannot_ground", f"the uploaded video: {exc.problem}") from exc
        if exc.where == str(grounder.library.root):
            raise ApiError(409, "library_empty", exc.problem) from exc
        raise
    return encoded, result, time.perf_counter() - started


def moment_out(moment: GroundedMoment) -> MomentOut:
    """A grounded moment (and its alternatives) without its server path."""
    data = moment.to_dict()
    data["alternatives"] = [moment_out(other) for other in moment.alternatives]
    return MomentOut(**{k: v for k, v in data.items() if k in MomentOut.model_fields})


def ground_response(runtime: Runtime, kept: KeptUpload, info: VideoInfo, result: GroundingResult,
                    seconds: float) -> GroundResponse:
    """The JSON answer of a grounding of a kept upload."""
    return GroundResponse(
        upload_id=kept.upload_id,
        upload_expires_in_s=round(max(0.0, kept.expires_at - time.monotonic()), 1),
        video=VideoOut(**info.to_dict(), frames_used=result.frames, window_start=result.window_start),
        moments=[moment_out(m) for m in result.moments],
        notes=[name_options(note) for note in result.notes],
        seconds=round(seconds, 3),
    )


def kept_video(runtime: Runtime, ticket: Ticket, upload_id: str, window_start: float) -> Path | EncodedVideo:
    """A kept upload's encoding if it is kept too, else the video file linked into the ticket's scratch folder
    (removed when the ticket's job is done); 404 if the upload is gone."""
    encoded = runtime.uploads.recall(upload_id, window_start)
    if encoded is not None:
        return encoded
    scratch = runtime.temp.scratch()
    ticket.on_done(scratch.remove)
    return runtime.uploads.link_into(upload_id, scratch.path).path


@router.post(
    "/ground",
    response_model=GroundResponse,
    tags=["grounding"],
    summary="Upload a video; get the best moments of the library's tracks for it",
    openapi_extra=multipart_body("video", "the query video (any container/codec FFmpeg decodes)", _options_schema()),
)
async def ground(request: Request, runtime: RuntimeDep) -> GroundResponse:
    runtime.require_grounder()  # 503 while loading, before reading an upload
    limits = runtime.settings.limits

    async def peek(path: Path) -> None:
        await run_in_threadpool(peek_video_duration, path, limits.max_video_seconds)

    with runtime.model_queue.reserve() as ticket:
        scratch = runtime.temp.scratch()
        ticket.on_done(scratch.remove)
        upload = await receive_upload(
            request,
            scratch.file("upload"),
            file_field="video",
            max_bytes=limits.max_upload_bytes,
            idle_seconds=limits.upload_idle_seconds,
            allowed_fields=frozenset(GroundForm.model_fields),
            peek=peek,
        )
        options = parse_ground_options(upload.fields)
        info = await run_in_threadpool(inspect_video, upload.path, limits.max_video_seconds)
        encoded, result, seconds = await ticket.run(_ground_job, runtime, upload.path, options)
        kept = runtime.uploads.keep(upload.path, info)
        runtime.uploads.remember(kept.upload_id, options.window_start, encoded)
    log.info("grounded a %.1f s video (%d bytes) in %.2f s", info.duration, upload.size, seconds)
    return ground_response(runtime, kept, info, result, seconds)


@router.post(
    "/reground",
    response_model=GroundResponse,
    tags=["grounding"],
    summary="Ground an uploaded video again with other options (no new upload)",
)
async def reground(body: RegroundRequest, runtime: RuntimeDep) -> GroundResponse:
    runtime.require_grounder()
    kept = runtime.uploads.get(body.upload_id)
    options = ground_options(body)
    with runtime.model_queue.reserve() as ticket:
        video = kept_video(runtime, ticket, body.upload_id, options.window_start)
        encoded, result, seconds = await ticket.run(_ground_job, runtime, video, options)
    runtime.uploads.remember(body.upload_id, options.window_start, encoded)
    return ground_response(runtime, kept, kept.info, result, seconds)


def _alternatives_job(
    runtime: Runtime, video: Path | EncodedVideo, body: AlternativesRequest, options: GroundOptions
) -> tuple[EncodedVideo, list[GroundedMoment], float]:
    """Encode (unless kept) and find more moments of a track on a model worker: (encoding, moments, seconds)."""
    grounder = runtime.require_grounder()
    started = time.perf_counter()
    encoded = _encode(grounder, video, options.window_start)
    try:
        moments = grounder.more_moments(encoded, body.track_id, body.avoid, options, body.alternatives)
    except UnknownIdsError as exc:
        raise ApiError(404, "unknown_track", f"no track with id {body.track_id!r} in the library") from exc
    except OptionError as exc:
        raise ApiError(422, "invalid_field", name_options(str(exc))) from exc
    except InputError as exc:
        if exc.where == body.track_id:
            raise ApiError(422, "track_too_short", f"track {body.track_id!r}: {name_options(exc.problem)}") from exc
        raise
    return encoded, moments, time.perf_counter() - started


@router.post(
    "/alternatives",
    response_model=AlternativesResponse,
    tags=["grounding"],
    summary="Other moments of one track for an uploaded video (\"more from this track\")",
)
async def alternatives(body: AlternativesRequest, runtime: RuntimeDep) -> AlternativesResponse:
    from mgsv.search.options import GroundOptions

    library = runtime.require_library()
    runtime.require_grounder()
    runtime.uploads.get(body.upload_id)  # 404 before any work
    track = await run_in_threadpool(find_track, library, body.track_id)
    for start, end in body.avoid:
        check_moment(track, start, end)
    options = service_options(lambda: GroundOptions(fit_duration=body.fit_duration, snap=body.snap,
                                                    window_start=body.window_start))
    with runtime.model_queue.reserve() as ticket:
        video = kept_video(runtime, ticket, body.upload_id, options.window_start)
        encoded, moments, seconds = await ticket.run(_alternatives_job, runtime, video, body, options)
    runtime.uploads.remember(body.upload_id, options.window_start, encoded)
    return AlternativesResponse(track_id=track.id, moments=[moment_out(m) for m in moments], seconds=round(seconds, 3))


# -- rendering ----------------------------------------------------------------------------------------------------


def _download_name(track_id: str, start: float) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", track_id).strip("-")[:60] or "track"
    return f"mgsv-{stem}-{start:.1f}s.mp4"


@router.post(
    "/render",
    response_class=FileResponse,
    tags=["grounding"],
    summary="Render the uploaded video with a music moment as its soundtrack (MP4 download)",
    responses={200: {"content": {"video/mp4": {}}, "description": "the rendered video"}},
)
async def render(body: RenderRequest, runtime: RuntimeDep) -> FileResponse:
    from mgsv.media.render import render_with_music

    library = runtime.require_library()
    track = await run_in_threadpool(find_track, library, body.track_id)
    if body.end_s is not None:
        check_moment(track, body.start_s, body.end_s)
    elif body.start_s >= track.duration:
        raise ApiError(
            422,
            "moment_outside_track",
            f"the moment starts at {body.start_s:g} s, after the end of track {track.id!r} ({track.duration:.2f} s)",
        )
    path = check_track_file(track)
    with runtime.media_queue.reserve() as ticket:
        scratch = runtime.temp.scratch()
        try:
            video = runtime.uploads.link_into(body.upload_id, scratch.path)
            # As `mgsv ground --render`: without an end the music runs for the whole video (to the track's end).
            end = body.end_s if body.end_s is not None else min(body.start_s + video.info.duration, track.duration)
            out = scratch.file("rendered.mp4")
            try:
                await ticket.run(
                    render_with_music, video.path, path, body.start_s, end, out=out, keep_audio=body.keep_audio
                )
            except InputError as exc:
                raise ApiError(422, "cannot_render", f"cannot render with track {track.id!r}: {exc.problem}") from exc
        except BaseException:
            ticket.on_done(scratch.remove)
            raise
    return FileResponse(
        out,
        media_type="video/mp4",
        filename=_download_name(track.id, body.start_s),
        background=BackgroundTask(scratch.remove),
    )
