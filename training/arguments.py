"""Arguments of ``tag2text train``: model, data and training (every ``TrainingArguments`` field).

The command line is generated from these dataclasses with transformers' own field-to-option rules
(``HfArgumentParser``), so each field is both ``--field_name`` and ``--field-name``, booleans take
``--flag``/``--no-flag``, and new ``TrainingArguments`` fields appear without changes here.

(No ``from __future__ import annotations`` here: HfArgumentParser needs real type objects.)
"""

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Literal, Optional

from transformers import HfArgumentParser, TrainingArguments

from .augmentation import AugmentationConfig


@dataclass
class ModelArguments:
    model_config: str = field(default="tiny", metadata={
        "help": "Architecture of a new model: a preset ('tiny', 'tag2text-swin-b-384') or a config.json path."})
    init_from: Optional[str] = field(default=None, metadata={
        "help": "Start from this trained model (directory or Hub id) and its processor instead of a new model."})
    tokenizer: Optional[str] = field(default=None, metadata={
        "help": "vocab.txt, tokenizer directory or Hub id (default: the --init-from model's, else "
                "'bert-base-uncased'); 'from-captions' builds a whole-word vocabulary from the training captions "
                "(offline, for small models)."})
    tag_list: Optional[str] = field(default=None, metadata={
        "help": "Tag list file (one tag a line). Default: the --init-from model's tags, else a list built from "
                "the training data (given tags, or tags mined from the captions)."})
    num_tags: Optional[int] = field(default=None, metadata={
        "help": "Keep the K most frequent tags when building the tag list from the data."})
    tag_threshold: Optional[float] = field(default=None, metadata={
        "help": "Probability threshold of every tag in the trained model (default: the config's)."})
    image_size: Optional[int] = field(default=None, metadata={
        "help": "Input resolution of a new model (default: the config's)."})
    scratch_init: bool = field(default=False, metadata={
        "help": "For a new model trained from scratch: small tag queries and sine-cosine position embeddings "
                "instead of the released initialisation (learns much faster when small; see model_setup)."})


@dataclass
class DataArguments:
    train_dir: Optional[str] = field(default=None, metadata={
        "help": "Training data: a directory with metadata.jsonl, an annotation .json (original format), or "
                "webdataset .tar shards (directory, glob or {00000..00009} range)."})
    eval_dir: Optional[str] = field(default=None, metadata={"help": "Evaluation data, same layouts."})
    image_root: Optional[str] = field(default=None, metadata={
        "help": "Folder that 'image_path' of an annotation .json is relative to (default: the .json's folder)."})
    eval_image_root: Optional[str] = field(default=None, metadata={"help": "Same, for --eval-dir."})
    augment: bool = field(default=True, metadata={"help": "Training augmentation as released (--no-augment: off)."})
    crop_min_scale: float = field(default=0.2, metadata={"help": "Smallest crop area of RandomResizedCrop (1 = no crop)."})
    horizontal_flip: bool = field(default=True, metadata={
        "help": "Random horizontal flips (turn off when captions say left/right)."})
    randaug_ops: int = field(default=2, metadata={"help": "RandAugment ops per image."})
    randaug_magnitude: float = field(default=5.0, metadata={"help": "RandAugment magnitude, 0..10."})
    shuffle_tags: bool = field(default=True, metadata={
        "help": "Shuffle the ground-truth tags given to the interaction encoder (the paper); --no-shuffle-tags "
                "keeps class-index order (the released code)."})
    fail_on_bad_image: bool = field(default=False, metadata={
        "help": "Stop at the first missing or corrupt image instead of counting, logging and skipping it."})
    shuffle_buffer: int = field(default=1000, metadata={"help": "Shuffle buffer of streamed webdataset shards."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Evaluate on at most this many images."})
    eval_tasks: str = field(default="tagging,captioning,retrieval", metadata={
        "help": "Task metrics computed at each evaluation ('' for losses only)."})
    eval_num_beams: Optional[int] = field(default=None, metadata={"help": "Beams for evaluation captions."})
    eval_meteor: bool = field(default=False, metadata={
        "help": "Compute METEOR in evaluations during training (needs Java, ~15 s each; tag2text evaluate does)."})
    itm_rerank_k: int = field(default=16, metadata={"help": "Retrieval candidates re-ranked by ITM per query."})
    calibrate_thresholds: bool = field(default=False, metadata={
        "help": "After training, set per-class tag thresholds that maximise F1 on --eval-dir and save them with "
                "the model (use a validation split: metrics on the same split are then optimistic)."})

    def augmentation_config(self) -> AugmentationConfig:
        if not self.augment:
            return AugmentationConfig.disabled()
        return AugmentationConfig(
            crop_scale=None if self.crop_min_scale >= 1 else (self.crop_min_scale, 1.0),
            horizontal_flip=self.horizontal_flip,
            randaug_num_ops=self.randaug_ops,
            randaug_magnitude=self.randaug_magnitude,
        )


@dataclass
class Tag2TextTrainingArguments(TrainingArguments):
    """TrainingArguments plus the loss settings of :class:`~.trainer.Tag2TextTrainer`."""

    loss_weights: str = field(default="tag=1,lm=1,itc=1,itm=1", metadata={
        "help": "Weights of the tagging, LM, ITC and ITM losses, e.g. 'tag=1,lm=1,itc=0.5,itm=0.5' (0 disables)."})
    tag_loss_scale: Literal["lm", "batch", "none"] = field(default="lm", metadata={
        "help": "'lm': tagging loss rescaled to the LM loss as released (loss_tag / (loss_tag/loss_lm).detach()); "
                "'batch': summed ASL / batch size; 'none': summed ASL."})


ARGUMENT_GROUPS = (
    ("model", ModelArguments),
    ("data", DataArguments),
    ("training (Trainer)", Tag2TextTrainingArguments),
)


# Fields whose option would clash with the ``tag2text`` console script's own options (its global
# ``--log-level`` sets Python logging and shares the namespace): they get another option name.
RENAMED_FIELDS = {"log_level": "trainer_log_level"}


def add_dataclass_arguments(parser, groups=ARGUMENT_GROUPS, skip=()) -> None:
    """Add every init field of the dataclasses to ``parser`` (any argparse parser) as HfArgumentParser does."""
    for title, dtype in groups:
        group = parser.add_argument_group(title)
        hints = typing.get_type_hints(dtype)
        for dc_field in dataclasses.fields(dtype):
            if not dc_field.init or dc_field.name in skip:
                continue
            dc_field.type = hints[dc_field.name]
            if dc_field.name in RENAMED_FIELDS:
                dc_field = copy.copy(dc_field)
                dc_field.name = RENAMED_FIELDS[dc_field.name]
            HfArgumentParser._parse_dataclass_field(group, dc_field)


def dataclasses_from_namespace(namespace, groups=ARGUMENT_GROUPS) -> tuple:
    """The dataclass instances of the parsed arguments, in the order of ``groups``."""
    values = vars(namespace)
    result = []
    for _, dtype in groups:
        kwargs = {}
        for f in dataclasses.fields(dtype):
            key = RENAMED_FIELDS.get(f.name, f.name)
            if f.init and key in values:
                kwargs[f.name] = values[key]
        result.append(dtype(**kwargs))
    return tuple(result)
