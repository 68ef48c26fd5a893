"""Output of ``tag2text caption --output-dir``: shards of rows, complete or absent, and a manifest.

Each process writes ``part-RRRRRofWWWWW-NNNNN.jsonl`` (or ``.parquet``): its rank R of a launch of W
processes, and its N-th shard. A shard is written under a hidden temporary name, flushed to disk and renamed,
so a shard that has its final name is complete; a killed process leaves at most a temporary file, which the
next run removes. ``--resume`` reads the keys of the complete shards (of any earlier launch, whatever its
number of processes) and annotates the rest.

Rows: ``key``, ``source`` (file, ``shard:member`` or ``table:row``), ``tags`` (the tags the caption was
conditioned on), ``tag_scores`` (predicted tags and their probabilities), ``caption``, and ``error``
(``None``, or the reason: ``missing``, ``unreadable``, ``truncated``, ``too large``) with ``error_message``.
A tagging-only model (RAM, RAM++) writes ``tags_zh`` (the Chinese names) after ``tags`` and no ``caption``.
In parquet, ``tag_scores`` is a list of ``{"tag", "score"}`` structs.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter

from .cli_args import UsageError

SHARD_PATTERN = re.compile(r"^part-(\d{5})of(\d{5})-(\d{5})\.(jsonl|parquet)$")
TEMP_PREFIX = ".tmp-"
MANIFEST = "manifest.json"
FIELDS = ("key", "source", "tags", "tag_scores", "caption", "error", "error_message")
TAGGING_FIELDS = ("key", "source", "tags", "tags_zh", "tag_scores", "error", "error_message")


def shard_name(rank: int, world: int, number: int, fmt: str) -> str:
    return f"part-{rank:05d}of{world:05d}-{number:05d}.{fmt}"


def complete_shards(output_dir: str) -> list[str]:
    """Names of the complete shards in ``output_dir``, sorted."""
    if not os.path.isdir(output_dir):
        return []
    return sorted(name for name in os.listdir(output_dir) if SHARD_PATTERN.match(name))


def remove_temporary_files(output_dir: str) -> int:
    """Delete the half-written shards of killed runs (call before any process of a run writes)."""
    removed = 0
    for name in os.listdir(output_dir):
        if name.startswith(TEMP_PREFIX):
            os.remove(os.path.join(output_dir, name))
            removed += 1
    return removed


def _schema(fields=FIELDS):
    import pyarrow as pa

    types = {"tags": pa.list_(pa.string()), "tags_zh": pa.list_(pa.string()),
             "tag_scores": pa.list_(pa.struct([("tag", pa.string()), ("score", pa.float64())]))}
    return pa.schema([(name, types.get(name, pa.string())) for name in fields])


def read_rows(path: str, columns: list[str] | None = None) -> list[dict]:
    """The rows of one complete shard (``tag_scores`` as a dict in both formats)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path, columns=columns).to_pylist()
        for row in rows:
            if row.get("tag_scores") is not None:
                row["tag_scores"] = {entry["tag"]: entry["score"] for entry in row["tag_scores"]}
        return rows
    with open(path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    if columns is not None:
        rows = [{name: row.get(name) for name in columns} for row in rows]
    return rows


def read_done(output_dir: str) -> tuple[set[str], Counter, int]:
    """(keys of the complete shards, failures by reason, rows). A key written twice means the output
    directory was written by two runs at once; that is reported, not hidden."""
    keys: set[str] = set()
    failures: Counter = Counter()
    rows = 0
    for name in complete_shards(output_dir):
        for row in read_rows(os.path.join(output_dir, name), columns=["key", "error"]):
            if row["key"] in keys:
                raise UsageError(f"{output_dir}: key {row['key']!r} is in two shards (was the directory written "
                                 "by two runs at the same time?)")
            keys.add(row["key"])
            rows += 1
            if row["error"]:
                failures[row["error"]] += 1
    return keys, failures, rows


class ShardWriter:
    """Buffer rows and write them as complete shards of ``shard_size`` rows (the last one smaller).

    Args:
        output_dir: the run's output directory (exists).
        rank / world: this process and the number of processes of the launch (in the shard names).
        shard_size: rows per shard; a killed run loses at most this many rows of work per process.
        fmt: ``"jsonl"`` or ``"parquet"``.
        fields: the row's columns in order (:data:`FIELDS`; a tagging-only model's: :data:`TAGGING_FIELDS`).
    """

    def __init__(self, output_dir: str, rank: int, world: int, shard_size: int, fmt: str = "jsonl",
                 fields: tuple = FIELDS):
        if fmt not in ("jsonl", "parquet"):
            raise ValueError(f"format must be 'jsonl' or 'parquet', got {fmt!r}")
        self.output_dir = output_dir
        self.rank, self.world = rank, world
        self.shard_size = int(shard_size)
        self.fmt = fmt
        self.fields = tuple(fields)
        self.rows: list[dict] = []
        self.written: list[str] = []
        # Continue the numbering of an earlier launch with the same rank and world (a resume).
        numbers = [int(m.group(3)) for m in map(SHARD_PATTERN.match, complete_shards(output_dir))
                   if m and (int(m.group(1)), int(m.group(2))) == (rank, world)]
        self.next_number = max(numbers, default=-1) + 1

    def add(self, row: dict) -> None:
        self.rows.append({name: row.get(name) for name in self.fields})
        if len(self.rows) >= self.shard_size:
            self.flush()

    def flush(self) -> str | None:
        """Write the buffered rows as one complete shard; returns its name (None when nothing is buffered)."""
        if not self.rows:
            return None
        name = shard_name(self.rank, self.world, self.next_number, self.fmt)
        temporary = os.path.join(self.output_dir, TEMP_PREFIX + name)
        if self.fmt == "parquet":
            self._write_parquet(temporary)
        else:
            with open(temporary, "w", encoding="utf-8") as handle:
                for row in self.rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, os.path.join(self.output_dir, name))
        _fsync_directory(self.output_dir)
        self.next_number += 1
        self.rows = []
        self.written.append(name)
        return name

    def _write_parquet(self, temporary: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        records = []
        for row in self.rows:
            scores = row.get("tag_scores")
            records.append({**row, "tag_scores": None if scores is None else
                            [{"tag": tag, "score": float(score)} for tag, score in scores.items()]})
        table = pa.Table.from_pylist(records, schema=_schema(self.fields))
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())


def _fsync_directory(path: str) -> None:
    # The rename itself must reach the disk for "a shard with its final name is complete" to survive a crash.
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def read_manifest(output_dir: str) -> dict | None:
    path = os.path.join(output_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_manifest(output_dir: str, manifest: dict) -> None:
    """Replace ``manifest.json`` atomically (temporary file, then rename)."""
    temporary = os.path.join(output_dir, TEMP_PREFIX + MANIFEST)
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, os.path.join(output_dir, MANIFEST))
