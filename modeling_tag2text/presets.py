"""Named Tag2Text configurations: ``"tag2text-swin-b-384"`` (the released model's sizes), ``"small"`` (trainable
from scratch on a CPU, the quickstart's architecture) and ``"tiny"`` (tests).

Each preset gives the keyword arguments of ``Tag2TextConfig``; ``configuration_tag2text.preset_config`` builds
the config from them (this module does not import the config class, so that the two import in one direction).
Part of the Hub payload (``Tag2TextConfig.from_pretrained`` accepts a preset name): imports only transformers and
its own folder.
"""

from __future__ import annotations

from transformers import SwinConfig

from .text_conventions import special_token_ids


def _released_preset(tokenizer=None, **overrides) -> dict:
    return overrides  # Tag2TextConfig's defaults are the released sizes


def _text_token_ids(tokenizer, vocab_size: int) -> dict:
    if tokenizer is None:
        return {"bos_token_id": vocab_size - 2, "enc_token_id": vocab_size - 1, "pad_token_id": 0,
                "cls_token_id": min(101, vocab_size - 3), "sep_token_id": min(102, vocab_size - 3),
                "eos_token_id": min(102, vocab_size - 3)}
    return special_token_ids(tokenizer)


def _tiny_preset(tokenizer=None, **overrides) -> dict:
    vision = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=16,
        depths=[2, 2],
        num_heads=[1, 2],
        window_size=4,
        layer_norm_eps=1e-5,
        drop_path_rate=0.0,
    )
    vocab_size = len(tokenizer) if tokenizer is not None else overrides.pop("vocab_size", 1024)
    text = dict(
        vocab_size=vocab_size,
        **_text_token_ids(tokenizer, vocab_size),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    tagging = dict(num_hidden_layers=2, num_attention_heads=2)
    kwargs = dict(
        vision_config=vision,
        text_config=text,
        tagging_config=tagging,
        num_tags=16,
        image_text_hidden_size=16,
    )
    return _with_overrides(kwargs, overrides)


def _with_overrides(kwargs: dict, overrides: dict) -> dict:
    """A preset's arguments with the caller's overrides (tag names replace the default tag count)."""
    if "tag_names" in overrides:
        kwargs.pop("num_tags")
    kwargs.update(overrides)
    return kwargs


def _small_preset(tokenizer=None, **overrides) -> dict:
    """A model to train from scratch on the CPU on thousands of images (the quickstart's architecture).

    64 px input and a 3-stage Swin on 4 px patches (2 stages or 8 px patches learned colours, sizes and
    positions but barely the objects' shapes in the quickstart's steps, measured); absolute position
    embeddings, because Swin's relative position bias alone cannot tell the left half from the right;
    a 64-wide, 2-layer text transformer without dropout; tags fire at 0.5 until calibrated.
    """
    vision = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=32,
        depths=[2, 2, 2],
        num_heads=[2, 4, 8],
        window_size=4,
        drop_path_rate=0.0,
        layer_norm_eps=1e-5,
        use_absolute_embeddings=True,
    )
    vocab_size = len(tokenizer) if tokenizer is not None else overrides.pop("vocab_size", 1024)
    text = dict(
        vocab_size=vocab_size,
        **_text_token_ids(tokenizer, vocab_size),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    kwargs = dict(
        vision_config=vision,
        text_config=text,
        tagging_config=dict(num_hidden_layers=2, num_attention_heads=2),
        num_tags=16,
        image_text_hidden_size=64,
        max_tag_length=24,
        tag_threshold=0.5,
    )
    return _with_overrides(kwargs, overrides)


PRESETS = {"tag2text-swin-b-384": _released_preset, "small": _small_preset, "tiny": _tiny_preset}
