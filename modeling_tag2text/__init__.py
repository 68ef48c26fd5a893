"""Tag2Text for Hugging Face transformers.

``import tag2text`` exposes the config, the models and the processor, and registers them with the Auto
classes so that ``AutoModel``, ``AutoModelForImageTextToText``, ``AutoProcessor`` and the image-to-text
pipeline find them without ``trust_remote_code``.

Without torch installed only :mod:`tag2text.onnx` (onnxruntime inference of an exported model) is usable; the
package then imports nothing else, so a deployment can leave torch and transformers out.
"""

import importlib.util

if importlib.util.find_spec("torch") is not None:
    from .configuration_tag2text import (
        PRESETS,
        Tag2TextConfig,
        Tag2TextTaggingConfig,
        Tag2TextTextConfig,
        preset_config,
    )
    from .modeling_tag2text import (
        Tag2TextForCaptioning,
        Tag2TextForCaptioningOutput,
        Tag2TextModel,
        Tag2TextModelOutput,
        Tag2TextPreTrainedModel,
        Tag2TextTagOutput,
        asymmetric_loss,
    )
    from .registration import register_auto_classes

    try:
        from .processing import Tag2TextImageProcessor, Tag2TextProcessor, build_tokenizer
    except ImportError as error:  # only when the package is used from a partial checkout
        raise ImportError(f"tag2text.processing could not be imported: {error}") from error

    register_auto_classes()
else:

    def __getattr__(name):
        raise AttributeError(
            f"tag2text.{name} needs torch; without torch only tag2text.onnx (onnxruntime) is available"
        )

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "Tag2TextConfig",
    "Tag2TextForCaptioning",
    "Tag2TextForCaptioningOutput",
    "Tag2TextImageProcessor",
    "Tag2TextModel",
    "Tag2TextModelOutput",
    "Tag2TextPreTrainedModel",
    "Tag2TextProcessor",
    "Tag2TextTagOutput",
    "Tag2TextTaggingConfig",
    "Tag2TextTextConfig",
    "asymmetric_loss",
    "build_tokenizer",
    "preset_config",
    "register_auto_classes",
]
