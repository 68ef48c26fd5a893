"""Arguments of ``tag2text train``: model, data and training (every ``TrainingArguments`` field).

The command line follows transformers' own field-to-option rules (``HfArgumentParser``): each field is both
``--field_name`` and ``--field-name``, booleans take ``--flag [true|false]`` and, when true by default,
``--no-flag``. Building it imports neither torch nor transformers, so ``tag2text train --help`` is fast: the
model and data options come from the dataclasses below, the ``TrainingArguments`` options from their
description in :mod:`.trainer_options`.

Training options the user does not give are left to ``TrainingArguments``' defaults, except the few whose
right value depends on whether the run starts from random weights or fine-tunes (:func:`run_defaults`):
those are chosen per run and logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import math
from dataclasses import dataclass, field

from ..hub.cli_args import (
    UsageError,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    probability,
)
from ..hub.device_choice import training_pin_memory


def _fraction_below_half(text: str) -> float:
    value = probability(text)
    if value >= 0.5:
        raise argparse.ArgumentTypeError(f"must be below 0.5, got {text}")
    return value


def _magnitude(text: str) -> float:
    value = non_negative_float(text)
    if value > 10:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10, got {text}")
    return value


def _crop_scale(text: str) -> float:
    value = probability(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {text}")
    return value


def _max_steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1 and value != -1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (or -1: train --num-train-epochs), got {text}")
    return value


@dataclass
class ModelArguments:
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
        "type": positive_int, "help": "Keep the K most frequent tags when building the tag list from the data."})
    tag_threshold: float | None = field(default=None, metadata={
        "type": probability, "help": "Probability threshold of every tag in the trained model (default: the config's)."})
    image_size: int | None = field(default=None, metadata={
        "type": positive_int, "help": "Input resolution of a new model (default: the config's)."})
    scratch_init: bool = field(default=True, metadata={
        "help": "For a new model: small tag queries and sine-cosine position embeddings instead of the released "
                "initialisation (learns much faster from scratch; see model_setup.scratch_init)."})


@dataclass
class DataArguments:
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
        "type": _fraction_below_half,
        "help": "Without --eval-dir: share of the training images held out (chosen by --seed) to calibrate the "
                "per-tag thresholds after training; 0 turns it off."})
    holdout_min: int = field(default=32, metadata={
        "type": positive_int,
        "help": "Hold out at least this many images; with fewer than 4 times as many training images, none are "
                "held out (and the thresholds stay uncalibrated, as the log says)."})
    augment: bool | None = field(default=None, metadata={
        "help": "Training augmentation as released: random crops, flips, RandAugment. Default: off for a new model "
                "(from scratch in few steps it slowed learning and its crops cut captioned objects out of the "
                "images); with --init-from, as the model was last trained (its config's trained_with_augmentation; "
                "on where not recorded, as for the released weights)."})
    crop_min_scale: float = field(default=0.2, metadata={
        "type": _crop_scale, "help": "Smallest crop area of RandomResizedCrop (1 = no crop)."})
    horizontal_flip: bool = field(default=True, metadata={
        "help": "Random horizontal flips (turn off when captions say left/right)."})
    randaug_ops: int = field(default=2, metadata={"type": non_negative_int, "help": "RandAugment ops per image."})
    randaug_magnitude: float = field(default=5.0, metadata={"type": _magnitude, "help": "RandAugment magnitude, 0..10."})
    shuffle_tags: bool = field(default=True, metadata={
        "help": "Shuffle the ground-truth tags given to the interaction encoder (the paper); --no-shuffle-tags "
                "keeps class-index order (the released code)."})
    fail_on_bad_image: bool = field(default=False, metadata={
        "help": "Stop at the first missing or corrupt image instead of counting, logging and skipping it."})
    image_cache_megabytes: float = field(default=1024, metadata={
        "type": non_negative_float,
        "help": "Keep up to this many megabytes of decoded training images in memory (per data-loading process) "
                "instead of decoding each file again every epoch; 0 turns it off."})
    shuffle_buffer: int = field(default=1000, metadata={
        "type": non_negative_int, "help": "Shuffle buffer of streamed webdataset shards."})
    max_eval_samples: int | None = field(default=None, metadata={
        "type": positive_int, "help": "Evaluate on at most this many images."})
    eval_tasks: str = field(default="tagging,captioning,retrieval", metadata={
        "help": "Task metrics computed at each evaluation ('' for losses only)."})
    eval_num_beams: int | None = field(default=None, metadata={
        "type": positive_int, "help": "Beams for evaluation captions."})
    eval_meteor: bool = field(default=False, metadata={
        "help": "Compute METEOR in evaluations during training (needs Java, ~15 s each; tag2text evaluate does)."})
    itm_rerank_k: int = field(default=16, metadata={
        "type": non_negative_int, "help": "Retrieval candidates re-ranked by ITM per query."})
    calibrate_thresholds: bool = field(default=False, metadata={
        "help": "After training, set per-class tag thresholds that maximise F1 on --eval-dir and save them with "
                "the model (use a validation split: metrics on the same split are then optimistic). Without "
                "--eval-dir the held-out part of the training data is used, always."})

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


# Fields whose option would clash with the ``tag2text`` console script's own options (its global
# ``--log-level`` sets Python logging and shares the namespace): they get another option name.
RENAMED_FIELDS = {"log_level": "trainer_log_level"}

# Validation of TrainingArguments values that argparse can check alone (the rest TrainingArguments checks).
TRAINING_TYPES = {
    "max_steps": _max_steps,
    "num_train_epochs": positive_float,
    "per_device_train_batch_size": positive_int,
    "per_device_eval_batch_size": positive_int,
    "gradient_accumulation_steps": positive_int,
    "learning_rate": positive_float,
    "weight_decay": non_negative_float,
    "warmup_steps": non_negative_float,
    "max_grad_norm": non_negative_float,
    "logging_steps": positive_float,
    "eval_steps": positive_float,
    "save_steps": positive_float,
    "save_total_limit": positive_int,
    "seed": non_negative_int,
    "data_seed": non_negative_int,
    "dataloader_num_workers": non_negative_int,
}

# Training defaults that depend on the run (see run_defaults). From random weights: the quickstart's measured
# recipe (1e-3 with a short warm-up and cosine decay; 2e-3 stalled the shape features; tagging weighted twice,
# as summed ASL per image: with equal weights or the released rescaling the shared vision tower learned the
# objects far more slowly). Fine-tuning a trained model: a fine-tuning rate and the released loss weighting.
SCRATCH_DEFAULTS = {"learning_rate": 1e-3, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
                    "per_device_train_batch_size": 32, "loss_weights": "tag=2,lm=1,itc=0.5,itm=0.5",
                    "tag_loss_scale": "batch", "logging_steps": 0.02}
FINETUNE_DEFAULTS = {"learning_rate": 5e-5, "warmup_steps": 0.05, "lr_scheduler_type": "cosine", "weight_decay": 0.05,
                     "loss_weights": "tag=1,lm=1,itc=1,itm=1", "tag_loss_scale": "lm", "logging_steps": 0.02}


def _to_bool(text) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).lower()
    if lowered in ("yes", "true", "t", "y", "1"):
        return True
    if lowered in ("no", "false", "f", "n", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _number_type(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _add_option(group, entry: dict, value_type=None, suppress_default: bool = False) -> None:
    """One option (and its ``--no-`` complement for booleans true by default), as HfArgumentParser adds it."""
    name = RENAMED_FIELDS.get(entry["name"], entry["name"])
    options = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
    default = entry["default"]
    text = entry["help"].replace("%", "%%")
    if default is not None and default != "":
        # argparse fills in %(default)s of options with a default; the training options have none (SUPPRESS)
        text += f" (default: {str(default).replace('%', '%%')})" if suppress_default else " (default: %(default)s)"
    kwargs = {"dest": name, "help": text}
    kind = entry["kind"]
    if kind == "bool":
        kwargs.update(type=_to_bool, nargs="?", const=True, metavar="{true,false}")
    elif kind == "choice":
        kwargs.update(choices=entry["choices"], type=str)
    elif kind == "list":
        kwargs.update(nargs="+", type=_number_type({"int": int, "float": float}.get(entry["element"], str)))
    else:
        kwargs["type"] = _number_type({"int": int, "float": float}[kind]) if kind in ("int", "float") else str
    if value_type is not None:
        kwargs["type"] = value_type
    kwargs["default"] = argparse.SUPPRESS if suppress_default else default
    group.add_argument(*options, **kwargs)
    if kind == "bool" and (default is True or (default is None and not suppress_default)):
        group.add_argument(f"--no_{name}", f"--no-{name.replace('_', '-')}", action="store_false", dest=name,
                           default=argparse.SUPPRESS, help=f"Turn --{name.replace('_', '-')} off.")


def _describe_own(dtype) -> list[tuple[dict, object]]:
    from .trainer_options import describe_field

    hints = {"str": str, "str | None": str, "int | None": int, "float | None": float, "int": int, "float": float,
             "bool": bool, "bool | None": bool}
    result = []
    for dc_field in dataclasses.fields(dtype):
        if dc_field.init:
            result.append((describe_field(dc_field, hints[dc_field.type]), dc_field.metadata.get("type")))
    return result


def add_arguments(parser) -> None:
    """Add the model, data and training options to ``parser`` (any argparse parser); imports no transformers."""
    from .trainer_options import load

    for title, dtype in (("model", ModelArguments), ("data", DataArguments)):
        group = parser.add_argument_group(title)
        for entry, value_type in _describe_own(dtype):
            _add_option(group, entry, value_type)
    group = parser.add_argument_group(
        "training (TrainingArguments; unset options keep transformers' defaults, except those of run_defaults)")
    for entry in load():
        if entry["name"] in SCRATCH_DEFAULTS or entry["name"] in FINETUNE_DEFAULTS:
            scratch, tune = SCRATCH_DEFAULTS.get(entry["name"]), FINETUNE_DEFAULTS.get(entry["name"])
            entry = dict(entry, default=f"{scratch if scratch is not None else entry['default']} from scratch, "
                                        f"{tune if tune is not None else entry['default']} with --init-from")
        _add_option(group, entry, TRAINING_TYPES.get(entry["name"]), suppress_default=True)


add_dataclass_arguments = add_arguments  # the former name


def run_defaults(init_from: str | None, given: dict) -> dict:
    """The training values chosen for this run where the user gave none: ``{field: value}``."""
    table = FINETUNE_DEFAULTS if init_from else SCRATCH_DEFAULTS
    return {name: value for name, value in table.items() if name not in given}


def __getattr__(name):
    if name == "Tag2TextTrainingArguments":  # imports transformers: only when used
        return importlib.import_module(".training_arguments", __package__).Tag2TextTrainingArguments
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dataclasses_from_namespace(namespace) -> tuple:
    """``(ModelArguments, DataArguments, Tag2TextTrainingArguments, chosen defaults)`` of parsed arguments.

    Raises :class:`~tag2text.hub.cli_args.UsageError` for values that TrainingArguments rejects.
    """
    from .training_arguments import Tag2TextTrainingArguments

    values = vars(namespace)
    own = []
    for dtype in (ModelArguments, DataArguments):
        own.append(dtype(**{f.name: values[f.name] for f in dataclasses.fields(dtype) if f.init and f.name in values}))
    training_fields = {f.name for f in dataclasses.fields(Tag2TextTrainingArguments) if f.init}
    given = {}
    for entry_name in _training_names():
        key = RENAMED_FIELDS.get(entry_name, entry_name)
        if key in values:
            if entry_name not in training_fields:
                raise UsageError(f"--{key.replace('_', '-')}: not an option of this transformers version's "
                                 "TrainingArguments")
            given[entry_name] = values[key]
    if isinstance(given.get("debug"), list):
        given["debug"] = " ".join(given["debug"])
    chosen = run_defaults(own[0].init_from, given)
    try:
        training = Tag2TextTrainingArguments(**given, **chosen)
    except (ValueError, TypeError) as error:
        raise UsageError(f"training options: {error}") from None
    pinned = training_pin_memory(training.dataloader_pin_memory, "dataloader_pin_memory" in given,
                                 _has_accelerator())
    if pinned != training.dataloader_pin_memory:
        training.dataloader_pin_memory = chosen["dataloader_pin_memory"] = pinned
    return own[0], own[1], training, chosen


def _has_accelerator() -> bool:
    import torch

    return torch.accelerator.is_available()


def _training_names() -> list[str]:
    from .trainer_options import load

    return [entry["name"] for entry in load()]
