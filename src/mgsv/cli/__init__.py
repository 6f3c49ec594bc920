"""The `mgsv` console script.

The CLI is thin: each command module parses options, calls the Python API and prints. Command modules register
themselves on `app` when imported below; heavy libraries (torch, av, transformers) are imported inside commands so
that `mgsv --help` stays fast.
"""

from __future__ import annotations

import logging
import sys

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape

from mgsv import __version__
from mgsv.errors import MgsvError

app = typer.Typer(
    name="mgsv",
    help="Music grounding by short video: rank music tracks for a video and find the moment to use.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mgsv {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages."),
    version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, show_time=False)],
        force=True,
    )


# Command modules: each adds its commands to `app` on import.
from mgsv.cli import commands as _commands  # noqa: F401


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `mgsv` script: user errors become one message and a non-zero exit code."""
    try:
        app(args=argv, prog_name="mgsv")
    except MgsvError as exc:
        from mgsv.cli.common import for_cli

        err_console.print(f"[bold red]error:[/] {escape(for_cli(str(exc)))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted[/]")
        sys.exit(130)
