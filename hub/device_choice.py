"""Which device a process uses and whether its DataLoader pins memory: pure decisions, so that they can be
checked on a machine without the accelerator they are about.

The callers read the facts (the launch's world size and local rank, whether torch sees an accelerator) and
pass them in; nothing here imports torch.
"""

from __future__ import annotations


def process_device(requested: str, world_size: int, local_rank: int) -> str:
    """The device name one process of a launch uses.

    A plain ``cuda`` under a launch of several processes (``torchrun``, ``accelerate launch``) becomes
    ``cuda:LOCAL_RANK``: one process per GPU of its machine, as torchrun numbers them. An explicit ``cuda:N``,
    ``cpu`` or ``mps`` is kept as given, and a single process keeps plain ``cuda`` (the current device).
    """
    if requested == "cuda" and world_size > 1:
        return f"cuda:{local_rank}"
    return requested


def pin_batches(device_type: str) -> bool:
    """Whether a DataLoader feeding a model on ``device_type`` should pin its batches.

    Pinned (page-locked) host memory lets a CUDA copy run asynchronously (``non_blocking=True``); without a
    CUDA device torch ignores the request with a warning, so it is asked for on CUDA only.
    """
    return device_type == "cuda"

