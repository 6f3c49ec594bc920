"""The timeline API: what the page's editor view draws and plays of a track (its waveform, its beats, its audio).

Peaks and beats are computed once per track and kept in the library folder (`mgsv.search.track_media`): the first
request for a track computes them on a media worker, later ones (from any client, after a restart too) read the
file without queueing. The audio is the whole track (its first `TRACK_AUDIO_MAX_S`) as one MP3, so the page can
start the music anywhere in it at once while the user moves the selection; it is encoded per request, not kept
(a 4-minute track is 4 MB, 25 times what the library stores of it otherwise).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import numpy as np
from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from mgsv.errors import InputError
from mgsv.serve.auth import get_runtime, require_user
from mgsv.serve.ground_api import ERRORS, check_track_file, find_track
from mgsv.serve.http_errors import ApiError, ErrorBody
from mgsv.serve.preview import MEDIA_TYPE as AUDIO_MEDIA_TYPE
from mgsv.serve.runtime import Runtime
from mgsv.serve.schemas import BeatsOut, PeaksOut

if TYPE_CHECKING:
    from mgsv.search.library import Track
    from mgsv.search.track_media import TrackMedia

log = logging.getLogger("mgsv.serve")
T = TypeVar("T")

MAX_PEAKS_WIDTH = 4096  # columns: a full-width timeline on a 4K screen
DEFAULT_PEAKS_WIDTH = 1000
TRACK_AUDIO_MAX_S = 600.0  # the audio endpoint sends at most a track's first 10 min (9.6 MB)

RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

router = APIRouter(
    prefix="/v1",
    dependencies=[Depends(require_user)],
    responses={
        **ERRORS,
        500: {"model": ErrorBody, "description": "the track's file is missing or cannot be decoded"},
    },
    tags=["timeline"],
)


async def _library_track(runtime: Runtime, track_id: str) -> tuple[TrackMedia, Track, Path]:
    """The library's track media, the track and its file (404 if the track is unknown, 500 if its file is gone)."""
    from mgsv.search.track_media import TrackMedia

    library = runtime.require_library()
    track = await run_in_threadpool(find_track, library, track_id)
    return TrackMedia(library.root), track, check_track_file(track)


async def _on_media_worker(runtime: Runtime, track: Track, job: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a decoding job in the media queue; a file that does not decode is the server's problem (500)."""
    with runtime.media_queue.reserve() as ticket:
        try:
            return await ticket.run(job, *args, **kwargs)
        except InputError as exc:
            # The decoder's words can hold the file's path: they go to the log only.
            log.error("track %s cannot be decoded: %s", track.id, exc)
            raise ApiError(500, "track_unreadable", f"track {track.id!r} cannot be decoded on the server") from exc


@router.get(
    "/tracks/{track_id}/peaks",
    response_model=PeaksOut,
    summary="The track's waveform: the lowest and highest sample in each of `width` columns",
)
async def peaks(
    track_id: str,
    runtime: RuntimeDep,
    width: Annotated[int, Query(ge=1, le=MAX_PEAKS_WIDTH, description="columns to return")] = DEFAULT_PEAKS_WIDTH,
) -> PeaksOut:
    from mgsv.media.waveform import PEAKS_PER_SECOND, resample_peaks

    media, track, _ = await _library_track(runtime, track_id)
    found = await run_in_threadpool(media.cached_peaks, track)
    if found is None:
        found = await _on_media_worker(runtime, track, media.peaks, track)
    columns = np.round(resample_peaks(found, width).astype(np.float64), 4)
    return PeaksOut(
        track_id=track.id,
        duration=track.duration,
        seconds=round(len(found) / PEAKS_PER_SECOND, 3),
        width=width,
        min=columns[:, 0].tolist(),
        max=columns[:, 1].tolist(),
    )


@router.get(
    "/tracks/{track_id}/beats",
    response_model=BeatsOut,
    summary="The track's beat times: the beats `--snap beats` snaps to (needs librosa on the server)",
    responses={501: {"model": ErrorBody, "description": "this server has no beat tracker (librosa)"}},
)
async def beats(track_id: str, runtime: RuntimeDep) -> BeatsOut:
    from mgsv.search.beats import MAX_BEAT_SECONDS, MissingExtraError

    media, track, _ = await _library_track(runtime, track_id)
    try:
        found = await run_in_threadpool(media.cached_beats, track)
        if found is None:
            found = await _on_media_worker(runtime, track, media.beats, track)
    except MissingExtraError as exc:
        raise ApiError(501, "beats_unavailable", f"this server cannot find beats: {exc}") from exc
    tempo = 60.0 / float(np.median(np.diff(found))) if len(found) >= 2 else None
    return BeatsOut(
        track_id=track.id,
        duration=track.duration,
        seconds=min(track.duration, MAX_BEAT_SECONDS),
        tempo_bpm=None if tempo is None else round(tempo, 2),
        beats=found.tolist(),
    )


@router.get(
    "/tracks/{track_id}/audio",
    response_class=Response,
    summary="The whole track as MP3 (its first 10 min), for the page's preview from any start",
    responses={200: {"content": {AUDIO_MEDIA_TYPE: {}}, "description": "the track, stereo 44.1 kHz 128 kbit/s"}},
)
async def audio(track_id: str, runtime: RuntimeDep) -> Response:
    from mgsv.serve.preview import encode_preview

    _, track, path = await _library_track(runtime, track_id)
    seconds = min(track.duration, TRACK_AUDIO_MAX_S)
    data = await _on_media_worker(runtime, track, encode_preview, path, 0.0, seconds, fast=True)
    return Response(
        data,
        media_type=AUDIO_MEDIA_TYPE,
        headers={"Cache-Control": "private, max-age=3600", "Content-Disposition": 'inline; filename="track.mp3"'},
    )

