"""`mgsv push`: upload a checkpoint (weights, config, a generated model card) to a model repository on the Hub.

    source = find_push_source(Path("runs/made"))               # a run folder or a checkpoint folder
    result = push_checkpoint(source, "alice/made-mgsv-ec")     # -> commit, URL, the pinned hf: reference

The checkpoint is loaded first (as every command would load it), so a damaged one is refused before anything is
sent. A run folder gives its selected checkpoint (the one `mgsv eval RUN` picks) and its recipe (run.json); the
test metrics are the metrics.json `mgsv eval --split test` wrote beside the run (or `--metrics FILE`), checked to
be of this checkpoint and of the test split. The upload is one commit made with huggingface_hub's `create_repo`
(`exist_ok`), `create_branch` (for `branch`) and `create_commit`; the token is the one given, else HF_TOKEN or the
one `hf auth login` saved. This module sits above `mgsv.models` (it loads the checkpoint to validate it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgsv.errors import InputError
from mgsv.hub.errors import LOGIN_HINT, HubError, describe_hub_error
from mgsv.hub.resolve import CHECKPOINT_FILES
from mgsv.publish.card import DATASET_ID, CardInputs, build_model_card

README = "README.md"


@dataclass
class PushSource:
    """A checkpoint to push with what its card is made of."""

    checkpoint: Path
    card: CardInputs
    metrics_path: Path | None


@dataclass
class PushResult:
    """Where the checkpoint went."""

    repo_id: str
    branch: str
    commit: str
    commit_url: str
    files: list[str]

    @property
    def ref(self) -> str:
        """The pinned reference every command accepts: `hf:OWNER/NAME@<commit>`."""
        return f"hf:{self.repo_id}@{self.commit}"

    def to_dict(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "branch": self.branch, "commit": self.commit, "commit_url": self.commit_url,
                "ref": self.ref, "files": self.files}


def find_push_source(
    run_or_checkpoint: str | os.PathLike[str], checkpoint_name: str | None = None,
    metrics_path: str | os.PathLike[str] | None = None, repo_id: str = "OWNER/NAME",
) -> PushSource:
    """The checkpoint of a run (or a checkpoint folder), loaded to validate it, and its card's inputs."""
    from mgsv.evaluation.runner import resolve_target
    from mgsv.models.checkpoint import load_checkpoint

    path = Path(run_or_checkpoint)
    run: dict[str, Any] | None = None
    if (path / "config.json").is_file():
        if checkpoint_name is not None:
            raise InputError(path, "--checkpoint picks a checkpoint of a run; this is already a checkpoint folder")
        checkpoint = path
        run_file = path.parent.parent / "run.json"  # a checkpoint of a run (RUN/checkpoints/NAME): its recipe
        if path.parent.name == "checkpoints" and run_file.is_file():
            run = _read_json(run_file)
    else:
        checkpoint = resolve_target(path, None, checkpoint_name).checkpoint  # a run folder, or a clear error
        run = _read_json(path / "run.json")
    model, info = load_checkpoint(checkpoint)
    parameters = sum(p.numel() for p in model.parameters())
    metrics_file = Path(metrics_path) if metrics_path else _default_metrics(checkpoint)
    metrics = _check_metrics(metrics_file, checkpoint) if metrics_file else None
    card = CardInputs(
        repo_id=repo_id, preset=info.preset, model_config=info.config.to_dict(), feature_specs=info.feature_specs,
        mgsv_version=info.mgsv_version, checkpoint_name=checkpoint.name, checkpoint_metadata=info.metadata,
        parameters=parameters, run=run, metrics=metrics, dataset_revision=_dataset_commit(run),
    )
    return PushSource(checkpoint, card, metrics_file)


def push_checkpoint(
    source: PushSource, repo_id: str, *, private: bool = False, branch: str | None = None,
    token: str | None = None, commit_message: str | None = None,
) -> PushResult:
    """Create the repository if needed and commit model.safetensors, config.json and the model card in one go."""
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if "/" not in repo_id:
        raise InputError(repo_id, "expected OWNER/NAME (your user name or an organisation, then the model's name)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise InputError(repo_id, f"invalid repository id: {exc}") from exc
    if not (token or get_token()):
        raise HubError(f"hf:{repo_id}: pushing needs a Hugging Face token with write access; {LOGIN_HINT}")
    source.card.repo_id = repo_id
    card = build_model_card(source.card)
    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    page = f"{api.endpoint.rstrip('/')}/{repo_id}"
    what = f"hf:{repo_id}" + (f"@{branch}" if branch else "")
    operations = [CommitOperationAdd(name, str(source.checkpoint / name)) for name in CHECKPOINT_FILES]
    operations.append(CommitOperationAdd(README, card.encode("utf-8")))
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if branch:
            api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
        commit = api.create_commit(
            repo_id, operations, repo_type="model", revision=branch,
            commit_message=commit_message or f"mgsv push: {source.card.preset} checkpoint {source.checkpoint.name}",
        )
    except Exception as exc:  # huggingface_hub and the network raise many classes; each becomes one message
        raise HubError(describe_hub_error(exc, what, page)) from exc
    return PushResult(repo_id, branch or "main", commit.oid, commit.commit_url,
                      [*CHECKPOINT_FILES, README])


def _default_metrics(checkpoint: Path) -> Path | None:
    """Where `mgsv eval RUN --split test` writes this checkpoint's metrics by default, if it did."""
    candidate = checkpoint.parent.parent / f"eval-test-{checkpoint.name}" / "metrics.json"
    return candidate if candidate.is_file() else None


def _check_metrics(path: Path, checkpoint: Path) -> dict[str, Any]:
    """metrics.json of this checkpoint on the test split, or a clear error."""
    data = _read_json(path)
    if "checkpoint" not in data:
        raise InputError(path, "not the metrics of a single checkpoint (a composite system's, or not mgsv eval's)")
    measured = Path(data["checkpoint"])
    same = measured.resolve() == checkpoint.resolve() or (
        measured.name == checkpoint.name and path.parent.parent.resolve() == checkpoint.parent.parent.resolve())
    if not same:
        raise InputError(path, f"metrics of {measured}, not of the checkpoint being pushed ({checkpoint})")
    if data.get("split") != "test":
        raise InputError(path, f"metrics of the {data.get('split')!r} split; the model card shows test metrics "
                               f"(mgsv eval ... --split test)")
    if not isinstance(data.get("metrics"), dict):
        raise InputError(path, "no \"metrics\" object")
    return data


def _dataset_commit(run: dict[str, Any] | None) -> str | None:
    """The MGSV-EC commit the run's data folder came from (`mgsv data fetch` records it in source.json)."""
    if run is None or not run.get("data_dir"):
        return None
    source = Path(run["data_dir"]) / "source.json"
    if not source.is_file():
        return None
    data = _read_json(source)
    return str(data["commit"]) if data.get("repo_id") == DATASET_ID and data.get("commit") else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise InputError(path, "missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data
