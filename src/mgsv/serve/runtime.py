"""What a running server holds: settings, its private folder, the work queues, and the model and library.

The model and library load on a background thread at start-up, so that `/v1/health` answers at once and
`/v1/ready` says "loading" until they are there (or "failed" with the reason: the server stays up to report it).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from mgsv.errors import MgsvError, name_options
from mgsv.serve.http_errors import ApiError
from mgsv.serve.jobs import JobQueue
from mgsv.serve.kept_uploads import KeptUploads
from mgsv.serve.settings import MAX_TOP, MB, ServeSettings
from mgsv.serve.tempdirs import PrivateTempRoot

if TYPE_CHECKING:
    from mgsv.encoders.ast import AstMusicEncoder
    from mgsv.search.grounder import Grounder
    from mgsv.search.library import MusicLibrary
    from mgsv.serve.abstudy import AbStudy

log = logging.getLogger("mgsv.serve")

LOADING_RETRY_AFTER_S = 5


class Runtime:
    """The state shared by all requests of one server (see the module docstring)."""

    def __init__(self, settings: ServeSettings) -> None:
        limits = settings.limits
        self.settings = settings
        self.temp = PrivateTempRoot(settings.work_dir)
        # One model worker: torch already spreads one forward pass over every core, so a second concurrent one
        # would only split them (and hold a second set of activations).
        self.model_queue = JobQueue("model", workers=1, waiting=limits.queue_size)
        self.media_queue = JobQueue("media", workers=limits.media_workers, waiting=limits.media_queue_size)
        self.uploads = KeptUploads(self.temp.kept, limits.keep_upload_seconds, limits.max_kept_bytes)
        self.status = "loading"
        self.message = "loading the model and the music library"
        self.library: MusicLibrary | None = None
        self.grounder: Grounder | None = None
        self.study: AbStudy | None = None
        self.started = time.time()
        self._ast: AstMusicEncoder | None = None
        self._ast_lock = threading.Lock()
        self._loader: threading.Thread | None = None

    # -- loading ----------------------------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load the library, model and study on a background thread."""
        self._loader = threading.Thread(target=self._load, name="mgsv-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from mgsv.search.library import MusicLibrary

            settings = self.settings
            library = MusicLibrary(settings.library)
            if settings.checkpoint is not None:
                from mgsv.search.grounder import Grounder

                grounder = Grounder.from_checkpoint(
                    settings.checkpoint,
                    library,
                    settings.clip,
                    encoder_id=settings.encoder_id,
                    dtype=settings.dtype,
                    device=settings.device,
                    precision=settings.precision,
                    search=settings.search,
                )
                if len(library):
                    grounder.prepare()  # the track index built or updated once, before traffic
                self.grounder = grounder
            if settings.ab_study is not None:
                from mgsv.serve.abstudy import AbStudy

                self.study = AbStudy.open(settings.ab_study, library)
            self.library = library
        except MgsvError as exc:
            self._fail(str(exc))
        except Exception as exc:  # anything else is a bug, but the server must still say why it is not ready
            log.exception("loading failed")
            self._fail(f"loading failed: {type(exc).__name__}: {exc}")
        else:
            self.status, self.message = "ready", "ready"
            log.info("ready in %.1f s: %d track(s) in %s", time.perf_counter() - started, len(library), library.root)

    def _fail(self, message: str) -> None:
        self.status, self.message = "failed", name_options(message)
        log.error("not ready: %s", message)

    def readiness(self) -> dict[str, Any]:
        """The body of /v1/ready."""
        limits = self.settings.limits
        tracks = len(self.library) if self.library is not None and self.status == "ready" else None
        return {
            "ready": self.status == "ready",
            "status": self.status,
            "message": self.message,
            "tracks": tracks,
            "checkpoint": None if self.settings.checkpoint is None else self.settings.checkpoint.name,
            "limits": {
                "max_upload_mb": round(limits.max_upload_bytes / MB, 1),
                "max_video_seconds": limits.max_video_seconds,
                "preview_seconds": limits.preview_seconds,
                "max_top": MAX_TOP,
            },
            "queues": {"model": self.model_queue.stats(), "media": self.media_queue.stats()},
            "kept_uploads": self.uploads.stats(),
        }

    def require_library(self) -> MusicLibrary:
        """The library once loaded; ApiError 503 before that."""
        self._require_ready()
        assert self.library is not None
        return self.library

    def require_grounder(self) -> Grounder:
        """The grounding service once loaded; ApiError 503 before that."""
        self.require_library()
        if self.grounder is None:
            raise ApiError(404, "not_available", "this server runs an A/B study and has no grounding model")
        return self.grounder

    def require_study(self) -> AbStudy:
        """The A/B study once loaded."""
        self._require_ready()
        if self.study is None:
            raise ApiError(404, "not_available", "this server does not run an A/B study")
        return self.study

    def _require_ready(self) -> None:
        if self.status == "loading":
            raise ApiError(
                503, "not_ready", "the server is still loading the model", {"Retry-After": str(LOADING_RETRY_AFTER_S)}
            )
        if self.status == "failed":
            raise ApiError(503, "not_ready", f"the server could not load: {self.message}")

    # -- the AST encoder, for admin uploads ----------------------------------------------------------------------

    def ast_encoder(self) -> AstMusicEncoder:
        """The AST music encoder, loaded on first use (only admin uploads need it)."""
        with self._ast_lock:
            if self._ast is None:
                from mgsv.encoders.ast import AstMusicEncoder

                self._ast = AstMusicEncoder.from_pretrained(
                    self.settings.ast, device=self.settings.device, dtype=self.settings.dtype
                )
            return self._ast

    # -- shutdown ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the queues and remove the private folder."""
        self.model_queue.shutdown()
        self.media_queue.shutdown()
        self.temp.close()
