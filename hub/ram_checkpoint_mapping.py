"""Which model an original checkpoint holds (Tag2Text, RAM or RAM++), and the key mapping of RAM / RAM++ state
dicts to ours, with the same loud checks as Tag2Text's (:mod:`.checkpoint_mapping`, whose Swin and BERT rules
it reuses).

Layout differences (original -> ours), beyond Tag2Text's Swin and BERT renames:

- ``label_embed`` (a bare Parameter), ``reweight_scale`` (RAM++), ``wordvec_proj.*``, ``fc.*`` and
  ``image_proj.*`` keep their names.
- ``tag_encoder.*`` -> ``text_encoder.*``; ``text_decoder.*`` keeps its names (RAM only).
- ``tagging_head.*`` (``vision_multi.*`` in the released files): RAM -> ``text_encoder.encoder.layer.{0,1}.*``
  (the original ties them to the tag encoder's first layers; the tagging-head copy wins, as when the original
  loads a file); RAM++ -> ``tagging_head.encoder.layer.*`` (its own layers).

Pure functions on dicts of tensors: no file access.
"""

from __future__ import annotations

import logging

import torch

from .checkpoint_mapping import (
    CheckpointConversionError,
    ConversionResult,
    _list,
    _tagging_copy,
    _text_model_key,
    complete_conversion,
    merge_tagging_head,
    vision_targets,
)

logger = logging.getLogger(__name__)

TAG2TEXT, RAM, RAM_PLUS = "tag2text", "ram", "ram_plus"
FAMILY_NAMES = {TAG2TEXT: "Tag2Text", RAM: "RAM", RAM_PLUS: "RAM++"}
_SAME_NAME_PREFIXES = ("wordvec_proj.", "fc.", "image_proj.")


def detect_family(original: dict, source: str = "checkpoint") -> str:
    """``"tag2text"``, ``"ram"`` or ``"ram_plus"`` from the keys of an original state dict.

    Tag2Text has ``label_embed.weight`` (an Embedding) and a per-class ``fc.W``; RAM and RAM++ have a bare
    ``label_embed`` Parameter and one shared ``fc``; RAM++ alone has ``reweight_scale``.

    Raises:
        CheckpointConversionError: a layout of none of them, naming the file and some of its keys.
    """
    keys = set(original)
    vision = any(k.startswith("visual_encoder.") for k in keys)
    if vision and ("label_embed.weight" in keys or "fc.W" in keys):
        return TAG2TEXT
    if vision and "label_embed" in keys and "fc.weight" in keys:
        return RAM_PLUS if "reweight_scale" in keys else RAM
    raise CheckpointConversionError(
        f"{source} is not a Tag2Text, RAM or RAM++ checkpoint of a known layout (expected visual_encoder.* with "
        f"label_embed.weight and fc.W (Tag2Text) or label_embed and fc.weight (RAM; RAM++ also reweight_scale)); "
        f"its keys: {_list(keys, 12)}"
    )


def original_num_tags(original: dict, family: str, descriptions_per_tag: int | None = None) -> int | None:
    """Classes of a RAM / RAM++ state dict: RAM's label_embed rows; RAM++'s rows over ``descriptions_per_tag``
    (None when unknown)."""
    rows = int(original["label_embed"].shape[0])
    if family == RAM:
        return rows
    if descriptions_per_tag:
        return rows // descriptions_per_tag if rows % descriptions_per_tag == 0 else None
    return None


def convert_ram_state_dict(original: dict, expected_shapes: dict, family: str) -> ConversionResult:
    """Map an original RAM (``family="ram"``) or RAM++ (``"ram_plus"``) state dict to our key layout.

    Raises:
        CheckpointConversionError: listing every original key not used, every model key not filled and every
            shape that differs (all at once); also when tensors the original ties hold different values.
    """
    if family not in (RAM, RAM_PLUS):
        raise ValueError(f"family must be {RAM!r} or {RAM_PLUS!r}, got {family!r}")
    result = ConversionResult(state_dict={})
    mapped: dict[str, tuple[torch.Tensor, str]] = {}
    unused = []

    prefix, tagging = _tagging_copy(original)
    result.tagging_prefix = prefix
    for key, tensor in original.items():
        if key.startswith(("tagging_head.", "vision_multi.")):
            continue  # after the tag encoder, so that the tagging-head copy wins
        target = None
        if key in ("label_embed", "reweight_scale") or key.startswith(_SAME_NAME_PREFIXES):
            target = key
        elif key.startswith("visual_encoder."):
            for our_key, value in vision_targets(key, tensor, result, unused):
                mapped[our_key] = (value, key)
            continue
        elif key.startswith("tag_encoder.") and family == RAM:
            sub = _text_model_key(key[len("tag_encoder."):])
            if sub == []:
                result.dropped_keys.append(key)
                continue
            target = None if sub is None else "text_encoder." + sub
        elif key.startswith("text_decoder.bert.") and family == RAM:
            sub = _text_model_key(key[len("text_decoder.bert."):])
            if sub == []:
                result.dropped_keys.append(key)
                continue
            target = None if sub is None else "text_decoder.bert." + sub
        elif key == "text_decoder.cls.predictions.decoder.bias" and family == RAM:
            bias = original.get("text_decoder.cls.predictions.bias")
            # Equal element for element, NaN where the other is NaN too (one bias stored twice).
            if bias is None or (bias is not tensor and (bias.shape != tensor.shape or not torch.allclose(
                    bias.float(), tensor.float(), rtol=0.0, atol=0.0, equal_nan=True))):
                raise CheckpointConversionError(
                    "text_decoder.cls.predictions.decoder.bias differs from text_decoder.cls.predictions.bias; "
                    "the original ties them and this model keeps one bias")
            result.dropped_keys.append(key)
            continue
        elif key.startswith("text_decoder.cls.predictions.") and family == RAM:
            sub = key[len("text_decoder.cls.predictions."):]
            target = key if sub in ("bias", "decoder.weight") or sub.startswith("transform.") else None
        if target is None:
            unused.append(key)
        else:
            mapped[target] = (tensor, key)

    head_prefix = "text_encoder." if family == RAM else "tagging_head."
    merge_tagging_head(result, mapped, unused, tagging, prefix, head_prefix)

    # RAM has no parameters beyond the original's, so every unfilled tensor is an error.
    return complete_conversion(result, mapped, unused, expected_shapes, new_prefixes=())
