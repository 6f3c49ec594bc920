"""Which torch device a command runs on: `--device auto|cpu|cuda|cuda:N|mps` parsed in one place.

Every front door (train, eval, extract, library add, ground, serve, reproduce) passes its `device` option here, so
"auto" means the same everywhere (the first CUDA GPU when torch sees one, else the CPU) and a device the machine does
not have is refused with one message before any model or file is loaded. torch is imported inside the functions:
this module sits below the packages that use it (docs/architecture.md, "Layers").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mgsv.errors import MgsvError, OptionError

if TYPE_CHECKING:
    import torch

AUTO = "auto"
HELP = "auto (CUDA if available, else CPU), cpu, cuda or cuda:N."


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device `device` names ("auto": cuda if available, else cpu); OptionError for one this machine lacks.

    CUDA is checked here rather than left to fail deep inside torch: `--device cuda` on a machine without it says so.
    """
    import torch

    if isinstance(device, str) and device.strip().lower() == AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise OptionError("device", f"not a torch device: {device!r} (use {HELP[:-1]})") from exc
    name = str(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(name, "CUDA", _why_no_cuda())
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise DeviceUnavailableError(name, f"cuda:{resolved.index}", f"this machine has {count} CUDA device(s): "
                                                                f"cuda:0 to cuda:{count - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(name, "MPS", "torch sees no Apple GPU")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise OptionError("device", f"unsupported device {name!r}: use {HELP[:-1]}")
    return resolved


def device_name(device: str | torch.device) -> str:
    """`resolve_device` as the string the library's options hold ("cpu", "cuda", "cuda:1")."""
    return str(resolve_device(device))


class DeviceUnavailableError(OptionError):
    """A device this machine does not have; the message names the option and its value: "`device` cuda: ..."
    reads "--device cuda: ..." on the command line (mgsv.errors.name_options)."""

    def __init__(self, name: str, what: str, why: str) -> None:
        self.field, self.where, self.line = "device", "`device`", None
        self.problem = f"{what} is not available on this machine ({why})"
        MgsvError.__init__(self, f"`device` {name}: {self.problem}")


def _why_no_cuda() -> str:
    import torch

    if not torch.backends.cuda.is_built():
        return f"torch {torch.__version__} is built without CUDA"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU"


def is_cuda(device: str | torch.device) -> bool:
    """True for a CUDA device (where host memory is pinned and copies are asynchronous)."""
    import torch

    return torch.device(device).type == "cuda"


def synchronize(device: str | torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously: timings and progress need it); no-op on CPU."""
    import torch

    if is_cuda(device):
        torch.cuda.synchronize(device)


def to_device(tensor: torch.Tensor, device: str | torch.device) -> torch.Tensor:
    """`tensor` on `device`; host memory is pinned first on CUDA so that the copy runs beside the compute."""
    if is_cuda(device) and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)

