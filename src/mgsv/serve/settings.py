"""What a `mgsv serve` process is configured with: the model and library, tokens, and the limits it enforces.

Settings are plain frozen dataclasses, checked once by `ServeSettings.check()` so that a mistake (a missing token
on a public address, a limit of zero) stops the server before it binds instead of surfacing at the first request.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field
from pathlib import Path

from mgsv.defaults import DEFAULT_AST_ID, DEFAULT_CLIP_ID
from mgsv.errors import InputError, MgsvError
from mgsv.limits import MAX_VIDEO_SECONDS
from mgsv.search.options import SearchOptions

MB = 1024 * 1024
MIN_TOKEN_CHARS = 16  # a shorter shared secret is guessable by anyone who can reach the port
MAX_TOP = 50  # moments per grounding request: p_s is computed for every track anyway, detection costs per moment


class UnsafeBindError(MgsvError):
    """The server would accept requests from the network without an API token."""


@dataclass(frozen=True)
class Limits:
    """What one request may cost the server."""

    max_upload_bytes: int = 200 * MB
    max_video_seconds: float = 60.0  # the model reads 50 s; renders cost in proportion to the whole video
    preview_seconds: float = 10.0  # longest preview clip; a longer moment is previewed from its start
    queue_size: int = 8  # model jobs that may wait behind the running one before requests get 503
    media_workers: int = 2  # threads cutting previews and rendering videos
    media_queue_size: int = 16  # media jobs that may wait before requests get 503
    keep_upload_seconds: float = 600.0  # how long a grounded video stays available for rendering
    max_kept_bytes: int = 2048 * MB  # uploads kept for rendering, all together; the oldest go first
    upload_idle_seconds: float = 60.0  # an upload that sends nothing for this long is abandoned (408)

    def check(self) -> None:
        """Refuse limits that would make the server useless or unbounded (named by field, in the field's unit).

        `mgsv serve` refuses bad option values earlier, in the unit the user typed (mgsv.cli.numbers).
        """
        numbers = {
            "max_upload_bytes": (self.max_upload_bytes, "bytes"),
            "max_video_seconds": (self.max_video_seconds, "s"),
            "preview_seconds": (self.preview_seconds, "s"),
            "media_workers": (self.media_workers, ""),
            "keep_upload_seconds": (self.keep_upload_seconds, "s"),
            "max_kept_bytes": (self.max_kept_bytes, "bytes"),
            "upload_idle_seconds": (self.upload_idle_seconds, "s"),
        }
        for name, (value, unit) in numbers.items():
            if not (value > 0 and math.isfinite(value)):
                raise InputError(name, f"must be a finite number greater than 0, got {value} {unit}".rstrip())
        for name, value in {"queue_size": self.queue_size, "media_queue_size": self.media_queue_size}.items():
            if value < 0:
                raise InputError(name, f"must be 0 or more, got {value}")
        if self.max_video_seconds > MAX_VIDEO_SECONDS:
            raise InputError("max_video_seconds", f"must be at most {MAX_VIDEO_SECONDS:g} s (mgsv.limits), "
                                                  f"got {self.max_video_seconds:g} s")
        if self.max_kept_bytes < self.max_upload_bytes:
            raise InputError("max_kept_bytes", "must be at least the upload limit, or no upload could be kept")


@dataclass(frozen=True)
class AbStudySettings:
    """The human-evaluation mode: two prediction files, the query videos, and where answers go."""

    predictions_a: Path
    predictions_b: Path
    media: Path
    database: Path


@dataclass(frozen=True)
class ServeSettings:
    """Everything `create_app` needs. `checkpoint` is None only in the A/B study mode."""

    library: Path
    checkpoint: Path | None = None
    clip: str = DEFAULT_CLIP_ID
    encoder_id: str | None = None
    dtype: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"  # MaDe arithmetic: fp32, or bf16 autocast
    search: SearchOptions = field(default_factory=SearchOptions)  # candidate stage, its size, token memory
    ast: str = DEFAULT_AST_ID  # loaded on the first admin upload only
    api_token: str | None = None
    admin_token: str | None = None
    music_dir: Path | None = None  # where admin uploads are kept; default LIBRARY/uploaded-music
    work_dir: Path | None = None  # parent of the private temporary folder; default the system's
    cors_origins: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    ab_study: AbStudySettings | None = None

    @property
    def uploaded_music_dir(self) -> Path:
        """Folder that keeps music files added through the admin endpoint (the library refers to them)."""
        return self.music_dir if self.music_dir is not None else self.library / "uploaded-music"

    def check(self, host: str | None = None) -> None:
        """Refuse inconsistent settings; with `host`, also refuse a public bind without an API token."""
        from mgsv.devices import resolve_device

        self.limits.check()
        resolve_device(self.device)  # a GPU this machine lacks is refused before the server starts
        for name, token in (("--api-token", self.api_token), ("--admin-token", self.admin_token)):
            if token is not None and (len(token) < MIN_TOKEN_CHARS or token != token.strip()):
                raise InputError(
                    name, f"a token must be at least {MIN_TOKEN_CHARS} characters without surrounding spaces"
                )
        if self.api_token is not None and self.api_token == self.admin_token:
            raise InputError("--admin-token", "must differ from the API token (it grants more)")
        if self.ab_study is None and self.checkpoint is None:
            raise InputError("--checkpoint", "is required (or run the A/B study mode with --ab-study)")
        if host is not None and not is_loopback(host) and self.api_token is None:
            raise UnsafeBindError(
                f"refusing to listen on {host}, which other machines can reach, without an API token: set "
                "MGSV_API_TOKEN (or --api-token), or listen on 127.0.0.1"
            )


def is_loopback(host: str) -> bool:
    """True if `host` only accepts connections from this machine (a loopback address or "localhost")."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything
