"""``Tag2TextTrainingArguments``: transformers' ``TrainingArguments`` plus the loss settings of the trainer.

Kept apart from :mod:`.arguments` because defining it imports transformers (and torch); the command line's
help is built without them, from :mod:`.trainer_options`.

(No ``from __future__ import annotations`` here: HfArgumentParser needs real type objects.)
"""

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments


@dataclass
class Tag2TextTrainingArguments(TrainingArguments):
    """TrainingArguments plus the loss settings of :class:`~.trainer.Tag2TextTrainer`."""

    loss_weights: str = field(default="tag=1,lm=1,itc=1,itm=1", metadata={
        "help": "Weights of the tagging, LM, ITC and ITM losses, e.g. 'tag=1,lm=1,itc=0.5,itm=0.5' (0 disables). "
                "The command line's default depends on the run: 'tag=2,lm=1,itc=0.5,itm=0.5' from scratch, "
                "'tag=1,lm=1,itc=1,itm=1' (released) with --init-from."})
    tag_loss_scale: Literal["lm", "batch", "none"] = field(default="lm", metadata={
        "help": "'lm': tagging loss rescaled to the LM loss as released (loss_tag / (loss_tag/loss_lm).detach()); "
                "'batch': summed ASL / batch size; 'none': summed ASL. The command line's default: 'batch' from "
                "scratch, 'lm' with --init-from."})
