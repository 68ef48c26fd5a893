"""Swin stages in micro-batches of images in CPU inference; :func:`~.cpu_packing.pack_cpu_weights` switches it on.

Every operation of a Swin stage works within one image, so a stage may run a batch a few images at a time and give
the same numbers (bit for bit, measured). At the released RAM size, batch 8, the first stage's activations are
57 MB per tensor (the shifted-window mask of its attention 255 MB): every one is a fresh block from the operating
system, faulted in page by page, larger than the 32 MB L3 cache. One image at a time they are 7 MB and reused.
Per stage, measured on RAM's Swin-L at 384 px, batch 8 (best of 5, alternating, bit-identical): stage 1 1.68 s ->
1.23 s one image at a time, stage 2 0.95 s -> 0.87 s two at a time, stage 3 6.86 s -> 6.53 s four at a time, while
stage 4 is 14% slower one image at a time as its rows get few.

A stage gets as many images at a time as keep its largest activation (the MLP's, tokens x mlp width, float32) within
``STAGE_MICRO_BATCH_BYTES``. The stage stays transformers' module with the same parameters and state-dict keys: its
class becomes :class:`MicroBatchedSwinStage`, a subclass that only splits the batch, and goes back with
:func:`~.cpu_packing.unpack_cpu_weights`.
"""

from __future__ import annotations

import torch
from transformers.models.swin.modeling_swin import SwinStage

from .modeling_tag2text_text import cpu_inference

# glibc reuses freed blocks up to its largest mmap threshold, 32 MB; larger ones go back to the operating system.
# RAM's whole tower at batch 8, best of rounds alternating in one process, two runs: the batch at once 10.25 s, within
# 16 MB 9.48 s (stages 3 and 4 get fewer images at a time), within 32 MB 9.13 s; the batch at once 10.86 s, within
# 24 MB 9.95 s, within 32 MB 9.73 s, within 64 MB 10.18 s. (Tag2Text's own model-level micro-batches,
# CPU_MICRO_BATCH_BYTES in modeling_tag2text, are a separate measurement.)
STAGE_MICRO_BATCH_BYTES = 32 * 2**20


class MicroBatchedSwinStage(SwinStage):
    """transformers' ``SwinStage`` that runs a few images at a time in CPU inference (see the module docstring)."""

    def forward(self, hidden_states, *args, **kwargs):
        images = self.images_per_call(hidden_states)
        if not cpu_inference(self, hidden_states) or hidden_states.shape[0] <= images:
            return super().forward(hidden_states, *args, **kwargs)
        outputs = [super(MicroBatchedSwinStage, self).forward(piece, *args, **kwargs)
                   for piece in hidden_states.split(images)]
        return tuple(_join(values) for values in zip(*outputs))

    def images_per_call(self, hidden_states: torch.Tensor) -> int:
        tokens, width = hidden_states.shape[1], hidden_states.shape[2]
        mlp_width = int(float(getattr(getattr(self, "config", None), "mlp_ratio", 4.0)) * width)
        return max(1, STAGE_MICRO_BATCH_BYTES // (tokens * mlp_width * hidden_states.element_size()))


def _join(values):
    """One output of the stage from its micro-batches: tensors (batch first: hidden states, reshaped hidden states,
    attention weights) are concatenated; anything else (None, the output size) is the same for every piece."""
    if all(isinstance(value, torch.Tensor) for value in values):
        return torch.cat(values)
    if any(value != values[0] for value in values[1:]):
        raise RuntimeError(f"a Swin stage gave different non-tensor outputs for its micro-batches: {values}")
    return values[0]


def micro_batch_swin_stages(tower: torch.nn.Module, enable: bool) -> None:
    """Make every ``SwinStage`` of ``tower`` a :class:`MicroBatchedSwinStage` (``enable``) or a plain one again."""
    for module in tower.modules():
        if enable and type(module) is SwinStage:
            module.__class__ = MicroBatchedSwinStage
        elif not enable and type(module) is MicroBatchedSwinStage:
            module.__class__ = SwinStage
