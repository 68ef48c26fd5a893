"""``Tag2TextTrainingArguments``: transformers' ``TrainingArguments`` plus the loss settings of the trainer.

Kept apart from :mod:`.arguments` because defining it imports transformers (and torch). The command line's
options are made from its fields by transformers' ``HfArgumentParser`` (:func:`.arguments.argument_parser`).

(No ``from __future__ import annotations`` here: HfArgumentParser needs real type objects.)
"""

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from .option_values import TrainingArgumentError, check_bounds

# Values TrainingArguments accepts without complaint but that cannot train (checked before its own checks).
BOUNDS = {
    "num_train_epochs": {"above": 0},
    "per_device_train_batch_size": {"kind": int, "at_least": 1},
    "per_device_eval_batch_size": {"kind": int, "at_least": 1},
    "gradient_accumulation_steps": {"kind": int, "at_least": 1},
    "learning_rate": {"above": 0},
    "weight_decay": {"at_least": 0},
    "warmup_steps": {"at_least": 0},
    "max_grad_norm": {"at_least": 0},
    "logging_steps": {"above": 0},
    "eval_steps": {"above": 0},
    "save_steps": {"above": 0},
    "save_total_limit": {"kind": int, "at_least": 1},
    "seed": {"kind": int, "at_least": 0},
    "data_seed": {"kind": int, "at_least": 0},
    "dataloader_num_workers": {"kind": int, "at_least": 0},
}


@dataclass
class Tag2TextTrainingArguments(TrainingArguments):
    """TrainingArguments plus the loss settings of :class:`~.trainer.Tag2TextTrainer`."""

    _argument_group_name = ("training (TrainingArguments; unset options keep transformers' defaults, except those "
                            "of run_defaults)")

    loss_weights: str = field(default="tag=1,lm=1,itc=1,itm=1", metadata={
        "help": "Weights of the tagging, LM, ITC and ITM losses, e.g. 'tag=1,lm=1,itc=0.5,itm=0.5' (0 disables). "
                "The command line's default depends on the run: 'tag=2,lm=1,itc=0.5,itm=0.5' from scratch, "
                "'tag=1,lm=1,itc=1,itm=1' (released) with --init-from."})
    tag_loss_scale: Literal["lm", "batch", "none"] = field(default="lm", metadata={
        "help": "'lm': tagging loss rescaled to the LM loss as released (loss_tag / (loss_tag/loss_lm).detach()); "
                "'batch': summed ASL / batch size; 'none': summed ASL. The command line's default: 'batch' from "
                "scratch, 'lm' with --init-from."})

    def __post_init__(self):
        if self.max_steps != -1 and not (isinstance(self.max_steps, int) and self.max_steps >= 1):
            raise TrainingArgumentError(f"--max-steps {self.max_steps}: must be at least 1 (or -1: train "
                                        "--num-train-epochs)")
        check_bounds(self, BOUNDS)
        super().__post_init__()
