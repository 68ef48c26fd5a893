"""Configuration of RAM and RAM++ (recognize-anything), Tag2Text's tagging-only successors.

Two config classes, because transformers maps one config class to one model class per Auto class:
:class:`RamConfig` (``model_type="ram"``, :class:`~.modeling_ram.RamForImageTagging`) and its subclass
:class:`RamPlusConfig` (``model_type="ram_plus"``, :class:`~.modeling_ram.RamPlusForImageTagging`). They share
every field; RAM++ has no ``text_config`` (no tag encoder or text decoder) and adds the number of descriptions
per tag.

The defaults are the released sizes (``ram_swin_large_14m.pth`` / ``ram_plus_swin_large_14m.pth``): Swin-L at
384 px, 512-wide CLIP label embeddings, a 2-layer / 4-head Query2Label head of BERT-base width, 4,585 tags; RAM
also keeps a 12-layer BERT-base tag encoder and text decoder.

Part of the Hub payload: imports only transformers and its single-dot siblings.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PretrainedConfig, SwinConfig

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .configuration_tag2text import Tag2TextTextConfig, _build_sub_config, released_swin_config, vision_hidden_size
from .presets import PRESETS  # noqa: F401  (configuration_tag2text's lazily imported sibling, named so loaders copy it)
from .text_conventions import TAG_SEPARATOR  # noqa: F401  (configuration_tag2text's sibling, imported directly)

RAM_RELEASED_NUM_TAGS = 4585
# The constructor default of the original RAM / RAM++; the released threshold file overrides every class.
RAM_DEFAULT_THRESHOLD = 0.68
# Open-set label spaces use this threshold for every tag (the original's open-set scripts).
RAM_OPEN_SET_THRESHOLD = 0.5
# Width of the label embeddings: CLIP ViT-B/16's text projection (hard-coded in the original).
RAM_LABEL_EMBED_SIZE = 512
# Descriptions per tag in the released RAM++ (hard-coded in its constructor).
RAM_PLUS_RELEASED_DESCRIPTIONS = 51
# Initial value of RAM++'s reweight_scale: ln(1 / 0.07), as CLIP's logit scale.
RAM_PLUS_REWEIGHT_SCALE = math.log(1 / 0.07)


class RamTaggingHeadConfig(Tag2TextTextConfig):
    """The Query2Label tagging head (the original ``q2l_config.json``): BERT layers run cross-attention only
    (their self-attention and embeddings are deleted), reading the projected visual tokens.

    In RAM the head's layers are the tag encoder's first ``num_hidden_layers`` layers (tied in the original), so
    its sizes, activation and LayerNorm epsilon must equal ``text_config``'s; ``num_attention_heads`` is its own
    (4 against 12 in the release)."""

    model_type = "ram_tagging_head"
    base_config_key = "tagging_config"

    def __init__(self, num_hidden_layers: int = 2, num_attention_heads: int = 4, **kwargs):
        # The head reads no tokens (no embeddings): it has no special tokens.
        for name in ("bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "enc_token_id"):
            kwargs.setdefault(name, None)
        super().__init__(num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads, **kwargs)


def released_swin_large_config(image_size: int = 384) -> SwinConfig:
    """The released RAM / RAM++ vision tower: Swin-L (embed 192, depths 2/2/18/2, window 12 at 384 px)."""
    return released_swin_config(192, (6, 12, 24, 48), image_size, window_size=12 if image_size == 384 else 7)


def _vision_config(value) -> PretrainedConfig:
    if value is None:
        return released_swin_large_config()
    if isinstance(value, SwinConfig):
        return value
    if isinstance(value, PretrainedConfig):
        raise ValueError(f"vision_config must be a SwinConfig, got model_type={value.model_type!r}")
    if isinstance(value, dict):
        if value.get("model_type", "swin") != "swin":
            raise ValueError(f"vision_config['model_type'] must be 'swin', got {value.get('model_type')!r}")
        return SwinConfig(**{k: v for k, v in value.items() if k != "model_type"})
    raise TypeError(f"vision_config must be a dict or a SwinConfig, got {type(value).__name__}")


def _names(value, name: str) -> list[str]:
    if isinstance(value, str) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"{name} must be a list of strings")
    return list(value)


class RamConfig(PretrainedConfig):
    """Configuration of RAM (Recognize Anything) image tagging.

    Args:
        vision_config: a ``SwinConfig`` or its dict (default: the released Swin-L 384).
        text_config: :class:`~.configuration_tag2text.Tag2TextTextConfig` (or dict) of the tag encoder and text
            decoder (the original ``med_config.json``); kept for a caption path, the tagging head runs its first
            layers. Its cross-attention reads the ``label_embed_size``-wide projected visual tokens.
        tagging_config: :class:`RamTaggingHeadConfig` (or dict), the original ``q2l_config.json``.
        tag_names: the English tag names, one per class (stored as ``id2label``; ``id2label`` is accepted too).
        tag_names_chinese: the Chinese names, one per class, kept byte for byte (the released names often end in
            a space); None when unknown.
        class_thresholds: per-class probability thresholds; a tag fires when ``sigmoid(logit) > threshold``
            (strict, so 1.0 never fires). None: ``tag_threshold`` for every class.
        tag_threshold: the threshold of classes without a per-class value.
        label_embed_size: width of the label embeddings and of the projected visual tokens (512: CLIP ViT-B/16).
        num_tags: number of classes when no names are given (names become ``tag_0`` ...).
    """

    model_type = "ram"
    sub_configs = {"vision_config": AutoConfig, "text_config": Tag2TextTextConfig,
                   "tagging_config": RamTaggingHeadConfig}
    has_text_config = True

    def __init__(
        self,
        vision_config=None,
        text_config=None,
        tagging_config=None,
        tag_names: list[str] | None = None,
        tag_names_chinese: list[str] | None = None,
        class_thresholds: list[float] | None = None,
        tag_threshold: float = RAM_DEFAULT_THRESHOLD,
        label_embed_size: int = RAM_LABEL_EMBED_SIZE,
        num_tags: int | None = None,
        problem_type: str = "multi_label_classification",
        **kwargs,
    ):
        id2label = kwargs.pop("id2label", None)
        kwargs.pop("label2id", None)  # derived from the names
        kwargs.pop("num_labels", None)
        if tag_names is None and id2label:
            tag_names = [id2label[key] for key in sorted(id2label, key=int)]
        if tag_names is None:
            count = RAM_RELEASED_NUM_TAGS if num_tags is None else int(num_tags)
            tag_names = [f"tag_{i}" for i in range(count)]
        tag_names = _names(tag_names, "tag_names")
        if num_tags is not None and int(num_tags) != len(tag_names):
            raise ValueError(f"num_tags={num_tags} does not match len(tag_names)={len(tag_names)}")
        if not tag_names:
            raise ValueError("tag_names must hold at least one tag")

        self.vision_config = _vision_config(vision_config)
        self.label_embed_size = int(label_embed_size)
        if self.has_text_config:
            self.text_config = _build_sub_config(text_config, Tag2TextTextConfig, "text_config")
            # The tag encoder cross-attends to the projected visual tokens, not to the vision tower's width.
            self.text_config.encoder_hidden_size = self.label_embed_size
        else:
            if text_config is not None:
                raise ValueError(f"{type(self).__name__} has no text_config (no tag encoder or text decoder)")
            self.text_config = None
        self.tagging_config = _build_sub_config(tagging_config, RamTaggingHeadConfig, "tagging_config")
        self.tagging_config.encoder_hidden_size = self.label_embed_size
        self.tag_names_chinese = None if tag_names_chinese is None else _names(tag_names_chinese, "tag_names_chinese")
        self.tag_threshold = float(tag_threshold)
        self.class_thresholds = None if class_thresholds is None else [float(v) for v in class_thresholds]
        kwargs.setdefault("tie_word_embeddings", True)
        super().__init__(
            id2label=dict(enumerate(tag_names)),
            label2id={name: index for index, name in reversed(list(enumerate(tag_names)))},
            problem_type=problem_type,
            **kwargs,
        )
        self._validate()

    def _validate(self):
        num_tags = self.num_tags
        if self.tag_names_chinese is not None and len(self.tag_names_chinese) != num_tags:
            raise ValueError(f"tag_names_chinese has {len(self.tag_names_chinese)} names for {num_tags} tags")
        if self.class_thresholds is not None and len(self.class_thresholds) != num_tags:
            raise ValueError(f"class_thresholds has {len(self.class_thresholds)} values for {num_tags} tags")
        for index, value in enumerate(self.threshold_list()):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold of tag {index} ({self.tag_names[index]!r}) is {value}, not in [0, 1]")
        head = self.tagging_config
        if head.hidden_size % head.num_attention_heads:
            raise ValueError(f"tagging_config.hidden_size ({head.hidden_size}) must be a multiple of "
                             f"tagging_config.num_attention_heads ({head.num_attention_heads})")
        if self.text_config is not None:
            text = self.text_config
            for key in ("hidden_size", "intermediate_size", "hidden_act", "layer_norm_eps"):
                if getattr(head, key) != getattr(text, key):
                    raise ValueError(
                        f"tagging_config.{key}={getattr(head, key)!r} differs from text_config.{key}="
                        f"{getattr(text, key)!r}; RAM's tagging head shares its weights with the tag encoder's "
                        "first layers, so they must be equal")
            if head.num_hidden_layers > text.num_hidden_layers:
                raise ValueError(f"tagging_config.num_hidden_layers={head.num_hidden_layers} exceeds "
                                 f"text_config.num_hidden_layers={text.num_hidden_layers}")

    # -- tags ----------------------------------------------------------------------------------------------------

    @property
    def tag_names(self) -> list[str]:
        return [self.id2label[index] for index in range(len(self.id2label))]

    @property
    def num_tags(self) -> int:
        return len(self.id2label)

    @property
    def vision_hidden_size(self) -> int:
        return vision_hidden_size(self.vision_config)

    def threshold_list(self) -> list[float]:
        """The per-class thresholds (``tag_threshold`` where no per-class value is set)."""
        if self.class_thresholds is not None:
            return list(self.class_thresholds)
        return [self.tag_threshold] * self.num_tags

    def set_tags(self, tag_names, tag_names_chinese=None, class_thresholds=None) -> None:
        """Replace the label space's names and thresholds (the model's label embeddings must match)."""
        tag_names = _names(tag_names, "tag_names")
        self.id2label = dict(enumerate(tag_names))
        self.label2id = {name: index for index, name in reversed(list(enumerate(tag_names)))}
        self.tag_names_chinese = None if tag_names_chinese is None else _names(tag_names_chinese, "tag_names_chinese")
        self.class_thresholds = None if class_thresholds is None else [float(v) for v in class_thresholds]
        self._validate()

    def to_dict(self):
        output = super().to_dict()
        output["num_tags"] = self.num_tags  # derived from id2label; read back and checked by __init__
        output.pop("label2id", None)  # derived from id2label (4,585 names would be written twice)
        return output


class RamPlusConfig(RamConfig):
    """Configuration of RAM++ (open-set tagging with LLM tag descriptions).

    As :class:`RamConfig`, without ``text_config``; plus:

    Args:
        descriptions_per_tag: how many label-embedding rows (text descriptions) each tag has, tag-major: an
            int for every tag (51 in the release), or one count per tag (an open-set label space may give each
            tag its own number).
    """

    model_type = "ram_plus"
    sub_configs = {"vision_config": AutoConfig, "tagging_config": RamTaggingHeadConfig}
    has_text_config = False

    def __init__(self, descriptions_per_tag: int | list[int] = RAM_PLUS_RELEASED_DESCRIPTIONS, **kwargs):
        if isinstance(descriptions_per_tag, (list, tuple)):
            counts = [int(c) for c in descriptions_per_tag]
            self.descriptions_per_tag = counts[0] if counts and len(set(counts)) == 1 else counts
        else:
            self.descriptions_per_tag = int(descriptions_per_tag)
        super().__init__(**kwargs)

    def _validate(self):
        super()._validate()
        counts = self.description_counts()
        if len(counts) != self.num_tags:
            raise ValueError(f"descriptions_per_tag has {len(counts)} counts for {self.num_tags} tags")
        if min(counts) < 1:
            raise ValueError("descriptions_per_tag: every tag needs at least one description")

    def description_counts(self) -> list[int]:
        """Label-embedding rows per tag, one count per tag."""
        if isinstance(self.descriptions_per_tag, list):
            return list(self.descriptions_per_tag)
        return [self.descriptions_per_tag] * self.num_tags

    @property
    def num_label_embeddings(self) -> int:
        return sum(self.description_counts())

    def set_tags(self, tag_names, tag_names_chinese=None, class_thresholds=None, descriptions_per_tag=None) -> None:
        if descriptions_per_tag is not None:
            counts = [int(c) for c in descriptions_per_tag] if isinstance(descriptions_per_tag, (list, tuple)) \
                else int(descriptions_per_tag)
            if isinstance(counts, list) and counts and len(set(counts)) == 1:
                counts = counts[0]
            self.descriptions_per_tag = counts
        super().set_tags(tag_names, tag_names_chinese, class_thresholds)
