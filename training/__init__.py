"""Training Tag2Text with the transformers Trainer (``tag2text.training``).

Start with ``tag2text quickstart`` (a tiny model on built-in synthetic data, CPU, a few minutes) or
``tag2text train --help``. The pieces, for use from Python:

* :class:`Tag2TextTrainer` (tagging, LM, ITC and ITM losses), :class:`LossWeights`,
  :class:`Tag2TextTrainingArguments`;
* data: :func:`load_dataset` (imagefolder ``metadata.jsonl`` or the original JSON annotations),
  :func:`load_webdataset` (streamed ``.tar`` shards), :class:`TagResolver`, :class:`Tag2TextCollator`,
  :class:`TrainAugmentation`;
* evaluation: :class:`Tag2TextEvaluator`;
* a whole run: :func:`argument_parser` (transformers' HfArgumentParser of ``tag2text train``'s options),
  :func:`prepare_training` and :func:`run_training`;
* the synthetic dataset: :mod:`tag2text.training.synthetic`.

Heavy modules (the Trainer, datasets) are imported on first use, so that ``import tag2text.training`` is cheap.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

_EXPORTS = {
    "AugmentationConfig": ".augmentation",
    "TrainAugmentation": ".augmentation",
    "Tag2TextCollator": ".collator",
    "evaluation_collator": ".collator",
    "DataFormatError": ".data",
    "TagResolver": ".data",
    "load_dataset": ".data",
    "read_samples": ".data",
    "EvaluationResult": ".evaluation",
    "Tag2TextEvaluator": ".evaluation",
    "BadImageError": ".images",
    "ImageLoader": ".images",
    "LossWeights": ".losses",
    "image_text_contrastive_loss": ".losses",
    "image_text_matching_loss": ".losses",
    "sample_hard_negatives": ".losses",
    "CaptionTagger": ".tag_mining",
    "TagList": ".tag_mining",
    "build_tag_list": ".tag_mining",
    "EpochCallback": ".trainer",
    "NonFiniteLossError": ".trainer",
    "Tag2TextTrainer": ".trainer",
    "Tag2TextTrainingArguments": ".arguments",
    "DataArguments": ".arguments",
    "ModelArguments": ".arguments",
    "TrainingArgumentError": ".option_values",
    "argument_parser": ".arguments",
    "TrainingSetup": ".training_run",
    "prepare_training": ".training_run",
    "run_training": ".training_run",
    "load_webdataset": ".webdataset",
    "WebDatasetSource": ".webdataset",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
