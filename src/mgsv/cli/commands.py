"""Imports every command module so that each registers its commands on the app."""

# One line per command module; keep alphabetical.
from mgsv.cli import data  # noqa: F401
from mgsv.cli import data_split  # noqa: F401
from mgsv.cli import data_synthetic  # noqa: F401
from mgsv.cli import demo  # noqa: F401
from mgsv.cli import extract  # noqa: F401
from mgsv.cli import ground  # noqa: F401
from mgsv.cli import library  # noqa: F401
from mgsv.cli import models  # noqa: F401
from mgsv.cli import render  # noqa: F401
from mgsv.cli import score  # noqa: F401
from mgsv.cli import serve  # noqa: F401
from mgsv.cli import train  # noqa: F401
