"""A small real-music library and a ready-to-use test client, for the `mgsv serve` tests.

    from serve_factory import serve_library, ready_client, bearer

    lib = serve_library(tmp_path_factory, debian_music)     # 5 real tracks + tiny encoders/checkpoint, built once
    settings = lib.settings(work_dir=tmp_path, api_token=TOKEN)
    with ready_client(settings) as client:                   # lifespan started, model loaded
        client.get("/v1/tracks", headers=bearer(TOKEN))

Five short tracks (15-60 s, ~165 s in all) keep the AST encoding to seconds; hr-savino-ocean.ogg is one FFmpeg
refuses, so previews and renders go through the libsndfile fallback too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from grounding_factory import TinySetup, make_tiny_setup

from mgsv.search.library import MusicLibrary
from mgsv.serve.app import create_app
from mgsv.serve.settings import Limits, ServeSettings

SERVE_TRACKS = {
    "wesnoth": ["defeat2.ogg", "victory2.ogg", "elf-land.ogg"],
    "singularity": ["lose/Chimes They Fade.ogg"],
    "hyperrogue": ["hr-savino-ocean.ogg"],
}
API_TOKEN = "test-api-token-0123456789"
ADMIN_TOKEN = "test-admin-token-9876543210"


def bearer(token: str) -> dict[str, str]:
    """The Authorization header for a token."""
    return {"Authorization": f"Bearer {token}"}


@dataclass
class ServeLibrary:
    """Tiny encoders and checkpoint, and a library of real tracks made with them."""

    setup: TinySetup
    library: Path
    tracks: list[Path]

    def settings(self, library: Path | None = None, limits: Limits | None = None, **changes: Any) -> ServeSettings:
        """Settings for a server on this library (or a copy), with the tiny CLIP/AST and both tokens by default."""
        base = ServeSettings(
            library=library or self.library,
            checkpoint=self.setup.checkpoint,
            clip=str(self.setup.clip_dir),
            ast=str(self.setup.ast_dir),
            dtype="fp32",
            api_token=API_TOKEN,
            admin_token=ADMIN_TOKEN,
            limits=limits or Limits(),
        )
        return replace(base, **changes)


_BUILT: dict[str, ServeLibrary] = {}


def serve_library(tmp_path_factory: pytest.TempPathFactory, music_dirs: dict[str, Path]) -> ServeLibrary:
    """The session's serve library (built on first use; copy it before changing it)."""
    if "lib" not in _BUILT:
        root = tmp_path_factory.mktemp("serve-library")
        setup = make_tiny_setup(root / "models")
        tracks = [music_dirs[package] / name for package, names in SERVE_TRACKS.items() for name in names]
        library = MusicLibrary.create(root / "library", setup.music_spec)
        report = library.add_files(tracks, setup.ast())
        assert report.ok and len(report.added) == len(tracks), report.to_dict()
        _BUILT["lib"] = ServeLibrary(setup, library.root, tracks)
    return _BUILT["lib"]


def wait_ready(client: TestClient, token: str | None = API_TOKEN, timeout: float = 60.0) -> dict[str, Any]:
    """Poll /v1/ready until the server is ready (or failed); returns the last body."""
    headers = bearer(token) if token else {}
    deadline = time.monotonic() + timeout
    while True:
        response = client.get("/v1/ready", headers=headers)
        body = response.json()
        if body.get("status") != "loading" or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


@contextmanager
def ready_client(settings: ServeSettings, **client_options: Any) -> Iterator[TestClient]:
    """A TestClient with the app's lifespan running and its model loaded."""
    with TestClient(create_app(settings), **client_options) as client:
        body = wait_ready(client, settings.api_token)
        assert body["status"] == "ready", body
        yield client
