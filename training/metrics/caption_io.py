"""Reading caption references and predictions from files.

Accepted formats, detected from the content:

* COCO annotation file (references): ``{"images": [...], "annotations": [{"image_id", "caption"}, ...]}``.
  Images are taken in ``images`` order, as the toolkit does; images without annotations are
  ignored. Each image's ``file_name`` (and its basename) is remembered as an alias, so that
  predictions keyed by file name can be matched.
* COCO result file (predictions, or references in the same shape): a JSON list of
  ``{"image_id", "caption"}``.
* JSON Lines, one object per line: ``{"image": ID, "caption": "..."}`` or, for references,
  ``{"image": ID, "captions": ["...", ...]}``; ``"image_id"`` is accepted for ``"image"``.
  Reference lines for the same image are merged.

Image ids are returned as strings, so that ``391895`` in one file matches ``"391895"`` in the
other (JSON object keys, as in the output, are strings anyway). A prediction file with two
captions for one image is an error (the toolkit would stop on an assertion).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from .caption_metrics import CaptionInputError

logger = logging.getLogger(__name__)

__all__ = ["read_predictions", "read_references", "resolve_prediction_ids"]


def _load(path: str | os.PathLike) -> tuple[Any, bool]:
    """Parsed JSON document, or a list of JSONL records; the flag tells which."""
    text = Path(path).read_text(encoding="utf-8")
    if not text.strip():
        raise CaptionInputError(f"{path}: file is empty")
    try:
        return json.loads(text), False
    except json.JSONDecodeError:
        pass
    records = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise CaptionInputError(f"{path}:{lineno}: neither a JSON document nor JSON Lines ({exc.msg})") from None
    return records, True


def _records(doc: Any, is_jsonl: bool, path) -> list[dict]:
    if is_jsonl:
        return doc
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and ("image" in doc or "image_id" in doc):
        return [doc]  # a one-line JSONL file is also a valid JSON document
    raise CaptionInputError(f"{path}: expected a COCO annotation file, a COCO result list or JSON Lines")


def _image_of(record: Any, where: str) -> str:
    if not isinstance(record, dict):
        raise CaptionInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("image", "image_id"):
        if key in record:
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise CaptionInputError(f"{where}: {key!r} must be a string or an integer, got {value!r}")
            return str(value)
    raise CaptionInputError(f"{where}: record has no 'image' or 'image_id' field")


def _caption_of(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise CaptionInputError(f"{where}: caption must be a string, got {value!r}")
    return value


def read_references(path: str | os.PathLike) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Reference captions per image id, and a map from image file names to ids (COCO files only)."""
    doc, is_jsonl = _load(path)
    refs: dict[str, list[str]] = {}
    aliases: dict[str, str] = {}
    if not is_jsonl and isinstance(doc, dict) and "annotations" in doc:
        for img in doc.get("images", []):
            image = _image_of({"image": img.get("id")}, f"{path}: images entry {img!r}")
            refs.setdefault(image, [])
            if isinstance(img.get("file_name"), str):
                aliases[img["file_name"]] = image
                aliases.setdefault(os.path.basename(img["file_name"]), image)
        for i, ann in enumerate(doc["annotations"]):
            where = f"{path}: annotations[{i}]"
            refs.setdefault(_image_of(ann, where), []).append(_caption_of(ann.get("caption"), where))
        unannotated = [k for k, v in refs.items() if not v]
        if unannotated:
            logger.info("%s: %d image(s) have no annotations and are ignored", path, len(unannotated))
        return {k: v for k, v in refs.items() if v}, aliases
    for i, rec in enumerate(_records(doc, is_jsonl, path)):
        where = f"{path}: record {i + 1}"
        image = _image_of(rec, where)
        if "captions" in rec:
            caps = rec["captions"]
            if not isinstance(caps, list):
                raise CaptionInputError(f"{where}: 'captions' must be a list of strings")
            refs.setdefault(image, []).extend(_caption_of(c, where) for c in caps)
        elif "caption" in rec:
            refs.setdefault(image, []).append(_caption_of(rec["caption"], where))
        else:
            raise CaptionInputError(f"{where}: record has neither 'caption' nor 'captions'")
    empty = [k for k, v in refs.items() if not v]
    if empty:
        raise CaptionInputError(f"{path}: {len(empty)} image(s) have an empty 'captions' list, e.g. {empty[0]!r}")
    return refs, aliases


def read_predictions(path: str | os.PathLike) -> dict[str, str]:
    """One predicted caption per image id; duplicates are an error."""
    doc, is_jsonl = _load(path)
    if not is_jsonl and isinstance(doc, dict) and "annotations" in doc:
        raise CaptionInputError(f"{path}: this is a COCO annotation file; predictions must be a result list or JSONL")
    preds: dict[str, str] = {}
    duplicates: list[str] = []
    for i, rec in enumerate(_records(doc, is_jsonl, path)):
        where = f"{path}: record {i + 1}"
        image = _image_of(rec, where)
        if "caption" not in rec:
            raise CaptionInputError(f"{where}: a prediction needs one 'caption' string")
        caption = _caption_of(rec["caption"], where)
        if image in preds:
            duplicates.append(image)
            continue
        preds[image] = caption
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:5])
        raise CaptionInputError(
            f"{path}: {len(duplicates)} duplicate prediction(s) (one caption per image expected), e.g. {shown}"
        )
    return preds


def resolve_prediction_ids(
    predictions: dict[str, str], references: dict[str, list[str]], aliases: dict[str, str]
) -> tuple[dict[str, str], int]:
    """Map prediction keys that are image file names onto reference ids; returns (predictions, renamed)."""
    out: dict[str, str] = {}
    renamed = 0
    for key, caption in predictions.items():
        target = key
        if key not in references:
            target = aliases.get(key) or aliases.get(os.path.basename(key)) or key
            renamed += target != key
        if target in out:
            raise CaptionInputError(f"two predictions resolve to image {target!r} (one by id, one by file name)")
        out[target] = caption
    return out, renamed
