"""Checkpoints on the Hugging Face Hub: `hf:` references (`refs`, `resolve`), uploads (`push`), model cards (`card`).

`refs`, `resolve` and `errors` import no torch and sit below `mgsv.models` (the checkpoint loader calls
`resolve_checkpoint`); `push` validates checkpoints with `mgsv.models.checkpoint` and so sits above it.
"""

from mgsv.hub.errors import HubError
from mgsv.hub.refs import HubRef, is_hub_ref, parse_hub_ref
from mgsv.hub.resolve import resolve_checkpoint, resolve_hub_checkpoint, resolve_hub_file

__all__ = [
    "HubError",
    "HubRef",
    "is_hub_ref",
    "parse_hub_ref",
    "resolve_checkpoint",
    "resolve_hub_checkpoint",
    "resolve_hub_file",
]
