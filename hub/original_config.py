"""Build a :class:`Tag2TextConfig` from the original project's own config files and tag list.

The original Tag2Text is configured by three JSON files (``config_swinB_384.json`` for the Swin backbone,
``med_config.json`` for the interaction encoder and text decoder, ``q2l_config.json`` for the tagging head),
a tag list file, and constructor arguments (threshold 0.68, 0.7 for person/man/woman, seven tags removed
before captioning). The released values are the defaults here, so converting the released checkpoint needs
no config file at all, and any model built with the original code converts by handing over its files.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

# The original Tag2Text class's constructor defaults are defined once, in the configuration module; the names
# here are the original's.
from ..configuration_tag2text import RELEASED_CAPTION_EXCLUDED_TAG_IDS as RELEASED_DELETE_TAG_INDEX
from ..configuration_tag2text import (
    RELEASED_MAX_TAG_LENGTH,
    RELEASED_NUM_TAGS,
    RELEASED_PROMPT,
)
from ..configuration_tag2text import RELEASED_TAG_THRESHOLD as RELEASED_THRESHOLD
from ..configuration_tag2text import RELEASED_TAG_THRESHOLDS as RELEASED_CLASS_THRESHOLDS
from ..text_conventions import special_token_ids

logger = logging.getLogger(__name__)

# The released model's config files, as shipped with the original code (ram/configs/...).
RELEASED_VISION_CONFIG = {
    "vision_width": 1024,
    "image_res": 384,
    "window_size": 12,
    "embed_dim": 128,
    "depths": [2, 2, 18, 2],
    "num_heads": [4, 8, 16, 32],
}
RELEASED_MED_CONFIG = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "vocab_size": 30524,
    "pad_token_id": 0,
    "initializer_range": 0.02,
    "encoder_width": 768,
    "add_cross_attention": True,
}
RELEASED_Q2L_CONFIG = dict(RELEASED_MED_CONFIG, num_attention_heads=4, num_hidden_layers=2, vocab_size=30522,
                           add_tag_cross_attention=False)

# Names at the indices the original code hard-codes; a 3,429-tag list that disagrees is not the released one.
RELEASED_TAG_NAMES_AT = {
    127: "quarter", 2961: "back", 3351: "two", 3265: "three", 3338: "four", 3355: "five", 3359: "one",
    2701: "person", 2828: "man", 1167: "woman",
}


class OriginalConfigError(ValueError):
    """An original config file or tag list cannot describe a model this port can build."""


def load_json_config(value, name: str) -> dict:
    """A config given as a dict or as the path of a JSON file (the message names ``name`` and the file)."""
    if isinstance(value, dict):
        return dict(value)
    path = Path(os.fspath(value))
    if not path.is_file():
        raise OriginalConfigError(f"{name}: no such file: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OriginalConfigError(f"{name}: {path} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise OriginalConfigError(f"{name}: {path} must hold a JSON object, got {type(data).__name__}")
    return data


def read_text_lines(path, what: str) -> tuple[Path, list[str]]:
    """The path and the lines of the UTF-8 text file ``path`` (``splitlines``, as the original reads its tag
    lists); ``what`` names the file in the one-line error."""
    path = Path(os.fspath(path))
    if not path.is_file():
        raise OriginalConfigError(f"{what}: no such file: {path}")
    try:
        return path, path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise OriginalConfigError(f"{what} {path} is not UTF-8 text ({error})") from error


def read_tag_list(path) -> list[str]:
    """Tag names, one per line, read as the original does (``splitlines``, no trailing-newline entry).

    Blank lines are kept as tags only when they are inside the file, since the original indexes by line;
    an empty file is an error.
    """
    path, names = read_text_lines(path, "tag list")
    if not names:
        raise OriginalConfigError(f"tag list {path} holds no tags")
    return names


def check_released_tag_names(tag_names: list[str], source: str = "tag list") -> bool:
    """True when a 3,429-tag list has the released names at the indices the original code hard-codes.

    Logs a warning otherwise: the released thresholds and delete list refer to those indices.
    """
    if len(tag_names) != RELEASED_NUM_TAGS:
        return False
    wrong = {i: tag_names[i] for i, name in RELEASED_TAG_NAMES_AT.items() if tag_names[i] != name}
    if wrong:
        logger.warning(
            "%s has %d tags like the released list but different names at indices the released thresholds "
            "and delete list use: %s (expected %s)",
            source, RELEASED_NUM_TAGS, wrong, {i: RELEASED_TAG_NAMES_AT[i] for i in wrong},
        )
        return False
    return True


def _require(config: dict, keys, name: str):
    missing = [key for key in keys if key not in config]
    if missing:
        raise OriginalConfigError(f"{name} lacks the keys {missing}")


def vision_config_from_original(config: dict, name: str = "vision config"):
    """A transformers ``SwinConfig`` from the original's ``config_swinB_*.json`` format."""
    from transformers import SwinConfig

    vit = str(config.get("vit", "swin_b"))
    if not vit.startswith("swin"):
        raise OriginalConfigError(
            f"{name}: vit={vit!r} is not supported; the converter handles the Swin backbone of the released "
            "Tag2Text (config_swinB_384.json / config_swinB_224.json format)"
        )
    _require(config, ["image_res", "window_size", "embed_dim", "depths", "num_heads"], name)
    depths, heads = list(config["depths"]), list(config["num_heads"])
    if len(depths) != len(heads):
        raise OriginalConfigError(f"{name}: depths {depths} and num_heads {heads} differ in length")
    embed_dim = int(config["embed_dim"])
    width = embed_dim * 2 ** (len(depths) - 1)
    if "vision_width" in config and int(config["vision_width"]) != width:
        raise OriginalConfigError(
            f"{name}: vision_width={config['vision_width']} but embed_dim={embed_dim} with {len(depths)} stages "
            f"gives {width}"
        )
    return SwinConfig(
        image_size=int(config["image_res"]),
        patch_size=4,
        num_channels=3,
        embed_dim=embed_dim,
        depths=depths,
        num_heads=heads,
        window_size=int(config["window_size"]),
        mlp_ratio=4.0,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,  # the original builds its Swin with drop_path_rate=0.1 (inactive in eval)
        hidden_act="gelu",
        use_absolute_embeddings=False,
        layer_norm_eps=1e-5,
    )


_BERT_KEYS = ["hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"]


def _check_bert_config(config: dict, name: str):
    _require(config, _BERT_KEYS, name)
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise OriginalConfigError(
            f"{name}: position_embedding_type={position_type!r} is not supported (the released model uses "
            "absolute position embeddings)"
        )
    if not config.get("add_cross_attention", True):
        raise OriginalConfigError(f"{name}: add_cross_attention=false; Tag2Text cross-attends in every layer")


def _token_ids(tokenizer) -> dict:
    return special_token_ids(tokenizer)


def bert_layer_sizes(config: dict) -> dict:
    """The BERT sizes, activation, dropouts and initialisation of an original ``med_config.json`` /
    ``q2l_config.json`` (already checked by :func:`_check_bert_config`), with the original's defaults."""
    return dict(
        vocab_size=int(config["vocab_size"]),
        hidden_size=int(config["hidden_size"]),
        num_hidden_layers=int(config["num_hidden_layers"]),
        num_attention_heads=int(config["num_attention_heads"]),
        intermediate_size=int(config["intermediate_size"]),
        hidden_act=config.get("hidden_act", "gelu"),
        hidden_dropout_prob=float(config.get("hidden_dropout_prob", 0.1)),
        attention_probs_dropout_prob=float(config.get("attention_probs_dropout_prob", 0.1)),
        max_position_embeddings=int(config.get("max_position_embeddings", 512)),
        initializer_range=float(config.get("initializer_range", 0.02)),
        layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
    )


def text_config_from_original(med: dict, name: str = "med config", tokenizer=None):
    """A :class:`Tag2TextTextConfig` from the original's ``med_config.json`` format.

    With ``tokenizer`` (BERT with ``[DEC]``/``[ENC]``) the special token ids come from it and its length must
    equal ``vocab_size``; otherwise they are the released ids.
    """
    from tag2text import Tag2TextTextConfig

    _check_bert_config(med, name)
    hidden = int(med["hidden_size"])
    encoder_width = int(med.get("encoder_width", hidden))
    if encoder_width != hidden:
        # The decoder cross-attends to the interaction encoder, whose width is hidden_size.
        raise OriginalConfigError(
            f"{name}: encoder_width={encoder_width} differs from hidden_size={hidden}; the text decoder "
            "cross-attends to the interaction encoder, so they must be equal"
        )
    token_ids = {"pad_token_id": int(med.get("pad_token_id", 0))}
    if tokenizer is not None:
        if len(tokenizer) != int(med["vocab_size"]):
            raise OriginalConfigError(
                f"{name}: vocab_size={med['vocab_size']} but the tokenizer has {len(tokenizer)} tokens with [DEC] "
                "and [ENC]; use the tokenizer the model was built with"
            )
        token_ids = _token_ids(tokenizer)
    return Tag2TextTextConfig(**bert_layer_sizes(med), **token_ids)


def tagging_config_from_original(q2l: dict, med: dict, name: str = "q2l config"):
    """A :class:`Tag2TextTaggingConfig` from ``q2l_config.json``.

    The original ties every tagging-head tensor to the interaction encoder's first layers, so the two BERT
    configs must agree on every size and on the activation and LayerNorm epsilon; only the layer and head
    counts are the head's own.
    """
    from tag2text import Tag2TextTaggingConfig

    _check_bert_config(q2l, name)
    for key, default in (("hidden_size", None), ("intermediate_size", None), ("hidden_act", "gelu"),
                         ("layer_norm_eps", 1e-12)):
        mine, theirs = q2l.get(key, default), med.get(key, default)
        if mine != theirs:
            raise OriginalConfigError(
                f"{name}: {key}={mine!r} differs from the med config's {theirs!r}; the tagging head shares "
                "its weights with the interaction encoder, so they must be equal"
            )
    layers = int(q2l["num_hidden_layers"])
    if layers > int(med["num_hidden_layers"]):
        raise OriginalConfigError(
            f"{name}: num_hidden_layers={layers} exceeds the med config's {med['num_hidden_layers']}"
        )
    heads = int(q2l["num_attention_heads"])
    if int(q2l["hidden_size"]) % heads:
        raise OriginalConfigError(f"{name}: hidden_size={q2l['hidden_size']} is not a multiple of {heads} heads")
    return Tag2TextTaggingConfig(
        num_hidden_layers=layers,
        num_attention_heads=heads,
        initializer_range=float(q2l.get("initializer_range", 0.02)),
    )


def _check_indices(values, num_tags: int, name: str):
    bad = sorted(int(i) for i in values if not 0 <= int(i) < num_tags)
    if bad:
        raise OriginalConfigError(
            f"{name} holds tag indices outside [0, {num_tags}) for a list of {num_tags} tags: {bad[:10]}"
        )


def config_from_original(
    tag_names: list[str],
    vision_config=None,
    med_config=None,
    q2l_config=None,
    threshold: float = RELEASED_THRESHOLD,
    class_thresholds: dict | None = None,
    delete_tag_index: list[int] | None = None,
    prompt: str = RELEASED_PROMPT,
    max_tag_length: int = RELEASED_MAX_TAG_LENGTH,
    tokenizer=None,
):
    """A :class:`Tag2TextConfig` equivalent to ``Tag2Text(...)`` built by the original code.

    Args:
        tag_names: the tag list, in class-index order.
        vision_config / med_config / q2l_config: dicts or JSON paths in the original formats; ``None`` is
            the released file.
        threshold: global tag threshold (strict ``>`` on the sigmoid).
        class_thresholds: per-class overrides ``{index: value}``; ``None`` is the released
            ``{2701: 0.7, 2828: 0.7, 1167: 0.7}``, ``{}`` none.
        delete_tag_index: classes removed from the tag text before captioning; ``None`` is the released
            seven, ``[]`` none.
        tokenizer: the BERT tokenizer with ``[DEC]``/``[ENC]``; when given, the config records the token ids
            of the special tokens, the tags, the separator and the prompt (needed for captioning).
    Raises:
        OriginalConfigError: naming the config or argument that cannot be converted.
    """
    from tag2text import Tag2TextConfig

    vision = load_json_config(vision_config if vision_config is not None else RELEASED_VISION_CONFIG,
                              "vision config")
    med = load_json_config(med_config if med_config is not None else RELEASED_MED_CONFIG, "med config")
    q2l = load_json_config(q2l_config if q2l_config is not None else RELEASED_Q2L_CONFIG, "q2l config")
    num_tags = len(tag_names)
    if num_tags == 0:
        raise OriginalConfigError("the tag list is empty")
    class_thresholds = dict(RELEASED_CLASS_THRESHOLDS if class_thresholds is None else class_thresholds)
    delete_tag_index = list(RELEASED_DELETE_TAG_INDEX if delete_tag_index is None else delete_tag_index)
    # The original hard-codes these indices and fails on shorter lists; say which argument to change instead.
    _check_indices(class_thresholds, num_tags, "class thresholds (--class-threshold)")
    _check_indices(delete_tag_index, num_tags, "delete tag index (--delete-tag-index)")
    for index, value in [("threshold", threshold), *class_thresholds.items()]:
        if not 0.0 <= float(value) <= 1.0:
            raise OriginalConfigError(f"threshold for {index} is {value}, not a probability in [0, 1]")
    config = Tag2TextConfig(
        vision_config=vision_config_from_original(vision),
        text_config=text_config_from_original(med, tokenizer=tokenizer),
        tagging_config=tagging_config_from_original(q2l, med),
        tag_names=list(tag_names),
        tag_threshold=float(threshold),
        tag_thresholds={int(k): float(v) for k, v in class_thresholds.items()},
        caption_excluded_tag_ids=[int(i) for i in delete_tag_index],
        prompt=prompt,
        max_tag_length=int(max_tag_length),
    )
    if tokenizer is not None:
        config.set_tag_vocabulary(tokenizer=tokenizer)
    return config
