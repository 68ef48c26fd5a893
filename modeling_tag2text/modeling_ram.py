"""RAM and RAM++ image tagging (recognize-anything), built from Tag2Text's modules.

Both models: the Swin tower of Tag2Text (:func:`~.modeling_tag2text._vision_tower`), ``image_proj`` from the
vision width to the 512-wide label space applied to every visual token (the mean-pooled one first), label
queries ``relu(wordvec_proj(label embedding))``, the Query2Label head (Tag2Text's BERT layers in
cross-attention-only ``"tagging"`` mode) and one shared classifier ``fc`` (hidden -> 1) for every tag.

- :class:`RamForImageTagging`: the label embeddings are one frozen CLIP text embedding per tag. The head runs
  the tag encoder's first layers (the original ties them) with the head's own number of heads; the tag encoder
  and text decoder weights are kept for a caption path.
- :class:`RamPlusForImageTagging`: each tag has several description embeddings; per image, the normalised
  pooled visual token scores them (``exp(reweight_scale)`` times cosine) and their softmax weights mix them into
  that image's label embedding. The head has its own layers (no tag encoder).

``model(pixel_values).logits`` is (batch, num_tags); ``config.id2label`` names the tags and
``model.tag(pixel_values)`` applies the per-class thresholds (strict ``>``, as the original).

Part of the Hub payload: imports only torch, transformers and its single-dot siblings (each directly, as the
dynamic-module loaders of transformers copy only direct imports).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .configuration_ram import RAM_PLUS_REWEIGHT_SCALE, RamConfig, RamPlusConfig
from .configuration_tag2text import Tag2TextConfig  # noqa: F401  (sibling closure, imported directly)
from .generation_lengths import generation_lengths  # noqa: F401  (sibling closure of modeling_tag2text)
from .generation_original import original_beam_search  # noqa: F401  (sibling closure of modeling_tag2text)
from .presets import PRESETS  # noqa: F401  (sibling closure of modeling_tag2text)
from .text_conventions import TAG_SEPARATOR  # noqa: F401  (sibling closure of modeling_tag2text)
from .tag_output import Tag2TextTagOutput
from .modeling_tag2text import _vision_tower, asymmetric_loss, init_bert_module
from .modeling_tag2text_text import Tag2TextEncoder, Tag2TextLMPredictionHead, Tag2TextTextDecoder, Tag2TextTextModel

logger = logging.getLogger(__name__)


@dataclass
class RamImageTaggingOutput(ModelOutput):
    """Output of :class:`RamForImageTagging` / :class:`RamPlusForImageTagging`.

    Args:
        loss: the asymmetric tagging loss (as the original trains) when ``labels`` are given.
        logits: (batch, num_tags) tag logits; ``sigmoid`` gives the probabilities.
        image_embeds: (batch, 1 + patches, label_embed_size) projected visual tokens, the mean-pooled one first.
        label_queries: (batch, num_tags, hidden) the head's queries, ``relu(wordvec_proj(...))``.
        tagging_hidden_states: (batch, num_tags, hidden) the head's output, before ``fc``.
        description_weights: RAM++ only: (batch, num_tags, max descriptions) the softmax weights of each tag's
            descriptions (0 where a tag has fewer than the maximum).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    label_queries: torch.FloatTensor | None = None
    tagging_hidden_states: torch.FloatTensor | None = None
    description_weights: torch.FloatTensor | None = None


@dataclass
class RamTagOutput(Tag2TextTagOutput):
    """Tags of one image with their Chinese names (None when the config has none)."""

    tags_zh: list | None = None

    def as_dict(self) -> dict:
        return dict(super().as_dict(), tags_zh=None if self.tags_zh is None else list(self.tags_zh))


IMAGE_PROCESSOR_REFERENCE = "image_processing_tag2text.Tag2TextImageProcessor"


def image_processor_config_without_auto_map(directory) -> None:
    """Drop ``auto_map`` and ``image_processor_type`` from a RAM directory's ``preprocessor_config.json``, so that
    ``AutoImageProcessor`` finds the processor through ``config.json`` (the registered class with the package,
    ``auto_map`` with remote code).

    Why: transformers' ``AutoVideoProcessor``, which the image-classification pipeline tries too, takes an
    ``AutoImageProcessor`` entry of ``preprocessor_config.json`` for a remote video processor and asks on the
    terminal whether to run it, even with the package installed."""
    path = os.path.join(os.fspath(directory), "preprocessor_config.json")
    with open(path, encoding="utf-8") as handle:
        values = json.load(handle)
    values.pop("auto_map", None)
    values.pop("image_processor_type", None)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(values, handle, indent=2, sort_keys=True)
        handle.write("\n")


class RamTaggingHead(nn.Module):
    """RAM++'s Query2Label head: BERT layers without self-attention (the original deletes it) whose
    cross-attention reads the ``label_embed_size``-wide visual tokens."""

    def __init__(self, config: RamConfig):
        super().__init__()
        self.encoder = Tag2TextEncoder(config.tagging_config, config.label_embed_size, self_attention=False)


class RamPreTrainedModel(PreTrainedModel):
    config_class = RamConfig
    base_model_prefix = "ram"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["Tag2TextLayer", "Tag2TextTextEmbeddings", "SwinStage"]

    def post_init(self):
        super().post_init()
        # As Tag2Text: the BERT layers are plain modules reading their own sub-config, whose attention
        # implementation transformers leaves unset (they would silently run eager attention).
        for sub_config in (self.config.text_config, self.config.tagging_config):
            if sub_config is not None and getattr(sub_config, "_attn_implementation", None) is None:
                sub_config._attn_implementation = self.config._attn_implementation

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does; when the classes are registered for the Auto classes (the first class taken
        from ``tag2text`` does it) the directory also gets the remote-code payload with the image processor, named
        in ``config.json``'s ``auto_map`` (see :func:`image_processor_config_without_auto_map` for why there)."""
        if self._auto_class is not None:
            self.config.auto_map = dict(getattr(self.config, "auto_map", None) or {},
                                        AutoImageProcessor=IMAGE_PROCESSOR_REFERENCE)
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None:
            here = os.path.dirname(os.path.abspath(__file__))
            for name in ("image_processing_tag2text.py", "image_loading.py"):
                shutil.copyfile(os.path.join(here, name), os.path.join(os.fspath(save_directory), name))

    def _init_weights(self, module):
        std = self.config.tagging_config.initializer_range
        if isinstance(module, RamPreTrainedModel):
            # Label embeddings are CLIP text embeddings in practice (conversion, open set); unit-norm-like
            # random rows otherwise.
            init.normal_(module.label_embed, mean=0.0, std=module.label_embed.shape[-1] ** -0.5)
            if getattr(module, "reweight_scale", None) is not None:
                init.constant_(module.reweight_scale, RAM_PLUS_REWEIGHT_SCALE)
        elif isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
            init_bert_module(module, std)
        elif isinstance(module, Tag2TextLMPredictionHead):
            init.zeros_(module.bias)


class RamForImageTagging(RamPreTrainedModel):
    """RAM: Swin tower, projected visual tokens, CLIP-embedding label queries, Query2Label head (the tag
    encoder's first layers), one shared classifier. The tag encoder and text decoder are kept (no caption
    inference was released for RAM)."""

    _tied_weights_keys = {
        "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    }

    def __init__(self, config: RamConfig):
        super().__init__(config)
        self._build_modules(config)
        self.post_init()

    def _num_label_embeddings(self, config) -> int:
        return config.num_tags

    def _build_modules(self, config: RamConfig):
        """Sub-modules in the original's state-dict order."""
        width = config.label_embed_size
        hidden = config.tagging_config.hidden_size
        self.label_embed = nn.Parameter(torch.empty(self._num_label_embeddings(config), width))
        self.vision_model = _vision_tower(config)
        self._build_text_modules(config)
        # The original uses no projection when the head is as wide as the label embeddings.
        self.wordvec_proj = nn.Linear(width, hidden) if hidden != width else nn.Identity()
        self.fc = nn.Linear(hidden, 1)
        self.image_proj = nn.Linear(config.vision_hidden_size, width)

    def _build_text_modules(self, config: RamConfig):
        self.text_encoder = Tag2TextTextModel(config.text_config, cross_attention_width=config.label_embed_size)
        self.text_decoder = Tag2TextTextDecoder(config.text_config)

    def _tagging_encoder(self) -> Tag2TextEncoder:
        return self.text_encoder.encoder

    def get_input_embeddings(self):
        return self.vision_model.get_input_embeddings()

    def get_output_embeddings(self):
        return None  # the text decoder's output layer is kept, not a language-modeling head of this model

    # -- computation ---------------------------------------------------------------------------------------------

    def get_image_embeddings(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """Projected visual tokens (batch, 1 + patches, label_embed_size), the mean-pooled token first."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, 3, height, width), got shape {tuple(pixel_values.shape)}")
        outputs = self.vision_model(pixel_values=pixel_values.to(self.vision_model.dtype), return_dict=True)
        visual = torch.cat([outputs.pooler_output.unsqueeze(1), outputs.last_hidden_state], dim=1)
        return self.image_proj(visual)

    def label_queries(self, image_embeds: torch.FloatTensor):
        """``(queries (batch, num_tags, hidden), description weights or None)``: RAM's are the same for every
        image."""
        queries = nn.functional.relu(self.wordvec_proj(self.label_embed.to(image_embeds.dtype)))
        return queries.unsqueeze(0).expand(image_embeds.shape[0], -1, -1), None

    def get_tag_logits(self, image_embeds: torch.FloatTensor, return_intermediates: bool = False):
        """Tag logits (batch, num_tags) from projected visual tokens; with ``return_intermediates`` also the
        queries, the head's output and RAM++'s description weights."""
        queries, weights = self.label_queries(image_embeds)
        head = self.config.tagging_config
        hidden = self._tagging_encoder()(
            queries, None, image_embeds, mode="tagging", num_heads=head.num_attention_heads,
            num_layers=head.num_hidden_layers,
        )[0]
        logits = self.fc(hidden).squeeze(-1)
        if return_intermediates:
            return logits, queries, hidden, weights
        return logits

    def forward(self, pixel_values=None, labels=None, return_dict: bool | None = None, **kwargs):
        """``labels`` (batch, num_tags) of 0/1 give the asymmetric tagging loss of the original training."""
        image_embeds = self.get_image_embeddings(pixel_values)
        logits, queries, hidden, weights = self.get_tag_logits(image_embeds, return_intermediates=True)
        loss = None
        if labels is not None:
            if tuple(labels.shape) != tuple(logits.shape):
                raise ValueError(f"labels must have shape {tuple(logits.shape)} (batch, num_tags), got "
                                 f"{tuple(labels.shape)}")
            loss = asymmetric_loss(logits, labels)
        output = RamImageTaggingOutput(loss=loss, logits=logits, image_embeds=image_embeds, label_queries=queries,
                                       tagging_hidden_states=hidden, description_weights=weights)
        return output if return_dict is not False else output.to_tuple()

    # -- tags ----------------------------------------------------------------------------------------------------

    def _thresholds(self, threshold, device) -> torch.Tensor:
        num_tags = self.config.num_tags
        if threshold is None:
            return torch.tensor(self.config.threshold_list(), dtype=torch.float32, device=device)
        if isinstance(threshold, (int, float)):
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {threshold}")
            return torch.full((num_tags,), float(threshold), device=device)
        values = torch.as_tensor(threshold, dtype=torch.float32, device=device)
        if values.shape != (num_tags,):
            raise ValueError(f"threshold must be a float or {num_tags} values, got shape {tuple(values.shape)}")
        return values

    def select_tags(self, logits, threshold=None) -> list[list[int]]:
        """Class indices whose probability is strictly above the threshold, per image, in index order."""
        probs = torch.sigmoid(logits.float())
        fired = probs > self._thresholds(threshold, probs.device)
        return [torch.nonzero(row).flatten().tolist() for row in fired]

    @torch.no_grad()
    def tag(self, pixel_values, threshold=None) -> list[RamTagOutput]:
        """Tags per image above the per-class thresholds of the config (or ``threshold``: one float for every
        class, or one value per class), with their Chinese names and probabilities, in class-index order."""
        logits = self.get_tag_logits(self.get_image_embeddings(pixel_values))
        probs = torch.sigmoid(logits.float())
        names, chinese = self.config.tag_names, self.config.tag_names_chinese
        results = []
        for row, ids in zip(probs, self.select_tags(logits, threshold)):
            results.append(RamTagOutput(
                tags=[names[i] for i in ids], tag_ids=ids, scores=[float(row[i]) for i in ids],
                tags_zh=None if chinese is None else [chinese[i] for i in ids],
            ))
        return results

    # -- label space ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def set_label_space(self, label_embed: torch.Tensor, tag_names, tag_names_chinese=None, class_thresholds=None,
                        **config_fields):
        """Replace the tags: new label embeddings (one row per tag for RAM; RAM++: see its method) with their
        names and thresholds (None: ``config.tag_threshold`` for every tag). The classifier is shared by every
        tag, so nothing else changes."""
        label_embed = torch.as_tensor(label_embed)
        if label_embed.dim() != 2 or label_embed.shape[1] != self.config.label_embed_size:
            raise ValueError(f"label embeddings must be (rows, {self.config.label_embed_size}), got "
                             f"{tuple(label_embed.shape)}")
        checked = copy.deepcopy(self.config)  # the model's config changes only once everything fits
        checked.set_tags(tag_names, tag_names_chinese, class_thresholds, **config_fields)
        expected = self._num_label_embeddings(checked)
        if label_embed.shape[0] != expected:
            raise ValueError(f"{label_embed.shape[0]} label-embedding rows for {expected} expected")
        self.config.set_tags(tag_names, tag_names_chinese, class_thresholds, **config_fields)
        self.label_embed = nn.Parameter(label_embed.to(self.label_embed.device, self.label_embed.dtype),
                                        requires_grad=self.label_embed.requires_grad)
        return self


class RamPlusForImageTagging(RamForImageTagging):
    """RAM++: RAM's tagging with per-image weighted description embeddings as label queries and a stand-alone
    tagging head (no tag encoder or text decoder)."""

    config_class = RamPlusConfig
    _tied_weights_keys = None

    def __init__(self, config: RamPlusConfig):
        super().__init__(config)

    def _num_label_embeddings(self, config) -> int:
        return config.num_label_embeddings

    def _build_modules(self, config: RamPlusConfig):
        self.reweight_scale = nn.Parameter(torch.tensor(RAM_PLUS_REWEIGHT_SCALE))
        super()._build_modules(config)

    def _build_text_modules(self, config: RamPlusConfig):
        self.tagging_head = RamTaggingHead(config)

    def _tagging_encoder(self) -> Tag2TextEncoder:
        return self.tagging_head.encoder

    def _description_index(self, device):
        """(num_tags, max descriptions) row indices into ``label_embed`` and the mask of real ones."""
        counts = torch.tensor(self.config.description_counts(), device=device)
        starts = torch.cumsum(counts, 0) - counts
        steps = torch.arange(int(counts.max()), device=device)
        valid = steps[None, :] < counts[:, None]
        index = torch.where(valid, starts[:, None] + steps[None, :], torch.zeros_like(valid, dtype=counts.dtype))
        return index, valid

    def label_queries(self, image_embeds: torch.FloatTensor):
        label_embed = self.label_embed.to(image_embeds.dtype)
        pooled = image_embeds[:, 0, :]
        pooled = pooled / pooled.norm(dim=-1, keepdim=True)
        scores = self.reweight_scale.exp() * pooled @ label_embed.t()  # (batch, rows)
        batch, num_tags = image_embeds.shape[0], self.config.num_tags
        per_tag = self.config.descriptions_per_tag
        if isinstance(per_tag, int):  # the released layout: as many descriptions for every tag, tag-major
            weights = nn.functional.softmax(scores.view(batch, num_tags, per_tag), dim=2)
            descriptions = label_embed.view(num_tags, per_tag, -1)
        else:
            index, valid = self._description_index(image_embeds.device)
            gathered = scores[:, index].masked_fill(~valid, float("-inf"))
            weights = nn.functional.softmax(gathered, dim=2)
            descriptions = label_embed[index] * valid[..., None].to(label_embed.dtype)
        mixed = torch.einsum("bcd,cdk->bck", weights, descriptions)
        return nn.functional.relu(self.wordvec_proj(mixed)), weights

    @torch.no_grad()
    def set_label_space(self, label_embed, tag_names, tag_names_chinese=None, class_thresholds=None,
                        descriptions_per_tag=1):
        """As RAM's, with ``descriptions_per_tag`` rows per tag, tag-major (an int, or one count per tag)."""
        return super().set_label_space(label_embed, tag_names, tag_names_chinese, class_thresholds,
                                       descriptions_per_tag=descriptions_per_tag)
