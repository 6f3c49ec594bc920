"""HTTP side of the A/B study: the next pair for a rater, its two clips, and the rater's answer.

Responses never say which system a clip comes from: clips are addressed by presentation id and position (1, 2).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from mgsv.errors import InputError
from mgsv.serve.abstudy import StudyConflictError
from mgsv.serve.auth import get_runtime, require_user
from mgsv.serve.ground_api import ERRORS
from mgsv.serve.http_errors import ApiError
from mgsv.serve.runtime import Runtime
from mgsv.serve.schemas import ID_PATTERN

RATER_PATTERN = r"^[\w.@ -]{1,64}$"
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

router = APIRouter(prefix="/v1/ab", dependencies=[Depends(require_user)], responses=ERRORS, tags=["A/B study"])


class StudyInfo(BaseModel):
    videos: int
    skipped: int


class NextRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rater_id: str = Field(pattern=RATER_PATTERN, description="who is rating (letters, digits, . @ - space)")


class NextResponse(BaseModel):
    done: bool
    presentation_id: str | None = None
    answered: int
    total: int


class AnswerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    presentation_id: str = Field(pattern=ID_PATTERN)
    rater_id: str = Field(pattern=RATER_PATTERN)
    answer: Literal["first", "second", "both", "neither"] = Field(
        description="clip 1 better, clip 2 better, both acceptable, neither acceptable"
    )


class AnswerResponse(BaseModel):
    recorded: bool
    answered: int
    total: int


@router.get("/study", response_model=StudyInfo, summary="Size of the study")
def study_info(runtime: RuntimeDep) -> StudyInfo:
    study = runtime.require_study()
    return StudyInfo(videos=len(study.videos), skipped=len(study.plan.skipped))


@router.post("/next", response_model=NextResponse, summary="The next pair of clips for a rater")
def next_pair(body: NextRequest, runtime: RuntimeDep) -> NextResponse:
    study = runtime.require_study()
    presentation = study.next_presentation(body.rater_id)
    answered, total = study.progress(body.rater_id)
    if presentation is None:
        return NextResponse(done=True, answered=answered, total=total)
    return NextResponse(done=False, presentation_id=presentation.id, answered=answered, total=total)


@router.get(
    "/presentations/{presentation_id}/clips/{position}",
    response_class=FileResponse,
    summary="Clip 1 or 2 of a presentation (the video with one system's music)",
    responses={200: {"content": {"video/mp4": {}}}},
)
async def clip(
    presentation_id: Annotated[str, Path(pattern=ID_PATTERN)],
    position: Annotated[int, Path(ge=1, le=2)],
    runtime: RuntimeDep,
) -> FileResponse:
    study = runtime.require_study()
    presentation = await run_in_threadpool(study.presentation, presentation_id)
    if presentation is None:
        raise ApiError(404, "unknown_presentation", f"no presentation with id {presentation_id!r}")
    with runtime.media_queue.reserve() as ticket:
        try:
            path = await ticket.run(study.render_clip, presentation, position, runtime.temp.cache)
        except InputError as exc:
            raise ApiError(500, "cannot_render", f"clip {position} of video {presentation.video_id} cannot be rendered: "
                           f"{exc.problem}") from exc  # fmt: skip
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/answers", response_model=AnswerResponse, status_code=201, summary="Record a rater's answer")
def answer(body: AnswerRequest, runtime: RuntimeDep) -> AnswerResponse:
    study = runtime.require_study()
    try:
        study.record_answer(body.presentation_id, body.rater_id, body.answer)
    except LookupError as exc:
        raise ApiError(404, "unknown_presentation", f"no presentation with id {body.presentation_id!r}") from exc
    except StudyConflictError as exc:
        raise ApiError(409, "conflict", str(exc)) from exc
    answered, total = study.progress(body.rater_id)
    return AnswerResponse(recorded=True, answered=answered, total=total)
