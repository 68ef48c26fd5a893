"""A training run: :func:`prepare_training` builds it from the arguments, :func:`run_training` runs it
(``tag2text train`` and ``tag2text quickstart`` use both; so may any Python caller).

The output directory holds the model (``from_pretrained``), its processor, ``tag_list.txt``,
``train_summary.json`` and, with evaluation data, ``eval_results.json``.

A new model without ``--tokenizer`` gets a WordPiece vocabulary trained on the training captions; training
options the user leaves unset that depend on the start (learning rate, schedule, loss weights, batch size)
are chosen by :func:`.arguments.run_defaults` and logged. Without ``--eval-dir`` a few percent of the
training images are held out (chosen by ``--seed``) and the per-tag thresholds are calibrated on them after
training.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

from .arguments import TrainingArgumentError

logger = logging.getLogger(__name__)


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
    holdout_dataset: object = None
    holdout: dict | None = None  # how the held-out part was chosen, or why there is none
    tokenizer_source: str | None = None
    defaults_chosen: dict | None = None


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


def default_augmentation(config, init_from) -> bool:
    """Whether to augment when neither ``--augment`` nor ``--no-augment`` is given: never for a new model (see
    :attr:`~.arguments.DataArguments.augment`); with ``--init-from``, as that model was last trained.

    A model this command trained without augmentation learned its tags from unaltered images; RandAugment's
    colour operations and crops that cut tagged objects out would then teach it other tags (measured: -0.08 F1
    on colour tags, benchmarks/tag_list_finetune.py). Weights with nothing recorded (converted released ones)
    were trained with the released augmentation, so it stays on for them.
    """
    if not init_from:
        logger.info("training a new model: augmentation off; --augment turns it on")
        return False
    recorded = getattr(config, "trained_with_augmentation", None)  # RAM / RAM++ configs have no such field
    augment = True if recorded is None else recorded
    logger.info("fine-tuning %s: augmentation %s (%s); --augment or --no-augment overrides", init_from,
                "on" if augment else "off",
                "not recorded in its config: the released recipe" if recorded is None
                else f"its config says it was trained with{'' if recorded else 'out'} it")
    return augment


def prepare_training(model_args, data_args, training_args, callbacks=()) -> TrainingSetup:
    """Read the data, resolve the tag list, build the model, processor, collator and trainer."""
    from .. import Tag2TextConfig
    from .collator import Tag2TextCollator, evaluation_collator
    from .data import TagResolver
    from .evaluation import Tag2TextEvaluator
    from .images import ImageLoader
    from .model_setup import FROM_CAPTIONS, build_model_and_processor, load_tokenizer
    from .ram_setup import ram_tag_names, tagging_family
    from .tag_mining import CaptionTagger, TagList
    from .trainer import EpochCallback, Tag2TextTrainer
    from .webdataset import WebDatasetSource

    if not data_args.train_dir:
        raise ValueError("--train-dir is required")
    if not training_args.output_dir:
        raise ValueError("--output-dir is required")
    output = Path(training_args.output_dir)
    saved_tags = output / "tag_list.txt"
    family = tagging_family(model_args.init_from)
    if family is not None:
        check_ram_arguments(model_args)
    resuming = training_args.resume_from_checkpoint is not None
    tag_list = None
    if model_args.tag_list:
        tag_list = TagList.read(model_args.tag_list)
    elif resuming and saved_tags.is_file():
        tag_list = TagList.read(saved_tags)  # the list this run started with
    elif model_args.init_from and family is not None:
        tag_list = TagList(ram_tag_names(model_args.init_from, family))
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
    holdout_dataset, holdout = None, None
    if eval_dataset is None:
        train_dataset, holdout_dataset, holdout = split_holdout(train_dataset, data_args, training_args.seed)

    if family is not None:
        return _prepare_ram_training(family, tag_list, train_dataset, eval_dataset, holdout_dataset, holdout,
                                     saved_tags, model_args, data_args, training_args, callbacks)

    tokenizer = None
    trains_tokenizer = model_args.tokenizer == FROM_CAPTIONS or (model_args.tokenizer is None
                                                                  and not model_args.init_from)
    with training_args.main_process_first(desc="building the tokenizer"):
        texts = required = None
        if trains_tokenizer:
            if isinstance(train_dataset, WebDatasetSource):
                raise TrainingArgumentError("webdataset shards cannot train a tokenizer from their captions: give --tokenizer "
                                 "(a vocab.txt or tokenizer directory)")
            texts = _captions_of(train_dataset)
            # The decoder prompt ("a picture of"), the tag names and the separator must be real tokens, not [UNK].
            required = list(tag_list.names) + [Tag2TextConfig().prompt, Tag2TextConfig().tag_separator.strip()]
        tokenizer = load_tokenizer(model_args.tokenizer, model_args.init_from, texts, work_dir=output,
                                   required=required, resuming=resuming)
    # Seed before the model is built: its random initialisation must be the same in every run (and every
    # process) with the same --seed, or a resumed or distributed run starts from other weights.
    from transformers import set_seed

    set_seed(training_args.seed)
    model, processor = build_model_and_processor(model_args, tag_list, tokenizer)

    if training_args.process_index == 0:
        tag_list.write(saved_tags)

    set_streamed_max_steps(train_dataset, training_args)
    augmentation = training_augmentation(model.config, model_args, data_args)
    collator = Tag2TextCollator(processor, model.config.tag_names, augmentation=augmentation,
                                shuffle_tags=data_args.shuffle_tags,
                                excluded_tag_ids=model.config.caption_excluded_tag_ids,
                                image_loader=ImageLoader(fail_fast=data_args.fail_on_bad_image,
                                                         cache_megabytes=data_args.image_cache_megabytes),
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
    source = ("trained on the training captions (WordPiece)" if trains_tokenizer
              else model_args.tokenizer or f"the --init-from model's ({model_args.init_from})")
    return TrainingSetup(trainer, model, processor, collator, train_dataset, eval_dataset, tag_list, model_args,
                         data_args, training_args, holdout_dataset=holdout_dataset, holdout=holdout,
                         tokenizer_source=source)


def set_streamed_max_steps(train_dataset, training_args) -> None:
    """Streamed (webdataset) data has no length for the Trainer: without --max-steps, the steps of
    --num-train-epochs over its sample count."""
    from .webdataset import WebDatasetSource

    if isinstance(train_dataset, WebDatasetSource) and training_args.max_steps <= 0:
        per_step = (training_args.per_device_train_batch_size * training_args.world_size
                    * training_args.gradient_accumulation_steps)
        training_args.max_steps = math.ceil(train_dataset.num_samples / per_step * training_args.num_train_epochs)
        logger.info("streamed data: %d samples -> max_steps=%d", train_dataset.num_samples, training_args.max_steps)


def training_augmentation(config, model_args, data_args):
    """The run's :class:`~.augmentation.TrainAugmentation`, or None; the choice (given, or
    :func:`default_augmentation`) is recorded in ``config`` (saved with the weights: the next fine-tune follows
    it)."""
    from .augmentation import TrainAugmentation

    if data_args.augment is None:
        data_args.augment = default_augmentation(config, model_args.init_from)
    config.trained_with_augmentation = data_args.augment
    if not data_args.augment:
        return None
    return TrainAugmentation(int(config.vision_config.image_size), data_args.augmentation_config())


def check_ram_arguments(model_args) -> None:
    """Options that have no meaning for a RAM / RAM++ fine-tune (no text side, no new architecture) are refused,
    not ignored (the loss options: :func:`.arguments.dataclasses_from_namespace`)."""
    refused = [("--tokenizer", model_args.tokenizer), ("--num-tags", model_args.num_tags),
               ("--image-size", model_args.image_size)]
    for option, value in refused:
        if value is not None:
            raise TrainingArgumentError(f"{option} {value}: does not apply to a RAM / RAM++ model (--init-from "
                                        f"{model_args.init_from}), which trains its tagging loss only")


def _prepare_ram_training(family, tag_list, train_dataset, eval_dataset, holdout_dataset, holdout, saved_tags,
                          model_args, data_args, training_args, callbacks) -> TrainingSetup:
    """The RAM / RAM++ part of :func:`prepare_training`: model and image processor (:mod:`.ram_setup`), the
    tagging collator, the tagging evaluator and the trainer."""
    from transformers import set_seed

    from .evaluation import Tag2TextEvaluator
    from .images import ImageLoader
    from .ram_setup import TaggingCollator, build_ram_model_and_processor
    from .trainer import EpochCallback, Tag2TextTrainer
    from .webdataset import WebDatasetSource

    set_seed(training_args.seed)
    model, image_processor = build_ram_model_and_processor(model_args, tag_list, family)
    if training_args.process_index == 0:
        tag_list.write(saved_tags)
    set_streamed_max_steps(train_dataset, training_args)
    augmentation = training_augmentation(model.config, model_args, data_args)
    collator = TaggingCollator(image_processor, model.config.num_tags, augmentation=augmentation,
                               image_loader=ImageLoader(fail_fast=data_args.fail_on_bad_image,
                                                        cache_megabytes=data_args.image_cache_megabytes),
                               seed=training_args.seed)
    evaluator = None
    tasks = [t.strip() for t in data_args.eval_tasks.split(",") if t.strip()]
    if eval_dataset is not None and tasks:
        if tasks != ["tagging"]:
            logger.info("%s writes no captions: evaluating tagging only (asked: %s)", family, ", ".join(tasks))
        evaluator = Tag2TextEvaluator(image_processor, batch_size=training_args.per_device_eval_batch_size,
                                      max_samples=data_args.max_eval_samples, tasks=("tagging",),
                                      progress=training_args.process_index == 0)
    trainer = Tag2TextTrainer(
        model=model, args=training_args, train_dataset=train_dataset, eval_dataset=eval_dataset,
        data_collator=collator, eval_data_collator=TaggingCollator(image_processor, model.config.num_tags),
        processing_class=image_processor, task_evaluator=evaluator,
        callbacks=[EpochCallback(collator, train_dataset if isinstance(train_dataset, WebDatasetSource) else None),
                   *callbacks],
    )
    return TrainingSetup(trainer, model, image_processor, collator, train_dataset, eval_dataset, tag_list,
                         model_args, data_args, training_args, holdout_dataset=holdout_dataset, holdout=holdout,
                         tokenizer_source=None)


def split_holdout(train_dataset, data_args, seed: int):
    """(training part, held-out part or None, description) of map-style training data: ``--holdout-fraction``
    of the images (at least ``--holdout-min``), drawn by ``seed``; none when that would take over a quarter of
    the data, or for streamed shards."""
    from .webdataset import WebDatasetSource

    fraction = float(data_args.holdout_fraction)
    if fraction <= 0:
        return train_dataset, None, {"images": 0, "reason": "--holdout-fraction 0"}
    if isinstance(train_dataset, WebDatasetSource) or not hasattr(train_dataset, "select"):
        logger.warning("no --eval-dir and streamed training data: nothing held out, tag thresholds not calibrated")
        return train_dataset, None, {"images": 0, "reason": "streamed (webdataset) training data"}
    import numpy as np

    total = len(train_dataset)
    count = max(math.ceil(fraction * total), int(data_args.holdout_min))
    if total < 4 * count:
        logger.warning("no --eval-dir and only %d training images (holding out %d needs at least %d): nothing held "
                       "out, tag thresholds not calibrated", total, count, 4 * count)
        return train_dataset, None, {"images": 0, "reason": f"only {total} training images (needs {4 * count})"}
    order = np.random.default_rng(seed).permutation(total)
    held = sorted(int(i) for i in order[:count])
    kept = sorted(int(i) for i in order[count:])
    logger.info("no --eval-dir: holding out %d of %d training images (%.0f%%, seed %d) to calibrate the tag "
                "thresholds after training", count, total, 100 * count / total, seed)
    description = {"images": count, "of": total, "fraction": round(count / total, 4), "seed": int(seed),
                   "indices": held}
    return train_dataset.select(kept), train_dataset.select(held), description


def run_training(setup: TrainingSetup) -> dict:
    """Train (resuming if asked), save the final model, evaluate; returns the summary."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    trainer, args = setup.trainer, setup.training_args
    with logging_redirect_tqdm():  # log lines during training go above the progress bar, not glued onto it
        result = trainer.train(resume_from_checkpoint=_resume_value(args.resume_from_checkpoint))
    calibration = None
    if setup.holdout_dataset is not None:
        calibration = calibrate_on_holdout(setup)
    elif getattr(setup.data_args, "calibrate_thresholds", False):
        calibrate_thresholds(setup)
        calibration = {"split": "--eval-dir", "num_thresholds": len(setup.model.config.tag_thresholds)}
    trainer.save_model(args.output_dir)
    if trainer.is_world_process_zero() and trainer.tagging_only:
        # A RAM / RAM++ directory names its image processor in config.json only (see the function's docstring).
        from ..modeling_ram import image_processor_config_without_auto_map

        image_processor_config_without_auto_map(args.output_dir)
    trainer.save_state()  # trainer_state.json with the log history beside the model
    summary = trainer.run_summary()
    planned = trainer.state.max_steps
    summary.update({"train_metrics": result.metrics, "num_tags": len(setup.tag_list),
                    "planned_steps": planned, "stopped_early": trainer.state.global_step < planned,
                    "tokenizer": setup.tokenizer_source, "vocabulary_size": len(setup.processor.tokenizer) if hasattr(setup.processor, "tokenizer") else None,
                    "defaults_chosen": setup.defaults_chosen or {},
                    "holdout": setup.holdout,  # with the indices of the held-out images in --train-dir
                    "threshold_calibration": calibration,
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
    # A tag without a positive image in ``records`` keeps the threshold it had (e.g. carried over from the
    # --init-from model) instead of falling back to the global one.
    thresholds = evaluator.calibrate_thresholds(model, records, keep_others=True)
    model.train(was_training)
    return thresholds


def calibrate_on_holdout(setup: TrainingSetup) -> dict:
    """Calibrate the per-tag thresholds on the held-out training images; returns what to report (thresholds by
    tag name, and the held-out tag F1 at the config's threshold and calibrated; the latter is measured on the
    images it was fitted on, so it is optimistic)."""
    import numpy as np

    from .evaluation import Tag2TextEvaluator
    from .scoring import tagging_scores

    model = setup.trainer.accelerator.unwrap_model(setup.trainer.model)
    was_training = model.training
    evaluator = Tag2TextEvaluator(setup.processor, batch_size=setup.training_args.per_device_eval_batch_size,
                                  progress=False)
    probs, labels = evaluator.tag_probabilities(model, setup.holdout_dataset)
    before = tagging_scores(probs, labels, np.asarray(model.config.threshold_list()))
    thresholds = calibrate_thresholds(setup, records=setup.holdout_dataset)
    after = tagging_scores(probs, labels, np.asarray(model.config.threshold_list()))
    model.train(was_training)
    names = model.config.tag_names
    report = {
        "split": f"held-out {setup.holdout['images']} of {setup.holdout['of']} --train-dir images",
        "num_thresholds": len(thresholds),
        "thresholds": {names[i]: round(float(t), 4) for i, t in sorted(thresholds.items())},
        "holdout_tag_OF1_at_global_threshold": before["tag_OF1"], "holdout_tag_CF1_at_global_threshold": before["tag_CF1"],
        "holdout_tag_OF1_calibrated": after["tag_OF1"], "holdout_tag_CF1_calibrated": after["tag_CF1"],
        "holdout_tag_mAP": after["tag_mAP"],
    }
    logger.info("calibrated %d tag thresholds on %s: held-out tag F1 %.1f at %.2f, %.1f calibrated (fitted there)",
                len(thresholds), report["split"], before["tag_OF1"], model.config.tag_threshold, after["tag_OF1"])
    return report
