"""Fine-tuning RAM and RAM++ (``tag2text train --init-from RAM_DIR``): the model, its label space and its inputs.

The objective is the original's tagging loss: the asymmetric loss of the model's ``forward(pixel_values,
labels)`` (gamma- 7, gamma+ 0, clip 0.05, summed over images and tags). The CLIP distillation and RAM++'s
description-alignment losses are not trained (they need CLIP image features and the descriptions of every batch).

A run's tag list (``--tag-list``, or the tags of the data) replaces the model's with
:func:`replace_ram_label_space`: a tag the model knows keeps its label embedding rows (RAM: one CLIP embedding;
RAM++: all its description embeddings), its threshold and its Chinese name; a new tag starts from the CLIP text
embedding of its name when a CLIP text tower is given (RAM: the 63 prompts averaged; RAM++: "a photo of a {tag}."),
otherwise from the mean of the model's label embeddings. Everything else in the model is shared by every tag (one
classifier ``fc``), so nothing else changes. Training updates every weight the tagging path uses, the label
embeddings included (the original keeps them as trainable parameters), so new tags move away from their start.
"""

from __future__ import annotations

import logging
import os

import torch

from .collator import ImageBatchCollator

logger = logging.getLogger(__name__)

RAM_MODEL_TYPES = ("ram", "ram_plus")
# Threshold of a tag the model did not have, until calibration on held-out images sets its own: the library's value
# for tags made from CLIP text (the original's open-set scripts use it).
NEW_TAG_THRESHOLD = 0.5


def tagging_family(init_from: str | None) -> str | None:
    """``"ram"`` or ``"ram_plus"`` when ``init_from`` (a directory or Hub id) holds a RAM / RAM++ model, else None."""
    if not init_from:
        return None
    from transformers import PretrainedConfig

    try:  # a local directory's config.json, or a Hub id's from the cache (offline)
        values, _ = PretrainedConfig.get_config_dict(os.path.expanduser(os.fspath(init_from)))
    except (OSError, ValueError):
        return None  # from_pretrained reports it, naming the option
    model_type = values.get("model_type") if isinstance(values, dict) else None
    return model_type if model_type in RAM_MODEL_TYPES else None


def ram_classes(family: str):
    """``(config class, model class)`` of a family."""
    from .. import RamConfig, RamForImageTagging, RamPlusConfig, RamPlusForImageTagging

    return (RamConfig, RamForImageTagging) if family == "ram" else (RamPlusConfig, RamPlusForImageTagging)


def ram_tag_names(init_from: str, family: str) -> list[str]:
    config_class, _ = ram_classes(family)
    return list(config_class.from_pretrained(init_from).tag_names)


def _description_blocks(model) -> list[torch.Tensor]:
    """The label-embedding rows of each tag (RAM: one row each)."""
    embed = model.label_embed.detach()
    counts = model.config.description_counts() if hasattr(model.config, "description_counts") else \
        [1] * model.config.num_tags
    return list(torch.split(embed, counts))


@torch.no_grad()
def replace_ram_label_space(model, tag_names: list[str], clip_model=None, clip_tokenizer=None) -> dict:
    """Give ``model`` the tags ``tag_names`` (see the module docstring); returns ``{"kept": [...], "new": [...]}``.

    Raises:
        ValueError: a blank or repeated tag, or a CLIP tower whose projection is not the label width.
    """
    from ..ram_open_set import check_clip_width, check_tags, open_set_label_embeddings

    tag_names = check_tags(tag_names)
    config = model.config
    family = "ram_plus" if hasattr(config, "description_counts") else "ram"
    old_index = {}
    for index, name in enumerate(config.tag_names):
        old_index.setdefault(name, index)
    blocks = _description_blocks(model)
    thresholds, chinese = config.threshold_list(), config.tag_names_chinese
    added = [name for name in tag_names if name not in old_index]
    new_blocks = {}
    if added and clip_model is not None:
        check_clip_width(clip_model, config.label_embed_size)
        embeds, counts, _ = open_set_label_embeddings(family, added, clip_model, clip_tokenizer)
        for name, block in zip(added, torch.split(embeds, counts)):
            new_blocks[name] = block
        start = "their CLIP text embeddings"
    elif added:
        mean = model.label_embed.detach().float().mean(dim=0, keepdim=True)
        new_blocks = {name: mean for name in added}
        start = "the mean of the model's label embeddings (give --clip-model for CLIP text embeddings)"
    rows, counts, new_thresholds, new_chinese, kept = [], [], [], [], []
    for name in tag_names:
        if name in old_index:
            source = old_index[name]
            block = blocks[source]
            new_thresholds.append(thresholds[source])
            new_chinese.append(chinese[source] if chinese is not None else name)
            kept.append(name)
        else:
            block = new_blocks[name]
            new_thresholds.append(NEW_TAG_THRESHOLD)
            new_chinese.append(name)  # shown as tags_zh until a Chinese name is given
        rows.append(block.to(model.label_embed.dtype).cpu())
        counts.append(int(block.shape[0]))
    fields = {"descriptions_per_tag": counts} if family == "ram_plus" else {}
    model.set_label_space(torch.cat(rows), tag_names, new_chinese if chinese is not None else None, new_thresholds,
                          **fields)
    dropped = len(set(old_index) - set(tag_names))
    logger.info("new tag list of %d tags: %d kept from the initial model (label embeddings, thresholds, Chinese "
                "names), %d new (label embeddings from %s), %d of the model's tags dropped", len(tag_names),
                len(kept), len(added), start if added else "-", dropped)
    return {"kept": kept, "new": added}


def build_ram_model_and_processor(model_args, tag_list, family: str):
    """``(model, image processor)`` of a RAM / RAM++ fine-tune: the ``--init-from`` weights in float32, with the
    run's tag list when it differs from the model's."""
    from .. import Tag2TextImageProcessor

    _, model_class = ram_classes(family)
    model = model_class.from_pretrained(model_args.init_from, dtype=torch.float32)
    processor = Tag2TextImageProcessor.from_pretrained(model_args.init_from)
    if tag_list is not None and list(tag_list.names) != list(model.config.tag_names):
        from ..ram_open_set import OpenSetError, check_clip_width, check_tags
        from .option_values import TrainingArgumentError

        where = f"--tag-list {model_args.tag_list}" if model_args.tag_list else "the tag list of the data"
        try:
            check_tags(list(tag_list.names))
        except OpenSetError as error:
            raise TrainingArgumentError(f"{where}: {error}") from None
        clip_model = clip_tokenizer = None
        if getattr(model_args, "clip_model", None):
            from ..processing.clip_text import load_clip_text_tower

            clip_model, clip_tokenizer = load_clip_text_tower(model_args.clip_model, "--clip-model")
            try:
                check_clip_width(clip_model, model.config.label_embed_size)
            except OpenSetError as error:
                raise TrainingArgumentError(f"--clip-model {model_args.clip_model}: {error}") from None
        replace_ram_label_space(model, list(tag_list.names), clip_model, clip_tokenizer)
    if model_args.tag_threshold is not None:
        model.config.class_thresholds = [float(model_args.tag_threshold)] * model.config.num_tags
        model.config._validate()
    model.label_embed.requires_grad_(True)
    return model, processor


class TaggingCollator(ImageBatchCollator):
    """Records -> ``{"pixel_values", "labels"}`` (multi-hot over the model's tags): the inputs of a RAM / RAM++
    ``forward``. Images are loaded, augmented and seeded per sample as :class:`~.collator.Tag2TextCollator` does
    (see :class:`~.collator.ImageBatchCollator`), so resumed runs build the same batches."""

    def __init__(self, image_processor, num_tags: int, augmentation=None, image_loader=None, seed: int = 0):
        super().__init__(augmentation, image_loader, seed)
        self.image_processor = image_processor
        self.num_tags = int(num_tags)

    def __call__(self, records: list[dict]) -> dict:
        kept, images = self.load_images(records)
        if self.augmentation is not None:
            images = [self.augmentation(image, self.rng(int(record.get("index", 0))))
                      for record, image in zip(kept, images)]
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        labels = torch.zeros(len(images), self.num_tags, dtype=torch.float32)
        for row, record in enumerate(kept):
            ids = list(record.get("tag_ids") or [])
            if ids:
                labels[row, ids] = 1.0
        return {"pixel_values": pixel_values, "labels": labels}
