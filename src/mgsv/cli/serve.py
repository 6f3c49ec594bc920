"""`mgsv serve` (the HTTP API + web page, or the A/B study) and `mgsv ab-report` (the study's results)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mgsv.cli import app, err_console
from mgsv.cli.common import DtypeChoice, IndexChoice, MemoryChoice, PrecisionChoice, require_checkpoint
from mgsv.cli.numbers import number_option
from mgsv.defaults import DEFAULT_AST_ID as DEFAULT_AST
from mgsv.defaults import DEFAULT_CLIP_ID as DEFAULT_CLIP
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name
from mgsv.limits import MAX_VIDEO_SECONDS

MAX_UPLOAD_MB = 1024 * 1024  # 1 TB: beyond any real video, and a bound that keeps the byte count an exact integer
MAX_KEEP_MINUTES = 7 * 24 * 60  # a week: kept uploads are for rendering after grounding, not storage

ANSWER_LABELS = {"A": "A better", "B": "B better", "both": "both acceptable", "neither": "neither"}


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: any free port), or one clear error."""
    from mgsv.errors import MgsvError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise MgsvError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@app.command("serve")
def serve_command(
    library: Annotated[Path, typer.Option("--library", "-l", help="The music library folder (mgsv library add).")],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", "-c", help="A trained model's checkpoint folder.")
    ] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP model: hub id or local folder.")] = DEFAULT_CLIP,
    encoder_id: Annotated[
        str | None, typer.Option("--encoder-id", help="Encoder id of a local CLIP folder (for a copy of a hub model).")
    ] = None,
    ast: Annotated[str, typer.Option("--ast", help="AST model for admin uploads: hub id or local folder.")] = (
        DEFAULT_AST
    ),
    dtype: Annotated[DtypeChoice, typer.Option("--dtype", help="Encoder precision (auto: bf16 where native).")] = (
        DtypeChoice.auto
    ),
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    precision: Annotated[
        PrecisionChoice, typer.Option("--precision", help="MaDe arithmetic: fp32, or bf16 autocast (faster on AMX).")
    ] = PrecisionChoice.fp32,
    candidates: Annotated[
        int, number_option("--candidates", kind=int, min=1, help="Tracks scored exactly per request (the top K by h0).")
    ] = 2000,
    index: Annotated[IndexChoice, typer.Option("--index", help="Candidate stage: exact scan, faiss or lance.")] = (
        IndexChoice.exact
    ),
    faiss_factory: Annotated[
        str | None, typer.Option("--faiss-factory", help="With --index faiss: FAISS factory string (IVF..,Flat).")
    ] = None,
    index_memory: Annotated[
        MemoryChoice, typer.Option("--index-memory", help="Track index tokens: read per query (disk) or held (ram).")
    ] = MemoryChoice.disk,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, number_option("--port", kind=int, min=0, max=65535, help="Port (0: any free port).")] = 8000,
    api_token: Annotated[
        str | None,
        typer.Option("--api-token", envvar="MGSV_API_TOKEN", help="Bearer token for the API (prefer the env var)."),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option("--admin-token", envvar="MGSV_ADMIN_TOKEN", help="Bearer token for adding tracks (env var)."),
    ] = None,
    max_upload_mb: Annotated[
        float,
        number_option("--max-upload-mb", unit="MB", above=0, max=MAX_UPLOAD_MB, help="Largest upload accepted, in MB."),
    ] = 200.0,
    max_video_seconds: Annotated[
        float,
        number_option(
            "--max-video-seconds", unit="s", above=0, max=MAX_VIDEO_SECONDS, help="Longest video accepted, in seconds."
        ),
    ] = 60.0,
    queue_size: Annotated[
        int, number_option("--queue-size", kind=int, min=0, help="Model jobs that may wait before requests get 503.")
    ] = 8,
    keep_uploads_minutes: Annotated[
        float,
        number_option(
            "--keep-uploads-minutes", unit="min", above=0, max=MAX_KEEP_MINUTES,
            help="How long a grounded video stays renderable, in minutes.",
        ),
    ] = 10.0,
    music_dir: Annotated[
        Path | None, typer.Option("--music-dir", help="Where admin uploads are kept [default: LIBRARY/uploaded-music].")
    ] = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Parent of the private temporary folder [default: system temp].")
    ] = None,
    cors_origin: Annotated[
        list[str] | None, typer.Option("--cors-origin", help="Allow browser calls from this origin; repeat.")
    ] = None,
    ab_study: Annotated[
        tuple[Path, Path] | None,
        typer.Option("--ab-study", help="A/B study mode: predictions JSONL of system A and of system B."),
    ] = None,
    media: Annotated[
        Path | None, typer.Option("--media", help="A/B study: folder of the query videos (by id).")
    ] = None,
    ab_db: Annotated[Path, typer.Option("--ab-db", help="A/B study: the answer database (SQLite).")] = Path(
        "ab-study.sqlite"
    ),
) -> None:
    """Serve the grounding API and web page; with --ab-study, the human A/B evaluation instead.

    Every endpoint but /v1/health needs the API token when one is set; listening on an address other machines can reach needs one.

    The page is at http://HOST:PORT/ and the OpenAPI schema at /v1/openapi.json (docs/serve.md). Stop with Ctrl-C.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    import uvicorn

    from mgsv.errors import InputError
    from mgsv.search.library import MusicLibrary
    from mgsv.search.options import SearchOptions
    from mgsv.serve.app import create_app
    from mgsv.serve.settings import MB, AbStudySettings, Limits, ServeSettings

    study = None
    if ab_study is not None:
        if media is None:
            raise InputError("--media", "the A/B study needs the folder of query videos")
        if checkpoint is not None:
            raise InputError("--checkpoint", "is not used in the A/B study mode (the predictions are given)")
        for path in ab_study:
            if not path.is_file():
                raise InputError(path, "no such predictions file")
        study = AbStudySettings(ab_study[0], ab_study[1], media, ab_db)
    elif media is not None:
        raise InputError("--media", "is only used with --ab-study")
    else:
        require_checkpoint(checkpoint)
        from mgsv.hub.resolve import resolve_checkpoint

        checkpoint = resolve_checkpoint(checkpoint)  # an hf: reference is downloaded now, before binding
        if not checkpoint.is_dir():
            raise InputError(checkpoint, "no such checkpoint folder")
    MusicLibrary(library)  # a missing or broken library is reported now, not after binding
    if work_dir is not None:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(work_dir, f"cannot create the --work-dir folder: {exc.strerror or exc}") from exc
        if not os.access(work_dir, os.W_OK | os.X_OK):
            raise InputError(work_dir, "the --work-dir folder is not writable")
    settings = ServeSettings(
        library=library,
        checkpoint=checkpoint,
        clip=clip,
        encoder_id=encoder_id,
        dtype=dtype.value,
        device=device,
        precision=precision.value,
        search=SearchOptions(candidates, index.value, faiss_factory, index_memory.value),
        ast=ast,
        api_token=api_token or None,
        admin_token=admin_token or None,
        music_dir=music_dir,
        work_dir=work_dir,
        cors_origins=tuple(cors_origin or ()),
        limits=Limits(
            max_upload_bytes=int(max_upload_mb * MB),
            max_video_seconds=max_video_seconds,
            queue_size=queue_size,
            keep_upload_seconds=keep_uploads_minutes * 60,
        ),
        ab_study=study,
    )
    settings.check(host)
    application = create_app(settings)
    sock = _listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    err_console.print(f"mgsv serve: http://{shown}:{bound}/", highlight=False, soft_wrap=True)
    config = uvicorn.Config(application, log_level="info", timeout_graceful_shutdown=10, server_header=False)
    uvicorn.Server(config).run(sockets=[sock])


@app.command("ab-report")
def ab_report_command(
    database: Annotated[Path, typer.Argument(help="The answer database of an A/B study (mgsv serve --ab-db).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Percentages (and counts) of the four answers of an A/B study, with a sign test of A against B."""
    from mgsv.serve.abstudy import ab_report

    report = ab_report(database)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
        return
    console = Console()
    table = Table(title=f"A = {escape(report.a_file)}\nB = {escape(report.b_file)}", title_justify="left")
    table.add_column("answer")
    table.add_column("percent", justify="right")
    table.add_column("count", justify="right")
    percent = report.percentages()
    for key, label in ANSWER_LABELS.items():
        table.add_row(label, f"{percent[key]:.1f}%", str(report.counts[key]))
    table.add_section()
    table.add_row("total", "100.0%" if report.total else "-", str(report.total))
    console.print(table)
    console.print(f"{report.raters} rater(s), {report.videos} video(s)", highlight=False)
    p_value = report.sign_test_p()
    if p_value is not None:
        decisive = report.counts["A"] + report.counts["B"]
        console.print(
            f"A preferred in {report.counts['A']} of {decisive} answers preferring one system "
            f"(two-sided sign test p = {p_value:.3g})",
            highlight=False,
        )
