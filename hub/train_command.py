"""``tag2text train``: train or fine-tune Tag2Text with the Trainer (single process, accelerate launch, torchrun).

Examples::

    tag2text train --train-dir data/train --output-dir runs/t2t --model-config small --max-steps 1500
    tag2text train --train-dir data/train --eval-dir data/val --output-dir runs/ft --init-from MODEL_DIR
    torchrun --nproc_per_node 2 -m tag2text.hub.cli train ... --use-cpu --ddp-backend gloo
    tag2text train ... --resume-from-checkpoint last        # or a checkpoint-N directory

The options are transformers' ``HfArgumentParser`` over :mod:`tag2text.training.arguments` (so ``--help``
imports transformers); the run is :mod:`tag2text.training.training_run`. Every option is checked before data
or model is read (:func:`check_arguments`).
"""

from __future__ import annotations

import logging
import os

from .cli_args import UsageError

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3


def parent_parser():
    """The options, made by HfArgumentParser (see :func:`tag2text.training.arguments.argument_parser`)."""
    from ..training.arguments import argument_parser

    return argument_parser(add_help=False)


def add_arguments(parser) -> None:
    """Nothing beyond :func:`parent_parser`'s options."""


def check_arguments(args) -> None:
    """Checks of the parsed options against the file system, before any data or model is read; raises
    :class:`UsageError` naming the option and the value."""
    from ..presets import PRESETS  # the presets module imports no torch
    from ..processing.source_check import missing_local_source
    from ..training.losses import LossWeights
    from .model_source import ModelSourceError, resolve_model_source

    if not getattr(args, "train_dir", None):
        raise UsageError("--train-dir is required")
    output_dir = getattr(args, "output_dir", None)
    if not output_dir:
        raise UsageError("--output-dir is required")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise UsageError(f"--output-dir {output_dir}: exists and is not a directory")
    for option in ("train_dir", "eval_dir"):
        value = getattr(args, option, None)
        if value and not any(ch in value for ch in "*?{") and not value.endswith(".tar") and not os.path.exists(value):
            raise UsageError(f"--{option.replace('_', '-')} {value}: no such directory or file")
    if args.tag_list and not os.path.isfile(args.tag_list):
        raise UsageError(f"--tag-list {args.tag_list}: no such file")
    if args.init_from:
        try:  # a missing local path fails here, at once; a repo id is left to from_pretrained
            resolve_model_source(args.init_from, option="--init-from")
        except ModelSourceError as error:
            raise UsageError(str(error)) from None
    clip_model = getattr(args, "clip_model", None)
    if clip_model:
        from ..training.ram_setup import tagging_family

        if tagging_family(args.init_from) is None:
            raise UsageError(f"--clip-model {clip_model}: only a RAM / RAM++ fine-tune (--init-from a RAM or RAM++ "
                             "model) embeds new tags with CLIP")
        if missing_local_source(clip_model):
            raise UsageError(f"--clip-model {clip_model}: no such CLIP model directory")
    elif args.model_config not in PRESETS and not os.path.isfile(args.model_config):
        raise UsageError(f"--model-config {args.model_config}: neither a preset ({', '.join(sorted(PRESETS))}) "
                         "nor a config.json file")
    if args.tokenizer and args.tokenizer != "from-captions":
        if missing_local_source(args.tokenizer, allow_bare_name=True):
            raise UsageError(f"--tokenizer {args.tokenizer}: no such vocab.txt or tokenizer directory")
    resume = getattr(args, "resume_from_checkpoint", None)
    if resume and str(resume).lower() not in ("true", "last", "latest") and not os.path.isdir(resume):
        raise UsageError(f"--resume-from-checkpoint {resume}: no such checkpoint directory")
    weights = getattr(args, "loss_weights", None)
    if weights is not None:
        try:
            LossWeights.parse(weights, "batch")
        except ValueError as error:
            raise UsageError(f"--loss-weights {weights}: {error}") from None


def run(args) -> int:
    from ..training.arguments import dataclasses_from_namespace
    from ..training.data import DataFormatError
    from ..training.images import BadImageError
    from ..training.trainer import NonFiniteLossError
    from ..training.training_run import prepare_training, run_training

    check_arguments(args)
    # A TrainingArgumentError (a value out of range) is printed by tag2text.hub.cli as one line.
    model_args, data_args, training_args, chosen = dataclasses_from_namespace(args)
    augment_given = data_args.augment is not None  # else prepare_training chooses it (default_augmentation)
    if chosen:
        logger.info("%s: defaults for the options not given: %s",
                    "fine-tuning --init-from" if model_args.init_from else "training a new model from scratch",
                    ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in chosen.items()))
    try:
        setup = prepare_training(model_args, data_args, training_args)
        if not augment_given:
            chosen["augment"] = data_args.augment
        setup.defaults_chosen = chosen
        summary = run_training(setup)
    except NonFiniteLossError as error:
        logger.error("%s", error)
        return EXIT_NON_FINITE
    except (DataFormatError, BadImageError, FileNotFoundError) as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    if summary["stopped_early"]:
        logger.warning("training stopped early: %d of %d planned steps", summary["global_step"],
                       summary["planned_steps"])
    logger.info("trained %d of %d planned steps; model saved in %s", summary["global_step"], summary["planned_steps"],
                training_args.output_dir)
    return 0
