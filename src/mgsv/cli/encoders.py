"""`mgsv encoders verify`: do the Hugging Face encoders we load compute what the official weight files compute?"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mgsv.cli import app
from mgsv.cli.common import FrameTimesChoice, ResamplerChoice, parse_channel
from mgsv.cli.numbers import number_option
from mgsv.defaults import DEFAULT_AST_ID as DEFAULT_AST
from mgsv.defaults import DEFAULT_CLIP_ID as DEFAULT_CLIP
from mgsv.devices import HELP as DEVICE_HELP
from mgsv.devices import device_name

encoders_app = typer.Typer(help="The frozen CLIP / AST encoders: check them against the official weights.",
                           no_args_is_help=True)
app.add_typer(encoders_app, name="encoders")

CLIP_FILE = "ViT-B-32.pt"
AST_FILE = "audioset_0.4593.pth"


class OnlyChoice(str, Enum):
    both = "both"
    clip = "clip"
    ast = "ast"


def _default_download_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mgsv" / "official-weights"


def _official_file(given: str | None, weights_dir: Path | None, file_name: str, url: str, sha256: str | None,
                   download_dir: Path) -> Path:
    """A local official weight file: the path given, the file in --weights-dir, or a download (of `given` if it is
    an address, else of the official address)."""
    from mgsv.encoders.official_weights import fetch_weights

    if given is not None and not given.startswith(("http://", "https://")):
        return Path(given)
    if given is None and weights_dir is not None:
        return weights_dir / file_name
    return fetch_weights(given or url, download_dir, sha256=sha256 if given is None else None)


@encoders_app.command("verify")
def verify_command(
    weights_dir: Annotated[
        Path | None,
        typer.Option("--weights-dir", help=f"Folder holding the official {CLIP_FILE} and {AST_FILE} (else they are "
                     "downloaded from the official addresses)."),
    ] = None,
    clip_weights: Annotated[
        str | None, typer.Option("--clip-weights", help=f"The official {CLIP_FILE}: a file or an http(s) address.")
    ] = None,
    ast_weights: Annotated[
        str | None, typer.Option("--ast-weights", help=f"The official {AST_FILE}: a file or an http(s) address.")
    ] = None,
    clip: Annotated[str, typer.Option("--clip", help="CLIP to check: hub id or local folder.")] = DEFAULT_CLIP,
    ast: Annotated[str, typer.Option("--ast", help="AST to check: hub id or local folder.")] = DEFAULT_AST,
    clip_encoder_id: Annotated[
        str | None, typer.Option("--clip-encoder-id", help="Encoder id of a local copy of the CLIP hub model.")
    ] = None,
    ast_encoder_id: Annotated[
        str | None, typer.Option("--ast-encoder-id", help="Encoder id of a local copy of the AST hub model.")
    ] = None,
    only: Annotated[OnlyChoice, typer.Option("--only", help="Check both encoders, or one.")] = OnlyChoice.both,
    media: Annotated[
        list[Path] | None,
        typer.Option("--media", help="Music or video files to check on too (repeat); generated probe media are "
                     "always used."),
    ] = None,
    download_dir: Annotated[
        Path | None, typer.Option("--download-dir", help="Where downloads go (default ~/.cache/mgsv/official-weights).")
    ] = None,
    device: Annotated[str, typer.Option("--device", help=DEVICE_HELP)] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Precision of the checked encoders: float32 or bfloat16.")] = (
        "float32"
    ),
    min_cosine: Annotated[
        float | None,
        number_option("--min-cosine", min=-1.0, max=1.0, help="Every token must reach this cosine (default 0.9999; "
                     "0.99 with --against-release)."),
    ] = None,
    against_release: Annotated[
        bool,
        typer.Option("--against-release", help="Re-extract the raw MGSV-EC test media (xxayt/MGSV-EC-Raw) and "
                     "compare with the released features (MGSV_feature.zip), and a checkpoint's metrics on both."),
    ] = False,
    release: Annotated[
        Path | None,
        typer.Option("--release", help="With --against-release: a folder made by `mgsv data fetch` (test_data.csv, "
                     "MGSV_feature/); default: download xxayt/MGSV-EC into OUT/release."),
    ] = None,
    raw_media: Annotated[
        list[Path] | None,
        typer.Option("--raw-media", help="With --against-release: a folder of the raw media (e.g. made by `mgsv data "
                     "fetch --raw`; repeat); default: download the gated xxayt/MGSV-EC-Raw into OUT/raw."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="With --against-release: the check's folder (stores, report.json); a "
                     "re-run goes on where it stopped."),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="With --against-release: a checkpoint or run folder (or hf: reference) to "
                     "evaluate on the released and on the re-extracted features."),
    ] = None,
    limit: Annotated[
        int | None, number_option("--limit", kind=int, min=1, help="With --against-release: check the first N test rows only.")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="With --against-release: Hugging Face token for the gated raw media (default: "
                     "HF_TOKEN or the one `hf auth login` saved)."),
    ] = None,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="With --against-release: Hugging Face cache folder (default: "
                     "HF_HOME's hub cache).")
    ] = None,
    batch_size: Annotated[
        int | None, number_option("--batch-size", kind=int, min=1, help="With --against-release: frames / windows per forward "
                     "(default 32 / 4).")
    ] = None,
    music_channel: Annotated[
        str | None, typer.Option("--music-channel", help="With --against-release: audio channel AST hears: 0 "
                     "(official), 1, ... or 'mean'.")
    ] = None,
    resampler: Annotated[
        ResamplerChoice | None,
        typer.Option("--resampler", help="With --against-release: music resampler: sinc (torchaudio's, "
                     "official) or soxr."),
    ] = None,
    frame_times: Annotated[
        FrameTimesChoice | None,
        typer.Option("--frame-times", help="With --against-release: frame of each second: cv2 (the official "
                     "extractor's frame s*int(fps)) or "
                     "shown (the frame on screen at s)."),
    ] = None,
    jpeg_quality: Annotated[
        int | None,
        number_option("--jpeg-quality", kind=int, min=1, max=100, help="With --against-release: pass frames through JPEG files of this "
                     "quality, as the "
                     "official frames were (default: no JPEG round trip)."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="With --against-release: start the feature stores in OUT afresh.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Compare, token by token, our encoders with the official weight files on the same inputs.

    The reference is the official file (OpenAI's ViT-B-32.pt, AST's audioset_0.4593.pth) run in the official
    arithmetic; the checked encoder is what `mgsv extract` loads (the hub ids by default). Exit code 1 if a token
    falls below --min-cosine. docs/encoders.md says what a good result looks like.

    With --against-release: the raw test media of MGSV-EC are re-extracted with the encoders (as `mgsv extract`
    with the same options would) and compared per item with the released features; with --checkpoint, its test
    metrics on both. Ids missing on either side are listed. Exit code 1 if a compared token falls below
    --min-cosine or nothing could be compared.
    """
    device = device_name(device)  # first: a device this machine lacks is refused before any work
    given = {"--release": release is not None, "--raw-media": bool(raw_media), "--out": out is not None,
             "--checkpoint": checkpoint is not None, "--limit": limit is not None, "--token": token is not None,
             "--cache-dir": cache_dir is not None, "--batch-size": batch_size is not None,
             "--music-channel": music_channel is not None, "--resampler": resampler is not None,
             "--frame-times": frame_times is not None, "--jpeg-quality": jpeg_quality is not None, "--force": force}
    weights_only = {"--weights-dir": weights_dir is not None, "--clip-weights": clip_weights is not None,
                    "--ast-weights": ast_weights is not None, "--media": bool(media),
                    "--download-dir": download_dir is not None, "--only": only is not OnlyChoice.both}
    if against_release:
        _refuse(weights_only, "compares the encoders with the official weight files, not with the release; drop it")
        if out is None:
            raise typer.BadParameter("--against-release needs a folder for the check: --out DIR", param_hint="--out")
        from mgsv.cli.encoders_release import run_release_check
        from mgsv.extract.pipeline import EncoderOptions

        encoders = EncoderOptions(
            clip=clip, ast=ast, clip_encoder_id=clip_encoder_id, ast_encoder_id=ast_encoder_id, dtype=dtype,
            batch_size=batch_size, device=device, channel=parse_channel(music_channel or "0"),
            resampler=(resampler or ResamplerChoice.sinc).value, frame_times=(frame_times or FrameTimesChoice.cv2).value,
            jpeg_quality=jpeg_quality,
        )
        run_release_check(encoders, out, release, raw_media or [], checkpoint, token, cache_dir, limit, min_cosine,
                          force, json_output)
        return
    _refuse(given, "applies to the check against the release only: add --against-release")
    min_cosine = 0.9999 if min_cosine is None else min_cosine
    from mgsv.encoders.official_weights import AST_AUDIOSET_URL, OPENAI_CLIP_SHA256, OPENAI_CLIP_URL
    from mgsv.encoders.verify import EncoderPair, verify_encoders

    folder = download_dir or _default_download_dir()
    clip_pair = ast_pair = None
    if only in (OnlyChoice.both, OnlyChoice.clip):
        official = _official_file(clip_weights, weights_dir, CLIP_FILE, OPENAI_CLIP_URL, OPENAI_CLIP_SHA256, folder)
        clip_pair = EncoderPair(official, clip, clip_encoder_id)
    if only in (OnlyChoice.both, OnlyChoice.ast):
        official = _official_file(ast_weights, weights_dir, AST_FILE, AST_AUDIOSET_URL, None, folder)
        ast_pair = EncoderPair(official, ast, ast_encoder_id)
    report = verify_encoders(clip_pair, ast_pair, media=media or [], device=device, dtype=dtype,
                             min_cosine=min_cosine)
    if json_output:
        typer.echo(json.dumps(report.to_dict()))
    else:
        table = Table(title=f"per-token agreement with the official weights (pass: every cosine >= {min_cosine:g})")
        for column in ("modality", "item", "tokens", "cosine min", "cosine mean", "max abs diff", "token scale"):
            table.add_column(column, justify="left" if column in ("modality", "item") else "right", overflow="fold")
        for row in report.items:
            table.add_row(row.modality, escape(Path(row.item).name), str(row.tokens), f"{row.cosine_min:.7f}",
                          f"{row.cosine_mean:.7f}", f"{row.max_abs_diff:.2e}", f"{row.scale:.3g}")
        console = Console()
        console.print(table)
        for modality, source in report.sources.items():
            console.print(f"{modality}: {escape(source['candidate'])} (features record {escape(source['encoder_id'])}) "
                          f"vs {escape(source['official'])}", highlight=False, soft_wrap=True)
        console.print("[bold green]agree[/]" if report.ok else "[bold red]DIFFER[/]: some tokens are below "
                      f"{min_cosine:g}; features of this encoder are not interchangeable with the official ones")
    if not report.ok:
        raise typer.Exit(code=1)


def _refuse(flags: dict[str, bool], problem: str) -> None:
    """A usage error for the first flag given that the chosen mode does not take."""
    for flag, present in flags.items():
        if present:
            raise typer.BadParameter(problem, param_hint=flag)
