"""Build a :class:`~tag2text.RamConfig` / :class:`~tag2text.RamPlusConfig` from the original recognize-anything
project's files: the Swin config (``config_swinL_384.json`` format), ``med_config.json`` (RAM's tag encoder and
text decoder), ``q2l_config.json`` (the tagging head), the English and Chinese tag lists and the per-class
threshold file (``ram_tag_list_threshold.txt``: one float per line). The released values are the defaults.
"""

from __future__ import annotations

import logging

from .original_config import (
    RELEASED_MED_CONFIG,
    RELEASED_Q2L_CONFIG,
    OriginalConfigError,
    _check_bert_config,
    bert_layer_sizes,
    load_json_config,
    read_text_lines,
    text_config_from_original,
    vision_config_from_original,
)

logger = logging.getLogger(__name__)

RELEASED_RAM_VISION_CONFIG = {
    "vision_width": 1536,
    "image_res": 384,
    "window_size": 12,
    "embed_dim": 192,
    "depths": [2, 2, 18, 2],
    "num_heads": [6, 12, 24, 48],
}


def read_threshold_file(path, num_tags: int | None = None) -> list[float]:
    """Per-class thresholds, one float in [0, 1] per line (as ``ram_tag_list_threshold.txt``).

    Raises:
        OriginalConfigError: one line naming the file and the first bad line number (or the count mismatch).
    """
    path, lines = read_text_lines(path, "threshold file")
    values = []
    for number, line in enumerate(lines, start=1):
        try:
            value = float(line)
        except ValueError:
            raise OriginalConfigError(f"threshold file {path}, line {number}: {line!r} is not a number") from None
        if not 0.0 <= value <= 1.0:
            raise OriginalConfigError(f"threshold file {path}, line {number}: {value} is not a probability in [0, 1]")
        values.append(value)
    if not values:
        raise OriginalConfigError(f"threshold file {path} holds no thresholds")
    if num_tags is not None and len(values) != num_tags:
        raise OriginalConfigError(f"threshold file {path} has {len(values)} lines for {num_tags} tags")
    return values


def read_chinese_tag_list(path, num_tags: int) -> list[str]:
    """Chinese names, one per line, kept byte for byte (trailing spaces included, as the original prints them)."""
    path, names = read_text_lines(path, "Chinese tag list")
    if len(names) != num_tags:
        raise OriginalConfigError(f"Chinese tag list {path} has {len(names)} names for {num_tags} tags")
    return names


def tagging_head_config_from_original(q2l: dict, name: str = "q2l config"):
    """A :class:`~tag2text.configuration_ram.RamTaggingHeadConfig` from ``q2l_config.json``."""
    from tag2text.configuration_ram import RamTaggingHeadConfig

    _check_bert_config(q2l, name)
    heads = int(q2l["num_attention_heads"])
    if int(q2l["hidden_size"]) % heads:
        raise OriginalConfigError(f"{name}: hidden_size={q2l['hidden_size']} is not a multiple of {heads} heads")
    return RamTaggingHeadConfig(**bert_layer_sizes(q2l), pad_token_id=int(q2l.get("pad_token_id", 0)))


def ram_config_from_original(family: str, tag_names: list[str], tag_names_chinese=None, class_thresholds=None,
                             threshold: float = 0.68, vision_config=None, med_config=None, q2l_config=None,
                             descriptions_per_tag: int = 51, tokenizer=None):
    """A config equivalent to the original ``RAM(...)`` (``family="ram"``) or ``RAM_plus(...)`` (``"ram_plus"``).

    ``class_thresholds`` (one per tag, e.g. from :func:`read_threshold_file`) override ``threshold``, as the
    original's threshold file overrides its constructor's. ``tokenizer`` (RAM only, optional): checked against
    the med config's vocabulary size; its special token ids are recorded.
    """
    from tag2text import RamConfig, RamPlusConfig

    vision = load_json_config(vision_config if vision_config is not None else RELEASED_RAM_VISION_CONFIG,
                              "vision config")
    q2l = load_json_config(q2l_config if q2l_config is not None else RELEASED_Q2L_CONFIG, "q2l config")
    common = dict(
        vision_config=vision_config_from_original(dict(vision, vit=vision.get("vit", "swin_l"))),
        tagging_config=tagging_head_config_from_original(q2l),
        tag_names=list(tag_names),
        tag_names_chinese=None if tag_names_chinese is None else list(tag_names_chinese),
        class_thresholds=None if class_thresholds is None else list(class_thresholds),
        tag_threshold=float(threshold),
    )
    try:
        if family == "ram":
            med = load_json_config(med_config if med_config is not None else RELEASED_MED_CONFIG, "med config")
            text = text_config_from_original(med, tokenizer=tokenizer)
            if tokenizer is None:
                # The original appends [DEC] and [ENC] to the BERT vocabulary: its last two ids.
                text.bos_token_id, text.enc_token_id = text.vocab_size - 2, text.vocab_size - 1
            return RamConfig(text_config=text, **common)
        return RamPlusConfig(descriptions_per_tag=int(descriptions_per_tag), **common)
    except ValueError as error:
        if isinstance(error, OriginalConfigError):
            raise
        raise OriginalConfigError(f"the original config files do not describe a {family} model: {error}") from error
