"""``tag2text train``: train or fine-tune Tag2Text with the Trainer (single process, accelerate launch, torchrun).

Examples::

    tag2text train --train-dir data/train --eval-dir data/val --output-dir runs/t2t \\
        --model-config tiny --tokenizer from-captions --max-steps 2000 --per-device-train-batch-size 32
    torchrun --nproc_per_node 2 -m tag2text.hub.cli train ... --use-cpu --ddp-backend gloo
    tag2text train ... --resume-from-checkpoint last        # or a checkpoint-N directory

The output directory holds the model (``from_pretrained``), its processor, ``tag_list.txt``,
``train_summary.json`` and, with evaluation data, ``eval_results.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

from .arguments import add_dataclass_arguments, dataclasses_from_namespace

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3


def add_arguments(parser) -> None:
    add_dataclass_arguments(parser)


@dataclasses.dataclass
class TrainingSetup:
    """Everything a run is made of; :func:`prepare_training` builds it, :func:`run_training` runs it."""

    trainer: object
    model: object
    processor: object
    collator: object
    train_dataset: object
    eval_dataset: object
    tag_list: object
    model_args: object
    data_args: object
    training_args: object


def _resume_value(value):
    if value is None:
        return None
    if str(value).lower() in ("true", "last", "latest"):
        return True
    if not os.path.isdir(value):
        raise FileNotFoundError(f"--resume-from-checkpoint {value!r}: no such checkpoint directory")
    return value


def _load_data(path, resolver, image_root, data_args, training_args, train: bool):
    from .data import detect_format, load_dataset
    from .webdataset import load_webdataset

    if detect_format(path) == "webdataset":
        return load_webdataset(path, resolver, seed=training_args.seed, shuffle=train,
                               shuffle_buffer=data_args.shuffle_buffer if train else 0,
                               fail_fast=data_args.fail_on_bad_image)
    return load_dataset(path, resolver, image_root=image_root, fail_fast=data_args.fail_on_bad_image)


def _captions_of(dataset) -> list[str]:
    if hasattr(dataset, "column_names"):
        return [c for captions in dataset["captions"] for c in captions]
    return []


def prepare_training(model_args, data_args, training_args, callbacks=()) -> TrainingSetup:
    """Read the data, resolve the tag list, build the model, processor, collator and trainer."""
    from .. import Tag2TextConfig
    from .augmentation import TrainAugmentation
    from .collator import Tag2TextCollator, evaluation_collator
    from .data import TagResolver
    from .evaluation import Tag2TextEvaluator
    from .images import ImageLoader
    from .model_setup import FROM_CAPTIONS, build_model_and_processor, load_tokenizer
    from .tag_mining import CaptionTagger, TagList
    from .trainer import EpochCallback, Tag2TextTrainer
    from .webdataset import WebDatasetSource

    if not data_args.train_dir:
        raise ValueError("--train-dir is required")
    if not training_args.output_dir:
        raise ValueError("--output-dir is required")
    output = Path(training_args.output_dir)
    saved_tags = output / "tag_list.txt"
    resuming = training_args.resume_from_checkpoint is not None
    tag_list = None
    if model_args.tag_list:
        tag_list = TagList.read(model_args.tag_list)
    elif resuming and saved_tags.is_file():
        tag_list = TagList.read(saved_tags)  # the list this run started with
    elif model_args.init_from:
        tag_list = TagList(list(Tag2TextConfig.from_pretrained(model_args.init_from).tag_names))

    resolver = TagResolver(tag_list, max_tags=model_args.num_tags,
                           tagger=CaptionTagger(progress=training_args.process_index == 0))
    # The main process mines tags (and fills the cache) first; the others then read the cache.
    with training_args.main_process_first(desc="reading data and mining tags"):
        train_dataset = _load_data(data_args.train_dir, resolver, data_args.image_root, data_args, training_args,
                                   train=True)
        eval_dataset = None
        if data_args.eval_dir:
            eval_dataset = _load_data(data_args.eval_dir, resolver, data_args.eval_image_root, data_args,
                                      training_args, train=False)
    tag_list = resolver.tag_list

    tokenizer = None
    with training_args.main_process_first(desc="building the tokenizer"):
        texts = None
        if model_args.tokenizer == FROM_CAPTIONS:
            # The decoder prompt ("a picture of") must be spelled with real tokens too, not [UNK].
            texts = _captions_of(train_dataset) + list(tag_list.names) + [Tag2TextConfig().prompt]
            if isinstance(train_dataset, WebDatasetSource):
                raise ValueError("--tokenizer from-captions needs map-style training data, not webdataset shards")
        tokenizer = load_tokenizer(model_args.tokenizer, model_args.init_from, texts, work_dir=output)
    # Seed before the model is built: its random initialisation must be the same in every run (and every
    # process) with the same --seed, or a resumed or distributed run starts from other weights.
    from transformers import set_seed

    set_seed(training_args.seed)
    model, processor = build_model_and_processor(model_args, tag_list, tokenizer)

    if training_args.process_index == 0:
        tag_list.write(saved_tags)

    if isinstance(train_dataset, WebDatasetSource) and training_args.max_steps <= 0:
        per_step = (training_args.per_device_train_batch_size * training_args.world_size
                    * training_args.gradient_accumulation_steps)
        training_args.max_steps = math.ceil(train_dataset.num_samples / per_step * training_args.num_train_epochs)
        logger.info("streamed data: %d samples -> max_steps=%d", train_dataset.num_samples, training_args.max_steps)

    image_size = int(model.config.vision_config.image_size)
    augmentation = TrainAugmentation(image_size, data_args.augmentation_config()) if data_args.augment else None
    collator = Tag2TextCollator(processor, model.config.tag_names, augmentation=augmentation,
                                shuffle_tags=data_args.shuffle_tags,
                                excluded_tag_ids=model.config.caption_excluded_tag_ids,
                                image_loader=ImageLoader(fail_fast=data_args.fail_on_bad_image),
                                seed=training_args.seed)
    evaluator = None
    tasks = [t.strip() for t in data_args.eval_tasks.split(",") if t.strip()]
    if eval_dataset is not None and tasks:
        generate_kwargs = {"num_beams": data_args.eval_num_beams} if data_args.eval_num_beams else {}
        evaluator = Tag2TextEvaluator(processor, batch_size=training_args.per_device_eval_batch_size,
                                      max_samples=data_args.max_eval_samples, tasks=tasks,
                                      generate_kwargs=generate_kwargs, itm_rerank_k=data_args.itm_rerank_k,
                                      meteor=None if data_args.eval_meteor else False,
                                      progress=training_args.process_index == 0)
    trainer = Tag2TextTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        eval_data_collator=evaluation_collator(processor, model.config.tag_names,
                                               excluded_tag_ids=model.config.caption_excluded_tag_ids),
        processing_class=processor,
        task_evaluator=evaluator,
        callbacks=[EpochCallback(collator, train_dataset if isinstance(train_dataset, WebDatasetSource) else None),
                   *callbacks],
    )
    return TrainingSetup(trainer, model, processor, collator, train_dataset, eval_dataset, tag_list, model_args,
                         data_args, training_args)


def run_training(setup: TrainingSetup) -> dict:
    """Train (resuming if asked), save the final model, evaluate; returns the summary."""
    trainer, args = setup.trainer, setup.training_args
    result = trainer.train(resume_from_checkpoint=_resume_value(args.resume_from_checkpoint))
    if getattr(setup.data_args, "calibrate_thresholds", False):
        calibrate_thresholds(setup)
    trainer.save_model(args.output_dir)
    trainer.save_state()  # trainer_state.json with the log history beside the model
    summary = trainer.run_summary()
    summary.update({"train_metrics": result.metrics, "num_tags": len(setup.tag_list),
                    "image_load_failures_detail": setup.collator.image_loader.summary()})
    if setup.eval_dataset is not None:
        metrics = trainer.evaluate()
        trainer.save_metrics("eval", metrics)
        summary["eval_metrics"] = metrics
    if trainer.is_world_process_zero():
        Path(args.output_dir, "train_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def calibrate_thresholds(setup: TrainingSetup, records=None) -> dict:
    """Per-class thresholds maximising F1 on ``records`` (default: the evaluation data), set in the model's
    config (saved with it). Every process computes the same thresholds from the same data."""
    from .evaluation import Tag2TextEvaluator

    records = records if records is not None else setup.eval_dataset
    if records is None:
        raise ValueError("--calibrate-thresholds needs --eval-dir (a validation split)")
    evaluator = Tag2TextEvaluator(setup.processor, batch_size=setup.training_args.per_device_eval_batch_size,
                                  max_samples=setup.data_args.max_eval_samples, progress=False)
    model = setup.trainer.accelerator.unwrap_model(setup.trainer.model)
    was_training = model.training
    thresholds = evaluator.calibrate_thresholds(model, records)
    model.train(was_training)
    return thresholds


def run(args) -> int:
    from .data import DataFormatError
    from .images import BadImageError
    from .trainer import NonFiniteLossError

    model_args, data_args, training_args = dataclasses_from_namespace(args)
    try:
        setup = prepare_training(model_args, data_args, training_args)
        summary = run_training(setup)
    except NonFiniteLossError as error:
        logger.error("%s", error)
        return EXIT_NON_FINITE
    except (DataFormatError, BadImageError, FileNotFoundError) as error:
        logger.error("%s", error)
        return EXIT_BAD_INPUT
    logger.info("trained %d steps; model saved in %s", summary["global_step"], training_args.output_dir)
    return 0
