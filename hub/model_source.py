"""Where a model given on the command line comes from: a local directory or a Hub repo id.

Used by ``caption`` and ``evaluate`` (and reusable by any command that loads a model; ``convert`` reads a
checkpoint file and checks its tokenizer with :func:`tag2text.build_tokenizer`, which follows the same rule):

- a path that exists is loaded from disk and never sent to the Hub; it must be a directory with ``config.json``;
- a source that does not exist and cannot be a repo id (``owner/name``; see
  :func:`tag2text.processing.source_check.looks_like_hub_id`) fails at once with "no model directory at PATH",
  instead of spending half a minute on Hub retries and ending in a message about repo-id syntax;
- everything else is a repo id, left to ``from_pretrained`` (offline it is looked up in the cache).

:func:`resolve_model_source` imports nothing heavy; :func:`load_model_and_processor` imports torch.
"""

from __future__ import annotations

import json
import logging
import os

from ..processing.source_check import TokenizerLoadError, looks_like_hub_id, words_spelled_unknown

logger = logging.getLogger(__name__)


class ModelSourceError(ValueError):
    """A model source that cannot be loaded; the message names the option and the value."""


def resolve_model_source(source, option: str = "--model") -> str:
    """The local directory (``~`` expanded) or the repo id to load ``source`` from.

    Raises:
        ModelSourceError: a missing local-looking path, a file, or a directory without ``config.json``.
    """
    text = os.fspath(source)
    path = os.path.expanduser(text)
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ModelSourceError(f"{option} {text}: is a file, not a model directory")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ModelSourceError(
                f"{option} {text}: the directory has no config.json (give a directory written by save_pretrained, "
                "tag2text train or tag2text convert)"
            )
        return path
    if not looks_like_hub_id(text):
        raise ModelSourceError(f"{option} {text}: no model directory at {path}")
    return text


def read_local_config(resolved: str) -> dict | None:
    """``config.json`` of a local model directory as a dict (None for a repo id), for checks that must run
    before anything heavy is imported."""
    path = os.path.join(resolved, "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{resolved}: config.json is not valid JSON ({error})") from error


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def load_processor(resolved: str, option: str = "--model", prompt: str | None = None):
    """The :class:`Tag2TextProcessor` of a model, its tokenizer checked to spell the model's prompt.

    A model trained with a tokenizer that could not be loaded (a vocabulary of special tokens only) writes
    nothing but ``[UNK]``; this says so instead of producing empty captions.
    """
    from tag2text import Tag2TextProcessor

    try:
        processor = Tag2TextProcessor.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{option} {resolved}: could not load its processor ({_first_line(error)})") from error
    words = (prompt if prompt is not None else processor.prompt).split()
    unknown = words_spelled_unknown(processor.tokenizer, words)
    if unknown:
        raise TokenizerLoadError(
            f"{option} {resolved}: its tokenizer ({len(processor.tokenizer)} tokens) spells the prompt words "
            f"{', '.join(map(repr, unknown))} as [UNK]; the model was trained with a tokenizer that could not be "
            "loaded; train it again with --tokenizer DIR_OR_VOCAB_TXT"
        )
    return processor


def load_config(resolved: str, option: str = "--model"):
    from tag2text import Tag2TextConfig

    try:
        return Tag2TextConfig.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{option} {resolved}: could not load its config ({_first_line(error)})") from error


# Families that tag but write no caption (no decoder at inference): RAM and RAM++, by config model_type.
TAGGING_ONLY_MODEL_TYPES = {"ram": "RAM", "ram_plus": "RAM++"}


def model_type(resolved: str, option: str = "--model") -> str | None:
    """The ``model_type`` of a resolved source's ``config.json`` (local: read as JSON; a repo id: through
    transformers' config lookup, which uses the cache offline)."""
    config = read_local_config(resolved)
    if config is None:
        from transformers import PretrainedConfig

        try:
            config, _ = PretrainedConfig.get_config_dict(resolved)
        except (OSError, ValueError) as error:
            raise ModelSourceError(f"{option} {resolved}: could not load its config ({_first_line(error)})") from error
    return config.get("model_type")


def tagging_only_family(model_type_name: str | None) -> str | None:
    """"RAM" or "RAM++" for a tagging-only model's ``model_type``, None for a captioning (Tag2Text) model."""
    return TAGGING_ONLY_MODEL_TYPES.get(model_type_name or "")


def load_tagging_config(resolved: str, option: str = "--model"):
    """The :class:`tag2text.RamConfig` / :class:`tag2text.RamPlusConfig` of a tagging-only model."""
    import tag2text  # noqa: F401  (registers the RAM configs with AutoConfig)
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{option} {resolved}: could not load its config ({_first_line(error)})") from error


def load_image_processor(resolved: str, option: str = "--model"):
    """The image processor of a tagging-only model (it has no tokenizer: RAM never tokenizes at inference)."""
    from tag2text import Tag2TextImageProcessor

    try:
        return Tag2TextImageProcessor.from_pretrained(resolved)
    except (OSError, ValueError) as error:
        raise ModelSourceError(
            f"{option} {resolved}: could not load its image processor ({_first_line(error)})") from error


def load_model(resolved: str, option: str = "--model", pack: bool = True, **kwargs):
    """The inference model of a resolved source, its class chosen by the config: :class:`Tag2TextForCaptioning`,
    or for RAM / RAM++ configs the ``AutoModelForImageClassification`` class (``RamForImageTagging``,
    ``RamPlusForImageTagging``). With packed CPU weights (``tag2text.cpu_packing``; inert on other devices and in
    training) unless ``pack`` is False (a model that is changed and saved). ``kwargs`` go to ``from_pretrained``."""
    from tag2text import Tag2TextForCaptioning
    from tag2text.cpu_packing import pack_cpu_weights

    if tagging_only_family(model_type(resolved, option)):
        from transformers import AutoModelForImageClassification

        model_class = AutoModelForImageClassification
    else:
        model_class = Tag2TextForCaptioning
    try:
        model = model_class.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as error:
        raise ModelSourceError(f"{option} {resolved}: could not load the model ({_first_line(error)})") from error
    return pack_cpu_weights(model) if pack else model
