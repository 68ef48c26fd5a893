"""Inputs of Tag2Text: images, captions and tags (``tag2text.processing``).

Names are imported on first use, so that ``import tag2text.processing`` (and the ``mine-tags`` and
``build-tag-list`` commands' ``--help``) do not pay for torch, transformers or spaCy.
"""

from __future__ import annotations

from ..lazy_exports import lazy_exports

# The processor classes and the image conversion live beside the model files (tag2text.*, the Hub payload, which
# a saved directory carries); they are re-exported here, where processing's callers look for them.
_EXPORTS = {
    "ImageInputError": "..image_loading",  # numpy and PIL only: no transformers for the image conversion
    "Tag2TextImageProcessor": "..image_processing_tag2text",
    "to_rgb_image": "..image_loading",
    "Tag2TextProcessor": "..processing_tag2text",
    "add_tag2text_tokens": "..processing_tag2text",
    "build_tokenizer": ".tokenizer_loading",
    "TokenizerLoadError": ".source_check",
    # The tag miner (spaCy).
    "TagMiner": ".mining",
    "TagVocabulary": ".mining",
    "build_tag_list": ".mining",
    "tag_ids_to_multi_hot": ".mining",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
