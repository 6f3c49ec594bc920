"""Every option of `mgsv ground` exists on the server, under the same key: as a field of POST /v1/ground, a flag
of `mgsv serve` (the service's settings), or a field of POST /v1/render. Options are keys of the grounding
service's own options (`mgsv.search.GroundOptions`, `TrackFilter`, `SearchOptions`), so a message naming one
(`top`) can be shown by each front door under its own name (--top / top)."""

from __future__ import annotations

import dataclasses

import typer.main

from mgsv.cli import app
from mgsv.cli.common import for_cli, option_flags
from mgsv.errors import OptionError, name_options
from mgsv.search import GroundOptions, SearchOptions, TrackFilter
from mgsv.serve.schemas import GroundForm, RenderRequest

# Options that have no server counterpart, and why.
NOT_ON_THE_SERVER = {
    "videos": "the video is the request's upload",
    "render": "rendering is its own endpoint, POST /v1/render",
    "force": "the server renders into its private folder and never overwrites a file of the user's",
    "json_output": "the API always answers JSON",
}
SEARCH_FIELDS = {"candidates": "candidates", "index": "index", "faiss_factory": "faiss_factory",
                 "index_memory": "memory"}  # option key -> SearchOptions field


def params(command: str) -> dict[str, object]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def test_every_ground_option_is_on_the_server() -> None:
    ground, serve = params("ground"), params("serve")
    request_fields, render_fields = set(GroundForm.model_fields), set(RenderRequest.model_fields)
    missing = {name for name in ground
               if name not in request_fields | set(serve) | render_fields | set(NOT_ON_THE_SERVER)}
    assert not missing, f"mgsv ground options the server lacks: {sorted(missing)}"
    assert set(NOT_ON_THE_SERVER) <= set(ground), "exemptions must name real options"


def test_server_fields_are_the_service_option_keys() -> None:
    service = {f.name for f in dataclasses.fields(GroundOptions)} - {"filters"}
    service |= {f.name for f in dataclasses.fields(TrackFilter)}
    assert set(GroundForm.model_fields) == service
    ground = params("ground")
    assert service <= set(ground), "the command line names the same options by the same keys"
    serve = params("serve")
    assert set(SEARCH_FIELDS) <= set(serve) and set(SEARCH_FIELDS) <= set(ground)
    assert set(SEARCH_FIELDS.values()) == {f.name for f in dataclasses.fields(SearchOptions)}
    assert {"precision", "device", "clip", "dtype", "encoder_id"} <= set(serve)


def test_a_key_names_one_flag_everywhere() -> None:
    group = typer.main.get_command(app)
    seen: dict[str, set[str]] = {}

    def walk(command: object) -> None:
        for param in getattr(command, "params", []):
            flags = [o for o in param.opts if o.startswith("--")]
            if flags:
                seen.setdefault(param.name, set()).add(flags[0])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(group)
    clashes = {key: flags for key, flags in seen.items() if len(flags) > 1}
    assert not clashes, clashes
    assert option_flags()["window_start"] == "--window" and option_flags()["licences"] == "--licence"


def test_each_front_door_names_an_option_its_own_way() -> None:
    error = OptionError("top", "must be a whole number >= 1, got 0")
    assert str(error) == "`top`: must be a whole number >= 1, got 0"
    assert for_cli(str(error)) == "--top: must be a whole number >= 1, got 0"
    assert name_options(str(error)) == "top: must be a whole number >= 1, got 0"
    # Keys the command line does not know, and commands in backquotes, are left as written.
    assert for_cli("add some with `mgsv library add`") == "add some with `mgsv library add`"
