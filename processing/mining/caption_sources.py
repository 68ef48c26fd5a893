"""Reading captions from files, imagefolder directories and ``datasets`` datasets.

Every record becomes one :class:`CaptionRecord`, in file order. A record that cannot be read
(a bad JSON line, an object without a caption field) becomes a record whose caption is an
:class:`~.caption_cleaning.UnreadableCaption`, so the miner counts it instead of losing it.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .caption_cleaning import UnreadableCaption

logger = logging.getLogger(__name__)

CAPTION_FIELDS = ("caption", "captions", "text")
# Identifier fields copied from a record to its output line, so results can be joined back.
ID_FIELDS = ("file_name", "image_id", "id", "image", "filename", "imgid", "sentid", "url", "key")
_WARN_LIMIT = 5


@dataclass(frozen=True)
class CaptionRecord:
    """One caption and the identifiers of the record it came from."""

    caption: object
    meta: dict = field(default_factory=dict)


@dataclass
class CaptionSource:
    """Records of a caption source and (when cheap to know) about how many captions it has.

    ``size`` counts lines or rows; a record with a list of captions yields several captions,
    so treat it as an estimate (it sizes the progress bar and chooses the process count).
    """

    name: str
    records: Iterator[CaptionRecord]
    size: int | None = None


def _ids(record: dict) -> dict:
    return {k: record[k] for k in ID_FIELDS if k in record and isinstance(record[k], (str, int, float, bool))}


class _Warner:
    def __init__(self, name: str):
        self.name = name
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= _WARN_LIMIT:
            logger.warning("%s", message)
        elif self.count == _WARN_LIMIT + 1:
            logger.warning("%s: more unreadable records; see the summary for the total", self.name)


def _records_from_value(value, where: str, caption_field: str | None, warn, extra: dict | None = None):
    """Records for one parsed JSON value (a line of JSONL, an element of a JSON list...)."""
    if isinstance(value, str) or value is None:
        yield CaptionRecord(value, dict(extra or {}))
        return
    if not isinstance(value, dict):
        reason = f"expected an object with a caption field or a string, got {type(value).__name__}"
        warn(f"{where}: {reason}")
        yield CaptionRecord(UnreadableCaption(where, reason), {"error": f"{where}: {reason}"})
        return
    meta = {**(extra or {}), **_ids(value)}
    names = (caption_field,) if caption_field else CAPTION_FIELDS
    name = next((n for n in names if n in value), None)
    if name is None:
        reason = f"no {' or '.join(repr(n) for n in names)} field (fields: {sorted(value)[:10]})"
        warn(f"{where}: {reason}")
        yield CaptionRecord(UnreadableCaption(where, reason), {**meta, "error": f"{where}: {reason}"})
        return
    captions = value[name]
    if isinstance(captions, list):
        for index, caption in enumerate(captions):
            yield CaptionRecord(caption, {**meta, "caption_index": index})
    else:
        yield CaptionRecord(captions, meta)


def _count_lines(path: Path) -> int:
    count = 0
    last = b"\n"
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            count += block.count(b"\n")
            last = block[-1:]
    return count + (last != b"\n")


def _decoded_lines(path: Path, warn) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a BOM is dropped, and undecodable bytes are replaced
    with U+FFFD and reported (the caption is kept)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                warn(f"{path}:{number}: not valid UTF-8 ({err.reason} at byte {err.start}); bad bytes replaced")
                text = raw.decode("utf-8", errors="replace")
            yield number, text.rstrip("\r\n")


def _read_text(path: Path) -> Iterator[CaptionRecord]:
    for _, line in _decoded_lines(path, _Warner(str(path))):
        yield CaptionRecord(line)


def _read_jsonl(path: Path, caption_field: str | None) -> Iterator[CaptionRecord]:
    warn = _Warner(str(path))
    for number, line in _decoded_lines(path, warn):
        if not line.strip():
            continue  # JSON Lines allows blank lines; they hold no record
        where = f"{path}:{number}"
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            reason = f"invalid JSON ({err.msg} at column {err.colno})"
            warn(f"{where}: {reason}")
            yield CaptionRecord(UnreadableCaption(where, reason), {"error": f"{where}: {reason}"})
            continue
        yield from _records_from_value(value, where, caption_field, warn)


def _read_csv(path: Path, caption_field: str | None) -> Iterator[CaptionRecord]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        names = (caption_field,) if caption_field else CAPTION_FIELDS
        column = next((n for n in names if n in (reader.fieldnames or [])), None)
        if column is None:
            raise ValueError(f"{path}: no {' or '.join(repr(n) for n in names)} column (columns: {reader.fieldnames})")
        for row in reader:
            yield CaptionRecord(row.get(column), _ids(row))


def _json_records(path: Path, caption_field: str | None) -> tuple[Iterator[CaptionRecord], int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); for one record a line use the .jsonl extension") from err
    warn = _Warner(str(path))
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):  # COCO captions
        items, kind = data["annotations"], "annotations"
    elif isinstance(data, dict) and isinstance(data.get("images"), list) and data["images"] and "sentences" in data["images"][0]:
        # Karpathy split files: images[i]["sentences"][j]["raw"]
        def karpathy():
            for i, image in enumerate(data["images"]):
                ids = _ids(image)
                for j, sentence in enumerate(image.get("sentences", [])):
                    raw = sentence.get("raw") if isinstance(sentence, dict) else None
                    yield CaptionRecord(raw, {**ids, "caption_index": j})

        return karpathy(), sum(len(image.get("sentences", [])) for image in data["images"])
    elif isinstance(data, list):
        items, kind = data, "list"
    elif isinstance(data, dict) and isinstance(data.get("captions"), list):
        items, kind = data["captions"], "captions"
    else:
        found = sorted(data)[:10] if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{path}: expected a list of captions or records, a COCO file with 'annotations', a Karpathy file "
            f"with 'images'/'sentences', or an object with a 'captions' list; found {found}"
        )

    def records():
        for index, item in enumerate(items):
            yield from _records_from_value(item, f"{path}[{kind}][{index}]", caption_field, warn)

    return records(), len(items)


def _directory_source(path: Path, caption_field: str | None) -> CaptionSource:
    if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        records, size = dataset_caption_records(dataset, caption_field)
        return CaptionSource(str(path), records, size)
    metadata = sorted(path.rglob("metadata.jsonl")) or sorted(path.rglob("metadata.csv"))
    if not metadata:
        raise ValueError(
            f"directory {path} has no metadata.jsonl or metadata.csv (imagefolder layout) and is not a dataset "
            "saved with Dataset.save_to_disk"
        )

    def records():
        for file in metadata:
            prefix = file.parent.relative_to(path).as_posix()
            reader = _read_jsonl if file.suffix == ".jsonl" else _read_csv
            for record in reader(file, caption_field):
                name = record.meta.get("file_name")
                if prefix != "." and isinstance(name, str):
                    # file_name is relative to its metadata file; report it relative to the root.
                    record = CaptionRecord(record.caption, {**record.meta, "file_name": f"{prefix}/{name}"})
                yield record

    size = sum(_count_lines(file) for file in metadata)
    return CaptionSource(str(path), records(), size)


def open_caption_source(path: str | os.PathLike, caption_field: str | None = None) -> CaptionSource:
    """Open a caption file or directory.

    Accepted: a text file (``.txt`` or any other extension not below; one caption a line, an
    empty line is an empty caption); JSON Lines (``.jsonl``; objects with a ``caption``,
    ``captions`` (list) or ``text`` field, or plain strings); JSON (``.json``; a list of such
    records, a COCO captions file, a Karpathy split file, or ``{"captions": [...]}``); CSV/TSV
    with a header; an imagefolder directory with ``metadata.jsonl``/``metadata.csv`` (searched
    recursively); a directory saved with ``Dataset.save_to_disk``.

    Args:
        path: the file or directory.
        caption_field: the field/column holding captions; default the first of
            ``caption``, ``captions``, ``text``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file's structure is not one of the above; the message names the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"caption source not found: {path}")
    if path.is_dir():
        return _directory_source(path, caption_field)
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return CaptionSource(str(path), _read_jsonl(path, caption_field), _count_lines(path))
    if suffix == ".json":
        records, size = _json_records(path, caption_field)
        return CaptionSource(str(path), records, size)
    if suffix in (".csv", ".tsv"):
        return CaptionSource(str(path), _read_csv(path, caption_field), max(0, _count_lines(path) - 1))
    if suffix in (".parquet", ".arrow", ".gz", ".zip", ".tar"):
        raise ValueError(
            f"{path}: {suffix} files are not read directly; load them with datasets.load_dataset and pass the "
            "dataset to build_tag_list / TagMiner, or convert to .jsonl"
        )
    return CaptionSource(str(path), _read_text(path), _count_lines(path))


def _pick_column(names, caption_column: str | None, what: str) -> str:
    if caption_column is not None:
        if names is not None and caption_column not in names:
            raise ValueError(f"{what} has no column {caption_column!r} (columns: {list(names)})")
        return caption_column
    if names is None:
        raise ValueError(f"{what} does not list its columns; pass caption_column")
    found = next((n for n in CAPTION_FIELDS if n in names), None)
    if found is None:
        raise ValueError(f"{what} has none of the caption columns {list(CAPTION_FIELDS)} (columns: {list(names)}); pass caption_column")
    return found


def dataset_caption_records(dataset, caption_column: str | None = None) -> tuple[Iterator[CaptionRecord], int | None]:
    """Caption records of a ``datasets.Dataset`` or ``IterableDataset``, read in batches.

    Only the caption column (and identifier columns) are read, so a large memory-mapped
    dataset is streamed rather than loaded. A column holding lists yields one caption per item.

    Returns:
        (records, number of rows or None for an iterable dataset)
    """
    import datasets

    if isinstance(dataset, datasets.DatasetDict) or isinstance(dataset, datasets.IterableDatasetDict):
        raise ValueError(f"got a dataset dict with splits {list(dataset)}; pass one split, e.g. dataset['train']")
    if isinstance(dataset, datasets.Dataset):
        column = _pick_column(dataset.column_names, caption_column, "dataset")
        keep = [column] + [c for c in ID_FIELDS if c in dataset.column_names and c != column]
        subset = dataset.select_columns(keep)

        def records():
            warn = _Warner("dataset")
            ids = [c for c in keep if c != column]
            index = 0
            for batch in subset.iter(batch_size=1000):
                for row in range(len(batch[column])):
                    meta = {c: batch[c][row] for c in ids}
                    yield from _records_from_value({column: batch[column][row], **meta}, f"row {index}", column, warn)
                    index += 1

        return records(), len(dataset)
    if isinstance(dataset, datasets.IterableDataset):
        column = _pick_column(dataset.column_names, caption_column, "iterable dataset")
        warn = _Warner("iterable dataset")

        def records():
            for index, example in enumerate(dataset):
                meta = _ids(example)
                yield from _records_from_value({column: example.get(column), **meta}, f"example {index}", column, warn)

        return records(), None
    raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
