"""Where and how tensors run: the device, mixed precision, and ``torchrun`` process groups.

Ground layer: training, inference and evaluation all take these from here (it imports nothing
of mcgenref but :mod:`mcgenref.errors`). Torch is imported inside the functions, so importing
this module costs nothing at CLI start-up.

- :func:`resolve_device`: ``"auto"`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:N"`` -> a
  :class:`torch.device` (a bad or unavailable one is a :class:`~mcgenref.errors.ConfigError`).
- :class:`Autocast`: the one form of mixed precision. An ``Autocast`` is called to get the
  context to run a forward pass in (``with autocast(): ...``); on CPU, or with ``amp="none"``,
  it is a no-op context (fp32). Build it with :meth:`Autocast.for_device`.
- ``torchrun``: :func:`setup_distributed` joins the process group (``WORLD_SIZE`` > 1) and
  returns a :class:`Distributed` (rank, world size, local rank); :func:`share_error` lets every
  rank learn of the first rank's failure (so none waits for the others in a collective until
  the timeout); :func:`teardown_distributed` leaves the group; :func:`is_main_process` says
  whether this process is the one that writes files and shows progress (rank 0).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from mcgenref.errors import ConfigError, InputError, McGenRefError, OutputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AmpMode",
    "Autocast",
    "Distributed",
    "error_record",
    "error_from_records",
    "gather",
    "is_main_process",
    "process_group_backend",
    "rank_device",
    "resolve_device",
    "setup_distributed",
    "share_error",
    "teardown_distributed",
]

#: Mixed precision on CUDA: ``"auto"`` (bf16 where supported, else fp16), ``"bf16"``,
#: ``"fp16"`` or ``"none"`` (fp32). CPU always runs in fp32.
AmpMode = Literal["auto", "bf16", "fp16", "none"]

#: The errors a rank's failure is rebuilt as on the other ranks (by class name).
_ERROR_KINDS: dict[str, type[McGenRefError]] = {
    cls.__name__: cls for cls in (ConfigError, InputError, OutputError, McGenRefError)
}


# --------------------------------------------------------------------------- device


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` -> CUDA when available else CPU; ``"cuda"`` under torchrun -> its local GPU.

    A CUDA device is also made the current one (``torch.cuda.set_device``).

    Raises:
        ConfigError: not one of auto, cpu, cuda, cuda:N, or CUDA asked for and absent.
    """
    import torch

    text = str(device)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(text)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available (use --device cpu)")
        if resolved.index is None:
            resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    elif resolved.type != "cpu":
        raise ConfigError(f"--device {device!r}: expected auto, cpu or cuda")
    return resolved


# --------------------------------------------------------------------------- mixed precision


@dataclass(frozen=True)
class Autocast:
    """Mixed precision for one device: call it for the context a forward pass runs in.

    ``dtype`` ``None`` means fp32 (calling gives a no-op context). Losses and outputs should
    be taken ``.float()`` after the context, as every caller in the package does.
    """

    device_type: str = "cpu"
    dtype: torch.dtype | None = None

    @classmethod
    def for_device(cls, device: torch.device, amp: AmpMode = "auto") -> Autocast:
        """The precision ``amp`` asks for on ``device`` (CPU: always fp32; see :data:`AmpMode`)."""
        import torch

        if device.type != "cuda" or amp == "none":
            return cls(device.type, None)
        if amp == "fp16":
            return cls(device.type, torch.float16)
        if amp == "bf16" or torch.cuda.is_bf16_supported():
            return cls(device.type, torch.bfloat16)
        return cls(device.type, torch.float16)

    @property
    def enabled(self) -> bool:
        """True when it runs in reduced precision."""
        return self.dtype is not None

    def __call__(self) -> AbstractContextManager[Any]:
        if self.dtype is None:
            return nullcontext()
        import torch

        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


# --------------------------------------------------------------------------- torchrun


@dataclass(frozen=True)
class Distributed:
    """This process's place under ``torchrun`` (the defaults: a single process).

    ``owns_group``: :func:`setup_distributed` created the process group, so
    :func:`teardown_distributed` destroys it (a group the caller made is left alone).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes shared files and shows progress."""
        return self.rank == 0


def is_main_process() -> bool:
    """True unless this is a ``torchrun`` rank other than 0 (from the process group when one
    is joined, else from ``RANK``)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return os.environ.get("RANK", "0") == "0"


def process_group_backend(device_request: str) -> Literal["nccl", "gloo"]:
    """nccl when the work's tensors will be on CUDA (``device_request`` cuda..., or auto with a
    GPU present), else gloo."""
    import torch

    wants_cuda = device_request.startswith("cuda") or (
        device_request == "auto" and torch.cuda.is_available()
    )
    return "nccl" if wants_cuda else "gloo"


def setup_distributed(backend: Literal["nccl", "gloo"] = "gloo") -> Distributed:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (with ``backend``; a group that
    already exists is used as it is); a single process otherwise.

    gloo suits exchanging small Python objects whatever the device; tensors on CUDA need nccl
    (:func:`process_group_backend`).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return Distributed(dist.get_rank(), dist.get_world_size(), local_rank)
    dist.init_process_group(backend=backend)
    return Distributed(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def teardown_distributed(ddp: Distributed, synchronised: bool = True) -> None:
    """Leave the process group :func:`setup_distributed` made (nothing otherwise).

    ``synchronised``: every rank gets here alike (a normal end, or an error raised on all
    ranks after a collective), so the ranks first wait for each other: rank 0 hosts the
    rendezvous store and must not tear the group down while another rank still uses it (seen
    as an abort at exit on gloo). After a failure of one rank only, no rank may wait.
    """
    if not ddp.owns_group:
        return
    import torch.distributed as dist

    if synchronised:
        dist.barrier()
    dist.destroy_process_group()


def gather(obj: Any, ddp: Distributed) -> list[Any]:
    """Every rank's ``obj`` on every rank (also a barrier); ``[obj]`` without torchrun."""
    if ddp.world_size <= 1:
        return [obj]
    import torch.distributed as dist

    everyone: list[Any] = [None] * ddp.world_size
    dist.all_gather_object(everyone, obj)
    return everyone


def error_record(exc: McGenRefError | None) -> tuple[str, str] | None:
    """``(class name, message)`` of an error, to send to the other ranks; ``None`` for none."""
    return None if exc is None else (type(exc).__name__, str(exc))


def error_from_records(records: Sequence[tuple[str, str] | None]) -> McGenRefError | None:
    """The first error of the ranks' :func:`error_record` s, rebuilt (``None``: no rank failed)."""
    first = next((r for r in records if r is not None), None)
    return None if first is None else _ERROR_KINDS.get(first[0], McGenRefError)(first[1])


def share_error(error: McGenRefError | None, ddp: Distributed) -> McGenRefError | None:
    """This rank's own error, else the first other rank's (a collective: every rank calls it,
    failed or not). Some checks run on rank 0 only (the output folder): every rank must learn
    of their failure, or the others would wait for rank 0 in the next collective until the
    timeout."""
    records = gather(error_record(error), ddp)  # also by a rank that failed: no short cut
    return error or error_from_records(records)


def rank_device(device: str, ddp: Distributed) -> str:
    """Under torchrun each rank takes its own GPU (``cuda:LOCAL_RANK``) for auto / cuda."""
    if ddp.world_size > 1 and device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return f"cuda:{ddp.local_rank}"
    return device
