"""Tag2Text for Hugging Face transformers.

``import tag2text`` is cheap: it imports neither torch nor transformers (so that ``tag2text --help`` is fast).
The public names load on first use. The classes are registered with transformers' Auto classes, so that
``AutoModel``, ``AutoModelForImageTextToText``, ``AutoProcessor`` and the image-to-text pipeline find them
without ``trust_remote_code`` and ``save_pretrained`` writes the remote-code payload: as soon as transformers'
Auto modules are imported after ``import tag2text`` (see :mod:`.registration`), or at the first access to a
config, model or processor class through this package; :func:`register_auto_classes` does it explicitly.
"""

from __future__ import annotations

import importlib

from .lazy_exports import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "PRESETS": ".presets",
    "Tag2TextConfig": ".configuration_tag2text",
    "Tag2TextTaggingConfig": ".configuration_tag2text",
    "Tag2TextTextConfig": ".configuration_tag2text",
    "preset_config": ".configuration_tag2text",
    "Tag2TextForCaptioning": ".modeling_tag2text",
    "Tag2TextForCaptioningOutput": ".modeling_tag2text",
    "Tag2TextModel": ".modeling_tag2text",
    "Tag2TextModelOutput": ".modeling_tag2text",
    "Tag2TextPreTrainedModel": ".modeling_tag2text",
    "Tag2TextTagOutput": ".modeling_tag2text",
    "asymmetric_loss": ".modeling_tag2text",
    "Tag2TextForPreTraining": ".modeling_tag2text_pretraining",
    "Tag2TextForPreTrainingOutput": ".modeling_tag2text_pretraining",
    "Tag2TextLossWeights": ".modeling_tag2text_pretraining",
    "Tag2TextForImageTextRetrieval": ".modeling_tag2text_retrieval",
    "Tag2TextImageTextRetrievalOutput": ".modeling_tag2text_retrieval",
    "Tag2TextZeroShotImageClassificationPipeline": ".pipeline_tag2text_zero_shot",
    "RamConfig": ".configuration_ram",
    "RamPlusConfig": ".configuration_ram",
    "RamForImageTagging": ".modeling_ram",
    "RamPlusForImageTagging": ".modeling_ram",
    "RamImageTaggingOutput": ".modeling_ram",
    "RamTagOutput": ".modeling_ram",
    "build_ram_open_set": ".ram_open_set",
    "register_auto_classes": ".registration",
    "Tag2TextImageProcessor": ".image_processing_tag2text",
    "Tag2TextProcessor": ".processing_tag2text",
    "TokenizerLoadError": ".processing",
    "build_tokenizer": ".processing",
}

# Names whose first access registers the Auto classes: whoever holds one of these can save or load a model.
_REGISTERING = {
    "Tag2TextConfig",
    "Tag2TextTaggingConfig",
    "Tag2TextTextConfig",
    "preset_config",
    "Tag2TextForCaptioning",
    "Tag2TextForImageTextRetrieval",
    "Tag2TextForPreTraining",
    "Tag2TextModel",
    "Tag2TextPreTrainedModel",
    "Tag2TextImageProcessor",
    "Tag2TextProcessor",
    "RamConfig",
    "RamPlusConfig",
    "RamForImageTagging",
    "RamPlusForImageTagging",
}

__all__ = sorted(_EXPORTS)


def _register_on_first_use(name: str) -> None:
    if name in _REGISTERING:
        importlib.import_module(".registration", __name__).register_auto_classes()


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, on_load=_register_on_first_use)


# After a bare ``import tag2text`` the Auto classes and pipeline() find our classes: registration happens once
# transformers' Auto modules are imported (at once if they are), without importing transformers here.
importlib.import_module(".registration", __name__).register_when_transformers_loads()
