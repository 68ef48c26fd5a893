"""Training data: image + caption(s) + tags, read from three layouts into one record format.

Layouts:

* **imagefolder**: a directory with ``metadata.jsonl``; each line ``{"file_name": ..., "caption": str}`` or
  ``"captions": [str, ...]``, optional ``"tags": [name, ...]`` (names in the tag list).
* **original JSON** (recognize-anything): a ``.json`` list of ``{"image_path", "caption": [...],
  "parse_label_id": [[tag index, ...] per caption]}``; image paths are relative to ``image_root`` (default:
  the JSON's folder). ``parse_label_id`` indexes the tag list, so the tag list must be known.
* **webdataset** shards (``.tar``): streamed, never loaded whole; see :mod:`.webdataset`.

Records (one per image) hold ``image`` (a path), ``captions``, ``tag_ids`` (image-level: the union over the
captions, the tagging target), ``caption_tag_ids`` (per caption, when known: the tag text given to the
interaction encoder with that caption, as the release pairs each caption with its own parsed tags),
``index`` (row number; seeds per-sample augmentation) and ``image_id`` (equal for rows of the same image; ITC
treats those as positives). Map-style data is held in a ``datasets.Dataset`` (Arrow, compact for millions of
captions). Tags absent from the data are mined from the captions (cached beside the data, see
:mod:`.tag_mining`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
from collections import Counter
from pathlib import Path

from .images import BadImageError
from .tag_mining import CaptionTagger, TagList, build_tag_list, typed_to_ids

logger = logging.getLogger(__name__)

METADATA_FILE = "metadata.jsonl"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class DataFormatError(ValueError):
    """The data does not follow its layout; the message names the file, line or field."""


@dataclasses.dataclass
class RawSamples:
    """Samples as read, before tags are resolved to indices of the final tag list."""

    images: list[str]
    captions: list[list[str]]
    tag_names: list[list[str] | None]  # per image, by name (imagefolder "tags"), or None
    caption_tag_ids: list[list[list[int]] | None]  # per caption, by index (original JSON), or None
    source: str
    root: Path
    missing_images: int = 0

    def __len__(self) -> int:
        return len(self.images)


def detect_format(path: str | os.PathLike) -> str:
    """``"imagefolder"``, ``"json"`` or ``"webdataset"`` for a data path (see the module docstring)."""
    text = os.fspath(path)
    p = Path(text)
    if p.is_dir():
        if (p / METADATA_FILE).is_file():
            return "imagefolder"
        if any(p.glob("*.tar")):
            return "webdataset"
        raise DataFormatError(
            f"{p}: neither {METADATA_FILE} (imagefolder layout) nor .tar shards (webdataset) found in it"
        )
    if p.suffix == ".json" and p.is_file():
        return "json"
    if p.suffix == ".jsonl" and p.is_file() and p.name == METADATA_FILE:
        return "imagefolder"
    if text.endswith(".tar") or "{" in text or any(ch in text for ch in "*?"):
        return "webdataset"
    raise DataFormatError(f"{text}: no such data directory, annotation .json or .tar shard pattern")


def _captions_of(entry: dict, where: str) -> list[str]:
    value = None
    for field in ("captions", "caption", "text"):
        if field in entry:
            value = entry[field]
            break
    if value is None:
        raise DataFormatError(f"{where}: no 'caption' or 'captions' field (keys: {sorted(entry)})")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise DataFormatError(f"{where}: captions must be a string or a list of strings, got {value!r:.80}")
    value = [c.strip() for c in value if c.strip()]
    if not value:
        raise DataFormatError(f"{where}: every caption is empty")
    return value


def _check_image(path: Path, where: str, fail_fast: bool, missing: Counter) -> bool:
    if path.is_file():
        return True
    if fail_fast:
        raise BadImageError(f"{where}: image {str(path)!r} does not exist (stopping because of --fail-on-bad-image)")
    missing["n"] += 1
    if missing["n"] <= 10:
        logger.warning("%s: image %r does not exist; skipping the sample", where, str(path))
    return False


def read_imagefolder(directory: str | os.PathLike, fail_fast: bool = False, check_files: bool = True) -> RawSamples:
    """Read ``DIR/metadata.jsonl`` (see the module docstring). Samples whose image is missing are counted,
    logged and dropped (or raise with ``fail_fast``)."""
    root = Path(directory)
    if root.is_file():
        root = root.parent
    meta = root / METADATA_FILE
    if not meta.is_file():
        raise DataFormatError(f"{root}: no {METADATA_FILE}")
    images, captions, tags = [], [], []
    missing = Counter()
    with open(meta, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{meta}:{number}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise DataFormatError(f"{where}: not valid JSON ({error})") from None
            if not isinstance(entry, dict) or "file_name" not in entry:
                raise DataFormatError(f"{where}: each line must be an object with a 'file_name'")
            path = root / str(entry["file_name"])
            entry_captions = _captions_of(entry, where)
            entry_tags = entry.get("tags")
            if entry_tags is not None:
                if isinstance(entry_tags, str):
                    entry_tags = [t.strip() for t in entry_tags.split("|")]
                if not isinstance(entry_tags, list) or not all(isinstance(t, str) for t in entry_tags):
                    raise DataFormatError(f"{where}: 'tags' must be a list of tag names, got {entry_tags!r:.80}")
                entry_tags = [t.strip() for t in entry_tags if t.strip()]
            if check_files and not _check_image(path, where, fail_fast, missing):
                continue
            images.append(str(path))
            captions.append(entry_captions)
            tags.append(entry_tags)
    if missing["n"]:
        logger.warning("%s: %d of %d samples skipped because their image is missing", meta, missing["n"],
                       missing["n"] + len(images))
    if not images:
        raise DataFormatError(f"{meta}: no usable sample")
    return RawSamples(images, captions, tags, [None] * len(images), str(meta), root, missing["n"])


def read_annotation_json(path: str | os.PathLike, image_root: str | os.PathLike | None = None,
                         fail_fast: bool = False, check_files: bool = True) -> RawSamples:
    """Read the original project's annotation list (see the module docstring)."""
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    try:
        with open(path, encoding="utf-8") as handle:
            entries = json.load(handle)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(entries, list):
        raise DataFormatError(f"{path}: expected a list of annotation objects, got {type(entries).__name__}")
    images, captions, per_caption = [], [], []
    missing = Counter()
    for number, entry in enumerate(entries):
        where = f"{path}[{number}]"
        if not isinstance(entry, dict) or "image_path" not in entry:
            raise DataFormatError(f"{where}: each item needs an 'image_path'")
        entry_captions = _captions_of(entry, where)
        ids = entry.get("parse_label_id")
        if ids is not None:
            if not isinstance(ids, list) or len(ids) != len(entry_captions) or not all(
                isinstance(row, list) and all(isinstance(i, int) for i in row) for row in ids
            ):
                raise DataFormatError(
                    f"{where}: 'parse_label_id' must hold one list of tag indices per caption "
                    f"({len(entry_captions)} captions), got {ids!r:.80}"
                )
        image = Path(entry["image_path"])
        image = image if image.is_absolute() else root / image
        if check_files and not _check_image(image, where, fail_fast, missing):
            continue
        images.append(str(image))
        captions.append(entry_captions)
        per_caption.append(ids)
    if missing["n"]:
        logger.warning("%s: %d of %d samples skipped because their image is missing under %s", path, missing["n"],
                       len(entries), root)
    if not images:
        raise DataFormatError(f"{path}: no usable sample (image root {root})")
    return RawSamples(images, captions, [None] * len(images), per_caption, str(path), root, missing["n"])


def read_samples(path, image_root=None, fail_fast: bool = False) -> RawSamples:
    kind = detect_format(path)
    if kind == "imagefolder":
        return read_imagefolder(path, fail_fast=fail_fast)
    if kind == "json":
        return read_annotation_json(path, image_root, fail_fast=fail_fast)
    raise DataFormatError(f"{path}: webdataset shards are streamed; use tag2text.training.webdataset")


# -- resolving tags ---------------------------------------------------------------------------------------------


def tag_list_from_names(tag_names: list[list[str] | None], max_tags: int | None = None) -> TagList:
    """A tag list from tags given by name in the data: most frequent first (types unknown)."""
    counts = Counter(name for names in tag_names if names for name in set(names))
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if max_tags is not None:
        ordered = ordered[:max_tags]
    if not ordered:
        raise ValueError("the data gives no tag names to build a tag list from")
    return TagList([n for n, _ in ordered], None, [c for _, c in ordered])


class TagResolver:
    """Turns every sample's tags into indices of one tag list, mining captions that come without tags."""

    def __init__(self, tag_list: TagList | None = None, max_tags: int | None = None,
                 tagger: CaptionTagger | None = None):
        self.tag_list = tag_list
        self.max_tags = max_tags
        self.tagger = tagger
        self.unknown_names: Counter = Counter()

    def _tagger(self, root) -> CaptionTagger:
        if self.tagger is None:
            return CaptionTagger(cache_root=root)
        if self.tagger.cache_root is None:  # cache beside this data
            return CaptionTagger(cache_root=root, spacy_model=self.tagger.spacy_model, progress=self.tagger.progress)
        return self.tagger

    def resolve(self, raw: RawSamples) -> tuple[list[list[int]], list[list[list[int]]]]:
        """(image-level tag ids, per-caption tag ids) for every sample; sets :attr:`tag_list` if unset."""
        n = len(raw)
        caption_ids: list[list[list[int]] | None] = list(raw.caption_tag_ids)
        if any(ids is not None for ids in caption_ids) and self.tag_list is None:
            raise ValueError(
                f"{raw.source}: 'parse_label_id' holds indices into a tag list; give --tag-list (or --init-from a "
                "model, whose tag list is used)"
            )
        named = [i for i in range(n) if raw.tag_names[i] is not None and caption_ids[i] is None]
        if named and self.tag_list is None and len(named) == n:
            self.tag_list = tag_list_from_names(raw.tag_names, self.max_tags)
            logger.info("built a %d-tag list from the tags given in %s", len(self.tag_list), raw.source)
        untagged = [i for i in range(n) if caption_ids[i] is None and raw.tag_names[i] is None]
        if untagged:
            captions = [c for i in untagged for c in raw.captions[i]]
            logger.info("%d of %d samples have no tags: mining them from %d captions", len(untagged), n, len(captions))
            tagger = self._tagger(raw.root)
            if self.tag_list is None:
                typed = tagger.mine_typed(captions)
                grouped, pos = [], 0
                for i in untagged:
                    grouped.append(typed[pos: pos + len(raw.captions[i])])
                    pos += len(raw.captions[i])
                self.tag_list = build_tag_list(grouped, max_tags=self.max_tags)
                logger.info("built a %d-tag list from the mined captions of %s", len(self.tag_list), raw.source)
                for i, rows in zip(untagged, grouped):
                    caption_ids[i] = [typed_to_ids(row, self.tag_list) for row in rows]
            else:
                mined = tagger.mine_ids(captions, self.tag_list)
                pos = 0
                for i in untagged:
                    caption_ids[i] = mined[pos: pos + len(raw.captions[i])]
                    pos += len(raw.captions[i])
        index = {}
        for i, name in enumerate(self.tag_list.names):
            index.setdefault(name.strip().lower(), i)
        image_ids, per_caption = [], []
        for i in range(n):
            if caption_ids[i] is not None:
                rows = [self._check_ids(row, raw.source, i) for row in caption_ids[i]]
                image_ids.append(sorted({t for row in rows for t in row}))
                per_caption.append(rows)
            else:
                ids = []
                for name in raw.tag_names[i]:
                    found = index.get(name.strip().lower())
                    if found is None:
                        self.unknown_names[name] += 1
                    else:
                        ids.append(found)
                image_ids.append(sorted(set(ids)))
                per_caption.append([])  # no per-caption tags: the image's tags go with every caption
        if self.unknown_names:
            top = ", ".join(f"{k!r} ({v})" for k, v in self.unknown_names.most_common(10))
            logger.warning("%s: %d tag names are not in the tag list and were ignored, e.g. %s", raw.source,
                           sum(self.unknown_names.values()), top)
        return image_ids, per_caption

    def _check_ids(self, row, source, sample):
        bad = [t for t in row if not 0 <= t < len(self.tag_list)]
        if bad:
            raise DataFormatError(
                f"{source}: sample {sample} has tag indices {bad[:5]} outside the {len(self.tag_list)}-tag list"
            )
        return sorted(set(row))


def build_dataset(raw: RawSamples, resolver: TagResolver):
    """A ``datasets.Dataset`` of records (see the module docstring) with tags resolved by ``resolver``."""
    import datasets

    image_tag_ids, caption_tag_ids = resolver.resolve(raw)
    image_index: dict[str, int] = {}
    image_ids = [image_index.setdefault(path, len(image_index)) for path in raw.images]
    columns = {
        "image": list(raw.images),
        "captions": [list(c) for c in raw.captions],
        "tag_ids": image_tag_ids,
        "caption_tag_ids": caption_tag_ids,
        "index": list(range(len(raw))),
        "image_id": image_ids,
    }
    features = datasets.Features({
        "image": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
        "tag_ids": datasets.List(datasets.Value("int32")),
        "caption_tag_ids": datasets.List(datasets.List(datasets.Value("int32"))),
        "index": datasets.Value("int64"),
        "image_id": datasets.Value("int64"),
    })
    dataset = datasets.Dataset.from_dict(columns, features=features)
    without = sum(1 for ids in image_tag_ids if not ids)
    if without:
        logger.info("%s: %d of %d samples have no tag in the tag list", raw.source, without, len(raw))
    return dataset


def load_dataset(path, resolver: TagResolver, image_root=None, fail_fast: bool = False):
    """Read a map-style layout (imagefolder or original JSON) into a ``datasets.Dataset``."""
    raw = read_samples(path, image_root=image_root, fail_fast=fail_fast)
    dataset = build_dataset(raw, resolver)
    logger.info("%s: %d samples, %d captions (%d samples dropped for missing images)", raw.source, len(raw),
                sum(len(c) for c in raw.captions), raw.missing_images)
    return dataset


def expand_shards(pattern: str) -> list[str]:
    """Shard paths from a directory, a glob, or a brace range ``shards-{00000..00009}.tar``."""
    path = Path(pattern)
    if path.is_dir():
        shards = sorted(str(p) for p in path.glob("*.tar"))
    else:
        shards = []
        for expanded in _expand_braces(pattern):
            matches = sorted(glob.glob(expanded)) if any(ch in expanded for ch in "*?[") else [expanded]
            shards.extend(matches)
    missing = [s for s in shards if not os.path.isfile(s)]
    if missing:
        raise DataFormatError(f"{len(missing)} shard(s) of {pattern!r} do not exist, e.g. {missing[0]}")
    if not shards:
        raise DataFormatError(f"{pattern!r} names no .tar shard")
    return shards


def _expand_braces(pattern: str) -> list[str]:
    start = pattern.find("{")
    if start < 0:
        return [pattern]
    end = pattern.find("}", start)
    if end < 0:
        raise DataFormatError(f"unbalanced brace in shard pattern {pattern!r}")
    body = pattern[start + 1: end]
    if ".." in body:
        low, high = body.split("..", 1)
        width = len(low)
        try:
            items = [str(i).zfill(width) for i in range(int(low), int(high) + 1)]
        except ValueError:
            raise DataFormatError(f"shard range {{{body}}} in {pattern!r} must be numeric") from None
    else:
        items = body.split(",")
    return [p for item in items for p in _expand_braces(pattern[:start] + item + pattern[end + 1:])]
