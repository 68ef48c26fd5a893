"""Key mapping from the original Tag2Text state dict to ours, with loud checks.

Pure functions on dicts of tensors: no file access, no model construction. The caller passes the key ->
shape map of the target model (:func:`expected_shapes` builds it on the meta device), so the mapping can
report every original tensor it did not use, every model tensor it did not fill and every shape that
differs, all at once.

Layout differences (original -> ours):

- ``visual_encoder.*`` (Microsoft Swin v1) -> ``vision_model.*`` (transformers ``SwinModel``): ``qkv`` is
  split in thirds into query, key and value, ``proj`` -> the attention output (``q_proj``/``k_proj``/
  ``v_proj``/``o_proj`` or, on transformers 5.0, ``attention.self.query``... and ``attention.output.dense``:
  :func:`tag2text.version_compat.swin_block_parameter_names`), ``norm1``/``norm2`` ->
  ``layernorm_before``/``layernorm_after``, ``patch_embed`` -> ``embeddings``, the final ``norm`` ->
  ``layernorm``; the ``relative_position_index`` and ``attn_mask`` buffers are dropped (recomputed).
- ``tag_encoder.*`` -> ``text_encoder.*``; the ``position_ids`` buffers are dropped.
- ``tagging_head.*`` (``vision_multi.*`` in some files) -> ``text_encoder.encoder.layer.{0,1}.*``: our
  tagging head runs the interaction encoder's first layers, which is what the original's weight tying made
  it. The tagging-head copy wins, as it did when the original loaded a file (``tag_encoder`` is loaded
  first, then the tied ``tagging_head`` overwrites it).
- ``label_embed.weight`` -> ``tagging_head.label_embed.weight``; ``fc.W`` (1, C, D) and ``fc.b`` (1, C) ->
  ``tagging_head.classifier_weight`` (C, D) and ``tagging_head.classifier_bias`` (C).
- ``text_decoder.cls.predictions.decoder.bias`` is the same tensor as ``...predictions.bias`` in the
  original; ours has only the latter, so the two are checked equal and the former dropped.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import torch

from ..version_compat import swin_block_parameter_names

logger = logging.getLogger(__name__)

# Parameters of our model that the original release does not have (image-text alignment heads). They are
# initialised fresh by the model; any other unfilled tensor is an error.
NEW_PARAMETER_PREFIXES = ("vision_proj.", "text_proj.", "itm_head.", "alignment.")
# Buffers our model computes itself at construction (transformers' Swin relative position index).
COMPUTED_BUFFER_SUFFIXES = (".relative_position_index",)

_TAGGING_PREFIXES = ("tagging_head.", "vision_multi.")


class CheckpointConversionError(ValueError):
    """The original state dict does not match the target configuration; the message lists the keys."""


@dataclass
class ConversionResult:
    """Our state dict and what the mapping did."""

    state_dict: dict
    new_keys: list = field(default_factory=list)  # model tensors initialised fresh (not in the release)
    computed_keys: list = field(default_factory=list)  # model buffers recomputed by the model
    dropped_keys: list = field(default_factory=list)  # original buffers and duplicates not carried over
    tagging_prefix: str | None = None  # "tagging_head." or "vision_multi." (None: no tagging-head copy)
    warnings: list = field(default_factory=list)


def _list(keys, limit: int = 40) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def unwrap_state_dict(checkpoint, source: str = "checkpoint") -> dict:
    """The tensors of a loaded checkpoint: ``{'model': sd, ...}`` (as the original saves), ``{'state_dict':
    sd}`` or a bare state dict; a ``module.`` prefix (DistributedDataParallel) is removed."""
    if not isinstance(checkpoint, dict):
        raise CheckpointConversionError(f"{source} holds a {type(checkpoint).__name__}, not a state dict")
    for wrapper in ("model", "state_dict"):
        inner = checkpoint.get(wrapper)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            checkpoint = inner
            break
    tensors = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointConversionError(
            f"{source} holds no tensors (top-level keys: {_list(map(str, checkpoint))}); expected a state dict "
            "or {'model': state_dict}"
        )
    others = sorted(str(k) for k in checkpoint if not isinstance(checkpoint[k], torch.Tensor))
    if others:
        raise CheckpointConversionError(f"{source}: entries that are not tensors: {_list(others)}")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# -- per-part rules ----------------------------------------------------------------------------------------

_SWIN_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
# Original block parameter -> the role that version_compat.swin_block_parameter_names() names for the installed
# transformers (its SwinModel's module names changed within transformers 5: attention.self.query in 5.0,
# attention.q_proj later).
_SWIN_BLOCK_NORMS = {
    "norm1.weight": "layernorm_before.weight",
    "norm1.bias": "layernorm_before.bias",
    "norm2.weight": "layernorm_after.weight",
    "norm2.bias": "layernorm_after.bias",
}
_SWIN_BLOCK_ROLES = {
    "attn.proj": "attention_output",
    "attn.relative_position_bias_table": "relative_position_bias_table",
    "mlp.fc1": "mlp_in",
    "mlp.fc2": "mlp_out",
}


def _swin_block_part(part: str, names: dict[str, str]):
    """Our name of an original block parameter (below the block prefix), or None when it is not one."""
    if part in _SWIN_BLOCK_NORMS:
        return _SWIN_BLOCK_NORMS[part]
    if part in _SWIN_BLOCK_ROLES:  # the relative position bias table has no .weight/.bias suffix
        return names[_SWIN_BLOCK_ROLES[part]]
    module, _, kind = part.rpartition(".")
    if module in _SWIN_BLOCK_ROLES and kind in ("weight", "bias"):
        return f"{names[_SWIN_BLOCK_ROLES[module]]}.{kind}"
    return None


_SWIN_DROPPED_BUFFERS = ("attn.relative_position_index", "attn_mask")
_SWIN_TOP = {
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "patch_embed.norm.weight": "embeddings.norm.weight",
    "patch_embed.norm.bias": "embeddings.norm.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_SWIN_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(reduction\.weight|norm\.weight|norm\.bias)$")


def map_swin_key(key: str, tensor: torch.Tensor):
    """``visual_encoder.`` sub-key -> list of (our ``vision_model.`` sub-key, tensor); [] drops it; None: unknown."""
    if key in _SWIN_TOP:
        return [(_SWIN_TOP[key], tensor)]
    match = _SWIN_DOWNSAMPLE.match(key)
    if match:
        return [(f"encoder.layers.{match.group(1)}.downsample.{match.group(2)}", tensor)]
    match = _SWIN_BLOCK.match(key)
    if not match:
        return None
    stage, block, part = match.groups()
    names = swin_block_parameter_names()
    prefix = f"encoder.layers.{stage}.blocks.{block}."
    if part in _SWIN_DROPPED_BUFFERS:
        return []
    if part in ("attn.qkv.weight", "attn.qkv.bias"):
        kind = part.rsplit(".", 1)[1]
        if tensor.shape[0] % 3:
            raise CheckpointConversionError(
                f"visual_encoder.{key} has {tensor.shape[0]} rows, not a multiple of 3 (query, key, value)"
            )
        # The original projects q, k and v with one Linear whose output rows are [q; k; v].
        query, key_part, value = tensor.chunk(3, dim=0)
        return [(prefix + f"{names['query']}.{kind}", query), (prefix + f"{names['key']}.{kind}", key_part),
                (prefix + f"{names['value']}.{kind}", value)]
    target = _swin_block_part(part, names)
    return None if target is None else [(prefix + target, tensor)]


def vision_targets(key: str, tensor: torch.Tensor, result: ConversionResult, unused: list) -> list:
    """Our ``vision_model.*`` (key, tensor) pairs for the original ``visual_encoder.*`` ``key``; a key with
    none is recorded in ``unused`` (not ours) or ``result.dropped_keys`` (a buffer we recompute)."""
    targets = map_swin_key(key[len("visual_encoder."):], tensor)
    if targets is None:
        unused.append(key)
    elif not targets:
        result.dropped_keys.append(key)
    return [("vision_model." + sub, value) for sub, value in targets or []]


def _text_model_key(key: str):
    """Sub-key of a BLIP-style BertModel -> ours (same names; the position_ids buffer is dropped)."""
    if key == "embeddings.position_ids":
        return []
    if key.startswith("embeddings.") or key.startswith("encoder.layer."):
        return key
    return None


# -- the mapping -------------------------------------------------------------------------------------------


def _tagging_copy(original: dict) -> tuple[str | None, dict]:
    """The tagging-head tensors keyed by their ``encoder.layer...`` sub-key, and the prefix they used."""
    found = {prefix: {k[len(prefix):]: v for k, v in original.items() if k.startswith(prefix)}
             for prefix in _TAGGING_PREFIXES}
    present = [p for p in _TAGGING_PREFIXES if found[p]]
    if not present:
        return None, {}
    if len(present) == 2:
        both = set(found["tagging_head."]) & set(found["vision_multi."])
        differ = [k for k in both if not torch.equal(found["tagging_head."][k], found["vision_multi."][k])]
        if differ:
            raise CheckpointConversionError(
                "the checkpoint holds the tagging head twice, as tagging_head.* and vision_multi.*, with "
                f"different values for: {_list(differ)}"
            )
        merged = dict(found["vision_multi."])
        merged.update(found["tagging_head."])
        return "tagging_head.", merged
    return present[0], found[present[0]]


def convert_state_dict(original: dict, expected_shapes: dict) -> ConversionResult:
    """Map an original Tag2Text state dict to our key layout.

    Args:
        original: tensors under the original names (see :func:`unwrap_state_dict`).
        expected_shapes: key -> shape of every entry of our model's ``state_dict()`` for the target config.

    Returns:
        a :class:`ConversionResult` whose ``state_dict`` fills every tensor of ``expected_shapes`` except the
        new alignment parameters and the recomputed buffers (listed in ``new_keys``/``computed_keys``).

    Raises:
        CheckpointConversionError: listing every original key that was not used, every model key that was
            not filled and every shape that differs; also when tensors the original ties hold different values.
    """
    result = ConversionResult(state_dict={})
    mapped: dict[str, tuple[torch.Tensor, str]] = {}  # our key -> (tensor, original key)
    unused, conflicts = [], []

    def put(our_key, tensor, source):
        if our_key in mapped:
            conflicts.append(f"{our_key} (from {mapped[our_key][1]} and {source})")
        mapped[our_key] = (tensor, source)

    prefix, tagging = _tagging_copy(original)
    result.tagging_prefix = prefix
    if prefix == "vision_multi.":
        logger.info("the tagging head is stored as vision_multi.* (renamed to tagging_head.* as the original does)")

    for key, tensor in original.items():
        if key.startswith(_TAGGING_PREFIXES):
            continue  # handled below, after the tag encoder, so that its copy wins
        if key.startswith("visual_encoder."):
            for our_key, value in vision_targets(key, tensor, result, unused):
                put(our_key, value, key)
        elif key.startswith("tag_encoder."):
            sub = _text_model_key(key[len("tag_encoder."):])
            if sub is None:
                unused.append(key)
            elif sub == []:
                result.dropped_keys.append(key)
            else:
                put("text_encoder." + sub, tensor, key)
        elif key.startswith("text_decoder.bert."):
            sub = _text_model_key(key[len("text_decoder.bert."):])
            if sub is None:
                unused.append(key)
            elif sub == []:
                result.dropped_keys.append(key)
            else:
                put("text_decoder.bert." + sub, tensor, key)
        elif key == "text_decoder.cls.predictions.decoder.bias":
            bias = original.get("text_decoder.cls.predictions.bias")
            # One tensor under both names (a torch.load of the tied original) is tied whatever its values (NaN
            # compares unequal to itself); separate copies (e.g. from safetensors) must hold equal values.
            same = bias is not None and (bias is tensor or (
                bias.shape == tensor.shape and bias.data_ptr() == tensor.data_ptr() and bias.stride() == tensor.stride()))
            if not same and (bias is None or bias.shape != tensor.shape or not torch.equal(bias, tensor)):
                raise CheckpointConversionError(
                    "text_decoder.cls.predictions.decoder.bias differs from text_decoder.cls.predictions.bias; "
                    "the original ties them and this model keeps one bias"
                )
            result.dropped_keys.append(key)
        elif key.startswith("text_decoder.cls.predictions."):
            sub = key[len("text_decoder.cls.predictions."):]
            if sub in ("bias", "decoder.weight") or sub.startswith("transform."):
                put(key, tensor, key)
            else:
                unused.append(key)
        elif key == "label_embed.weight":
            put("tagging_head.label_embed.weight", tensor, key)
        elif key == "fc.W":
            if tensor.dim() != 3 or tensor.shape[0] != 1:
                raise CheckpointConversionError(f"fc.W has shape {tuple(tensor.shape)}; expected (1, num_tags, hidden)")
            put("tagging_head.classifier_weight", tensor[0], key)
        elif key == "fc.b":
            if tensor.dim() != 2 or tensor.shape[0] != 1:
                raise CheckpointConversionError(f"fc.b has shape {tuple(tensor.shape)}; expected (1, num_tags)")
            put("tagging_head.classifier_bias", tensor[0], key)
        else:
            unused.append(key)

    # The tagging head's tensors are the interaction encoder's first layers (tied in the original).
    merge_tagging_head(result, mapped, unused, tagging, prefix, "text_encoder.")
    if tagging == {} and any(k.startswith("tag_encoder.") for k in original):
        message = ("the checkpoint has no tagging_head.* / vision_multi.* tensors; the tagging head uses the "
                   "tag_encoder's first layers it is tied to")
        logger.warning(message)
        result.warnings.append(message)

    return complete_conversion(result, mapped, unused, expected_shapes, conflicts)


def merge_tagging_head(result: ConversionResult, mapped: dict, unused: list, tagging: dict, prefix: str,
                       head_prefix: str) -> None:
    """Map the original tagging head's layers (``tagging``: sub-key -> tensor, found under ``prefix``) to
    ``head_prefix`` + sub-key in ``mapped``; the head's embeddings and self-attention go to ``unused`` (the
    original deletes them). A head tensor replaces a tied ``tag_encoder`` copy already mapped there (as the
    original loader did), with a warning naming those whose values differ. Shared by Tag2Text's and RAM's
    conversions."""
    differing = []
    for sub, tensor in tagging.items():
        source = prefix + sub
        if not sub.startswith("encoder.layer.") or ".attention." in sub:
            unused.append(source)  # the original deletes the head's embeddings and self-attention
            continue
        our_key = head_prefix + sub
        if our_key in mapped:
            previous, _ = mapped[our_key]
            if previous.shape != tensor.shape or not torch.equal(previous, tensor):
                differing.append(f"tag_encoder.{sub}")
        mapped[our_key] = (tensor, source)
    if differing:
        message = (
            f"{len(differing)} tag_encoder tensors differ from the tied {prefix}* copy, which is used (as the "
            f"original loader did): {_list(differing)}"
        )
        logger.warning(message)
        result.warnings.append(message)


def complete_conversion(result: ConversionResult, mapped: dict, unused, expected_shapes: dict, conflicts=(),
                        new_prefixes: tuple = NEW_PARAMETER_PREFIXES) -> ConversionResult:
    """Fill ``result.state_dict`` from ``mapped`` (our key -> (tensor, original key)) for every key of
    ``expected_shapes``, and raise one :class:`CheckpointConversionError` listing every tensor written twice
    (``conflicts``), every original tensor not used (``unused`` and mapped keys the model lacks), every model
    tensor not filled and every shape that differs. Keys under ``new_prefixes`` are the model's own new
    parameters; the computed buffers are left to the model. Shared by Tag2Text's and RAM's conversions."""
    # Tied in the original: the decoder's output weights are its input embeddings.
    decoder_weight = mapped.get("text_decoder.cls.predictions.decoder.weight")
    embeddings = mapped.get("text_decoder.bert.embeddings.word_embeddings.weight")
    if decoder_weight is not None and embeddings is not None:
        if decoder_weight[0].shape != embeddings[0].shape or not torch.equal(decoder_weight[0], embeddings[0]):
            raise CheckpointConversionError(
                "text_decoder.cls.predictions.decoder.weight differs from "
                "text_decoder.bert.embeddings.word_embeddings.weight; the original ties them and so does this model"
            )

    missing, mismatched = [], []
    for key, shape in expected_shapes.items():
        if key in mapped:
            tensor = mapped[key][0]
            if tuple(tensor.shape) != tuple(shape):
                mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)} (from {mapped[key][1]}) vs model "
                                  f"{tuple(shape)}")
            result.state_dict[key] = tensor
        elif key.startswith(new_prefixes):
            result.new_keys.append(key)
        elif key.endswith(COMPUTED_BUFFER_SUFFIXES):
            result.computed_keys.append(key)
        elif key == "text_decoder.cls.predictions.decoder.weight" and embeddings is not None:
            # Tied to the word embeddings; a file without it still defines it.
            result.state_dict[key] = embeddings[0]
        else:
            missing.append(key)
    unexpected = sorted(set(unused) | {f"{k} (from {mapped[k][1]})" for k in mapped if k not in expected_shapes})
    problems = []
    if conflicts:
        problems.append(f"model tensors written twice: {_list(conflicts)}")
    if unexpected:
        problems.append(f"original tensors not used ({len(unexpected)}): {_list(unexpected)}")
    if missing:
        problems.append(f"model tensors not filled ({len(missing)}): {_list(missing)}")
    if mismatched:
        problems.append(f"shapes that differ ({len(mismatched)}): {_list(mismatched, 20)}")
    if problems:
        raise CheckpointConversionError(
            "the checkpoint does not match the configuration:\n- " + "\n- ".join(problems)
            + "\n(check the tag list length and the --vision-config/--med-config/--q2l-config files)"
        )
    return result


def expected_shapes(config, model_class=None) -> dict:
    """Key -> shape of the state dict of ``model_class`` (default ``Tag2TextForCaptioning``) for ``config``,
    built on the meta device (no memory, no initialisation)."""
    if model_class is None:
        from tag2text import Tag2TextForCaptioning as model_class
    with torch.device("meta"):
        model = model_class(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def load_converted_state_dict(model, result: ConversionResult, assign: bool = False):
    """Load a conversion into ``model``: every tensor must land, and the only keys left to the model are the
    new alignment parameters and the computed buffers (a strict load with those two exceptions)."""
    missing, unexpected = model.load_state_dict(result.state_dict, strict=False, assign=assign)
    allowed = set(result.new_keys) | set(result.computed_keys)
    wrong_missing = sorted(set(missing) - allowed)
    if unexpected or wrong_missing:
        raise CheckpointConversionError(
            f"loading the converted state dict: unexpected keys {_list(unexpected)}; missing keys "
            f"{_list(wrong_missing)}"
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model
