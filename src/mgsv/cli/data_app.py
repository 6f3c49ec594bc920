"""The shared `mgsv data` command group; modules that add data commands import `data_app` from here."""

from __future__ import annotations

import typer

from mgsv.cli import app

data_app = typer.Typer(
    help="Datasets: download and import MGSV-EC, re-draw val/test splits.",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")
