"""Arguments of ``tag2text train``: model, data and training (every ``TrainingArguments`` field).

The options are made by transformers' own ``HfArgumentParser`` from the dataclasses below and
:class:`~.training_arguments.Tag2TextTrainingArguments`, so they follow the installed transformers (each field is
``--field_name`` and ``--field-name``; booleans take ``--flag [true|false]`` and ``--no-flag``). Building the
parser imports transformers, so ``tag2text train --help`` takes as long as importing it.

Training options the user does not give are left to ``TrainingArguments``' defaults, except the few whose
right value depends on whether the run starts from random weights or fine-tunes (:func:`run_defaults`):
those are chosen per run and logged. Values out of range raise :class:`TrainingArgumentError` naming the
option and the value (the command line prints it as one line).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from ..lazy_exports import lazy_exports
from .option_values import TrainingArgumentError, check_bounds, option_name


@dataclass
class ModelArguments:
    _argument_group_name = "model"  # HfArgumentParser's option group (a class attribute, not a field)
    _bounds = {"num_tags": {"kind": int, "at_least": 1}, "tag_threshold": {"at_least": 0, "at_most": 1},
               "image_size": {"kind": int, "at_least": 1}}

    model_config: str = field(default="small", metadata={
        "help": "Architecture of a new model: a preset ('small': trainable from scratch on a CPU; 'tiny': tests; "
                "'tag2text-swin-b-384': the released sizes) or a config.json path. Ignored with --init-from."})
    init_from: str | None = field(default=None, metadata={
        "help": "Start from this trained model (directory or Hub id) and its processor instead of a new model."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "vocab.txt, tokenizer directory or Hub id. Default: the --init-from model's; for a new model a "
                "WordPiece vocabulary trained on the training captions (also 'from-captions')."})
    tag_list: str | None = field(default=None, metadata={
        "help": "Tag list file (one tag a line). Default: the --init-from model's tags, else a list built from "
                "the training data (given tags, or tags mined from the captions). With --init-from, tags in both "
                "lists keep their weights and thresholds; new tags start from their names' word embeddings."})
    num_tags: int | None = field(default=None, metadata={
        "help": "Keep the K most frequent tags when building the tag list from the data."})
    tag_threshold: float | None = field(default=None, metadata={
        "help": "Probability threshold of every tag in the trained model (default: the config's)."})
    image_size: int | None = field(default=None, metadata={
        "help": "Input resolution of a new model (default: the config's)."})
    clip_model: str | None = field(default=None, metadata={
        "help": "RAM / RAM++ fine-tuning: a CLIP text tower (directory or Hub id with CLIPTextModelWithProjection "
                "and its tokenizer; CLIP ViT-B/16 for the released models) to start the label embeddings of tags "
                "the model does not have from their names. Without it they start from the mean of the model's "
                "label embeddings."})
    scratch_init: bool = field(default=True, metadata={
        "help": "For a new model: small tag queries and sine-cosine position embeddings instead of the released "
                "initialisation (learns much faster from scratch; see model_setup.scratch_init)."})


    def __post_init__(self):
        check_bounds(self, self._bounds)


@dataclass
class DataArguments:
    _argument_group_name = "data"
    _bounds = {"holdout_fraction": {"at_least": 0, "below": 0.5}, "holdout_min": {"kind": int, "at_least": 1},
               "crop_min_scale": {"above": 0, "at_most": 1}, "randaug_ops": {"kind": int, "at_least": 0},
               "randaug_magnitude": {"at_least": 0, "at_most": 10}, "image_cache_megabytes": {"at_least": 0},
               "shuffle_buffer": {"kind": int, "at_least": 0}, "max_eval_samples": {"kind": int, "at_least": 1},
               "eval_num_beams": {"kind": int, "at_least": 1}, "itm_rerank_k": {"kind": int, "at_least": 0}}

    train_dir: str | None = field(default=None, metadata={
        "help": "Training data: a directory with metadata.jsonl, an annotation .json (original format), or "
                "webdataset .tar shards (directory, glob or {00000..00009} range)."})
    eval_dir: str | None = field(default=None, metadata={
        "help": "Evaluation data, same layouts. Without it, part of the training data is held out "
                "(--holdout-fraction) to calibrate the tag thresholds."})
    image_root: str | None = field(default=None, metadata={
        "help": "Folder that 'image_path' of an annotation .json is relative to (default: the .json's folder)."})
    eval_image_root: str | None = field(default=None, metadata={"help": "Same, for --eval-dir."})
    holdout_fraction: float = field(default=0.05, metadata={
        "help": "Without --eval-dir: share of the training images held out (chosen by --seed) to calibrate the "
                "per-tag thresholds after training; 0 turns it off."})
    holdout_min: int = field(default=32, metadata={
        "help": "Hold out at least this many images; with fewer than 4 times as many training images, none are "
                "held out (and the thresholds stay uncalibrated, as the log says)."})
    augment: bool | None = field(default=None, metadata={
        "nargs": "?", "const": True,  # a bare --augment turns it on (HfArgumentParser wants a value for bool | None)
        "help": "Training augmentation as released: random crops, flips, RandAugment. Default: off for a new model "
                "(from scratch in few steps it slowed learning and its crops cut captioned objects out of the "
                "images); with --init-from, as the model was last trained (its config's trained_with_augmentation; "
                "on where not recorded, as for the released weights)."})
    crop_min_scale: float = field(default=0.2, metadata={
        "help": "Smallest crop area of RandomResizedCrop (1 = no crop)."})
    horizontal_flip: bool = field(default=True, metadata={
        "help": "Random horizontal flips (turn off when captions say left/right)."})
    randaug_ops: int = field(default=2, metadata={"help": "RandAugment ops per image."})
    randaug_magnitude: float = field(default=5.0, metadata={"help": "RandAugment magnitude, 0..10."})
    shuffle_tags: bool = field(default=True, metadata={
        "help": "Shuffle the ground-truth tags given to the interaction encoder (the paper); --no-shuffle-tags "
                "keeps class-index order (the released code)."})
    fail_on_bad_image: bool = field(default=False, metadata={
        "help": "Stop at the first missing or corrupt image instead of counting, logging and skipping it."})
    image_cache_megabytes: float = field(default=1024, metadata={
        "help": "Keep up to this many megabytes of decoded training images in memory (per data-loading process) "
                "instead of decoding each file again every epoch; 0 turns it off."})
    shuffle_buffer: int = field(default=1000, metadata={
        "help": "Shuffle buffer of streamed webdataset shards."})
    max_eval_samples: int | None = field(default=None, metadata={
        "help": "Evaluate on at most this many images."})
    eval_tasks: str = field(default="tagging,captioning,retrieval", metadata={
        "help": "Task metrics computed at each evaluation ('' for losses only)."})
    eval_num_beams: int | None = field(default=None, metadata={
        "help": "Beams for evaluation captions."})
    eval_meteor: bool = field(default=False, metadata={
        "help": "Compute METEOR in evaluations during training (needs Java, ~15 s each; tag2text evaluate does)."})
    itm_rerank_k: int = field(default=16, metadata={
        "help": "Retrieval candidates re-ranked by ITM per query."})
    calibrate_thresholds: bool = field(default=False, metadata={
        "help": "After training, set per-class tag thresholds that maximise F1 on --eval-dir and save them with "
                "the model (use a validation split: metrics on the same split are then optimistic). Without "
                "--eval-dir the held-out part of the training data is used, always."})

    def __post_init__(self):
        check_bounds(self, self._bounds)

    def augmentation_config(self):
        from .augmentation import AugmentationConfig

        if self.augment is False:
            return AugmentationConfig.disabled()
        return AugmentationConfig(
            crop_scale=None if self.crop_min_scale >= 1 else (self.crop_min_scale, 1.0),
            horizontal_flip=self.horizontal_flip,
            randaug_num_ops=self.randaug_ops,
            randaug_magnitude=self.randaug_magnitude,
        )


# Training defaults that depend on the run (see run_defaults). From random weights: the quickstart's measured
# recipe (1e-3 with a short warm-up and cosine decay; 2e-3 stalled the shape features; tagging weighted twice,
# as summed ASL per image: with equal weights or the released rescaling the shared vision tower learned the
# objects far more slowly). Fine-tuning a trained model: a fine-tuning rate and the released loss weighting.
SCRATCH_DEFAULTS = {"learning_rate": 1e-3, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
                    "per_device_train_batch_size": 32, "loss_weights": "tag=2,lm=1,itc=0.5,itm=0.5",
                    "tag_loss_scale": "batch", "logging_steps": 0.02}
FINETUNE_DEFAULTS = {"learning_rate": 5e-5, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
                     "loss_weights": "tag=1,lm=1,itc=1,itm=1", "tag_loss_scale": "lm", "logging_steps": 0.02}


# Fine-tuning RAM / RAM++: the original's fine-tuning learning rate (configs/finetune.yaml: init_lr 5e-06, weight
# decay 0.05, cosine); one loss, so no loss weights.
RAM_FINETUNE_DEFAULTS = {"learning_rate": 5e-6, "warmup_steps": 0.05, "lr_scheduler_type": "cosine",
                         "weight_decay": 0.05, "logging_steps": 0.02}
# Options of the four Tag2Text losses, refused for RAM / RAM++ rather than silently ignored.
TAG2TEXT_LOSS_OPTIONS = ("loss_weights", "tag_loss_scale")


def run_defaults(init_from: str | None, given: dict, family: str | None = None) -> dict:
    """The training values chosen for this run where the user gave none: ``{field: value}``. ``family``:
    ``"ram"`` / ``"ram_plus"`` when ``init_from`` is a RAM / RAM++ model."""
    table = RAM_FINETUNE_DEFAULTS if family else FINETUNE_DEFAULTS if init_from else SCRATCH_DEFAULTS
    return {name: value for name, value in table.items() if name not in given}


def _training_fields() -> list[dataclasses.Field]:
    from .training_arguments import Tag2TextTrainingArguments

    return [f for f in dataclasses.fields(Tag2TextTrainingArguments) if f.init]


def argument_parser(**kwargs) -> argparse.ArgumentParser:
    """transformers' ``HfArgumentParser`` of the model, data and training arguments (imports transformers);
    ``kwargs`` go to ``argparse.ArgumentParser`` (``add_help=False`` to use it as a parent parser).

    Two changes to what HfArgumentParser makes, so that :func:`dataclasses_from_namespace` can tell what the
    user gave: training options that are not given are left out of the namespace (their help states the
    default, run-dependent ones both ways), and a ``bool | None`` field defaulting to None gets ``--no-X``
    as a ``True`` default gets it.
    """
    from transformers import HfArgumentParser

    from .training_arguments import Tag2TextTrainingArguments

    parser = HfArgumentParser((ModelArguments, DataArguments, Tag2TextTrainingArguments), **kwargs)
    training = {f.name for f in _training_fields()}
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        if action.dest not in training or action.default is argparse.SUPPRESS:
            continue
        default = action.default
        if action.dest in SCRATCH_DEFAULTS or action.dest in FINETUNE_DEFAULTS:
            default = (f"{SCRATCH_DEFAULTS.get(action.dest, default)} from scratch, "
                       f"{FINETUNE_DEFAULTS.get(action.dest, default)} with --init-from")
            if action.dest in RAM_FINETUNE_DEFAULTS and \
                    RAM_FINETUNE_DEFAULTS[action.dest] != FINETUNE_DEFAULTS.get(action.dest):
                default += f", {RAM_FINETUNE_DEFAULTS[action.dest]} with --init-from a RAM / RAM++ model"
        elif hasattr(default, "value"):  # an Enum member
            default = default.value
        if default is not None and default != "" and action.const is not False:  # not the --no-X of a flag
            action.help = f"{action.help or ''} (default: {str(default).replace('%', '%%')})".strip()
        action.default = argparse.SUPPRESS
    groups = {group.title: group for group in parser._action_groups}
    for dtype in (ModelArguments, DataArguments):
        for dc_field in dataclasses.fields(dtype):
            if dc_field.default is None and dc_field.type in ("bool | None", bool | None):
                group = groups.get(dtype._argument_group_name, parser)
                group.add_argument(f"--no_{dc_field.name}", option_name(f"no_{dc_field.name}"), action="store_false",
                                   dest=dc_field.name, default=argparse.SUPPRESS,
                                   help=f"Turn {option_name(dc_field.name)} off.")
    return parser


def dataclasses_from_namespace(namespace) -> tuple:
    """``(ModelArguments, DataArguments, Tag2TextTrainingArguments, chosen defaults)`` of parsed arguments.

    Raises:
        TrainingArgumentError: a value out of range, or values that TrainingArguments rejects.
    """
    from .training_arguments import Tag2TextTrainingArguments

    values = vars(namespace)
    own = []
    for dtype in (ModelArguments, DataArguments):
        own.append(dtype(**{f.name: values[f.name] for f in dataclasses.fields(dtype) if f.init and f.name in values}))
    given = {f.name: values[f.name] for f in _training_fields() if f.name in values}
    if isinstance(given.get("debug"), list):
        given["debug"] = " ".join(str(getattr(option, "value", option)) for option in given["debug"])
    from .ram_setup import tagging_family

    family = tagging_family(own[0].init_from)
    if family is not None:
        for name in TAG2TEXT_LOSS_OPTIONS:
            if name in given:
                raise TrainingArgumentError(f"{option_name(name)} {given[name]}: does not apply to a RAM / RAM++ "
                                            f"model (--init-from {own[0].init_from}), which trains its tagging "
                                            "loss only")
    chosen = run_defaults(own[0].init_from, given, family)
    try:
        training = Tag2TextTrainingArguments(**given, **chosen)
    except TrainingArgumentError:
        raise
    except (ValueError, TypeError) as error:
        raise TrainingArgumentError(f"training options: {' '.join(str(error).split())}") from None
    if "dataloader_pin_memory" not in given and training.dataloader_pin_memory and not _has_accelerator():
        # Pinned memory only speeds copies to an accelerator; without one torch ignores it with a warning.
        training.dataloader_pin_memory = chosen["dataloader_pin_memory"] = False
    return own[0], own[1], training, chosen


# Tag2TextTrainingArguments imports transformers: only when used.
__getattr__, __dir__ = lazy_exports(__name__, {"Tag2TextTrainingArguments": ".training_arguments"})


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.is_available()
