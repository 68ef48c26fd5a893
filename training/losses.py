"""Training objectives beyond the model's own tagging and LM losses: ITC, ITM hard negatives, loss weights.

The model computes the tagging loss (asymmetric loss, summed as released) and the label-smoothed LM loss.
Image-text contrastive (ITC) and image-text matching (ITM) follow BLIP: features are gathered from every
process *with gradients*, so each process contrasts its rows against the global batch, and ITM draws one
hard negative text per image and one hard negative image per text from the ITC similarities.
"""

from __future__ import annotations

import dataclasses
import logging

import torch
import torch.distributed as dist
import torch.nn.functional as F

logger = logging.getLogger(__name__)

LOSS_COMPONENTS = ("tag", "lm", "itc", "itm")
TAG_LOSS_SCALES = ("lm", "batch", "none")


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
    token feeds the 2-way match head (``model.get_itm_logits``).
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
    embeds = torch.cat([image_embeds, all_embeds[negative_images[text_rows]], image_embeds[image_rows]])
    logits = model.get_itm_logits(input_ids, attention_mask, embeds)
    labels = torch.cat([
        torch.ones(batch, dtype=torch.long, device=logits.device),
        torch.zeros(len(text_rows) + len(image_rows), dtype=torch.long, device=logits.device),
    ])
    if len(text_rows) + len(image_rows) == 0:
        logger.warning("ITM: the global batch holds no negative pair (batch of one sample?); ITM sees positives only")
    loss = F.cross_entropy(logits.float(), labels)
    return MatchingOutput(loss, logits, labels, negative_images, negative_texts)


@dataclasses.dataclass
class LossWeights:
    """Weights of the four objectives, and how the tagging loss is scaled before weighting.

    ``tag_scale``: ``"lm"`` divides the tagging loss by the detached ratio ``loss_tag / loss_lm`` as the
    released ``pretrain.py``/``finetune.py`` do (its value becomes the LM loss, its gradient keeps its
    direction); ``"batch"`` divides the summed asymmetric loss by the batch size; ``"none"`` keeps the sum.
    """

    tag: float = 1.0
    lm: float = 1.0
    itc: float = 1.0
    itm: float = 1.0
    tag_scale: str = "lm"

    def __post_init__(self):
        for name in LOSS_COMPONENTS:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"loss weight {name}={value!r} must be a non-negative number")
            setattr(self, name, float(value))
        if self.tag_scale not in TAG_LOSS_SCALES:
            raise ValueError(f"tag loss scale {self.tag_scale!r} must be one of {TAG_LOSS_SCALES}")
        if not any(getattr(self, name) > 0 for name in LOSS_COMPONENTS):
            raise ValueError("all loss weights are 0: nothing to train")

    @classmethod
    def parse(cls, text: str | None, tag_scale: str = "lm") -> "LossWeights":
        """Parse ``"tag=1,lm=1,itc=1,itm=1"`` (missing names keep weight 1)."""
        values = {}
        for item in (text or "").split(","):
            item = item.strip()
            if not item:
                continue
            name, sep, value = item.partition("=")
            name = name.strip().lower()
            if not sep or name not in LOSS_COMPONENTS:
                raise ValueError(
                    f"--loss-weights entry {item!r} must look like NAME=WEIGHT with NAME one of {LOSS_COMPONENTS}"
                )
            try:
                values[name] = float(value)
            except ValueError:
                raise ValueError(f"--loss-weights entry {item!r}: {value!r} is not a number") from None
        return cls(**values, tag_scale=tag_scale)

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
                raise ValueError("tag loss scale 'lm' needs the LM loss; give the LM loss a weight or use 'batch'")
            # Released: loss_tag / (loss_tag / loss_t2t).detach(); guard the ratio against a zero tag loss.
            ratio = (loss_tag / loss_lm).detach().clamp(min=1e-12)
            return loss_tag / ratio
        return loss_tag
