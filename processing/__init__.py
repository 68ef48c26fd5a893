"""Inputs of Tag2Text: images, captions and tags (``tag2text.processing``)."""

from .image_processing_tag2text import ImageInputError, Tag2TextImageProcessor, to_rgb_image
from .processing_tag2text import Tag2TextProcessor, add_tag2text_tokens, build_tokenizer


def __getattr__(name):
    # The tag miner (spaCy) loads only when asked for.
    if name in ("TagMiner", "TagVocabulary", "build_tag_list", "tag_ids_to_multi_hot"):
        from . import mining

        return getattr(mining, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ImageInputError",
    "Tag2TextImageProcessor",
    "Tag2TextProcessor",
    "TagMiner",
    "TagVocabulary",
    "add_tag2text_tokens",
    "build_tag_list",
    "build_tokenizer",
    "tag_ids_to_multi_hot",
    "to_rgb_image",
]
