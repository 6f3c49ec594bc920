"""Shared test fixtures: paths to bundled fixtures and real media, and an offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests never touch the network: any Hugging Face lookup must resolve locally.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
PARITY = FIXTURES / "official-parity"
MEDIA_ROOT = Path(os.environ.get("MGSV_TEST_MEDIA", REPO / ".media"))


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    """The official-parity fixtures (copied from ../shared/fixtures/official-parity)."""
    return PARITY


@pytest.fixture(scope="session")
def debian_music() -> dict[str, Path]:
    """Folders of real music unpacked from Debian packages by `.ci/install-test-media`."""
    dirs = {
        "wesnoth": MEDIA_ROOT / "usr/share/games/wesnoth/1.16/data/core/music",
        "singularity": MEDIA_ROOT / "usr/share/games/singularity/music",
        "hyperrogue": MEDIA_ROOT / "usr/share/hyperrogue/music",
    }
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        message = f"real test music missing ({', '.join(missing)}); run: bash .ci/install-test-media"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return dirs
