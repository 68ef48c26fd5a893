"""Registration of the Tag2Text classes with transformers' Auto classes and pipelines: the one place where it
happens (for installed-package users; the modeling and processing modules register nothing themselves).

``import tag2text`` must not import torch or transformers (``tag2text --help`` stays fast), yet after it alone
``AutoModel.from_pretrained(run)`` must find our classes instead of asking about remote code. So the package
calls :func:`register_when_transformers_loads`: if transformers' Auto modules are already imported it registers
at once; otherwise a finder on ``sys.meta_path`` (a post-import hook, as ``wrapt``'s; transformers installs a
finder of its own for its legacy module names) watches the imports of transformers modules and registers as
soon as an import of them has completed with an Auto module loaded: before ``AutoModel`` or ``pipeline`` can
be used. It touches no other module, and removes itself once registration succeeded; ``import transformers``
alone registers nothing.

Not part of the Hub payload: remote-code users get the same through ``auto_map`` in config.json.
"""

from __future__ import annotations

import importlib.abc
import logging
import sys
import threading

logger = logging.getLogger(__name__)

_registered = False
_lock = threading.RLock()
_in_progress = False

# The modules after whose import registration is tried: every Auto class and pipeline() lives in one of them,
# and each is imported before its classes can be used.
WATCHED_MODULES = (
    "transformers.models.auto.configuration_auto",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.image_processing_auto",
    "transformers.models.auto.processing_auto",
    "transformers.pipelines",
)


def register_auto_classes() -> None:
    """Register config, models, processor and the captioning pipeline; safe to call more than once.

    ``import tag2text`` arranges this by itself (see the module docstring); call it to register at a moment of
    your choice.
    """
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
    _register_ram_classes()
    _registered = True
    _remove_finder()


def _register_ram_classes() -> None:
    """RAM and RAM++ tagging: AutoConfig, AutoModelForImageClassification (logits per tag; the image-classification
    pipeline with ``function_to_apply="sigmoid"``) and the Tag2Text image processor (384 px, ImageNet mean/std)."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    from .configuration_ram import RamConfig, RamPlusConfig
    from .image_processing_tag2text import Tag2TextImageProcessor
    from .modeling_ram import RamForImageTagging, RamPlusForImageTagging

    for config_class, model_class in ((RamConfig, RamForImageTagging), (RamPlusConfig, RamPlusForImageTagging)):
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModelForImageClassification.register(config_class, model_class, exist_ok=True)
        AutoImageProcessor.register(config_class, slow_image_processor_class=Tag2TextImageProcessor, exist_ok=True)
        config_class.register_for_auto_class()
        model_class.register_for_auto_class("AutoModelForImageClassification")


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


# -- registration when transformers is imported ------------------------------------------------------------------


def register_when_transformers_loads() -> None:
    """Register now if transformers' Auto modules are loaded, else once they are (see the module docstring)."""
    if _registered:
        return
    if _auto_modules_loaded():
        _try_register("import tag2text")
    if not _registered and not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())


def _auto_modules_loaded() -> bool:
    return any(name in sys.modules for name in WATCHED_MODULES)


def _try_register(trigger: str) -> None:
    global _in_progress
    # Never wait: a thread that holds an import lock this one's registration needs may be waiting here (a
    # deadlock that Python's import-lock cycle detection would not see); the thread already registering finishes.
    if not _lock.acquire(blocking=False):
        return
    try:
        if _registered or _in_progress:  # nested: our own imports import transformers modules
            return
        _in_progress = True
        try:
            register_auto_classes()
        except Exception as error:  # never break the user's import of transformers
            # Only a fault of ours or of the environment (every transformers module is complete here); it
            # shows again, with its traceback, where tag2text.register_auto_classes() is called or a class is
            # read from tag2text. An unsupported transformers or torch is not logged here: it is said once, in
            # one line, by the first use of a class (and by the CLI), not twice. Compared by name: importing
            # version_compat to compare classes would raise that very error again.
            if type(error).__name__ != "UnsupportedVersionError":
                logger.warning("tag2text: registering the Auto classes after %s failed: %r", trigger, error)
            _remove_finder()
        finally:
            _in_progress = False
    finally:
        _lock.release()


def _remove_finder() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PostImportFinder)]


_depth = threading.local()  # watched modules being executed in this thread
# transformers' modules, and this package's (``from tag2text.modeling_tag2text import ...`` imports transformers
# from inside a module that registration needs: it is tried once that module is complete).
_WATCHED_PREFIXES = ("transformers.", __name__.rpartition(".")[0] + ".")


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds nothing itself: for a transformers (or tag2text) module it takes the spec the other finders give and
    wraps its loader, so that registration is tried when the outermost such module being imported has run: then
    none of them is half-initialised (registering right after an Auto module can fail, e.g. when
    ``modeling_swin`` imports ``modeling_layers``, which imports the Auto models, while ``modeling_swin`` itself
    is not yet complete)."""

    def find_spec(self, fullname, path, target=None):
        if _registered or not (fullname == "transformers" or fullname.startswith(_WATCHED_PREFIXES)):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PostImportLoader(spec.loader)
        return spec


class _PostImportLoader(importlib.abc.Loader):
    """Delegates to the module's own loader; after the outermost watched module has run, registers if an Auto
    module is loaded by then."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        _depth.value = getattr(_depth, "value", 0) + 1
        try:
            self._loader.exec_module(module)
        finally:
            _depth.value -= 1
        if _depth.value == 0 and not _registered and _auto_modules_loaded():
            _try_register(module.__name__)

    def __getattr__(self, name):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._loader, name)
