"""Inputs of Tag2Text: images, captions and tags (``tag2text.processing``)."""

from .image_processing_tag2text import ImageInputError, Tag2TextImageProcessor, to_rgb_image
from .processing_tag2text import Tag2TextProcessor, add_tag2text_tokens, build_tokenizer

__all__ = [
    "ImageInputError",
    "Tag2TextImageProcessor",
    "Tag2TextProcessor",
    "add_tag2text_tokens",
    "build_tokenizer",
    "to_rgb_image",
]
