"""Batching records into model inputs with the processor: images (augmented), captions, tags, labels.

Per sample, every random choice (which caption, augmentation, tag order) comes from a generator seeded by
``(seed, epoch, sample index)``. Nothing depends on the order batches are drawn in or on the global RNG, so a
run resumed from a checkpoint (which skips the batches it already trained on) builds exactly the batches an
uninterrupted run builds. :class:`~.trainer.EpochCallback` keeps :attr:`Tag2TextCollator.epoch` current.

A batch holds forward arguments only, so it goes straight into the model (``model(**batch)``, transformers'
plain Trainer). Skipped images are counted on the collator (:attr:`Tag2TextCollator.image_load_failures`), in
shared memory so that the counts of DataLoader worker processes reach the process that reads them.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from .augmentation import TrainAugmentation
from .images import BadImageError, ImageLoader

logger = logging.getLogger(__name__)

# Slots of the skipped-image counter: 0 for the process itself, 1 + worker id for a DataLoader worker, so that no
# two processes add to the same number (an in-place add on shared memory is not atomic).
_COUNTER_SLOTS = 257


class ImageBatchCollator:
    """What every training collator shares: the image loader, the skipped-image counter (in shared memory, so that
    DataLoader worker processes add to the same tensor, each in its own slot) and the per-sample generators seeded
    by ``(seed, epoch, sample index)``."""

    def __init__(self, augmentation: TrainAugmentation | None = None, image_loader: ImageLoader | None = None,
                 seed: int = 0):
        self.augmentation = augmentation
        self.image_loader = image_loader or ImageLoader()
        self.seed = int(seed)
        self.epoch = 0
        self._skipped = torch.zeros(_COUNTER_SLOTS, dtype=torch.long).share_memory_()

    @property
    def image_load_failures(self) -> int:
        """Images skipped so far by this collator, in this process and in its DataLoader workers."""
        return int(self._skipped.sum())

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def load_images(self, records: list[dict]) -> tuple[list[dict], list]:
        """``(records whose image loaded, their images)``, the skipped ones counted; augmentation is the
        subclass's: each collator draws from the sample's generator in its own order.

        Raises:
            BadImageError: no image of the batch could be loaded.
        """
        kept, images = [], []
        failures_before = self.image_loader.skipped
        for record in records:
            name = record["image"] if isinstance(record["image"], str) else None
            image = self.image_loader.load(record["image"], name=repr(name) if name else None)
            if image is not None:
                kept.append(record)
                images.append(image)
        skipped = self.image_loader.skipped - failures_before
        if skipped:
            worker = torch.utils.data.get_worker_info()
            slot = 0 if worker is None else 1 + worker.id % (_COUNTER_SLOTS - 1)
            self._skipped[slot] += skipped
        if not images:
            raise BadImageError(
                f"every image of a batch of {len(records)} failed to load (see the warnings above); "
                "check the image paths/root"
            )
        return kept, images


class Tag2TextCollator(ImageBatchCollator):
    """Turn a list of records into a training batch.

    Args:
        processor: a :class:`~tag2text.Tag2TextProcessor`.
        tag_names: the model's tag list (``config.tag_names``), to spell tag ids as tag text.
        augmentation: a :class:`~.augmentation.TrainAugmentation`, or None for inference preprocessing.
        shuffle_tags: give the interaction encoder the tags in a random order per sample (the paper's
            choice, against positional bias) instead of class-index order (the released code's).
        random_caption: pick one caption at random per sample and epoch (else the first), as the release.
        excluded_tag_ids: tags left out of the tag text (the model's ``caption_excluded_tag_ids``: they are
            never given to the decoder at inference either).
        image_loader: an :class:`~.images.ImageLoader` (counts and skips bad images).
        seed: base of the per-sample generators.

    A record is a dict with ``image`` (a path, bytes, a ``{"bytes", "path"}`` dict or a PIL image) and
    ``captions`` (a non-empty list of strings), and optionally ``tag_ids`` (class indices into ``tag_names``:
    the tagging targets and, by default, the tag text), ``caption_tag_ids`` (per caption, the tag ids of its
    tag text), ``index`` (seeds the per-sample randomness; default 0) and ``image_id`` (equal ids are ITC
    positives; default ``index``); see :mod:`.data`. A batch holds the processor's ``pixel_values``,
    ``input_ids``, ``attention_mask``, ``labels``, ``tag_input_ids``, ``tag_attention_mask``, plus
    ``tag_targets`` (multi-hot), the alignment text of the processor's ``encode_alignment_text``
    (``text_input_ids`` ``[CLS] caption [SEP]`` for ITC, ``itm_input_ids`` with ``[ENC]`` first for ITM,
    ``text_attention_mask``; no prompt) and ``sample_ids`` (ITC positives): the arguments of
    ``Tag2TextForPreTraining.forward``, nothing else. Images that fail to load are skipped and counted in
    :attr:`image_load_failures`.
    """

    def __init__(self, processor, tag_names, augmentation: TrainAugmentation | None = None, shuffle_tags: bool = False,
                 random_caption: bool = True, excluded_tag_ids=(), image_loader: ImageLoader | None = None,
                 seed: int = 0):
        super().__init__(augmentation, image_loader, seed)
        self.processor = processor
        self.tag_names = list(tag_names)
        self.shuffle_tags = shuffle_tags
        self.random_caption = random_caption
        self.excluded = set(int(i) for i in excluded_tag_ids)

    def tag_text_ids(self, record: dict, caption_index: int, rng: np.random.Generator) -> list[int]:
        per_caption = record.get("caption_tag_ids") or []
        ids = list(per_caption[caption_index]) if caption_index < len(per_caption) else list(record.get("tag_ids") or [])
        ids = sorted(i for i in set(ids) if i not in self.excluded)
        if self.shuffle_tags and len(ids) > 1:
            ids = [ids[i] for i in rng.permutation(len(ids))]
        return ids

    def __call__(self, records: list[dict]) -> dict:
        images, captions, tag_texts, tag_rows, sample_ids = [], [], [], [], []
        for record, image in zip(*self.load_images(records)):
            index = int(record.get("index", 0))
            rng = self.rng(index)
            name = record["image"] if isinstance(record["image"], str) else None
            record_captions = record["captions"]
            if not record_captions:
                raise ValueError(f"sample {index} ({name or 'streamed'}) has no caption")
            choice = int(rng.integers(len(record_captions))) if self.random_caption else 0
            if self.augmentation is not None:
                image = self.augmentation(image, rng)
            ids = self.tag_text_ids(record, choice, rng)
            images.append(image)
            captions.append(record_captions[choice])
            tag_texts.append([self.tag_names[i] for i in ids])
            tag_rows.append(list(record.get("tag_ids") or []))
            sample_ids.append(int(record.get("image_id", index)))
        batch = dict(self.processor(images=images, text=captions, tags=tag_texts, return_labels=True))
        tag_targets = torch.zeros(len(images), len(self.tag_names), dtype=torch.float32)
        for row, ids in enumerate(tag_rows):
            if ids:
                tag_targets[row, ids] = 1.0
        batch["tag_targets"] = tag_targets
        batch.update(self.processor.encode_alignment_text(captions))
        batch["sample_ids"] = torch.tensor(sample_ids, dtype=torch.long)
        return batch


def evaluation_collator(processor, tag_names, image_loader=None, excluded_tag_ids=()) -> Tag2TextCollator:
    """The collator for evaluation losses: no augmentation, first caption, tags in class-index order."""
    return Tag2TextCollator(processor, tag_names, augmentation=None, shuffle_tags=False, random_caption=False,
                            excluded_tag_ids=excluded_tag_ids, image_loader=image_loader)
