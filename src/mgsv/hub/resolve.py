"""Resolve `hf:` checkpoint references to local folders: the one place every command and the server go through.

    folder = resolve_checkpoint("hf:OWNER/NAME@v1")          # or a local path, returned unchanged
    resolved = resolve_hub_checkpoint("hf:OWNER/NAME")       # .path (the folder) and .commit

Files come through `huggingface_hub.snapshot_download` into the Hugging Face cache (HF_HOME / HF_HUB_CACHE),
limited to the checkpoint's two files (`allow_patterns`), so a repository that also holds logs or other
checkpoints costs nothing extra. A file already cached is never downloaded again; a branch or tag is resolved to
its commit (the cache folder is `snapshots/<commit>/`, and `Resolved.commit` records it), and a full
commit hash is used without asking the Hub at all. With HF_HUB_OFFLINE=1 the cache alone answers: a reference
cached before works, one that is not cached fails with a message naming it. This module imports no torch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mgsv.hub.errors import HubError, describe_hub_error
from mgsv.hub.refs import HubRef, is_hub_ref, parse_hub_ref

log = logging.getLogger(__name__)

# The two files of an mgsv checkpoint folder (= mgsv.models.checkpoint.WEIGHTS_FILE / CONFIG_FILE; not imported
# from there because that module imports torch).
CHECKPOINT_FILES = ("model.safetensors", "config.json")


@dataclass(frozen=True)
class Resolved:
    """Where a Hub checkpoint folder (or file) lies in the cache, and the commit it came from."""

    ref: HubRef
    commit: str
    path: Path

    @property
    def pinned(self) -> HubRef:
        """The reference pinned to the resolved commit (`hf:OWNER/NAME@<sha>`): the same files forever."""
        return self.ref.at(self.commit)


def resolve_checkpoint(path_or_ref: str | os.PathLike[str]) -> Path:
    """A local checkpoint folder for `path_or_ref`: local paths unchanged, `hf:` references downloaded once."""
    if not is_hub_ref(path_or_ref):
        return Path(path_or_ref)
    return resolve_hub_checkpoint(path_or_ref).path


def resolve_hub_checkpoint(
    ref: str | os.PathLike[str] | HubRef, *, token: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Resolved:
    """Download (or find in the cache) the checkpoint at `ref` and return its folder and commit."""
    from huggingface_hub import snapshot_download

    hub_ref = ref if isinstance(ref, HubRef) else parse_hub_ref(ref)
    prefix = f"{hub_ref.path}/" if hub_ref.path else ""
    try:
        snapshot = snapshot_download(
            hub_ref.repo_id,
            repo_type="model",
            revision=hub_ref.revision,
            allow_patterns=[prefix + name for name in CHECKPOINT_FILES],
            cache_dir=cache_dir,
            endpoint=_endpoint(),
            token=token,
        )
    except Exception as exc:  # huggingface_hub and the network raise many classes; each becomes one message
        raise HubError(describe_hub_error(exc, str(hub_ref), hub_ref.page)) from exc
    folder = Path(snapshot) / hub_ref.path if hub_ref.path else Path(snapshot)
    missing = [name for name in CHECKPOINT_FILES if not (folder / name).is_file()]
    commit = Path(snapshot).name
    if missing:
        where = f"/{hub_ref.path}" if hub_ref.path else " (its root)"
        raise HubError(f"{hub_ref.at(commit)}: no {' and no '.join(missing)} at{where}; an mgsv checkpoint "
                       f"repository holds {' and '.join(CHECKPOINT_FILES)} (`mgsv push` uploads them)")
    log.info("%s -> commit %s (%s)", hub_ref, commit, folder)
    return Resolved(hub_ref, commit, folder)


def resolve_hub_file(
    ref: str | os.PathLike[str] | HubRef, *, token: str | None = None, cache_dir: str | os.PathLike[str] | None = None
) -> Resolved:
    """Download (or find in the cache) the single file `hf:OWNER/NAME[@REVISION]/PATH`."""
    from huggingface_hub import hf_hub_download

    hub_ref = ref if isinstance(ref, HubRef) else parse_hub_ref(ref)
    if not hub_ref.path:
        raise HubError(f"{hub_ref}: name the file inside the repository, e.g. {hub_ref}/model_best.pth")
    try:
        local = hf_hub_download(
            hub_ref.repo_id, hub_ref.path, repo_type="model", revision=hub_ref.revision, cache_dir=cache_dir,
            endpoint=_endpoint(), token=token,
        )
    except Exception as exc:  # see resolve_hub_checkpoint
        raise HubError(describe_hub_error(exc, str(hub_ref), hub_ref.page)) from exc
    path = Path(local)
    # The cache layout is snapshots/<commit>/<path in repo>: the commit is the folder above the path's parts.
    commit = path.parents[len(Path(hub_ref.path).parts) - 1].name
    log.info("%s -> commit %s (%s)", hub_ref, commit, path)
    return Resolved(hub_ref, commit, path)


def _endpoint() -> str | None:
    """HF_ENDPOINT as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_ENDPOINT") or None
