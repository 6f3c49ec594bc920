"""`mgsv push`: a trained checkpoint (with its model card) to a model repository on the Hugging Face Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from mgsv.cli import app


@app.command("push")
def push_command(
    run_or_checkpoint: Annotated[Path, typer.Argument(help="A run folder (run.json) or a checkpoint folder.")],
    repo: Annotated[str, typer.Option("--repo", help="Model repository OWNER/NAME (created if it does not exist).")],
    checkpoint: Annotated[
        str | None, typer.Option("--checkpoint", help="Checkpoint of the run (default: the one `mgsv eval` picks).")
    ] = None,
    metrics: Annotated[
        Path | None,
        typer.Option("--metrics", help="metrics.json of `mgsv eval --split test` (default: the run's "
                                       "eval-test-<checkpoint>/metrics.json, if present)."),
    ] = None,
    private: Annotated[bool, typer.Option("--private", help="Create the repository private (a new one only).")] = False,
    branch: Annotated[
        str | None, typer.Option("--branch", "--revision", help="Branch to commit to (created from main if new).")
    ] = None,
    token: Annotated[
        str | None,
        typer.Option("--token", help="Token with write access (default: HF_TOKEN or the one `hf auth login` saved)."),
    ] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Upload model.safetensors, config.json and a generated model card (README.md) in one commit.

    The card holds the Hub's metadata header (licence, dataset, model-index with the test metrics), the test metrics
    beside the paper's, the feature specs and encoder ids, the training recipe, what MGSV-EC's licence means for
    the weights, and the citation. Prints the commit; `hf:OWNER/NAME@<commit>` then loads exactly these files.
    """
    from mgsv.publish.push import find_push_source, push_checkpoint

    source = find_push_source(run_or_checkpoint, checkpoint, metrics, repo_id=repo)
    result = push_checkpoint(source, repo, private=private, branch=branch, token=token, commit_message=message)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "checkpoint": str(source.checkpoint),
                               "metrics": str(source.metrics_path) if source.metrics_path else None}))
        return
    console = Console()
    if source.metrics_path is None:
        console.print("[yellow]no test metrics found: the card says so; run `mgsv eval RUN --split test` and push "
                      "again to show them[/]", highlight=False)
    console.print(f"pushed {escape(str(source.checkpoint))} to {escape(result.commit_url)}", highlight=False,
                  soft_wrap=True)
    console.print(f"use it as {escape(result.ref)} (pinned) or hf:{escape(repo)}", highlight=False, soft_wrap=True)
