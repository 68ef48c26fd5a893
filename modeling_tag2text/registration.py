"""Registration of the Tag2Text classes with transformers' Auto classes and pipelines: the one place where it
happens (for installed-package users; the modeling and processing modules register nothing themselves).

Not part of the Hub payload: remote-code users get the same through ``auto_map`` in config.json.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

_registered = False


def register_auto_classes() -> None:
    """Register config, models, processor and the captioning pipeline; safe to call more than once."""
    global _registered
    if _registered:
        return
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModel,
        AutoModelForImageTextToText,
        AutoModelForPreTraining,
        AutoModelForZeroShotImageClassification,
        AutoProcessor,
    )

    from .configuration_tag2text import Tag2TextConfig
    from .modeling_tag2text import Tag2TextForCaptioning, Tag2TextModel
    from .modeling_tag2text_pretraining import Tag2TextForPreTraining
    from .modeling_tag2text_retrieval import Tag2TextForImageTextRetrieval
    from .image_processing_tag2text import Tag2TextImageProcessor
    from .processing_tag2text import Tag2TextProcessor

    AutoConfig.register(Tag2TextConfig.model_type, Tag2TextConfig, exist_ok=True)
    AutoModel.register(Tag2TextConfig, Tag2TextModel, exist_ok=True)
    AutoModelForImageTextToText.register(Tag2TextConfig, Tag2TextForCaptioning, exist_ok=True)
    # Both load from a captioning directory (same keys); the pre-training model also saves as one.
    AutoModelForPreTraining.register(Tag2TextConfig, Tag2TextForPreTraining, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(Tag2TextConfig, Tag2TextForImageTextRetrieval, exist_ok=True)
    AutoImageProcessor.register(Tag2TextConfig, slow_image_processor_class=Tag2TextImageProcessor, exist_ok=True)
    AutoProcessor.register(Tag2TextConfig, Tag2TextProcessor, exist_ok=True)
    # save_pretrained then writes the remote-code payload, so saved directories load without this package.
    Tag2TextConfig.register_for_auto_class()
    Tag2TextModel.register_for_auto_class("AutoModel")
    Tag2TextForCaptioning.register_for_auto_class("AutoModelForImageTextToText")
    Tag2TextImageProcessor.register_for_auto_class("AutoImageProcessor")
    Tag2TextProcessor.register_for_auto_class("AutoProcessor")
    _register_pipeline(AutoModelForImageTextToText)
    _registered = True


def _register_pipeline(model_class) -> None:
    """The captioning pipeline under a task name of its own for in-process use (``"tag2text-captioning"``).

    ``"image-to-text"`` itself cannot be registered in-process: transformers redirects it before the registry
    is consulted; model directories reach the pipeline through ``custom_pipelines`` instead.
    """
    from transformers.pipelines import PIPELINE_REGISTRY

    from .pipeline_tag2text import Tag2TextCaptionPipeline

    if "tag2text-captioning" not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            "tag2text-captioning",
            pipeline_class=Tag2TextCaptionPipeline,
            pt_model=model_class,
            type="multimodal",
        )
