"""One sentence for every way a Hugging Face Hub call fails, shared by downloads, checkpoint refs and uploads.

huggingface_hub turns the Hub's answers into exception classes from the status code and the `X-Error-Code` /
`X-Error-Message` headers (`huggingface_hub.utils.hf_raise_for_status`): `GatedRepo` -> GatedRepoError (401 when
no token was sent, 403 when the token's owner has not been granted access), `RepoNotFound` (and a bare 401 on a
repository API route) -> RepositoryNotFoundError, `RevisionNotFound`, `EntryNotFound`. This module maps those
classes, connection failures and offline mode to messages that say what to do; docs/hub.md lists them.
"""

from __future__ import annotations

from mgsv.errors import MgsvError

OFFLINE_HINT = (
    "if you have no network, files already in the Hugging Face cache are used with HF_HUB_OFFLINE=1; "
    "a mirror can be set with HF_ENDPOINT"
)
LOGIN_HINT = "log in with `hf auth login`, set HF_TOKEN, or pass --token"


class HubError(MgsvError):
    """The Hub could not be reached, refused the request, or does not hold what was asked for."""


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _server_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return (headers.get("X-Error-Message") or "") if headers is not None else ""


def gated_message(what: str, page: str, status: int | None) -> str:
    """What to do about a gated repository: log in (401) or request access on its page (403)."""
    if status == 403:
        return (f"{what}: access to this gated repository has not been granted to your account (yet); request it "
                f"on {page} (the authors approve requests by hand) and run the command again once approved")
    return (f"{what}: the repository is gated: request access on {page}, then {LOGIN_HINT} "
            "(no token was sent, or it was not accepted)")


def describe_hub_error(exc: BaseException, what: str, page: str) -> str:
    """One sentence for a Hub / network failure of `what` (a ref or repo/file@revision); `page` is the repo URL."""
    from huggingface_hub import errors

    kind = type(exc).__name__
    status = _status(exc)
    if isinstance(exc, errors.GatedRepoError):
        return gated_message(what, page, status)
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{what}: repository not found on the Hub (or it is private: {LOGIN_HINT})"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{what}: the repository has no such revision (branch, tag or commit)"
    if isinstance(exc, errors.OfflineModeIsEnabled) or (
        isinstance(exc, errors.LocalEntryNotFoundError) and _offline()
    ):
        return (f"{what}: not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids downloading it; "
                "run once with network access (unset HF_HUB_OFFLINE) to cache it")
    if isinstance(exc, errors.LocalEntryNotFoundError) or _is_network_error(exc):
        return f"{what}: not in the local cache and the Hub cannot be reached ({kind}); {OFFLINE_HINT}"
    if isinstance(exc, errors.EntryNotFoundError):
        return f"{what}: no such file in the repository"
    if status == 401:
        return f"{what}: the Hub did not accept the token ({_server_message(exc) or 'unauthorized'}); {LOGIN_HINT}"
    if status == 403:
        return (f"{what}: the Hub refused ({_server_message(exc) or 'forbidden'}); the token needs write access "
                "to this namespace (a fine-grained token must list it)")
    return f"{what}: request to the Hub failed ({kind}: {exc}); {OFFLINE_HINT}"


# huggingface_hub >= 1.0 raises httpx's exception classes, older releases requests'; neither derives from the
# builtin ConnectionError, so they are recognised by the names in their class hierarchy.
_NETWORK_CLASSES = frozenset({"ConnectionError", "TransportError", "TimeoutException", "Timeout"})


def _is_network_error(exc: BaseException) -> bool:
    return any(cls.__name__ in _NETWORK_CLASSES for cls in type(exc).__mro__)


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())
