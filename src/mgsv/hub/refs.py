"""`hf:` references to model repositories on the Hugging Face Hub.

    hf:OWNER/NAME                       the checkpoint at the root of the repository, default branch
    hf:OWNER/NAME@REVISION              at a branch, tag or commit (refs/pr/N for a pull request)
    hf:OWNER/NAME[@REVISION]/PATH       a sub-folder (a checkpoint) or a file (`mgsv convert`) inside it

`hf://` is accepted as well. The grammar is the one of huggingface_hub's `hf://` URIs (revision before the path,
so a path may hold any character); it is parsed here because `huggingface_hub.utils.parse_hf_uri` exists only in
recent releases of the library, newer than the oldest this project supports. Only model repositories hold
checkpoints, so a `datasets/` or `spaces/` prefix is refused with a clear message.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from mgsv.errors import InputError

# "hf:/" is "hf://" after pathlib (CLI options typed Path) collapsed the double slash.
PREFIXES = ("hf://", "hf:/", "hf:")
# Revisions that contain a "/" (pull requests, conversions), as huggingface_hub's URI parser recognises them.
_SLASHED_REVISION = re.compile(r"^refs/(?:pr/\d+|convert/[\w.-]+)")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_OTHER_REPO_TYPES = ("datasets", "spaces", "kernels", "buckets")


@dataclass(frozen=True)
class HubRef:
    """A parsed `hf:` reference: repository, revision (None: the default branch) and a path inside it."""

    repo_id: str
    revision: str | None = None
    path: str = ""

    def __str__(self) -> str:
        text = f"hf:{self.repo_id}"
        if self.revision:
            text += f"@{self.revision}"
        return f"{text}/{self.path}" if self.path else text

    @property
    def is_pinned(self) -> bool:
        """True when the revision is a full commit hash (immutable)."""
        return bool(self.revision and _COMMIT.match(self.revision))

    def at(self, commit: str) -> HubRef:
        """The same reference pinned to `commit`."""
        return HubRef(self.repo_id, commit, self.path)

    @property
    def page(self) -> str:
        """The repository's page on the Hub (for messages)."""
        from huggingface_hub import constants

        endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
        return f"{endpoint.rstrip('/')}/{self.repo_id}"


def is_hub_ref(value: object) -> bool:
    """True for a string / path that starts with `hf:` (a local folder of that name needs a `./` in front)."""
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).startswith(PREFIXES)


def parse_hub_ref(value: str | os.PathLike[str]) -> HubRef:
    """Parse `hf:OWNER/NAME[@REVISION][/PATH]`; a malformed reference raises InputError naming it."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    text = os.fspath(value)
    prefix = next((p for p in PREFIXES if text.startswith(p)), None)
    if prefix is None:
        raise InputError(text, "not a Hub reference (expected hf:OWNER/NAME[@REVISION])")
    body = text[len(prefix):]
    owner, _, rest = body.partition("/")
    if owner in _OTHER_REPO_TYPES:
        raise InputError(text, f"only model repositories hold checkpoints; drop the {owner}/ prefix")
    if owner == "models":
        owner, _, rest = rest.partition("/")
    # NAME ends at the first "@" (a revision follows) or "/" (a path follows, no revision).
    cut = min((i for i in (rest.find("@"), rest.find("/")) if i >= 0), default=len(rest))
    name, separator, after = rest[:cut], rest[cut:cut + 1], rest[cut + 1:]
    if not owner or not name:
        raise InputError(text, "expected hf:OWNER/NAME[@REVISION][/PATH]")
    revision: str | None = None
    path = after if separator == "/" else ""
    if separator == "@":
        special = _SLASHED_REVISION.match(after)
        if special:
            revision, path = special.group(0), after[special.end():]
        else:
            revision, _, path = after.partition("/")
        if not revision:
            raise InputError(text, "empty revision after '@'")
    repo_id = f"{owner}/{name}"
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InputError(text, f"invalid repository id {repo_id!r}: {exc}") from exc
    path = path.strip("/")
    if path and any(part in ("", ".", "..") for part in path.split("/")):
        raise InputError(text, f"invalid path inside the repository: {path!r}")
    return HubRef(repo_id, revision, path)
