"""Streaming webdataset shards (``.tar``) for data larger than memory, with a plain ``tarfile`` reader.

A sample is the group of consecutive tar members sharing a key (the file name up to its first dot):
``KEY.jpg``/``.png``/... holds the image, ``KEY.json`` holds ``{"caption"|"captions", optional "tags" (names)
or "parse_label_id" (indices per caption)}``, or ``KEY.txt`` holds one caption. Images are read as bytes and
decoded in the collator, so a corrupt image is counted and skipped there like any other.

Before training one pass reads the text members only (images are skipped over, not decoded) to resolve the tags
of every sample with the same rules as the map-style layouts (mining captions that have none). Training then
streams the shards: shard order shuffled per epoch from the seed, a seeded shuffle buffer, shards split across
data-loader workers. ``set_epoch`` (called by accelerate's data loader) changes the shuffle, so each epoch is
reproducible and a resumed run sees the same order.
"""

from __future__ import annotations

import json
import logging
import os
import tarfile
import zlib
from collections import Counter

import numpy as np
import torch

from .data import DataFormatError, RawSamples, TagResolver, expand_shards
from .images import BadImageError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff", "ppm")
TEXT_SUFFIXES = ("json", "txt", "caption")


def split_member_name(name: str) -> tuple[str, str]:
    """``(sample key, lower-case suffix)`` of a tar member, as webdataset groups them: ``"d/0001.jpg"`` ->
    ``("d/0001", "jpg")`` (the suffix starts at the first dot of the file name)."""
    directory, _, base = name.rpartition("/")
    key, dot, suffix = base.partition(".")
    return (f"{directory}/{key}" if directory else key), suffix.lower()


def iter_tar_samples(shard: str, read_images: bool = True, fail_fast: bool = False, stats: Counter | None = None):
    """Yield ``(key, {suffix: bytes})`` groups of one shard, streaming. A truncated or corrupt shard is
    logged and the rest of it skipped (or raises with ``fail_fast``)."""
    stats = stats if stats is not None else Counter()
    current, parts = None, {}
    try:
        with tarfile.open(shard, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                key, suffix = split_member_name(member.name)
                if key != current:
                    if current is not None:
                        yield current, parts
                    current, parts = key, {}
                wanted = suffix in TEXT_SUFFIXES or (read_images and suffix in IMAGE_SUFFIXES)
                if not wanted and suffix in IMAGE_SUFFIXES:
                    parts[suffix] = None  # present but not read (caption pass)
                    continue
                if wanted:
                    handle = archive.extractfile(member)
                    parts[suffix] = handle.read() if handle is not None else b""
            if current is not None:
                yield current, parts
    except (tarfile.TarError, OSError, EOFError) as error:
        stats["corrupt_shards"] += 1
        message = f"shard {shard}: unreadable after key {current!r} ({error})"
        if fail_fast:
            raise BadImageError(message + " (stopping because of --fail-on-bad-image)") from error
        logger.error("%s; skipping the rest of the shard", message)


def _parse_text(key: str, parts: dict, shard: str):
    """(captions, tag names or None, per-caption tag ids or None) of one sample."""
    where = f"{shard}:{key}"
    if parts.get("json") is not None:
        try:
            meta = json.loads(parts["json"].decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataFormatError(f"{where}.json: not valid JSON ({error})") from None
        if not isinstance(meta, dict):
            raise DataFormatError(f"{where}.json: expected an object")
        captions = meta.get("captions", meta.get("caption", meta.get("text")))
        if captions is None and parts.get("txt") is not None:
            captions = parts["txt"].decode("utf-8", "replace")
        names = meta.get("tags")
        if isinstance(names, str):
            names = [t.strip() for t in names.split("|") if t.strip()]
        ids = meta.get("parse_label_id")
    else:
        text = parts.get("txt") if parts.get("txt") is not None else parts.get("caption")
        captions = text.decode("utf-8", "replace") if text is not None else None
        names = ids = None
    if isinstance(captions, str):
        captions = [captions]
    captions = [c.strip() for c in (captions or []) if isinstance(c, str) and c.strip()]
    if ids is not None and (not isinstance(ids, list) or len(ids) != len(captions)):
        raise DataFormatError(f"{where}.json: 'parse_label_id' must hold one list per caption")
    return captions, names, ids


def sample_number(shard: str, key: str) -> int:
    """A stable number for a sample (seeds its augmentation; ITC's sample id)."""
    return zlib.crc32(f"{os.path.basename(shard)}/{key}".encode("utf-8")) & 0x7FFFFFFF


def read_shard_texts(shards: list[str], fail_fast: bool = False) -> tuple[RawSamples, dict]:
    """The caption pass: captions and tags of every sample (images skipped over). Returns the samples
    (``images`` hold ``shard:key`` names) and ``{(shard, key): row}``."""
    images, captions, names, per_caption, rows = [], [], [], [], {}
    stats = Counter()
    from tqdm.auto import tqdm

    for shard in tqdm(shards, desc="reading shard captions", unit="shard", disable=len(shards) < 2):
        for key, parts in iter_tar_samples(shard, read_images=False, fail_fast=fail_fast, stats=stats):
            has_image = any(s in parts for s in IMAGE_SUFFIXES)
            sample_captions, sample_names, sample_ids = _parse_text(key, parts, shard)
            if not has_image or not sample_captions:
                stats["incomplete"] += 1
                if stats["incomplete"] <= 10:
                    logger.warning("%s:%s has no %s; skipping it", shard, key, "image" if not has_image else "caption")
                continue
            rows[(shard, key)] = len(images)
            images.append(f"{shard}:{key}")
            captions.append(sample_captions)
            names.append(sample_names)
            per_caption.append(sample_ids)
    if stats["incomplete"]:
        logger.warning("%d shard samples lack an image or a caption and are skipped", stats["incomplete"])
    if not images:
        raise DataFormatError(f"no usable sample in {len(shards)} shard(s), e.g. {shards[0]}")
    root = os.path.dirname(os.path.abspath(shards[0]))
    raw = RawSamples(images, captions, names, per_caption, f"{len(shards)} shards in {root}", root)
    return raw, rows


class WebDatasetSource(torch.utils.data.IterableDataset):
    """Stream records (same fields as the map-style records; ``image`` is ``{"bytes", "path"}``).

    Args:
        shards: shard paths.
        tag_ids / caption_tag_ids / rows: resolved tags from :func:`load_webdataset`.
        seed: shuffle seed. shuffle: shuffle shard order and samples (buffer of ``shuffle_buffer``).
    """

    def __init__(self, shards, tag_ids, caption_tag_ids, rows, seed: int = 0, shuffle: bool = True,
                 shuffle_buffer: int = 1000, fail_fast: bool = False):
        super().__init__()
        self.shards = list(shards)
        self.tag_ids = tag_ids
        self.caption_tag_ids = caption_tag_ids
        self.rows = rows
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.fail_fast = fail_fast
        self.epoch = 0
        self.num_samples = len(rows)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _records(self, shards):
        for shard in shards:
            for key, parts in iter_tar_samples(shard, fail_fast=self.fail_fast):
                row = self.rows.get((shard, key))
                if row is None:
                    continue  # skipped in the caption pass (no image or caption), already reported
                image_suffix = next((s for s in IMAGE_SUFFIXES if parts.get(s) is not None), None)
                captions, _, _ = _parse_text(key, parts, shard)
                number = sample_number(shard, key)
                yield {
                    "image": {"bytes": parts[image_suffix], "path": f"{shard}:{key}.{image_suffix}"},
                    "captions": captions,
                    "tag_ids": self.tag_ids[row],
                    "caption_tag_ids": self.caption_tag_ids[row],
                    "index": number,
                    "image_id": number,
                }

    def __iter__(self):
        shards = list(self.shards)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            shards = [shards[i] for i in rng.permutation(len(shards))]
        info = torch.utils.data.get_worker_info()
        if info is not None:
            shards = shards[info.id:: info.num_workers]
            rng = np.random.default_rng([self.seed, self.epoch, info.id])
        records = self._records(shards)
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from records
            return
        buffer = []
        for record in records:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(record)
                continue
            slot = int(rng.integers(len(buffer)))
            yield buffer[slot]
            buffer[slot] = record
        order = rng.permutation(len(buffer))
        for i in order:
            yield buffer[i]


def load_webdataset(pattern, resolver: TagResolver, seed: int = 0, shuffle: bool = True, shuffle_buffer: int = 1000,
                    fail_fast: bool = False) -> WebDatasetSource:
    """Resolve tags with a caption pass, then return the streaming source."""
    shards = expand_shards(os.fspath(pattern))
    raw, rows = read_shard_texts(shards, fail_fast=fail_fast)
    tag_ids, caption_tag_ids = resolver.resolve(raw)
    logger.info("%s: %d samples in %d shards, streamed", raw.source, len(raw), len(shards))
    return WebDatasetSource(shards, tag_ids, caption_tag_ids, rows, seed=seed, shuffle=shuffle,
                            shuffle_buffer=shuffle_buffer, fail_fast=fail_fast)
