"""Tag2Text pre-training: tagging, captioning (LM), image-text contrastive (ITC) and matching (ITM) in one forward.

:class:`Tag2TextForPreTraining` has the weights of :class:`~.modeling_tag2text.Tag2TextForCaptioning` (same
state-dict keys; it saves as a captioning model) and a forward that returns the four losses, their weighted sum
and the logits they came from, so that a DDP-wrapped model sees every objective inside its forward.

* Tagging: asymmetric loss summed over batch and classes, as released. LM: the decoder's label-smoothed
  next-token loss. Both as in :class:`~.modeling_tag2text.Tag2TextForCaptioning`.
* ITC (as BLIP): the L2-normalised projections of the pooled visual token and of the text encoder's ``[CLS]`` are
  gathered from every process *with gradients*, so each process contrasts its rows against the global batch.
  Pairs with equal ``sample_ids`` are all positives (soft targets spread evenly over them).
* ITM (as BLIP): the positive pairs, plus for every text a hard-negative image and for every image a
  hard-negative text drawn from softmax(ITC similarity) + 1e-4 over the global batch (positives never drawn;
  texts' negatives are drawn first, from the global RNG); the interaction encoder runs with ``[ENC]`` first and
  its first token feeds the 2-way match head.

The released code has neither ITC nor ITM (see the project README); these follow the paper and BLIP.

Part of the Hub payload only where a saved class needs it: imports only torch, transformers and its own folder.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist
import torch.nn.functional as F
from transformers.utils import ModelOutput

from .modeling_tag2text import Tag2TextForCaptioning, _renamed_tag_targets

logger = logging.getLogger(__name__)

LOSS_COMPONENTS = ("tag", "lm", "itc", "itm")
TAG_LOSS_SCALES = ("lm", "batch", "none")


# ----------------------------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------------------------


def distributed_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_sizes(local_size: int, device) -> list[int]:
    """Batch size of every process (batches can differ when a process skipped unreadable images)."""
    rank, world = distributed_world()
    if world == 1:
        return [int(local_size)]
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([int(local_size)], dtype=torch.long, device=device))
    return [int(s.item()) for s in sizes]


def _pad_rows(tensor: torch.Tensor, rows: int) -> torch.Tensor:
    if tensor.shape[0] == rows:
        return tensor
    padding = tensor.new_zeros((rows - tensor.shape[0], *tensor.shape[1:]))
    return torch.cat([tensor, padding], dim=0)


def gather_with_grad(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Rows of every process concatenated in rank order; the backward pass sends each process the gradient
    that every process's loss put on its rows (``torch.distributed.nn.functional.all_gather``).

    ``sizes`` (from :func:`gather_sizes`) allows batches of different sizes: rows are padded for the
    collective and the padding is cut off again.
    """
    rank, world = distributed_world()
    if world == 1:
        return tensor
    from torch.distributed.nn.functional import all_gather

    sizes = sizes if sizes is not None else gather_sizes(tensor.shape[0], tensor.device)
    parts = all_gather(_pad_rows(tensor.contiguous(), max(sizes)))
    return torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)


@torch.no_grad()
def gather_no_grad(tensor: torch.Tensor, sizes: list[int] | None = None) -> torch.Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (token ids, sample ids)."""
    rank, world = distributed_world()
    if world == 1:
        return tensor
    sizes = sizes if sizes is not None else gather_sizes(tensor.shape[0], tensor.device)
    padded = _pad_rows(tensor.contiguous(), max(sizes))
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:size] for part, size in zip(parts, sizes)], dim=0)


# ----------------------------------------------------------------------------------------------------------------
# Features of the alignment heads
# ----------------------------------------------------------------------------------------------------------------


def image_features(model, image_embeds: torch.Tensor) -> torch.Tensor:
    """L2-normalised ITC image features (batch, image_text_hidden_size) from the pooled visual token."""
    return F.normalize(model.vision_proj(image_embeds[:, 0, :]), dim=-1)


def text_features(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """L2-normalised ITC text features: the interaction encoder run as a text-only encoder, its ``[CLS]``."""
    hidden = model.text_encoder(input_ids, attention_mask, mode="text")[0]
    return F.normalize(model.text_proj(hidden[:, 0, :]), dim=-1)


def itm_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
               image_embeds: torch.Tensor) -> torch.Tensor:
    """Image-text matching logits (pairs, 2; column 1 = match) of row-aligned texts (``[ENC]`` first) and
    images: the interaction encoder with cross-attention to the image, its first token into the match head."""
    hidden = model.encode_tags(input_ids, attention_mask, image_embeds)[0]
    return model.itm_head(hidden[:, 0, :])


# ----------------------------------------------------------------------------------------------------------------
# ITC and ITM
# ----------------------------------------------------------------------------------------------------------------


def positive_mask(local_ids: torch.Tensor | None, global_ids: torch.Tensor | None, offset: int, batch: int,
                  total: int, device) -> torch.Tensor:
    """(local batch, global batch) boolean mask of matching pairs.

    Without sample ids the only positive of local row ``i`` is global column ``offset + i``. With ids (e.g.
    several captions of one image in a batch) every pair with the same id is positive, as BLIP's ``idx``.
    """
    if local_ids is None or global_ids is None:
        mask = torch.zeros(batch, total, dtype=torch.bool, device=device)
        mask[torch.arange(batch, device=device), offset + torch.arange(batch, device=device)] = True
        return mask
    return local_ids.view(-1, 1).to(device) == global_ids.view(1, -1).to(device)


@dataclasses.dataclass
class ContrastiveOutput:
    loss: torch.Tensor
    sim_i2t: torch.Tensor  # (local, global) image-to-text similarity / temperature
    sim_t2i: torch.Tensor  # (local, global) text-to-image similarity / temperature
    positives: torch.Tensor  # (local, global) bool
    global_batch_size: int
    sizes: list  # batch size of every process


def image_text_contrastive_loss(image_features, text_features, temperature, sample_ids=None,
                                gather: bool = True) -> ContrastiveOutput:
    """Symmetric InfoNCE over the global batch.

    Args:
        image_features / text_features: (local batch, dim) L2-normalised features of matching pairs.
        temperature: scalar tensor (the model's clamped learnable temperature).
        sample_ids: optional (local batch,) ids; pairs with equal ids count as positives (soft targets
            spread evenly over them, as BLIP does).
        gather: contrast against every process's features (with gradients).

    Returns the loss ``(CE(image->text) + CE(text->image)) / 2`` over the local rows; averaged over the
    processes (as DDP does with the gradients) it equals the loss of one process holding the global batch.
    """
    rank, world = distributed_world() if gather else (0, 1)
    batch = image_features.shape[0]
    sizes = gather_sizes(batch, image_features.device) if world > 1 else [batch]
    all_images = gather_with_grad(image_features, sizes) if world > 1 else image_features
    all_texts = gather_with_grad(text_features, sizes) if world > 1 else text_features
    all_ids = None
    if sample_ids is not None:
        sample_ids = sample_ids.to(image_features.device)
        all_ids = gather_no_grad(sample_ids, sizes) if world > 1 else sample_ids
    total = all_images.shape[0]
    sim_i2t = image_features @ all_texts.t() / temperature
    sim_t2i = text_features @ all_images.t() / temperature
    positives = positive_mask(sample_ids, all_ids, sum(sizes[:rank]), batch, total, image_features.device)
    targets = positives.float() / positives.float().sum(dim=1, keepdim=True)
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * targets).sum(dim=1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * targets).sum(dim=1).mean()
    return ContrastiveOutput((loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i, positives, total, sizes)


@torch.no_grad()
def sample_hard_negatives(sim: torch.Tensor, positives: torch.Tensor, generator=None) -> torch.Tensor:
    """One negative column per row, drawn with probability softmax(sim) over the non-positive columns.

    Positives get probability exactly zero (never drawn). As in BLIP a small floor (1e-4) keeps every
    negative reachable. Rows without any negative get -1.
    """
    weights = F.softmax(sim.float(), dim=1) + 1e-4
    weights = weights.masked_fill(positives, 0.0)
    has_negative = (~positives).any(dim=1)
    choice = torch.full((sim.shape[0],), -1, dtype=torch.long, device=sim.device)
    if has_negative.any():
        rows = weights[has_negative]
        choice[has_negative] = torch.multinomial(rows, 1, generator=generator).squeeze(1)
    return choice


def _pad_columns(tensor: torch.Tensor, width: int) -> torch.Tensor:
    if tensor.shape[1] == width:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((tensor.shape[0], width - tensor.shape[1]))], dim=1)


@dataclasses.dataclass
class MatchingOutput:
    loss: torch.Tensor
    logits: torch.Tensor  # (pairs, 2)
    labels: torch.Tensor  # (pairs,) 1 = match
    negative_images: torch.Tensor  # (local,) global index of the hard-negative image of each text
    negative_texts: torch.Tensor  # (local,) global index of the hard-negative text of each image


def image_text_matching_loss(model, image_embeds, itm_input_ids, itm_attention_mask, contrastive: ContrastiveOutput,
                             gather: bool = True) -> MatchingOutput:
    """BLIP's ITM: the positive pairs, plus for every text a hard-negative image and for every image a
    hard-negative text, both drawn from the whole (gathered) batch by ITC similarity.

    ``itm_input_ids`` start with ``[ENC]``: the interaction encoder runs in multimodal mode and its first
    token feeds the 2-way match head (:func:`itm_logits`).
    """
    rank, world = distributed_world() if gather else (0, 1)
    batch = image_embeds.shape[0]
    # Images of other processes are gathered with gradients (as BLIP does) so that the negatives' vision
    # features are trained too; token ids need none.
    sizes = contrastive.sizes
    all_embeds = gather_with_grad(image_embeds, sizes) if world > 1 else image_embeds
    # Caption lengths differ between processes: pad the token ids to a common width before gathering.
    width = max(gather_sizes(itm_input_ids.shape[1], itm_input_ids.device)) if world > 1 else itm_input_ids.shape[1]
    itm_input_ids = _pad_columns(itm_input_ids, width)
    itm_attention_mask = _pad_columns(itm_attention_mask, width)
    all_ids = gather_no_grad(itm_input_ids, sizes) if world > 1 else itm_input_ids
    all_mask = gather_no_grad(itm_attention_mask, sizes) if world > 1 else itm_attention_mask

    negative_images = sample_hard_negatives(contrastive.sim_t2i, contrastive.positives)
    negative_texts = sample_hard_negatives(contrastive.sim_i2t, contrastive.positives)
    text_rows = torch.nonzero(negative_images >= 0).flatten()
    image_rows = torch.nonzero(negative_texts >= 0).flatten()

    input_ids = torch.cat([itm_input_ids, itm_input_ids[text_rows], all_ids[negative_texts[image_rows]]])
    attention_mask = torch.cat([itm_attention_mask, itm_attention_mask[text_rows], all_mask[negative_texts[image_rows]]])
    # index_select, not all_embeds[ids]: a hard-negative image is often drawn for several texts, and the backward
    # of advanced indexing with repeated ids (index_put_ with accumulate) adds their gradients in a thread-dependent
    # order on the CPU, so two runs of the same seed drifted apart (1e-6 after 30 quickstart steps, a point of
    # caption accuracy after 2,000); index_select's backward (index_add_) adds them in a fixed order.
    embeds = torch.cat([image_embeds, torch.index_select(all_embeds, 0, negative_images[text_rows]),
                        image_embeds[image_rows]])
    logits = itm_logits(model, input_ids, attention_mask, embeds)
    labels = torch.cat([
        torch.ones(batch, dtype=torch.long, device=logits.device),
        torch.zeros(len(text_rows) + len(image_rows), dtype=torch.long, device=logits.device),
    ])
    if len(text_rows) + len(image_rows) == 0:
        logger.warning("ITM: the global batch holds no negative pair (batch of one sample?); ITM sees positives only")
    loss = F.cross_entropy(logits.float(), labels)
    return MatchingOutput(loss, logits, labels, negative_images, negative_texts)


# ----------------------------------------------------------------------------------------------------------------
# Loss weights
# ----------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tag2TextLossWeights:
    """Weights of the four objectives, and how the tagging loss is scaled before weighting.

    A weight of 0 skips that objective's computation. ``tag_scale``: ``"lm"`` divides the tagging loss by the
    detached ratio ``loss_tag / loss_lm`` as the released ``pretrain.py``/``finetune.py`` do (its value becomes
    the LM loss, its gradient keeps its direction); ``"batch"`` divides the summed asymmetric loss by the batch
    size; ``"none"`` keeps the sum.
    """

    tag: float = 1.0
    lm: float = 1.0
    itc: float = 1.0
    itm: float = 1.0
    tag_scale: str = "lm"

    def __post_init__(self):
        for name in LOSS_COMPONENTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"loss weight {name}={value!r} must be a non-negative number")
            setattr(self, name, float(value))
        if self.tag_scale not in TAG_LOSS_SCALES:
            raise ValueError(f"tag loss scale {self.tag_scale!r} must be one of {TAG_LOSS_SCALES}")
        if not any(getattr(self, name) > 0 for name in LOSS_COMPONENTS):
            raise ValueError("all loss weights are 0: nothing to train")

    @classmethod
    def coerce(cls, value) -> "Tag2TextLossWeights":
        """``value`` as loss weights: an instance, a mapping ``{"tag": 1, ..., "tag_scale": "lm"}`` or None
        (all 1, released tag-loss rescaling)."""
        if value is None:
            return cls()
        if isinstance(value, Tag2TextLossWeights):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(LOSS_COMPONENTS) - {"tag_scale"})
            if unknown:
                raise ValueError(f"loss_weights has unknown entries {unknown}; expected {LOSS_COMPONENTS} and "
                                 "'tag_scale'")
            return cls(**value)
        raise TypeError(f"loss_weights must be a Tag2TextLossWeights, a mapping or None, got {type(value).__name__}")

    def active(self, name: str) -> bool:
        return getattr(self, name) > 0

    def combine(self, components: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """Weighted sum of the present components (raw values in ``components``)."""
        total = None
        for name in LOSS_COMPONENTS:
            value = components.get(name)
            if value is None or not self.active(name):
                continue
            if name == "tag":
                value = self.scale_tag_loss(value, components.get("lm"), batch_size)
            term = getattr(self, name) * value
            total = term if total is None else total + term
        if total is None:
            raise ValueError(f"no active loss among the computed components {sorted(components)}")
        return total

    def scale_tag_loss(self, loss_tag, loss_lm, batch_size: int):
        if self.tag_scale == "batch":
            return loss_tag / max(batch_size, 1)
        if self.tag_scale == "lm":
            if loss_lm is None:
                raise ValueError("tag loss scale 'lm' needs the LM loss (caption labels); give the batch labels or "
                                 "use the tag loss scale 'batch'")
            # Released: loss_tag / (loss_tag / loss_t2t).detach(); guard the ratio against a zero tag loss.
            ratio = (loss_tag / loss_lm).detach().clamp(min=1e-12)
            return loss_tag / ratio
        return loss_tag


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Tag2TextForPreTrainingOutput(ModelOutput):
    """Output of :class:`Tag2TextForPreTraining`. Each loss is present when its inputs were given and its weight
    is not 0.

    Args:
        loss: the weighted sum of the losses (tagging loss scaled as ``loss_weights.tag_scale`` says).
        loss_tag: asymmetric tagging loss, summed over batch and classes as released (unweighted).
        loss_lm: label-smoothed next-token loss of the decoder (unweighted).
        loss_itc: symmetric InfoNCE of this process's pairs against the global batch (unweighted).
        loss_itm: 2-way cross-entropy over the positive and hard-negative pairs (unweighted).
        tag_logits: (batch, num_tags), where loss_tag came from.
        logits: (batch, length, vocab) decoder logits, where loss_lm came from.
        logits_per_image: (batch, global batch) image-to-text similarity / temperature (ITC).
        logits_per_text: (batch, global batch) text-to-image similarity / temperature (ITC).
        itm_logits: (pairs, 2) match logits of the positive pairs, then the hard negatives (ITM).
        itm_labels: (pairs,) 1 for a matching pair, 0 for a hard negative.
        image_embeds: (batch, 1 + patches, vision width).
        image_features / text_features: (batch, image_text_hidden_size) L2-normalised ITC projections.
        hidden_states / attentions / cross_attentions: of the text decoder over the caption, on request
            (``output_hidden_states`` / ``output_attentions``, or the config's values), as
            :class:`~.modeling_tag2text.Tag2TextForCaptioningOutput` has them.
        vision_hidden_states / vision_attentions: of the vision tower, on request.
    """

    loss: torch.FloatTensor | None = None
    loss_tag: torch.FloatTensor | None = None
    loss_lm: torch.FloatTensor | None = None
    loss_itc: torch.FloatTensor | None = None
    loss_itm: torch.FloatTensor | None = None
    tag_logits: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    image_features: torch.FloatTensor | None = None
    text_features: torch.FloatTensor | None = None
    hidden_states: tuple | None = None
    attentions: tuple | None = None
    cross_attentions: tuple | None = None
    vision_hidden_states: tuple | None = None
    vision_attentions: tuple | None = None


class Tag2TextForPreTraining(Tag2TextForCaptioning):
    """Tag2Text with all four training objectives in one forward (as FLAVA's ``FlavaForPreTraining``).

    The weights are those of :class:`~.modeling_tag2text.Tag2TextForCaptioning`: it loads a captioning
    checkpoint and :meth:`save_pretrained` writes one (``architectures``, ``auto_map`` and the remote-code
    payload of the captioning model), so a trained directory captions with the CLI and the pipeline as it is.
    ``generate`` works as the captioning model's: a forward given ``encoder_hidden_states`` is a decoding step.

    Under DDP the default ``find_unused_parameters`` of the Trainer works: with every weight above 0 each
    parameter gets a gradient every step; a weight of 0 skips its objective, so its modules get none (set
    ``ddp_find_unused_parameters=True`` if gradient checkpointing turned that default off).
    """

    # Not the captioning model's num_items_in_batch normalisation: the loss is a weighted mean of four losses,
    # and ITC (in-batch negatives, gathered across processes) and ITM (hard negatives drawn in the batch) exist
    # only per batch, so no token count over the accumulated batch can make their sum the whole batch's loss.
    # With False the Trainer neither passes the count nor skips its division by the accumulation steps: the
    # accumulated gradient is that of the mean of the micro-batch losses.
    accepts_loss_kwargs = False
    # Saved as Tag2TextForCaptioning (see save_pretrained): never under its own name in an auto_map.
    _auto_class = None

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        tag_input_ids: torch.LongTensor | None = None,
        tag_attention_mask: torch.LongTensor | None = None,
        tag_targets: torch.Tensor | None = None,
        text_input_ids: torch.LongTensor | None = None,
        text_attention_mask: torch.LongTensor | None = None,
        itm_input_ids: torch.LongTensor | None = None,
        sample_ids: torch.LongTensor | None = None,
        loss_weights: Tag2TextLossWeights | Mapping | None = None,
        encoder_hidden_states: torch.FloatTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        """The pre-training losses of a batch.

        Args:
            pixel_values: (batch, 3, H, W) images.
            input_ids / attention_mask / labels: the caption for the decoder (``[DEC]`` and the prompt first;
                labels -100 on the prompt and padding), as the processor builds them with ``return_labels``.
            tag_input_ids / tag_attention_mask: the tag text (``[ENC]`` first) the decoder is conditioned on;
                when missing, the predicted tags are used.
            tag_targets: (batch, num_tags) multi-hot tagging targets (formerly ``tag_labels``, still accepted
                with a deprecation warning: transformers' Trainer would require every argument named
                ``*label*`` for an evaluation loss).
            text_input_ids / text_attention_mask: the alignment text for ITC/ITM (``[CLS] caption [SEP]``, no
                prompt; the processor's ``encode_alignment_text`` builds it). When missing, the caption ids with
                ``[CLS]`` in place of ``[DEC]`` are used (prompt included).
            itm_input_ids: the same text with ``[ENC]`` first, for ITM (default: ``text_input_ids`` with
                ``[ENC]`` in place of their first token); it shares ``text_attention_mask``.
            sample_ids: (batch,) ids of the images; ITC counts pairs with equal ids as positives.
            loss_weights: :class:`Tag2TextLossWeights` or a mapping of it (default all 1, tag scale ``"lm"``).
            output_attentions / output_hidden_states: also return the text decoder's and the vision tower's
                attentions / hidden states (default: the config's values). The decoder runs whenever caption
                ``input_ids`` are given and the LM weight is not 0, with or without ``labels``.
            encoder_hidden_states: given, the call is one decoding step of
                :meth:`Tag2TextForCaptioning.forward` (what ``generate`` does); every other argument then
                means what it means there.
        """
        tag_targets = _renamed_tag_targets(tag_targets, kwargs, type(self).__name__)
        if encoder_hidden_states is not None:
            alignment = [name for name, value in (("text_input_ids", text_input_ids), ("itm_input_ids", itm_input_ids),
                                                  ("sample_ids", sample_ids), ("loss_weights", loss_weights))
                         if value is not None]
            if alignment:
                raise ValueError(f"{alignment} belong to the pre-training losses, which need pixel_values, not "
                                 "encoder_hidden_states (a decoding step)")
            return super().forward(
                pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                tag_input_ids=tag_input_ids, tag_attention_mask=tag_attention_mask, labels=labels,
                tag_targets=tag_targets, encoder_hidden_states=encoder_hidden_states,
                output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                return_dict=return_dict, **kwargs,
            )
        # Nothing is dropped silently: an argument this forward has no use for must be unset (None/False).
        unexpected = sorted(k for k, v in kwargs.items() if v is not None and v is not False)
        if unexpected:
            raise TypeError(f"Tag2TextForPreTraining.forward got unexpected arguments {unexpected}")
        requested_hidden_states = output_hidden_states
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict
        )
        weights = Tag2TextLossWeights.coerce(loss_weights)
        image_embeds, vision = self.get_vision_outputs(pixel_values, output_attentions, output_hidden_states)
        batch_size = image_embeds.shape[0]
        components = {}

        wants_tag_loss = tag_targets is not None and weights.active("tag")
        # The released rescaling of the tagging loss needs the LM loss's value even when LM itself weighs 0.
        wants_lm = labels is not None and (weights.active("lm") or (wants_tag_loss and weights.tag_scale == "lm"))
        if wants_lm and input_ids is None:
            raise ValueError("labels were given without the caption input_ids")
        # Without labels the decoder still gives its logits (and hidden states) for the caption it was given.
        wants_decoder = wants_lm or (input_ids is not None and labels is None and weights.active("lm"))
        tag_logits = None
        if wants_tag_loss or (wants_decoder and tag_input_ids is None):
            tag_logits = self.get_tag_logits(image_embeds)
        if wants_tag_loss:
            components["tag"] = self.tagging_loss(tag_logits, tag_targets)

        logits = decoded = None
        if wants_decoder:
            if tag_input_ids is None:
                tag_input_ids, tag_attention_mask = self.build_tag_input_ids(
                    self.select_tags(tag_logits.detach()), device=image_embeds.device
                )
            states = self.encode_tags(tag_input_ids, tag_attention_mask, image_embeds)[0]
            decoded = super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                                      encoder_hidden_states=states, use_cache=False,
                                      output_attentions=output_attentions,
                                      output_hidden_states=requested_hidden_states,  # layer indices kept
                                      return_dict=True)
            if decoded.loss_lm is not None:
                components["lm"] = decoded.loss_lm
            logits = decoded.logits

        contrastive = matching = None
        image_feats = text_feats = None
        if weights.active("itc") or weights.active("itm"):
            text_ids, text_mask = self._alignment_text(text_input_ids, text_attention_mask, input_ids, attention_mask)
            # Without ITC the similarities only choose ITM's negatives: no gradient.
            with torch.set_grad_enabled(torch.is_grad_enabled() and weights.active("itc")):
                image_feats = image_features(self, image_embeds)
                text_feats = text_features(self, text_ids, text_mask)
                contrastive = image_text_contrastive_loss(image_feats, text_feats, self.logit_temperature,
                                                          sample_ids=sample_ids)
            if weights.active("itc"):
                components["itc"] = contrastive.loss
            if weights.active("itm"):
                itm_ids = itm_input_ids
                if itm_ids is None:
                    itm_ids = text_ids.clone()
                    itm_ids[:, 0] = self.config.text_config.enc_token_id
                elif itm_ids.shape != text_ids.shape:
                    raise ValueError(f"itm_input_ids {tuple(itm_ids.shape)} and text_input_ids "
                                     f"{tuple(text_ids.shape)} must have one shape (they share the attention mask)")
                matching = image_text_matching_loss(self, image_embeds, itm_ids, text_mask, contrastive)
                components["itm"] = matching.loss

        output = Tag2TextForPreTrainingOutput(
            loss=weights.combine(components, batch_size) if components else None,
            loss_tag=components.get("tag"),
            loss_lm=components.get("lm"),
            loss_itc=components.get("itc"),
            loss_itm=components.get("itm"),
            tag_logits=tag_logits,
            logits=logits,
            logits_per_image=contrastive.sim_i2t if contrastive is not None else None,
            logits_per_text=contrastive.sim_t2i if contrastive is not None else None,
            itm_logits=matching.logits if matching is not None else None,
            itm_labels=matching.labels if matching is not None else None,
            image_embeds=image_embeds,
            image_features=image_feats,
            text_features=text_feats,
            hidden_states=decoded.hidden_states if decoded is not None else None,
            attentions=decoded.attentions if decoded is not None else None,
            cross_attentions=decoded.cross_attentions if decoded is not None else None,
            vision_hidden_states=vision.hidden_states if vision is not None else None,
            vision_attentions=vision.attentions if vision is not None else None,
        )
        return output if return_dict else output.to_tuple()

    def _alignment_text(self, text_input_ids, text_attention_mask, input_ids, attention_mask):
        if text_input_ids is None:
            if input_ids is None:
                raise ValueError("ITC/ITM need text_input_ids (or the caption input_ids); give them or set the "
                                 "itc and itm loss weights to 0")
            # A plain batch: the alignment text is the caption with [CLS] in place of [DEC].
            text_input_ids = input_ids.clone()
            text_input_ids[:, 0] = self.config.text_config.cls_token_id
            text_attention_mask = attention_mask
        if text_attention_mask is None:
            text_attention_mask = torch.ones_like(text_input_ids)
        return text_input_ids, text_attention_mask

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Save as :class:`~.modeling_tag2text.Tag2TextForCaptioning` (the same weights): ``architectures``,
        ``auto_map`` and the payload are the captioning model's, so what trains here loads and captions
        anywhere the captioning model does."""
        with torch.device("meta"):
            view = Tag2TextForCaptioning(self.config)
        # The view holds this model's tensors themselves (no copy); ties are the same storage, as here.
        view.load_state_dict(self.state_dict(keep_vars=True), assign=True, strict=True)
        view.generation_config = self.generation_config
        return view.save_pretrained(save_directory, *args, **kwargs)
