"""Training objectives: the loss weights of a run (``--loss-weights``) and the ITC/ITM functions.

The losses themselves are computed by :class:`~tag2text.modeling_tag2text_pretraining.Tag2TextForPreTraining`
in its forward: tagging (asymmetric loss, summed as released), the label-smoothed LM loss, and ITC/ITM as BLIP
(features gathered from every process *with gradients*, one hard negative text per image and one hard negative
image per text drawn from the ITC similarities). This module re-exports those functions for training code and
adds :meth:`LossWeights.parse` for the command line.
"""

from __future__ import annotations

import dataclasses
import logging

from ..modeling_tag2text_pretraining import (  # noqa: F401  (re-exported)
    LOSS_COMPONENTS,
    TAG_LOSS_SCALES,
    ContrastiveOutput,
    MatchingOutput,
    Tag2TextLossWeights,
    distributed_world,
    gather_no_grad,
    gather_sizes,
    gather_with_grad,
    image_text_contrastive_loss,
    image_text_matching_loss,
    positive_mask,
    sample_hard_negatives,
)

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class LossWeights(Tag2TextLossWeights):
    """:class:`~tag2text.modeling_tag2text_pretraining.Tag2TextLossWeights` with the command line's spelling
    (:meth:`parse`)."""

    @classmethod
    def parse(cls, text: str | None, tag_scale: str = "lm") -> "LossWeights":
        """Parse ``"tag=1,lm=1,itc=1,itm=1"`` (missing names keep weight 1)."""
        values = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in LOSS_COMPONENTS:
                raise ValueError(
                    f"--loss-weights entry {item!r} must look like NAME=WEIGHT with NAME one of {LOSS_COMPONENTS}"
                )
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"--loss-weights entry {item!r}: {value!r} is not a number") from None
        return cls(**values, tag_scale=tag_scale)
