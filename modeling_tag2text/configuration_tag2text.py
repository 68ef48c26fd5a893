"""Configuration of Tag2Text: vision backbone, tag recognition head, interaction encoder and text decoder.

The defaults are the sizes of the released checkpoint (``tag2text_swin_14m.pth``: Swin-B at 384 px, a
12-layer BERT-base interaction encoder and decoder, a 2-layer / 4-head Query2Label head, 3,429 tags).

This file is part of the Hub payload (copied next to the weights by ``save_pretrained``): it imports only
the standard library and transformers.
"""

from __future__ import annotations

import copy

from transformers import AutoConfig, PretrainedConfig, SwinConfig, ViTConfig

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .presets import PRESETS
from .text_conventions import PROMPT, TAG_SEPARATOR, vocabulary_token_ids

# Facts about the released model (the constructor defaults of the original Tag2Text class), defined here only:
# hub/original_config.py and the model card read them from this module. Tag indices are into its 3,429-tag list.
RELEASED_TAG_THRESHOLD = 0.68
RELEASED_TAG_THRESHOLDS = {2701: 0.7, 2828: 0.7, 1167: 0.7}  # person, man, woman
RELEASED_CAPTION_EXCLUDED_TAG_IDS = [127, 2961, 3351, 3265, 3338, 3355, 3359]  # quarter, back, two, ... one
RELEASED_NUM_TAGS = 3429
RELEASED_PROMPT = PROMPT
RELEASED_MAX_TAG_LENGTH = 40
# Released decoding (the original's Tag2Text.generate defaults): the lengths count [DEC] and the prompt tokens.
RELEASED_NUM_BEAMS = 3
RELEASED_MAX_LENGTH = 30
RELEASED_MIN_LENGTH = 10

VISION_CONFIG_CLASSES = {"swin": SwinConfig, "vit": ViTConfig}


class Tag2TextTextConfig(PretrainedConfig):
    """BERT-style text transformer with cross-attention in every layer (the original ``med_config.json``).

    One text config describes both the image-tag interaction encoder and the text decoder, as in the
    original. The encoder's cross-attention reads the visual tokens (``encoder_hidden_size`` is set by
    :class:`Tag2TextConfig` to the vision width); the decoder's reads the encoder output (``hidden_size``).
    There are no token-type embeddings.

    ``chunk_size_feed_forward`` is transformers' setting (positions per feed-forward chunk in every mode; 0: no
    chunking), except that ``None``, the default, means 512 in CPU inference (eval mode, no gradients, not
    traced) and no chunking in training, on accelerators and under torch.compile/torch.export.
    """

    model_type = "tag2text_text_model"
    base_config_key = "text_config"

    def __init__(
        self,
        vocab_size: int = 30524,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        encoder_hidden_size: int = 1024,
        pad_token_id: int = 0,
        bos_token_id: int = 30522,
        eos_token_id: int = 102,
        sep_token_id: int = 102,
        cls_token_id: int = 101,
        enc_token_id: int = 30523,
        label_smoothing: float = 0.1,
        chunk_size_feed_forward: int | None = None,
        **kwargs,
    ):
        if chunk_size_feed_forward is not None and (
            not isinstance(chunk_size_feed_forward, int) or chunk_size_feed_forward < 0
        ):
            raise ValueError(f"text_config.chunk_size_feed_forward must be None or an int >= 0, got {chunk_size_feed_forward!r}")
        if hidden_size % num_attention_heads != 0:
            raise ValueError(
                f"text_config.hidden_size ({hidden_size}) must be a multiple of "
                f"text_config.num_attention_heads ({num_attention_heads})"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.encoder_hidden_size = encoder_hidden_size
        self.sep_token_id = sep_token_id
        self.cls_token_id = cls_token_id
        self.enc_token_id = enc_token_id
        self.label_smoothing = label_smoothing
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        # PretrainedConfig may not keep token ids as attributes in every version; keep them explicitly.
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.chunk_size_feed_forward = chunk_size_feed_forward


class Tag2TextTaggingConfig(PretrainedConfig):
    """The image-tag recognition decoder (Query2Label head, the original ``q2l_config.json``).

    The head has no transformer weights of its own: it runs the first ``num_hidden_layers`` layers of the
    interaction encoder in cross-attention-only mode with ``num_attention_heads`` heads (4 in the release,
    against the encoder's 12). Only the label queries and the per-class classifier are its own.
    """

    model_type = "tag2text_tagging_head"
    base_config_key = "tagging_config"

    def __init__(
        self,
        num_hidden_layers: int = 2,
        num_attention_heads: int = 4,
        initializer_range: float = 0.02,
        asl_gamma_neg: float = 7.0,
        asl_gamma_pos: float = 0.0,
        asl_clip: float = 0.05,
        asl_eps: float = 1e-8,
        **kwargs,
    ):
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.initializer_range = initializer_range
        self.asl_gamma_neg = asl_gamma_neg
        self.asl_gamma_pos = asl_gamma_pos
        self.asl_clip = asl_clip
        self.asl_eps = asl_eps
        super().__init__(**kwargs)


def released_swin_config(embed_dim: int = 128, num_heads=(4, 8, 16, 32), image_size: int = 384,
                          window_size: int = 12) -> SwinConfig:
    """The Swin tower of the released checkpoints (depths 2/2/18/2, patch 4, no dropout, drop path 0.1);
    the defaults are Tag2Text's Swin-B at 384 px, RAM / RAM++ pass Swin-L's width and heads."""
    return SwinConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=3,
        embed_dim=embed_dim,
        depths=[2, 2, 18, 2],
        num_heads=list(num_heads),
        window_size=window_size,
        mlp_ratio=4.0,
        qkv_bias=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.1,
        hidden_act="gelu",
        use_absolute_embeddings=False,
        layer_norm_eps=1e-5,
    )


def _build_vision_config(value) -> PretrainedConfig:
    if value is None:
        return released_swin_config()
    if isinstance(value, PretrainedConfig):
        if value.model_type not in VISION_CONFIG_CLASSES:
            raise ValueError(
                f"vision_config must be a SwinConfig or ViTConfig, got model_type={value.model_type!r}"
            )
        return value
    if isinstance(value, dict):
        model_type = value.get("model_type", "swin")
        if model_type not in VISION_CONFIG_CLASSES:
            raise ValueError(
                f"vision_config['model_type'] must be one of {sorted(VISION_CONFIG_CLASSES)}, got {model_type!r}"
            )
        fields = {k: v for k, v in value.items() if k != "model_type"}
        return VISION_CONFIG_CLASSES[model_type](**fields)
    raise TypeError(f"vision_config must be a dict, a SwinConfig or a ViTConfig, got {type(value).__name__}")


def _build_sub_config(value, cls, name):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, PretrainedConfig):
        return cls(**value.to_dict())
    if isinstance(value, dict):
        return cls(**{k: v for k, v in value.items() if k != "model_type"})
    raise TypeError(f"{name} must be a dict or a {cls.__name__}, got {type(value).__name__}")


def vision_hidden_size(vision_config: PretrainedConfig) -> int:
    """Width of the visual tokens that the tagging head and the interaction encoder cross-attend to."""
    if vision_config.model_type == "swin":
        return int(vision_config.embed_dim * 2 ** (len(vision_config.depths) - 1))
    return int(vision_config.hidden_size)


class Tag2TextConfig(PretrainedConfig):
    """Configuration of a Tag2Text model.

    Args:
        vision_config: a ``SwinConfig`` (default: the released Swin-B 384) or a ``ViTConfig``, or its dict.
        text_config: :class:`Tag2TextTextConfig` (or dict) for the interaction encoder and the text decoder.
        tagging_config: :class:`Tag2TextTaggingConfig` (or dict) for the tag recognition head.
        tag_names: the tag vocabulary, one name per class, in class-index order. Names may repeat (the
            official list repeats 114 strings), so tags are identified by index.
        num_tags: number of classes when ``tag_names`` is not given (names become ``tag_0`` ...).
        tag_threshold: global probability threshold; a tag fires when ``sigmoid(logit) > threshold``.
        tag_thresholds: per-class overrides ``{class_index: threshold}``.
        caption_excluded_tag_ids: classes that are tagged but never passed to the caption decoder.
        prompt: text the decoder starts from and that is stripped from captions.
        tag_separator: joins tag names into the interaction encoder's input text.
        max_tag_length: token length of the tag text, including ``[ENC]`` and ``[SEP]`` (padded to it).
        image_text_hidden_size: size of the ITC projections.
        itc_temperature: initial temperature of the contrastive loss.
        tag_token_ids: per-class WordPiece ids of each tag name (no special tokens). Set by
            :meth:`set_tag_vocabulary` from a tokenizer; generation needs it to turn predicted tags into text.
        tag_separator_token_ids: WordPiece ids of ``tag_separator``.
        prompt_token_ids: WordPiece ids of ``prompt`` (no special tokens); the decoder starts from
            ``[DEC]`` followed by them.
        trained_with_augmentation: whether ``tag2text train`` last trained these weights with the training
            augmentation (None: not recorded, as for the converted released weights, which were trained with
            it). ``tag2text train --init-from`` continues with the same choice unless ``--augment`` or
            ``--no-augment`` is given.
    """

    model_type = "tag2text"
    # The vision tower is a SwinConfig or a ViTConfig: AutoConfig resolves it from its model_type, so that
    # SwinConfig.from_pretrained(directory) finds its own part of a saved config.json.
    sub_configs = {
        "vision_config": AutoConfig,
        "text_config": Tag2TextTextConfig,
        "tagging_config": Tag2TextTaggingConfig,
    }

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        tagging_config=None,
        tag_names: list[str] | None = None,
        num_tags: int | None = None,
        tag_threshold: float = RELEASED_TAG_THRESHOLD,
        tag_thresholds: dict | None = None,
        caption_excluded_tag_ids: list[int] | None = None,
        prompt: str = RELEASED_PROMPT,
        tag_separator: str = TAG_SEPARATOR,
        max_tag_length: int = RELEASED_MAX_TAG_LENGTH,
        image_text_hidden_size: int = 256,
        itc_temperature: float = 0.07,
        tag_token_ids: list[list[int]] | None = None,
        tag_separator_token_ids: list[int] | None = None,
        prompt_token_ids: list[int] | None = None,
        tie_word_embeddings: bool = True,
        trained_with_augmentation: bool | None = None,
        **kwargs,
    ):
        self.vision_config = _build_vision_config(vision_config)
        self.text_config = _build_sub_config(text_config, Tag2TextTextConfig, "text_config")
        self.tagging_config = _build_sub_config(tagging_config, Tag2TextTaggingConfig, "tagging_config")
        self.text_config.encoder_hidden_size = vision_hidden_size(self.vision_config)

        if tag_names is None:
            count = RELEASED_NUM_TAGS if num_tags is None else int(num_tags)
            tag_names = [f"tag_{i}" for i in range(count)]
        elif num_tags is not None and int(num_tags) != len(tag_names):
            raise ValueError(f"num_tags={num_tags} does not match len(tag_names)={len(tag_names)}")
        self.tag_names = [str(name) for name in tag_names]
        if not self.tag_names:
            raise ValueError("tag_names must hold at least one tag")
        if caption_excluded_tag_ids is None:
            caption_excluded_tag_ids = (
                list(RELEASED_CAPTION_EXCLUDED_TAG_IDS) if len(self.tag_names) == RELEASED_NUM_TAGS else []
            )
        if tag_thresholds is None:
            tag_thresholds = dict(RELEASED_TAG_THRESHOLDS) if len(self.tag_names) == RELEASED_NUM_TAGS else {}
        self.tag_threshold = float(tag_threshold)
        self.tag_thresholds = {int(k): float(v) for k, v in tag_thresholds.items()}
        self.caption_excluded_tag_ids = sorted({int(i) for i in caption_excluded_tag_ids})
        self.prompt = prompt
        self.tag_separator = tag_separator
        self.max_tag_length = int(max_tag_length)
        self.image_text_hidden_size = int(image_text_hidden_size)
        self.itc_temperature = float(itc_temperature)
        self.tag_token_ids = [list(map(int, ids)) for ids in tag_token_ids] if tag_token_ids is not None else None
        self.tag_separator_token_ids = (
            list(map(int, tag_separator_token_ids)) if tag_separator_token_ids is not None else None
        )
        self.prompt_token_ids = list(map(int, prompt_token_ids)) if prompt_token_ids is not None else None
        if trained_with_augmentation is not None and not isinstance(trained_with_augmentation, bool):
            raise ValueError(f"trained_with_augmentation must be true, false or null, got {trained_with_augmentation!r}")
        self.trained_with_augmentation = trained_with_augmentation
        self._validate()
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.tie_word_embeddings = tie_word_embeddings

    def _validate(self):
        num_tags = len(self.tag_names)
        for name, ids in (("tag_thresholds", self.tag_thresholds), ("caption_excluded_tag_ids", self.caption_excluded_tag_ids)):
            bad = [i for i in ids if not 0 <= i < num_tags]
            if bad:
                raise ValueError(f"{name} holds tag indices outside [0, {num_tags}): {bad[:10]}")
        for name, value in [("tag_threshold", self.tag_threshold), *self.tag_thresholds.items()]:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name}={value} is not a probability in [0, 1]")
        if self.tag_token_ids is not None and len(self.tag_token_ids) != num_tags:
            raise ValueError(
                f"tag_token_ids has {len(self.tag_token_ids)} entries but there are {num_tags} tag_names"
            )
        if self.max_tag_length < 3:
            raise ValueError(f"max_tag_length must be at least 3 ([ENC], a token, [SEP]), got {self.max_tag_length}")
        if self.max_tag_length > self.text_config.max_position_embeddings:
            raise ValueError(
                f"max_tag_length={self.max_tag_length} exceeds text_config.max_position_embeddings="
                f"{self.text_config.max_position_embeddings}"
            )
        tagging_layers = self.tagging_config.num_hidden_layers
        if tagging_layers > self.text_config.num_hidden_layers:
            raise ValueError(
                f"tagging_config.num_hidden_layers={tagging_layers} exceeds text_config.num_hidden_layers="
                f"{self.text_config.num_hidden_layers}: the tagging head shares the interaction encoder's first layers"
            )
        if self.text_config.hidden_size % self.tagging_config.num_attention_heads != 0:
            raise ValueError(
                f"text_config.hidden_size ({self.text_config.hidden_size}) must be a multiple of "
                f"tagging_config.num_attention_heads ({self.tagging_config.num_attention_heads})"
            )

    @property
    def num_tags(self) -> int:
        return len(self.tag_names)

    @property
    def vision_hidden_size(self) -> int:
        return vision_hidden_size(self.vision_config)

    def threshold_list(self) -> list[float]:
        """Per-class thresholds: the global one with the per-class overrides applied."""
        values = [self.tag_threshold] * self.num_tags
        for index, value in self.tag_thresholds.items():
            values[index] = value
        return values

    def set_tag_vocabulary(self, tag_names: list[str] | None = None, tokenizer=None) -> None:
        """Set the tag names and record the WordPiece ids of each name, the separator and the prompt.

        The model holds no tokenizer, so it keeps these ids to turn predicted tags into text at generation.

        Args:
            tag_names: new tag names (their count must match the model's classifier); ``None`` keeps them.
            tokenizer: the BERT tokenizer of the processor. Each name is tokenized without special tokens.
        """
        if tag_names is not None:
            if len(tag_names) != self.num_tags:
                raise ValueError(f"got {len(tag_names)} tag names for a config with {self.num_tags} tags")
            self.tag_names = [str(name) for name in tag_names]
        if tokenizer is not None:
            facts = vocabulary_token_ids(tokenizer, self.tag_names, self.prompt, self.tag_separator)
            self.tag_token_ids = facts["tag_token_ids"]
            self.tag_separator_token_ids = facts["tag_separator_token_ids"]
            self.prompt_token_ids = facts["prompt_token_ids"]
            for name, value in facts["special_token_ids"].items():
                setattr(self.text_config, name, value)

    def to_dict(self):
        output = super().to_dict()
        # JSON object keys must be strings; they are read back as ints in __init__.
        output["tag_thresholds"] = {str(k): v for k, v in self.tag_thresholds.items()}
        # Derived from tag_names, written too so that config.json states it (and reads back: __init__ checks it).
        output["num_tags"] = self.num_tags
        return output

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Also accepts a preset name: ``"tag2text-swin-b-384"``, ``"small"`` or ``"tiny"`` (see
        :func:`~.presets.preset_config`)."""
        if isinstance(pretrained_model_name_or_path, str) and pretrained_model_name_or_path in PRESETS:
            return preset_config(pretrained_model_name_or_path, **kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


def generation_defaults(config: Tag2TextConfig) -> dict:
    """The decoding defaults of a model, the one definition (the model's ``generation_config`` at construction,
    the converter and the original beam search read it): beam 3, ``max_length`` 30 and ``min_length`` 10
    counting ``[DEC]`` and the prompt as released, i.e. 26 and 6 new tokens after the 3-token default prompt;
    a caption ends at ``[SEP]``."""
    prompt_tokens = 1 + (len(config.prompt_token_ids) if config.prompt_token_ids is not None else 3)
    text = config.text_config
    return {
        "num_beams": RELEASED_NUM_BEAMS,
        "max_new_tokens": RELEASED_MAX_LENGTH - prompt_tokens,
        "min_new_tokens": max(0, RELEASED_MIN_LENGTH - prompt_tokens),
        "eos_token_id": text.sep_token_id,
        "pad_token_id": text.pad_token_id,
        "bos_token_id": text.bos_token_id,
    }


def preset_config(name: str, **overrides) -> Tag2TextConfig:
    """A named configuration (see :mod:`.presets`): ``"tag2text-swin-b-384"`` (the released model's sizes),
    ``"small"`` (trainable from scratch on a CPU, the quickstart's architecture) or ``"tiny"`` (tests).

    Keyword overrides go to :class:`Tag2TextConfig`. ``tokenizer=`` sizes the vocabulary to it and records
    the token ids of the tags, the separator and the prompt (``small`` and ``tiny`` also take ``vocab_size``).
    """
    if name not in PRESETS:
        raise ValueError(f"unknown Tag2Text preset {name!r}; choose one of {sorted(PRESETS)}")
    tokenizer = overrides.pop("tokenizer", None)
    config = Tag2TextConfig(**PRESETS[name](tokenizer=tokenizer, **copy.deepcopy(overrides)))
    if tokenizer is not None:
        config.text_config.vocab_size = len(tokenizer)
        config.set_tag_vocabulary(tokenizer=tokenizer)
    return config
