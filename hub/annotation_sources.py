"""Inputs of ``tag2text caption --output-dir``: every image of a collection with a stable key.

A source lists its images once, up front, as :class:`Item` (key + locator), so that every process of a launch
sees the same ordered key list and can take a disjoint share of it, and ``--resume`` can skip done keys. The
locators are small and picklable; DataLoader workers turn them into bytes or paths with :func:`read_item`.

Sources and their keys:

* image folders (searched recursively): the path inside the folder, e.g. ``2021/a.jpg`` for
  ``photos/2021/a.jpg`` of ``photos``, so the key survives moving the folder; image files: the path as given;
* a ``save_to_disk`` dataset or an imagefolder (``--dataset DIR``): the row index (``split/index`` for a
  dataset with several splits);
* parquet files (``--parquet FILE...``, column ``--image-column``): ``FILE:row``, or ``--key-column``'s value;
* webdataset shards (``--shards "data/{000000..000099}.tar"``): the sample's ``__key__`` (the member name up
  to its first dot, as :mod:`tag2text.training.webdataset` reads shards).

Tar shards are indexed by member offsets (headers only) and read with one seek per image, so a process reads
only its own images instead of streaming every shard; that needs uncompressed ``.tar`` files.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import tarfile
from pathlib import Path

from .cli_args import UsageError, existing_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@dataclasses.dataclass(frozen=True)
class Item:
    """One image: ``key`` (stable, unique), ``source`` (where it is, for the output row) and a locator:
    ``path`` (a file), ``tar`` + ``offset`` + ``size`` (a member of a tar shard), ``table`` + ``row`` (a
    parquet file or a dataset)."""

    key: str
    source: str
    path: str | None = None
    tar: str | None = None
    offset: int = 0
    size: int = 0
    table: int | None = None
    row: int = 0


def file_items(inputs: list[str]) -> list[Item]:
    """Files as given, folders expanded to their image files in sorted order; a path that does not exist is
    a usage error, as in ``tag2text caption`` (a file that vanishes before it is read is a ``missing`` row)."""
    items = []
    for given in inputs:
        existing_path(given, "images:")
        path = Path(given)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            items.extend(Item(key=p.relative_to(path).as_posix(), source=str(p), path=str(p)) for p in found)
        else:
            items.append(Item(key=os.path.normpath(given), source=given, path=given))
    return items


def shard_items(patterns: list[str]) -> list[Item]:
    """Every image member of the shards; keys are the samples' ``__key__``."""
    from ..training.data import DataFormatError, expand_shards
    from ..training.webdataset import IMAGE_SUFFIXES as TAR_IMAGE_SUFFIXES
    from ..training.webdataset import split_member_name

    items = []
    for pattern in patterns:
        try:
            shards = expand_shards(pattern)
        except DataFormatError as error:
            raise UsageError(f"--shards {pattern!r}: {error}") from None
        for shard in shards:
            try:
                with tarfile.open(shard, mode="r:") as archive:
                    members = archive.getmembers()
            except tarfile.ReadError as error:
                raise UsageError(f"--shards: {shard} is not an uncompressed tar file ({error}); annotation reads "
                                 "images by offset, so decompress compressed shards first") from None
            seen = set()
            for member in members:
                key, suffix = split_member_name(member.name)
                if not member.isfile() or suffix not in TAR_IMAGE_SUFFIXES:
                    continue
                if key in seen:
                    raise UsageError(f"--shards: {shard} holds two images for key {key!r}")
                seen.add(key)
                items.append(Item(key=key, source=f"{shard}:{member.name}", tar=shard, offset=member.offset_data,
                                  size=member.size))
    return items


class ParquetTables:
    """Random access to one image column of parquet files, a row group at a time (each DataLoader worker
    keeps the last row group it read, so consecutive rows cost one read)."""

    def __init__(self, files: list[str], image_column: str):
        import pyarrow.parquet as pq

        self.files = list(files)
        self.image_column = image_column
        self.row_group_starts = []
        for name in self.files:
            try:
                metadata = pq.ParquetFile(name).metadata
            except (OSError, ValueError) as error:
                raise UsageError(f"--parquet {name}: not a readable parquet file ({error})") from None
            names = metadata.schema.to_arrow_schema().names
            if image_column not in names:
                raise UsageError(f"--image-column {image_column!r} is not a column of {name} (columns: {names})")
            starts, total = [], 0
            for index in range(metadata.num_row_groups):
                starts.append(total)
                total += metadata.row_group(index).num_rows
            self.row_group_starts.append((starts, total))
        self._cached = None  # (file index, row group, column values) in this process

    def __getstate__(self):
        return {**self.__dict__, "_cached": None}

    def num_rows(self, table: int) -> int:
        return self.row_group_starts[table][1]

    def keys(self, table: int, key_column: str | None) -> list[str]:
        if key_column is None:
            return [f"{self.files[table]}:{row}" for row in range(self.num_rows(table))]
        import pyarrow.parquet as pq

        try:
            values = pq.read_table(self.files[table], columns=[key_column]).column(0).to_pylist()
        except (KeyError, ValueError) as error:
            raise UsageError(f"--key-column {key_column!r}: not readable from {self.files[table]} ({error})") from None
        return [str(value) for value in values]

    def value(self, table: int, row: int):
        import pyarrow.parquet as pq

        starts, _ = self.row_group_starts[table]
        group = bisect.bisect_right(starts, row) - 1
        if self._cached is None or self._cached[:2] != (table, group):
            column = pq.ParquetFile(self.files[table]).read_row_group(group, columns=[self.image_column]).column(0)
            self._cached = (table, group, column.to_pylist())
        return self._cached[2][row - starts[group]]

    def base_dir(self, table: int) -> str:
        return os.path.dirname(os.path.abspath(self.files[table]))


def parquet_items(files: list[str], image_column: str, key_column: str | None) -> tuple[list[Item], ParquetTables]:
    tables = ParquetTables(files, image_column)
    items = []
    for table, name in enumerate(tables.files):
        for row, key in enumerate(tables.keys(table, key_column)):
            items.append(Item(key=key, source=f"{name}:{row}", table=table, row=row))
    return items, tables


class DatasetTables:
    """Rows of a ``datasets`` dataset (``save_to_disk`` folder or imagefolder) with its image column read
    undecoded (``{"bytes", "path"}``), so the workers decode, not the main process."""

    def __init__(self, path: str, image_column: str, split: str | None = None, cache_dir: str | None = None):
        try:
            import datasets
        except ImportError:
            raise UsageError("--dataset needs the datasets library: pip install 'tag2text[annotate]'") from None

        if not os.path.isdir(path):
            raise UsageError(f"--dataset {path}: not a directory")
        saved = any(os.path.isfile(os.path.join(path, name)) for name in ("state.json", "dataset_dict.json"))
        loaded = datasets.load_from_disk(path) if saved else datasets.load_dataset("imagefolder", data_dir=path,
                                                                                    cache_dir=cache_dir)
        if isinstance(loaded, datasets.DatasetDict):
            if split is not None and split not in loaded:
                raise UsageError(f"--split {split!r} is not a split of {path} (splits: {sorted(loaded)})")
            splits = {split: loaded[split]} if split is not None else dict(loaded)
            self.prefixed = len(splits) > 1
        else:
            splits, self.prefixed = {split or "": loaded}, False
        self.names, self.tables = [], []
        for name, table in splits.items():
            if image_column not in table.column_names:
                raise UsageError(f"--image-column {image_column!r} is not a column of {path} "
                                 f"(columns: {table.column_names})")
            feature = table.features[image_column]
            if isinstance(feature, datasets.Image):
                table = table.cast_column(image_column, datasets.Image(decode=False))
            self.names.append(name)
            self.tables.append(table.select_columns([image_column]))
        self.path = path
        self.image_column = image_column

    def value(self, table: int, row: int):
        return self.tables[table][row][self.image_column]

    def base_dir(self, table: int) -> str:
        return os.path.abspath(self.path)


def dataset_items(path: str, image_column: str, split: str | None, cache_dir: str | None = None):
    tables = DatasetTables(path, image_column, split, cache_dir)
    items = []
    for table, (name, data) in enumerate(zip(tables.names, tables.tables)):
        for row in range(len(data)):
            key = f"{name}/{row}" if tables.prefixed else str(row)
            items.append(Item(key=key, source=f"{path}[{key}]", table=table, row=row))
    return items, tables


def collect_items(args) -> tuple[list[Item], object | None]:
    """The items of every input named on the command line, and the table reader they need (or None).

    Raises :class:`UsageError` when nothing is given, a key occurs twice, or two kinds of tables are mixed.
    """
    items, tables = [], None
    if args.images:
        items.extend(file_items(args.images))
    if args.shards:
        items.extend(shard_items(args.shards))
    if args.parquet and args.dataset:
        raise UsageError("give --parquet or --dataset, not both")
    if args.parquet:
        found, tables = parquet_items(args.parquet, args.image_column, args.key_column)
        items.extend(found)
    if args.dataset:
        found, tables = dataset_items(args.dataset, args.image_column, args.split)
        items.extend(found)
    if not items:
        given = args.images or args.shards or args.parquet or ([args.dataset] if args.dataset else [])
        if not given:
            raise UsageError("give image files or folders, --shards, --parquet or --dataset")
        raise UsageError("no images found in: " + ", ".join(given))
    seen: dict[str, str] = {}
    for item in items:
        if item.key in seen:
            raise UsageError(f"two inputs have the key {item.key!r} ({seen[item.key]} and {item.source}); "
                             "every image needs its own key (annotate the folders' common parent instead)")
        seen[item.key] = item.source
    return items, tables


def read_item(item: Item, tables) -> tuple[str | None, bytes | None]:
    """(path, None) or (None, bytes) of an item's image; tables' values may be bytes, paths, or
    ``{"bytes", "path"}`` dicts (the Hub's Image feature)."""
    if item.path is not None:
        return item.path, None
    if item.tar is not None:
        with open(item.tar, "rb") as handle:
            handle.seek(item.offset)
            return None, handle.read(item.size)
    value = tables.value(item.table, item.row)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return None, value["bytes"]
        value = value.get("path")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None, bytes(value)
    if isinstance(value, str):
        path = value if os.path.isabs(value) or os.path.exists(value) else os.path.join(tables.base_dir(item.table),
                                                                                         value)
        return path, None
    return None, None
