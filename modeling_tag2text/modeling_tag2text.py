"""Tag2Text models: image tagging, tag-guided captioning and image-text alignment.

``Tag2TextModel``: vision tower, image-tag recognition decoder (tagging head), image-tag interaction encoder,
ITC projections and ITM head. ``Tag2TextForCaptioning``: all of that plus the text decoder, with generation.

Part of the Hub payload: imports only torch, transformers and its own folder (single-dot imports).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel, SwinModel, ViTModel
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_tag2text import Tag2TextConfig, generation_defaults
from .generation_lengths import LENGTH_ARGUMENTS, generation_lengths
from .generation_original import original_beam_search
from .presets import PRESETS  # noqa: F401  (configuration_tag2text imports it lazily; named so loaders copy it)
from .tag_output import Tag2TextTagOutput
from .text_conventions import (
    decoder_prompt_ids,
    piece_ids,
    tag_names_per_image,
    tag_token_sequences,
    trim_prompt_row,
)
from .version_compat import (
    INSTALLED_TRANSFORMERS,
    assisted_generation_supported,
    fit_swin_absolute_positions,
    generation_cache_argument,
    model_inputs_for_forward,
    tower_attention_implementation,
)
from .modeling_tag2text_text import (
    Tag2TextLMPredictionHead,
    Tag2TextTextDecoder,
    Tag2TextTextModel,
    is_tracing,
    language_modeling_loss,
)

from transformers import initialization as init

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


# Largest float32 activation of a CPU inference micro-batch. glibc's allocator hands blocks above its mmap
# threshold (at most 32 MB) back to the operating system when they are freed, so larger ones are faulted in page
# by page again on every call; smaller ones are reused.
CPU_MICRO_BATCH_BYTES = 16 * 2**20


def largest_activation_bytes_per_image(config) -> int:
    """Bytes of the widest float32 activation one image makes: the vision tower's first-stage MLP (tokens times
    its hidden width) or the tagging head's feed-forward (tags times the text intermediate size)."""
    vision = config.vision_config
    side = int(vision.image_size) // int(vision.patch_size)
    if vision.model_type == "swin":
        width = int(float(getattr(vision, "mlp_ratio", 4.0)) * int(vision.embed_dim))
        tokens = side * side
    else:  # ViT: the class token and the patches, through intermediate_size
        width = int(getattr(vision, "intermediate_size", 4 * vision.hidden_size))
        tokens = side * side + 1
    tagging = int(config.num_tags) * int(config.text_config.intermediate_size)
    return 4 * max(tokens * width, tagging, 1)


@dataclass
class Tag2TextModelOutput(ModelOutput):
    """Output of :class:`Tag2TextModel`.

    Args:
        loss: tagging loss (asymmetric loss, summed) when ``tag_labels`` are given.
        last_hidden_state: (batch, 1 + patches, vision width): the visual tokens, the same tensor as
            ``image_embeds``. First after ``loss`` so that ``output[0]`` is the features, as for a vision base model
            (transformers' ``image-feature-extraction`` pipeline reads it).
        pooler_output: (batch, vision width): the pooled visual token, ``last_hidden_state[:, 0]`` (Swin's
            mean-pooled token; a ViT tower's [CLS]), not projected. The ITC embedding is
            ``get_image_features(...).pooler_output``.
        tag_logits: (batch, num_tags) tag recognition logits.
        image_embeds: (batch, 1 + patches, vision width): the pooled token followed by the patch tokens.
        text_encoder_last_hidden_state: (batch, max_tag_length, hidden) interaction-encoder output, when tag
            input ids were given.
        hidden_states / attentions / cross_attentions: of the interaction encoder, on request
            (``output_hidden_states`` / ``output_attentions``, or the config's values).
        vision_hidden_states / vision_attentions: of the vision tower, on request, when the images were given.
    """

    loss: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    tag_logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_encoder_last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    cross_attentions: tuple | None = None
    vision_hidden_states: tuple | None = None
    vision_attentions: tuple | None = None


@dataclass
class Tag2TextForCaptioningOutput(ModelOutput):
    """Output of :class:`Tag2TextForCaptioning`.

    Args:
        loss: ``loss_lm + loss_tag`` (each present only when its labels were given).
        loss_lm: label-smoothed next-token loss of the decoder (prompt and padding masked by -100 labels).
        loss_tag: asymmetric tagging loss, summed over batch and classes as released.
        logits: (batch, length, vocab) decoder logits.
        tag_logits: (batch, num_tags).
        image_embeds: (batch, 1 + patches, vision width).
        text_encoder_last_hidden_state: (batch, max_tag_length, hidden).
        cache: the decoder cache, when ``use_cache``.
        hidden_states / attentions / cross_attentions: of the text decoder, on request (``output_hidden_states``
            / ``output_attentions``, or the config's values). The model is not an encoder-decoder in transformers'
            sense (``is_encoder_decoder`` is false), so generation reads these names.
        vision_hidden_states / vision_attentions: of the vision tower, on request, when the images were given.
    """

    loss: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    loss_tag: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    tag_logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_encoder_last_hidden_state: torch.FloatTensor | None = None
    cache: object | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    cross_attentions: tuple | None = None
    vision_hidden_states: tuple | None = None
    vision_attentions: tuple | None = None


# ----------------------------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------------------------


def asymmetric_loss(logits, targets, gamma_neg=7.0, gamma_pos=0.0, clip=0.05, eps=1e-8):
    """Asymmetric loss for multi-label tagging (Ridnik et al. 2021), as released with Tag2Text.

    Returns the *negative sum* over batch and classes (not a mean). The focusing weight is computed without
    gradient, as in the release (``disable_torch_grad_focal_loss=True``).
    """
    targets = targets.to(logits.dtype)
    probs = torch.sigmoid(logits.float())
    probs_pos = probs
    probs_neg = 1.0 - probs
    if clip is not None and clip > 0:
        probs_neg = (probs_neg + clip).clamp(max=1.0)
    loss = targets * torch.log(probs_pos.clamp(min=eps)) + (1 - targets) * torch.log(probs_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = probs_pos * targets + probs_neg * (1 - targets)
            gamma = gamma_pos * targets + gamma_neg * (1 - targets)
            weight = torch.pow(1 - pt, gamma)
        loss = loss * weight
    return -loss.sum()


# ----------------------------------------------------------------------------------------------------------------
# Tagging head
# ----------------------------------------------------------------------------------------------------------------


class Tag2TextLabelEmbedding(nn.Embedding):
    """One learned query per tag (its own class so that initialisation can tell it apart)."""


class Tag2TextTaggingHead(nn.Module):
    """Query2Label tag recognition head: one learned query per tag and a per-class linear classifier.

    Its transformer layers are the interaction encoder's first layers, run in cross-attention-only mode with
    ``tagging_config.num_attention_heads`` heads (see :meth:`Tag2TextModel.get_tag_logits`).
    """

    def __init__(self, config: Tag2TextConfig):
        super().__init__()
        hidden = config.text_config.hidden_size
        self.label_embed = Tag2TextLabelEmbedding(config.num_tags, hidden)
        # GroupWiseLinear: logits[b, k] = <weight[k], h[b, k]> + bias[k]
        self.classifier_weight = nn.Parameter(torch.empty(config.num_tags, hidden))
        self.classifier_bias = nn.Parameter(torch.empty(config.num_tags))

    def queries(self, batch_size: int, device) -> torch.Tensor:
        """The label queries (batch, num_tags, hidden), read through the embedding's forward so that accelerate's
        offload hooks (``device_map`` with CPU or disk offload) bring the weight in first."""
        index = torch.arange(self.label_embed.num_embeddings, device=device)
        return self.label_embed(index).unsqueeze(0).expand(batch_size, -1, -1)

    def forward(self, hidden_states):
        return (hidden_states * self.classifier_weight).sum(-1) + self.classifier_bias


# ----------------------------------------------------------------------------------------------------------------
# Base class
# ----------------------------------------------------------------------------------------------------------------


class Tag2TextPreTrainedModel(PreTrainedModel):
    config_class = Tag2TextConfig
    base_model_prefix = "tag2text"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["Tag2TextLayer", "Tag2TextTextEmbeddings", "SwinStage", "ViTLayer"]
    _keys_to_ignore_on_load_unexpected = [r"text_decoder\."]

    def post_init(self):
        super().post_init()
        # transformers resolves the attention implementation (SDPA by default) for the top-level config and for
        # sub-models that are PreTrainedModels; the text layers are plain modules reading text_config, whose
        # value stays unset unless asked for explicitly, so they would silently run eager attention.
        for sub_config in (self.config.text_config, self.config.tagging_config):
            if getattr(sub_config, "_attn_implementation", None) is None:
                sub_config._attn_implementation = self.config._attn_implementation

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as transformers does; when the classes are registered for the Auto classes (the first class
        taken from ``tag2text``, or ``tag2text.register_auto_classes()``, does it) the directory also gets the
        remote-code payload, ``auto_map`` for AutoModel and AutoModelForImageTextToText, and the image-to-text
        pipeline under ``custom_pipelines``."""
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            auto_map.setdefault("AutoConfig", "configuration_tag2text.Tag2TextConfig")
            auto_map["AutoModel"] = "modeling_tag2text.Tag2TextModel"
            if isinstance(self, GenerationMixin):
                auto_map["AutoModelForImageTextToText"] = "modeling_tag2text.Tag2TextForCaptioning"
                self.config.custom_pipelines = {
                    "image-to-text": {
                        "impl": "pipeline_tag2text.Tag2TextCaptionPipeline",
                        "pt": ["AutoModelForImageTextToText"],
                        "tf": [],
                        "type": "multimodal",
                    }
                }
            self.config.auto_map = auto_map
        super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None and isinstance(self, GenerationMixin):
            source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pipeline_tag2text.py")
            shutil.copyfile(source, os.path.join(os.fspath(save_directory), "pipeline_tag2text.py"))

    def _init_weights(self, module):
        std = self.config.text_config.initializer_range
        if isinstance(module, Tag2TextLabelEmbedding):
            # Released initialisation of the label queries: nn.Embedding's default N(0, 1).
            init.normal_(module.weight, mean=0.0, std=1.0)
        elif isinstance(module, Tag2TextTaggingHead):
            # GroupWiseLinear (Query2Label) initialisation: U(-1/sqrt(d), 1/sqrt(d)).
            bound = 1.0 / math.sqrt(module.classifier_weight.shape[1])
            init.uniform_(module.classifier_weight, -bound, bound)
            init.uniform_(module.classifier_bias, -bound, bound)
        elif isinstance(module, (nn.Linear, nn.Embedding, nn.LayerNorm)):
            init_bert_module(module, std)
        elif isinstance(module, Tag2TextTemperature):
            init.constant_(module.logit_temperature, self.config.itc_temperature)
        elif isinstance(module, Tag2TextLMPredictionHead):
            init.zeros_(module.bias)


def init_bert_module(module: nn.Linear | nn.Embedding | nn.LayerNorm, std: float) -> None:
    """BERT's initialisation of a Linear (N(0, std), zero bias), Embedding (N(0, std)) or LayerNorm (ones,
    zeros): Tag2Text's and RAM's ``_init_weights`` share it."""
    if isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)
        return
    init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        init.zeros_(module.bias)


def _vision_tower(config: Tag2TextConfig) -> nn.Module:
    tower_class = SwinModel if config.vision_config.model_type == "swin" else ViTModel
    requested = config.vision_config._attn_implementation
    implementation = tower_attention_implementation(tower_class, requested)
    if implementation != requested:  # SDPA asked for the whole model; this release's tower has only eager
        config.vision_config._attn_implementation = implementation
    tower = tower_class(config.vision_config, add_pooling_layer=tower_class is SwinModel)
    fit_swin_absolute_positions(tower)  # transformers 5.0 allots one position row too many
    # Until CPU weight packing became opt-in, the tower's linear layers were swapped for packing ones here, which
    # lost transformers' mark that the tower had initialised them, so the model's post_init drew them again.
    # Dropping the mark keeps that draw: a seed gives the weights it gave (the quickstart's stay byte-identical).
    for module in tower.modules():
        if isinstance(module, nn.Linear):
            module.__dict__.pop("_is_hf_initialized", None)
    return tower


# ----------------------------------------------------------------------------------------------------------------
# Tag2TextModel
# ----------------------------------------------------------------------------------------------------------------


class Tag2TextModel(Tag2TextPreTrainedModel):
    """Vision tower, tag recognition head, image-tag interaction encoder, ITC projections and ITM head."""

    def __init__(self, config: Tag2TextConfig):
        super().__init__(config)
        self._build_modules(config)
        self.post_init()

    def _build_modules(self, config: Tag2TextConfig):
        """Every sub-module, in state-dict order. A subclass adds its own after calling this, so that one
        ``post_init`` initialises them all in that order (the random initialisation of a seed stays the same)."""
        text_hidden = config.text_config.hidden_size
        self.vision_model = _vision_tower(config)
        self.text_encoder = Tag2TextTextModel(config.text_config, cross_attention_width=config.vision_hidden_size)
        self.tagging_head = Tag2TextTaggingHead(config)
        self.vision_proj = nn.Linear(config.vision_hidden_size, config.image_text_hidden_size)
        self.text_proj = nn.Linear(text_hidden, config.image_text_hidden_size)
        self.itm_head = nn.Linear(text_hidden, 2)
        self.alignment = Tag2TextTemperature(config.itc_temperature)

    # -- embeddings --------------------------------------------------------------------------------------------

    def get_input_embeddings(self):
        return self.text_encoder.embeddings.word_embeddings

    def set_input_embeddings(self, value):
        self.text_encoder.embeddings.word_embeddings = value

    def _input_embedding_modules(self) -> list[nn.Module]:
        """Every module whose output starts a stack of layers: the word embeddings of the interaction encoder (and
        of the decoder), the tagging head's label queries and the vision tower's patch embeddings."""
        modules = [self.get_input_embeddings(), self.tagging_head.label_embed, self.vision_model.get_input_embeddings()]
        decoder = getattr(self, "text_decoder", None)
        if decoder is not None:
            modules.append(decoder.bert.embeddings.word_embeddings)
        return modules

    def enable_input_require_grads(self):
        """Make the embedding outputs require gradients, so that re-entrant gradient checkpointing carries
        gradients through frozen embeddings (adapters, PEFT).

        transformers' version hooks each sub-model's ``get_input_embeddings()`` and calls ``requires_grad_`` on
        its output; Swin's patch embeddings return ``(embeddings, dimensions)``, so it fails on our vision tower,
        and it would miss the decoder's and the label queries' embeddings. Undone by
        ``disable_input_require_grads``."""

        def require_grads(module, inputs, output):
            (output[0] if isinstance(output, tuple) else output).requires_grad_(True)

        self.disable_input_require_grads()
        hooks, seen = [], set()
        for module in self._input_embedding_modules():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                hooks.append(module.register_forward_hook(require_grads))
        self._require_grads_hooks = hooks
        self._require_grads_hook = hooks[0]  # the name transformers kept for backward compatibility

    # CPU inference runs the vision tower and the tagging head this many images at a time; 0 or None: all at once;
    # "auto": as many as keep the largest activation of a micro-batch within CPU_MICRO_BATCH_BYTES.
    cpu_inference_images_per_chunk = "auto"

    def cpu_inference_chunk(self) -> int:
        """The images per CPU inference micro-batch (0: all at once); see :meth:`_in_cpu_micro_batches`."""
        chunk = self.cpu_inference_images_per_chunk
        if chunk != "auto":
            return int(chunk or 0)
        return max(1, CPU_MICRO_BATCH_BYTES // largest_activation_bytes_per_image(self.config))

    def _in_cpu_micro_batches(self, batch: torch.Tensor) -> bool:
        """Whether to split a batch into micro-batches: CPU inference only.

        A whole batch's activations are large fresh buffers (a Swin-B stage-1 MLP activation is 19 MB per image,
        the tagging head's 42 MB); the allocator takes them from the operating system and faults them in page by
        page on every call. One image at a time reuses cached memory. At batch 8, together with the feed-forward
        slices of :class:`Tag2TextLayer`, kernel time per generate call fell from about 5 s to 0.2 s and seconds
        per image by 25%, with the same captions. A small model's activations are far below that size, and one
        image at a time only adds the per-call cost of every operation: "auto" sizes the micro-batch by the
        model (the released model: 1 image; the quickstart's: 128).
        """
        chunk = self.cpu_inference_chunk()
        return (bool(chunk) and batch.device.type == "cpu" and not self.training and not torch.is_grad_enabled()
                and not is_tracing(batch) and batch.shape[0] > chunk)

    def get_image_embeddings(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """Visual tokens (batch, 1 + patches, width). Swin: the mean-pooled token, then the patch tokens."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must be (batch, 3, height, width), got shape {tuple(pixel_values.shape)}")
        pixel_values = pixel_values.to(self.vision_model.dtype)
        if self._in_cpu_micro_batches(pixel_values):
            pieces = pixel_values.split(self.cpu_inference_chunk())
            return torch.cat([self.get_image_embeddings(piece) for piece in pieces])
        if self.config.vision_config.model_type == "swin":
            outputs = self.vision_model(pixel_values=pixel_values, return_dict=True)
            return torch.cat([outputs.pooler_output.unsqueeze(1), outputs.last_hidden_state], dim=1)
        return self.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state

    # -- tagging -----------------------------------------------------------------------------------------------

    def get_tag_logits(self, image_embeds: torch.FloatTensor) -> torch.FloatTensor:
        """Tag recognition logits (batch, num_tags) from visual tokens."""
        if self._in_cpu_micro_batches(image_embeds):
            pieces = image_embeds.split(self.cpu_inference_chunk())
            return torch.cat([self.get_tag_logits(piece) for piece in pieces])
        queries = self.tagging_head.queries(image_embeds.shape[0], image_embeds.device)
        hidden, _, _, _ = self.text_encoder.encoder(
            queries,
            None,
            image_embeds,
            mode="tagging",
            num_heads=self.config.tagging_config.num_attention_heads,
            num_layers=self.config.tagging_config.num_hidden_layers,
        )
        return self.tagging_head(hidden)

    def _thresholds(self, threshold, device) -> torch.Tensor:
        if threshold is None:
            return torch.tensor(self.config.threshold_list(), device=device)
        if isinstance(threshold, (int, float)):
            if not 0.0 <= float(threshold) <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {threshold}")
            return torch.full((self.config.num_tags,), float(threshold), device=device)
        values = torch.as_tensor(threshold, dtype=torch.float32, device=device)
        if values.shape != (self.config.num_tags,):
            raise ValueError(f"threshold must be a float or {self.config.num_tags} values, got shape {tuple(values.shape)}")
        return values

    def select_tags(self, tag_logits, threshold=None, exclude_caption_excluded: bool = True) -> list[list[int]]:
        """Class indices whose probability is strictly above the threshold, per image, in index order."""
        probs = torch.sigmoid(tag_logits.float())
        fired = probs > self._thresholds(threshold, probs.device)
        if exclude_caption_excluded and self.config.caption_excluded_tag_ids:
            fired[:, self.config.caption_excluded_tag_ids] = False
        return [torch.nonzero(row).flatten().tolist() for row in fired]

    @torch.no_grad()
    def tag(self, pixel_values, threshold=None, include_excluded: bool = False) -> list[Tag2TextTagOutput]:
        """Tags per image above the per-class thresholds (or ``threshold``), without running the decoder.

        Args:
            pixel_values: (batch, 3, H, W) from the processor.
            threshold: a float for every class, a sequence of per-class values, or None for the config's.
            include_excluded: also report the tags that captioning leaves out (``caption_excluded_tag_ids``).
        """
        logits = self.get_tag_logits(self.get_image_embeddings(pixel_values))
        probs = torch.sigmoid(logits.float())
        results = []
        for row, ids in zip(probs, self.select_tags(logits, threshold, not include_excluded)):
            results.append(
                Tag2TextTagOutput(
                    tags=[self.config.tag_names[i] for i in ids], tag_ids=ids, scores=[float(row[i]) for i in ids]
                )
            )
        return results

    # -- tag text ----------------------------------------------------------------------------------------------

    def _require_token_ids(self):
        if self.config.tag_token_ids is None or self.config.tag_separator_token_ids is None:
            raise ValueError(
                "config.tag_token_ids is not set, so predicted tags cannot be turned into text. Call "
                "model.config.set_tag_vocabulary(tokenizer=processor.tokenizer) once (the converter and the "
                "trainer do this), or pass tag_input_ids from the processor."
            )

    def build_tag_input_ids(self, tag_ids_per_image: list[list[int]], device=None):
        """Token ids of the tag text ``[ENC] t1 | t2 ... [SEP]`` padded to ``max_tag_length`` for tag class indices,
        from the token ids the config records (see :func:`text_conventions.tag_token_sequences`)."""
        self._require_token_ids()
        pieces = [[self.config.tag_token_ids[index] for index in ids] for ids in tag_ids_per_image]
        return self._tag_tensors(pieces, device)

    def _tag_tensors(self, pieces, device=None):
        text = self.config.text_config
        rows, masks = tag_token_sequences(pieces, self.config.tag_separator_token_ids, text.enc_token_id,
                                          text.sep_token_id, text.pad_token_id, self.config.max_tag_length)
        device = device if device is not None else self.device
        return torch.tensor(rows, dtype=torch.long, device=device), torch.tensor(masks, dtype=torch.long, device=device)

    def resolve_tags(self, tags, batch_size: int, tokenizer=None, device=None):
        """Tag input ids for user-given tags, in any form :func:`~.text_conventions.tag_names_per_image` reads (a
        joined string, a list per image). Names from the model's tag list need no tokenizer. Returns (ids, mask,
        names per image, class indices per image or None when a name is not in the tag list)."""
        names_per_image = tag_names_per_image(tags, batch_size, self.config.tag_separator)
        index_of = {}
        for index, name in enumerate(self.config.tag_names):
            index_of.setdefault(name, index)
        unknown = sorted({n for names in names_per_image for n in names if n not in index_of})
        known_ids = None if unknown else [[index_of[n] for n in names] for names in names_per_image]
        if known_ids is not None and self.config.tag_token_ids is not None:
            ids, mask = self.build_tag_input_ids(known_ids, device)
            return ids, mask, names_per_image, known_ids
        if tokenizer is None:
            raise ValueError(
                f"tags {unknown[:10]} are not in the model's tag list; pass tokenizer=processor.tokenizer (or "
                "tag_input_ids from the processor) so that free-form tags can be tokenized"
            )
        if self.config.tag_separator_token_ids is None:
            self.config.tag_separator_token_ids = piece_ids(tokenizer, [self.config.tag_separator])[0]
        pieces = [piece_ids(tokenizer, names) for names in names_per_image]
        ids, mask = self._tag_tensors(pieces, device)
        return ids, mask, names_per_image, known_ids

    # -- interaction encoder, ITC, ITM ---------------------------------------------------------------------------

    def encode_tags(self, tag_input_ids, tag_attention_mask, image_embeds, output_attentions=False,
                    output_hidden_states=False):
        """Image-tag interaction encoder: bidirectional self-attention over the tag text, cross-attention to
        the visual tokens. Returns (last_hidden_state, hidden_states, attentions, cross_attentions)."""
        return self.text_encoder(
            tag_input_ids,
            tag_attention_mask,
            image_embeds,
            mode="multimodal",
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def get_vision_outputs(self, pixel_values, output_attentions: bool = False, output_hidden_states: bool = False):
        """(image_embeds, vision tower output or None). The tower's own hidden states and attentions are kept
        only when asked for; otherwise this is :meth:`get_image_embeddings`."""
        if not (output_attentions or output_hidden_states):
            return self.get_image_embeddings(pixel_values), None
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        outputs = self.vision_model(
            pixel_values=pixel_values.to(self.vision_model.dtype),
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        if self.config.vision_config.model_type == "swin":
            embeds = torch.cat([outputs.pooler_output.unsqueeze(1), outputs.last_hidden_state], dim=1)
        else:
            embeds = outputs.last_hidden_state
        return embeds, outputs

    @staticmethod
    def _requested_layers(states, requested):
        """``output_hidden_states`` given as indices (transformers' selective capture, negative ones counting from
        the end): the states at the other indices become None. The tuple keeps its length."""
        if states is None or not isinstance(requested, (list, tuple)):
            return states
        kept = {int(i) % len(states) for i in requested}
        return tuple(state if i in kept else None for i, state in enumerate(states))

    def _output_flags(self, output_attentions, output_hidden_states, return_dict):
        config = self.config
        return (
            bool(output_attentions if output_attentions is not None else config.output_attentions),
            bool(output_hidden_states if output_hidden_states is not None else config.output_hidden_states),
            return_dict if return_dict is not None else config.return_dict,
        )

    def get_image_features(
        self,
        pixel_values: torch.FloatTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """ITC image features, as transformers' CLIP/BLIP ``get_image_features``.

        Returns a ``BaseModelOutputWithPooling``: ``last_hidden_state`` the visual tokens (batch, 1 + patches,
        width), ``pooler_output`` the projected pooled token (batch, image_text_hidden_size), not normalised (the
        ITC similarity normalises it), and the vision tower's ``hidden_states``/``attentions`` on request.
        ``image_embeds`` skips the vision tower.
        """
        if kwargs:
            raise TypeError(f"get_image_features got unexpected argument(s) {sorted(kwargs)}")
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        vision = None
        if image_embeds is None:
            image_embeds, vision = self.get_vision_outputs(pixel_values, output_attentions, output_hidden_states)
        output = BaseModelOutputWithPooling(
            last_hidden_state=image_embeds,
            pooler_output=self.vision_proj(image_embeds[:, 0, :]),
            hidden_states=vision.hidden_states if vision is not None else None,
            attentions=vision.attentions if vision is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """ITC text features from the encoder run as a text-only encoder (``input_ids`` start with ``[CLS]``, see
        the processor's ``encode_alignment_text``), as transformers' CLIP/BLIP ``get_text_features``.

        Returns a ``BaseModelOutputWithPooling``: ``last_hidden_state`` (batch, length, hidden), ``pooler_output``
        the projected ``[CLS]`` state (batch, image_text_hidden_size), not normalised, and the encoder's
        ``hidden_states``/``attentions`` on request.
        """
        if kwargs:
            raise TypeError(f"get_text_features got unexpected argument(s) {sorted(kwargs)}")
        requested_hidden_states = output_hidden_states
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        hidden, all_hidden, attentions, _ = self.text_encoder(
            input_ids, attention_mask, mode="text", output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        output = BaseModelOutputWithPooling(
            last_hidden_state=hidden,
            pooler_output=self.text_proj(hidden[:, 0, :]),
            hidden_states=self._requested_layers(all_hidden, requested_hidden_states),
            attentions=attentions,
        )
        return output if return_dict else output.to_tuple()

    def get_itm_logits(self, input_ids, attention_mask, image_embeds) -> torch.FloatTensor:
        """Image-text matching logits (batch, 2) from the encoder run with cross-attention; input_ids should
        start with ``[ENC]``."""
        hidden, _, _, _ = self.text_encoder(input_ids, attention_mask, image_embeds, mode="multimodal")
        return self.itm_head(hidden[:, 0, :])

    @property
    def logit_temperature(self):
        return self.alignment.temperature

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        tag_input_ids: torch.LongTensor | None = None,
        tag_attention_mask: torch.LongTensor | None = None,
        tag_labels: torch.Tensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """Tag logits for the images and, when ``tag_input_ids`` are given, the interaction-encoder states.

        ``tag_labels`` (batch, num_tags) multi-hot targets give the tagging loss.
        """
        if kwargs:
            raise TypeError(f"Tag2TextModel.forward got unexpected argument(s) {sorted(kwargs)}")
        requested_hidden_states = output_hidden_states
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        vision = None
        if image_embeds is None:
            image_embeds, vision = self.get_vision_outputs(pixel_values, output_attentions, output_hidden_states)
        tag_logits = self.get_tag_logits(image_embeds)
        loss = self.tagging_loss(tag_logits, tag_labels) if tag_labels is not None else None
        hidden = all_hidden = attentions = cross = None
        if tag_input_ids is not None:
            if tag_attention_mask is None:
                tag_attention_mask = (tag_input_ids != self.config.text_config.pad_token_id).long()
            hidden, all_hidden, attentions, cross = self.encode_tags(
                tag_input_ids, tag_attention_mask, image_embeds, output_attentions, output_hidden_states
            )
        output = Tag2TextModelOutput(
            loss=loss,
            last_hidden_state=image_embeds,
            pooler_output=image_embeds[:, 0],
            tag_logits=tag_logits,
            image_embeds=image_embeds,
            text_encoder_last_hidden_state=hidden,
            hidden_states=self._requested_layers(all_hidden, requested_hidden_states),
            attentions=attentions,
            cross_attentions=cross,
            vision_hidden_states=vision.hidden_states if vision is not None else None,
            vision_attentions=vision.attentions if vision is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def tagging_loss(self, tag_logits, tag_labels):
        cfg = self.config.tagging_config
        if tag_labels.shape != tag_logits.shape:
            raise ValueError(f"tag_labels must have shape {tuple(tag_logits.shape)}, got {tuple(tag_labels.shape)}")
        return asymmetric_loss(tag_logits, tag_labels, cfg.asl_gamma_neg, cfg.asl_gamma_pos, cfg.asl_clip, cfg.asl_eps)


class Tag2TextTemperature(nn.Module):
    """Learnable ITC temperature, clamped to [0.001, 0.5] when read (as BLIP does)."""

    def __init__(self, value: float):
        super().__init__()
        self.logit_temperature = nn.Parameter(torch.tensor(float(value)))

    @property
    def temperature(self):
        return self.logit_temperature.clamp(0.001, 0.5)


# ----------------------------------------------------------------------------------------------------------------
# Tag2TextForCaptioning
# ----------------------------------------------------------------------------------------------------------------


def _renamed_tag_targets(tag_targets, kwargs: dict, owner: str):
    """``tag_targets``, also when given under its old name ``tag_labels`` (popped from ``kwargs``, with a warning)."""
    legacy = kwargs.pop("tag_labels", None)
    if legacy is None:
        return tag_targets
    if tag_targets is not None:
        raise ValueError(f"{owner}.forward got both tag_targets and its old name tag_labels; pass tag_targets only")
    warnings.warn(f"{owner}.forward: tag_labels is renamed tag_targets (transformers' Trainer would take "
                  "tag_labels for a label every evaluation batch must have); pass tag_targets",
                  FutureWarning, stacklevel=3)
    return legacy


class Tag2TextForCaptioning(Tag2TextModel, GenerationMixin):
    """Tag2Text with the text decoder: tags an image, encodes the tags with the image, and writes a caption."""

    _tied_weights_keys = {
        "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    }
    _keys_to_ignore_on_load_unexpected = None
    # transformers' Trainer passes ``num_items_in_batch`` (the caption tokens of the whole accumulated batch) to
    # forward, which then divides the token-summed LM loss by it, as transformers' ForCausalLM loss does: the
    # accumulated gradient is the one of the whole batch, whatever the padding. The tagging loss is already a sum
    # over images, so the sum of the micro-batches' values is the whole batch's value; the Trainer does not divide
    # the loss by the accumulation steps then.
    accepts_loss_kwargs = True

    def __init__(self, config: Tag2TextConfig):
        super().__init__(config)
        # The LM loss shifts the labels itself: the Trainer counts num_items_in_batch over labels[..., 1:].
        self.loss_type = "ForCausalLM"
        if getattr(self, "generation_config", None) is not None:
            for name, value in generation_defaults(config).items():
                setattr(self.generation_config, name, value)

    def _build_modules(self, config: Tag2TextConfig):
        super()._build_modules(config)
        self.text_decoder = Tag2TextTextDecoder(config.text_config)

    def get_output_embeddings(self):
        return self.text_decoder.cls.predictions.decoder

    def set_output_embeddings(self, value):
        self.text_decoder.cls.predictions.decoder = value

    def resize_token_embeddings(self, new_num_tokens=None, pad_to_multiple_of=None, mean_resizing=True):
        """Resize the vocabulary of the interaction encoder, the decoder and the LM head (weights and bias).

        As transformers does: kept rows keep their values, new rows are initialised (around the old mean with
        ``mean_resizing``); an untied LM head is resized, not replaced, and a tied one follows the decoder's
        input embeddings. ``text_config.vocab_size`` records the new size.
        """
        encoder_embeddings = self.text_encoder.embeddings.word_embeddings
        decoder_embeddings = self.text_decoder.bert.embeddings.word_embeddings
        if new_num_tokens is not None:
            self._warn_about_dropped_ids(new_num_tokens, pad_to_multiple_of)
        new_encoder = self._get_resized_embeddings(encoder_embeddings, new_num_tokens, pad_to_multiple_of, mean_resizing)
        new_decoder = self._get_resized_embeddings(decoder_embeddings, new_num_tokens, pad_to_multiple_of, mean_resizing)
        self.text_encoder.embeddings.word_embeddings = new_encoder
        self.text_decoder.bert.embeddings.word_embeddings = new_decoder
        size = new_decoder.weight.shape[0]
        head = self.text_decoder.cls.predictions
        old_head = head.decoder
        resized = self._get_resized_lm_head(old_head, size, mean_resizing=mean_resizing)
        if type(resized) is not type(old_head):  # keep the head's own Linear class (a packed one stays packed)
            holder = type(old_head)(resized.in_features, resized.out_features, bias=resized.bias is not None,
                                    device=resized.weight.device, dtype=resized.weight.dtype)
            holder.weight = resized.weight
            if resized.bias is not None:
                holder.bias = resized.bias
            resized = holder
        head.decoder = resized
        old_bias = head.bias.data
        bias = torch.zeros(size, dtype=old_bias.dtype, device=old_bias.device)
        bias[: min(size, old_bias.shape[0])] = old_bias[:size]
        head.bias = nn.Parameter(bias)
        # transformers' initialisation skips what carries this flag; without it a later post_init() (or
        # from_pretrained's initialisation of missing weights) would overwrite the kept rows with fresh ones.
        for resized_tensor in (resized, resized.weight, head.bias):
            resized_tensor._is_hf_initialized = True
        self.config.text_config.vocab_size = size
        self.config.get_text_config().vocab_size = size
        self.vocab_size = size  # as transformers' resize_token_embeddings records it
        self.tie_weights()
        return new_decoder

    def _warn_about_dropped_ids(self, new_num_tokens: int, pad_to_multiple_of) -> None:
        """Warn when the new vocabulary is smaller than the ids the config relies on ([DEC] and [ENC] are the last
        rows of the released vocabulary): the model could not build its own inputs until the ids are updated for
        the new tokenizer. Only a warning, since that update may legitimately follow (a run that changes the
        tokenizer of a trained model resizes first, then records the new tokenizer's ids)."""
        size = new_num_tokens
        if pad_to_multiple_of:
            size = math.ceil(size / pad_to_multiple_of) * pad_to_multiple_of
        text = self.config.text_config
        used = {name: getattr(text, name) for name in
                ("pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "enc_token_id")}
        pieces = [*(self.config.prompt_token_ids or []), *(self.config.tag_separator_token_ids or []),
                  *(i for ids in (self.config.tag_token_ids or []) for i in ids)]
        if pieces:
            used["largest prompt or tag-text token id"] = max(pieces)
        dropped = {name: value for name, value in used.items() if value is not None and int(value) >= size}
        if dropped:
            listed = ", ".join(f"{name}={value}" for name, value in dropped.items())
            logger.warning("resize_token_embeddings(%s) gives %s rows, which drops ids the config uses: %s; record "
                           "the new tokenizer's ids with config.set_tag_vocabulary(tokenizer=...) before use",
                           new_num_tokens, size, listed)

    def _prompt_input_ids(self, batch_size: int, device):
        prompt_ids = getattr(self.config, "prompt_token_ids", None)
        if prompt_ids is None:
            raise ValueError(
                "config.prompt_token_ids is not set; call model.config.set_tag_vocabulary(tokenizer=...) or pass "
                "input_ids from the processor"
            )
        ids = decoder_prompt_ids(self.config.text_config.bos_token_id, prompt_ids)
        return torch.tensor([ids] * batch_size, dtype=torch.long, device=device)

    def decode_text(
        self,
        input_ids,
        encoder_hidden_states,
        attention_mask=None,
        position_ids=None,
        cache=None,
        labels=None,
        output_attentions=False,
        output_hidden_states=False,
        num_items_in_batch=None,
    ):
        logits, all_hidden, self_attn, cross_attn = self.text_decoder(
            input_ids,
            attention_mask,
            encoder_hidden_states,
            position_ids=position_ids,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        loss = None
        if labels is not None and num_items_in_batch is None:
            loss = language_modeling_loss(logits, labels, self.config.text_config.label_smoothing)
        elif labels is not None:
            # Summed over the tokens here, divided by the tokens of the whole (accumulated) batch.
            summed = language_modeling_loss(logits, labels, self.config.text_config.label_smoothing,
                                            reduction="none").sum()
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(summed.device)
            loss = summed / num_items_in_batch
        return loss, logits, all_hidden, self_attn, cross_attn

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        tag_input_ids: torch.LongTensor | None = None,
        tag_attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        tag_targets: torch.Tensor | None = None,
        encoder_hidden_states: torch.FloatTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache=None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """Teacher-forced captioning (training) or one decoding step (generation).

        Training: ``pixel_values``, caption ``input_ids`` starting with ``[DEC]``, ``tag_input_ids`` (starting
        with ``[ENC]``), ``labels`` (-100 on prompt and padding) and optionally multi-hot ``tag_targets``
        (batch, num_tags) for the tagging loss. When ``tag_input_ids`` is missing the predicted tags are used.
        Generation passes ``encoder_hidden_states`` (the interaction-encoder output) instead of the image.
        ``num_items_in_batch`` (from transformers' Trainer): the LM loss is then the token sum divided by it.

        The tag targets are not named ``*labels*``: transformers' Trainer takes every forward argument whose
        name contains "label" as a label it requires for an evaluation loss, so a caption-only batch would get
        no ``eval_loss``. The old name ``tag_labels`` still works, with a deprecation warning.
        """
        image_embeds = kwargs.pop("image_embeds", None)
        num_items_in_batch = kwargs.pop("num_items_in_batch", None)
        tag_targets = _renamed_tag_targets(tag_targets, kwargs, type(self).__name__)
        if kwargs:
            raise TypeError(f"Tag2TextForCaptioning.forward got unexpected argument(s) {sorted(kwargs)}")
        requested_hidden_states = output_hidden_states
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        tag_logits = loss_tag = vision = None
        if encoder_hidden_states is None:
            if image_embeds is None:
                image_embeds, vision = self.get_vision_outputs(pixel_values, output_attentions, output_hidden_states)
            tag_logits = self.get_tag_logits(image_embeds)
            if tag_targets is not None:
                loss_tag = self.tagging_loss(tag_logits, tag_targets)
            if tag_input_ids is None:
                tag_input_ids, tag_attention_mask = self.build_tag_input_ids(
                    self.select_tags(tag_logits.detach()), device=image_embeds.device
                )
            elif tag_attention_mask is None:
                tag_attention_mask = (tag_input_ids != self.config.text_config.pad_token_id).long()
            encoder_hidden_states, _, _, _ = self.encode_tags(tag_input_ids, tag_attention_mask, image_embeds)
        if input_ids is None:
            input_ids = self._prompt_input_ids(encoder_hidden_states.shape[0], encoder_hidden_states.device)
            if attention_mask is not None and attention_mask.shape[-1] != input_ids.shape[1]:
                raise ValueError(
                    f"attention_mask has {attention_mask.shape[-1]} positions but input_ids were not given and the "
                    f"default prompt ([DEC] + config.prompt) has {input_ids.shape[1]} tokens; pass the input_ids "
                    "that the mask belongs to"
                )
        if use_cache and cache is None:
            cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        loss_lm, logits, all_hidden, self_attn, cross_attn = self.decode_text(
            input_ids,
            encoder_hidden_states,
            attention_mask,
            position_ids,
            cache,
            labels,
            output_attentions,
            output_hidden_states,
            num_items_in_batch,
        )
        losses = [value for value in (loss_lm, loss_tag) if value is not None]
        output = Tag2TextForCaptioningOutput(
            loss=sum(losses) if losses else None,
            loss_lm=loss_lm,
            loss_tag=loss_tag,
            logits=logits,
            tag_logits=tag_logits,
            image_embeds=image_embeds,
            text_encoder_last_hidden_state=encoder_hidden_states,
            cache=cache if use_cache or cache is not None else None,
            hidden_states=self._requested_layers(all_hidden, requested_hidden_states),
            attentions=self_attn,
            cross_attentions=cross_attn,
            vision_hidden_states=vision.hidden_states if vision is not None else None,
            vision_attentions=vision.attentions if vision is not None else None,
        )
        return output if return_dict else output.to_tuple()

    # -- generation --------------------------------------------------------------------------------------------

    def prepare_inputs_for_generation(self, input_ids, cache=None, past_key_values=None, **kwargs):
        """transformers' preparation (input slicing to the uncached tokens, position ids from the attention mask,
        every other model keyword passed through). The cache comes as ``cache`` or ``past_key_values`` (the
        name generate uses in transformers 5.0); it is handed to transformers under the installed release's
        name, so that the inputs are trimmed to the uncached tokens, and to forward as ``cache``."""
        if cache is None:
            cache = past_key_values
        inputs = super().prepare_inputs_for_generation(input_ids, **{generation_cache_argument(): cache}, **kwargs)
        return model_inputs_for_forward(inputs)

    @staticmethod
    def _reorder_cache(cache, beam_idx):
        """Beam search's cache reordering, without touching the cross-attention keys and values.

        A beam is only ever replaced by a beam of the same image, and every beam of an image attends to the same
        encoded tags, so the cross-attention cache is the same after reordering; copying it is wasted work
        (about 3% of a batch-1 caption on a 2-core CPU).
        """
        if isinstance(cache, EncoderDecoderCache):
            cache.self_attention_cache.reorder_cache(beam_idx)
        else:
            cache.reorder_cache(beam_idx)
        return cache

    def _prepare_prompt(self, input_ids, attention_mask, batch_size, device):
        """Left-pad the caller's prompts (dropping a trailing [SEP] the processor adds for training)."""
        if input_ids is None:
            ids = self._prompt_input_ids(batch_size, device)
            return ids, torch.ones_like(ids)
        if input_ids.shape[0] != batch_size:
            raise ValueError(f"input_ids has {input_ids.shape[0]} rows but there are {batch_size} images")
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        text = self.config.text_config
        rows = [
            trim_prompt_row([t for t, m in zip(row, row_mask) if m], text.bos_token_id,
                            (text.sep_token_id, text.pad_token_id))
            for row, row_mask in zip(input_ids.tolist(), mask.tolist())
        ]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[text.pad_token_id] * (width - len(r)) + r for r in rows], dtype=torch.long, device=device)
        new_mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long, device=device)
        return ids, new_mask

    def tag_and_encode(self, pixel_values=None, image_embeds=None, tags=None, tag_input_ids=None,
                       tag_attention_mask=None, tag_threshold=None, tokenizer=None, output_tag_logits=None):
        """The image side of captioning, run once: vision tower, tagging head (when tags are predicted, or when
        ``output_tag_logits``), tag text and the interaction encoder.

        Returns a dict: ``encoder_hidden_states`` (batch, max_tag_length, hidden), ``image_embeds``, ``tags`` (names
        per image), ``tag_ids`` (class indices per image, None for free-form tags), ``tag_logits`` and ``tag_probs``
        (batch, num_tags; None when tags were given and ``output_tag_logits`` was not set).
        """
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("generate needs pixel_values, image_embeds or encoder_hidden_states")
            image_embeds = self.get_image_embeddings(pixel_values)
        batch_size, device = image_embeds.shape[0], image_embeds.device
        predicted = tag_input_ids is None and tags is None
        tag_logits = None
        if predicted or output_tag_logits:
            tag_logits = self.get_tag_logits(image_embeds)
        names = ids = None
        if tag_input_ids is None:
            if predicted:
                ids = self.select_tags(tag_logits, tag_threshold)
                names = [[self.config.tag_names[i] for i in row] for row in ids]
                tag_input_ids, tag_attention_mask = self.build_tag_input_ids(ids, device)
            else:
                tag_input_ids, tag_attention_mask, names, ids = self.resolve_tags(tags, batch_size, tokenizer, device)
        elif tag_attention_mask is None:
            tag_attention_mask = (tag_input_ids != self.config.text_config.pad_token_id).long()
        encoder_hidden_states = self.encode_tags(tag_input_ids, tag_attention_mask, image_embeds)[0]
        return {
            "encoder_hidden_states": encoder_hidden_states,
            "image_embeds": image_embeds,
            "tags": names,
            "tag_ids": ids,
            "tag_logits": tag_logits,
            "tag_probs": torch.sigmoid(tag_logits.float()) if tag_logits is not None else None,
        }

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        tags=None,
        tag_input_ids: torch.LongTensor | None = None,
        tag_attention_mask: torch.LongTensor | None = None,
        tag_threshold=None,
        tokenizer=None,
        beam_scoring: str = "current",
        image_embeds: torch.FloatTensor | None = None,
        encoder_hidden_states: torch.FloatTensor | None = None,
        output_tag_logits: bool | None = None,
        **generate_kwargs,
    ):
        """Tag the images, encode the tags with the image once per image, then decode a caption.

        This is the one generation path: one call runs the vision tower and the tagging head once per image and
        returns, with ``return_dict_in_generate=True``, the captions together with the tags and their
        probabilities.

        Args:
            pixel_values: (batch, 3, H, W) images from the processor.
            input_ids / attention_mask: optional decoder prompts from the processor (default: ``[DEC]`` +
                ``config.prompt``).
            tags: steer the caption with given tags instead of the predicted ones: per image a list of
                names or one ``" | "``-joined string (a single string for a batch of one).
            tag_input_ids / tag_attention_mask: already tokenized tag text (``[ENC]`` first), e.g. from the
                processor; takes precedence over ``tags``.
            tag_threshold: a float or per-class values overriding the config's thresholds.
            tokenizer: needed only for ``tags`` that are not in the model's tag list.
            beam_scoring: ``"current"`` (transformers' beam search: scores divided by the number of generated
                tokens) or ``"original"`` (the released model's transformers 4.26 rule: divided by the length
                including the prompt; token for token as the original; supports num_beams, max_length,
                min_length, max_new_tokens, min_new_tokens, repetition_penalty and returns ids only).
            image_embeds: visual tokens from :meth:`get_image_embeddings` instead of ``pixel_values``.
            encoder_hidden_states: the interaction-encoder output (e.g. of an earlier call, or in assisted
                generation): skips the image side; ``input_ids`` are then continued as given.
            output_tag_logits: also compute tag logits when ``tags`` are given (they are always computed, and
                returned, when the tags are predicted).
            **generate_kwargs: anything ``GenerationMixin.generate`` takes (num_beams, max_new_tokens,
                do_sample, top_p, repetition_penalty, return_dict_in_generate, output_scores, output_attentions,
                output_hidden_states, assistant_model, ...).

        Returns:
            token ids (batch * num_return_sequences, length) including the prompt, or with
            ``return_dict_in_generate=True`` the generate output plus ``tags`` (names per image), ``tag_ids``
            (class indices per image), ``tag_logits`` and ``tag_probs`` (batch, num_tags) and ``image_embeds``
            (the visual tokens, for features or matching without another vision pass).
        """
        if beam_scoring not in ("current", "original"):
            raise ValueError(f"beam_scoring must be 'current' or 'original', got {beam_scoring!r}")
        # The cache goes to GenerationMixin.generate under the installed release's name (past_key_values in
        # transformers 5.0, cache in 5.24 and later); the caller may use either.
        cache_name = generation_cache_argument()
        given_cache = generate_kwargs.pop("past_key_values" if cache_name == "cache" else "cache", None)
        if given_cache is not None and generate_kwargs.get(cache_name) is None:
            generate_kwargs[cache_name] = given_cache
        if encoder_hidden_states is not None:
            side = {"encoder_hidden_states": encoder_hidden_states, "tags": None, "tag_ids": None,
                    "tag_logits": None, "tag_probs": None}
            batch_size, device = encoder_hidden_states.shape[0], encoder_hidden_states.device
            if input_ids is None:
                input_ids = self._prompt_input_ids(batch_size, device)
            prompt_ids = input_ids
            prompt_mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        else:
            side = self.tag_and_encode(pixel_values, image_embeds, tags, tag_input_ids, tag_attention_mask,
                                       tag_threshold, tokenizer, output_tag_logits)
            encoder_hidden_states = side["encoder_hidden_states"]
            batch_size, device = encoder_hidden_states.shape[0], encoder_hidden_states.device
            prompt_ids, prompt_mask = self._prepare_prompt(input_ids, attention_mask, batch_size, device)
        if beam_scoring == "original":
            return self._generate_original_beams(encoder_hidden_states, prompt_ids, prompt_mask, generate_kwargs)
        config = generate_kwargs.get("generation_config") or self.generation_config
        # The lengths by the rule every backend shares, handed to transformers as totals.
        requested = {name: generate_kwargs.pop(name, None) for name in LENGTH_ARGUMENTS}
        generate_kwargs["max_length"], generate_kwargs["min_length"] = generation_lengths(
            prompt_ids.shape[1], config, **requested)
        generate_kwargs["max_new_tokens"] = generate_kwargs["min_new_tokens"] = None
        if generate_kwargs.get("assistant_model") is not None and not assisted_generation_supported():
            raise ValueError(f"assisted generation (assistant_model) does not run on transformers "
                             f"{INSTALLED_TRANSFORMERS} (its assisted decoding refuses a minimum length and a given "
                             "cache); use a newer transformers 5 release")
        if "eos_token_id" not in generate_kwargs and config.eos_token_id is None:
            # Directories saved before the generation config carried it: a caption ends at [SEP].
            generate_kwargs["eos_token_id"] = self.config.text_config.sep_token_id
        if "pad_token_id" not in generate_kwargs and config.pad_token_id is None:
            generate_kwargs["pad_token_id"] = self.config.text_config.pad_token_id
        if generate_kwargs.get("use_cache", True) and generate_kwargs.get(cache_name) is None:
            generate_kwargs[cache_name] = EncoderDecoderCache(
                DynamicCache(config=self.config.text_config), DynamicCache(config=self.config.text_config)
            )
        outputs = GenerationMixin.generate(
            self,
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            encoder_hidden_states=encoder_hidden_states,
            **generate_kwargs,
        )
        sequences = outputs.sequences if isinstance(outputs, ModelOutput) else outputs
        eos = generate_kwargs.get("eos_token_id", config.eos_token_id)
        pad = generate_kwargs.get("pad_token_id", config.pad_token_id)
        self._pad_after_eos(sequences, prompt_ids.shape[1], eos, pad)
        if isinstance(outputs, ModelOutput):
            for name in ("tags", "tag_ids", "tag_logits", "tag_probs", "image_embeds"):
                outputs[name] = side.get(name)
        return outputs

    @staticmethod
    def _pad_after_eos(sequences, prompt_length: int, eos_token_id, pad_token_id) -> None:
        """Fill what follows each row's first eos with the pad id (transformers' beam search fills with the eos
        id when pad_token_id is 0, a falsy id). The eos and pad ids are those the call used; without an eos
        (``eos_token_id=None``) or a pad id nothing is filled."""
        if eos_token_id is None or pad_token_id is None:
            return
        eos = torch.as_tensor(eos_token_id, device=sequences.device).flatten()
        generated = sequences[:, prompt_length:]
        is_eos = torch.isin(generated, eos).long()
        after_eos = is_eos.cumsum(dim=1) - is_eos
        generated.masked_fill_(after_eos > 0, int(pad_token_id))

    def _generate_original_beams(self, encoder_hidden_states, prompt_ids, prompt_mask, generate_kwargs):
        supported = {"num_beams", "repetition_penalty", *LENGTH_ARGUMENTS}
        unsupported = sorted(k for k, v in generate_kwargs.items() if k not in supported and v is not None)
        if unsupported:
            raise ValueError(f"beam_scoring='original' does not support {unsupported}; use beam_scoring='current'")
        if not bool(prompt_mask.all()):
            raise ValueError("beam_scoring='original' needs prompts of equal length (no padding)")
        config = self.generation_config
        max_length, min_length = generation_lengths(
            prompt_ids.shape[1], config, **{name: generate_kwargs.get(name) for name in LENGTH_ARGUMENTS})
        return original_beam_search(
            self,
            encoder_hidden_states,
            prompt_ids,
            num_beams=generate_kwargs.get("num_beams") or config.num_beams,
            max_length=max_length,
            min_length=min(min_length, max_length),
            repetition_penalty=generate_kwargs.get("repetition_penalty") or 1.0,
        )
