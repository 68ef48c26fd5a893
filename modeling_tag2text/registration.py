"""Registration of the Tag2Text classes with transformers' Auto classes (for installed-package users).

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
        AutoProcessor,
    )

    from .configuration_tag2text import Tag2TextConfig
    from .modeling_tag2text import Tag2TextForCaptioning, Tag2TextModel
    from .processing import Tag2TextImageProcessor, Tag2TextProcessor

    AutoConfig.register(Tag2TextConfig.model_type, Tag2TextConfig, exist_ok=True)
    AutoModel.register(Tag2TextConfig, Tag2TextModel, exist_ok=True)
    AutoModelForImageTextToText.register(Tag2TextConfig, Tag2TextForCaptioning, exist_ok=True)
    AutoImageProcessor.register(Tag2TextConfig, slow_image_processor_class=Tag2TextImageProcessor, exist_ok=True)
    AutoProcessor.register(Tag2TextConfig, Tag2TextProcessor, exist_ok=True)
    # save_pretrained then writes the remote-code payload, so saved directories load without this package.
    Tag2TextConfig.register_for_auto_class()
    Tag2TextModel.register_for_auto_class("AutoModel")
    Tag2TextForCaptioning.register_for_auto_class("AutoModelForImageTextToText")
    Tag2TextImageProcessor.register_for_auto_class("AutoImageProcessor")
    Tag2TextProcessor.register_for_auto_class("AutoProcessor")
    from .pipeline_tag2text import register_pipeline

    register_pipeline()
    _registered = True
