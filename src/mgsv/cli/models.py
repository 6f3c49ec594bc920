"""`mgsv models` (the model presets and their sizes) and `mgsv convert` (official MaDe checkpoint -> ours)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mgsv.cli import app


@app.command("models")
def models_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets as JSON on stdout.")] = False,
    params: Annotated[bool, typer.Option(
        "--params", help="Compare parameter counts (encoders excluded) with the MGSV paper's Table 4.")] = False,
) -> None:
    """List the model presets with their parameter counts per module group."""
    from mgsv.models.registry import count_preset_parameters, list_presets

    if params:
        _print_parameter_table(as_json)
        return

    from mgsv.training.recipe import recipe_for

    rows = []
    for preset in list_presets():
        rows.append({
            "name": preset.name,
            "description": preset.description,
            "parameters": count_preset_parameters(preset),
            "learning_rates": dict(recipe_for(preset.name).lr),
        })
    if as_json:
        typer.echo(json.dumps({"presets": rows}, indent=2))
        return
    table = Table(title="Model presets (parameters)", title_justify="left", show_edge=False)
    table.add_column("preset", no_wrap=True)
    for name in ("enhancement", "matching", "detection", "total"):
        table.add_column(name, justify="right", no_wrap=True)
    for row in rows:
        counts = row["parameters"]
        groups = ("enhancement", "matching", "detection", "total")
        table.add_row(row["name"], *(f"{counts.get(k, 0):,}" for k in groups))
    console = Console()
    console.print(table)
    for row in rows:
        console.print(f"[bold]{row['name']}[/]: {row['description']}", highlight=False)


def _print_parameter_table(as_json: bool) -> None:
    """Ours vs the paper's Table 4, with and without the official modules only untrained losses use."""
    from mgsv.models.baselines.table4 import parameter_rows

    rows = parameter_rows()
    if as_json:
        typer.echo(json.dumps({"parameters": rows}, indent=2))
        return
    table = Table(title="Parameters (encoders excluded) vs the MGSV paper's Table 4", title_justify="left",
                  show_edge=False)
    for name, justify in (("system", "left"), ("ours", "right"), ("paper", "right"), ("gap", "right"),
                          ("+ omitted", "right"), ("gap", "right")):
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(row["name"], f"{row['ours'] / 1e6:.2f}M", f"{row['paper_m']:.1f}M", f"{row['gap']:+.1%}",
                      f"{row['ours_with_omitted'] / 1e6:.2f}M", f"{row['gap_with_omitted']:+.1%}")
    console = Console()
    console.print(table)
    console.print("'+ omitted' adds the official modules a preset leaves out because only losses it does not train "
                  "use them (saliency heads, UVCOM's similarity MLPs, TR-DETR's MR2HD GRU; docs/baselines.md). "
                  "The composite's paper value is the sum of its two rows.", highlight=False)


@app.command("convert")
def convert_command(
    official: Annotated[Path, typer.Argument(
        help="Official MaDe checkpoint (.pth / pytorch_model.bin.*), or one on the Hub: hf:OWNER/NAME[@REV]/PATH.")],
    out: Annotated[Path, typer.Argument(help="Checkpoint folder to write (model.safetensors + config.json).")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Config field the weights cannot reveal, KEY=VALUE (e.g. query=music). Repeatable."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Unpickle arbitrary objects (only for files you trust).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")] = False,
) -> None:
    """Convert an official MaDe checkpoint into an mgsv checkpoint folder.

    Widths and layer counts are read from the tensor shapes; frozen CLIP / AST weights and a DDP `module.` prefix
    are dropped. The official feature specs (CLIP ViT-B/32 at 1 fps, AST every 2.5 s) are recorded.
    """
    from mgsv.errors import OutputExistsError
    from mgsv.features.spec import DEFAULT_SPECS
    from mgsv.hub.resolve import is_hub_ref, resolve_hub_file
    from mgsv.models.checkpoint import save_checkpoint
    from mgsv.models.made import MaDeConfig
    from mgsv.models.official_keys import model_from_official, read_official_state_dict
    from mgsv.models.registry import parameter_counts
    from mgsv.training.overrides import parse_model_overrides

    if out.exists() and not force:
        raise OutputExistsError(f"{out}: already exists (use --force to replace it)")
    origin = official.name
    if is_hub_ref(official):  # pulled into the Hugging Face cache first; the pinned reference is recorded
        resolved = resolve_hub_file(official)
        official, origin = resolved.path, str(resolved.pinned)
    state, extras = read_official_state_dict(official, allow_pickle=allow_pickle)
    model, dropped = model_from_official(state, where=str(official), **parse_model_overrides(MaDeConfig, overrides or []))
    metadata = {"source": "official xxayt/MGSV checkpoint", "converted_from": origin,
                "frozen_encoder_tensors_dropped": dropped, **{f"official_{k}": v for k, v in extras.items()}}
    save_checkpoint(model, out, preset="made", feature_specs={k: v.to_dict() for k, v in DEFAULT_SPECS.items()},
                    metadata=metadata, overwrite=force)
    summary = {"checkpoint": str(out), "preset": "made", "config": model.config.to_dict(),
               "parameters": parameter_counts(model), "metadata": metadata}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    else:
        Console().print(
            f"wrote [bold]{out}[/] (d={model.config.dim}, {summary['parameters']['total']:,} parameters, "
            f"{dropped} frozen encoder tensors dropped)", highlight=False)
