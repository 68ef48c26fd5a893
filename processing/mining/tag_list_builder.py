"""The tag category system: count mined tags over a caption corpus and keep the top K.

Tag2Text built its 3,429 tags this way: parse millions of captions, count objects/scenes,
attributes and actions, keep the most frequent, prune by hand. :func:`build_tag_list` does the
counting and selection and writes

* ``tag_list.txt``: one tag a line, no trailing newline (the layout of the official list, read
  with ``splitlines()``), objects first, then actions, then attributes; and
* ``tag_list.counts.json``: the sidecar with each tag's type and count, the settings and the
  corpus summary. :class:`~.tag_vocabulary.TagVocabulary` reads the types from it, also after
  lines were deleted from the list by hand.

Counts are caption frequencies (a tag counts once per caption). The same input and settings
give byte-identical files.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .caption_sources import CaptionRecord, dataset_caption_records
from .mining_summary import MiningSummary
from .tag_types import ACTION, ATTRIBUTE, OBJECT, TAG_TYPES
from .tag_vocabulary import SIDECAR_FORMAT, sidecar_path

logger = logging.getLogger(__name__)

_TYPE_ORDER = {t: i for i, t in enumerate(TAG_TYPES)}


@dataclass(frozen=True)
class TagEntry:
    tag: str
    type: str
    count: int


@dataclass
class TagListResult:
    """What :func:`build_tag_list` kept and wrote."""

    entries: list[TagEntry]
    tag_list_path: Path | None
    sidecar_path: Path | None
    summary: MiningSummary
    candidates: int  # distinct (tag, type) pairs counted before selection

    @property
    def tags(self) -> list[str]:
        return [e.tag for e in self.entries]

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.entries]


def count_tags(results: Iterable[dict], count_compound_heads: bool = True) -> Counter:
    """Caption frequency of each ``(tag, type)`` over mining results.

    With ``count_compound_heads``, a multi-word object also counts for its head noun ("tennis
    racket" counts for "racket"): a tag list matcher falls back from an unknown compound to its
    head, so the head should be able to make the list on the strength of its compounds.
    """
    counts: Counter = Counter()
    for result in results:
        seen = set()
        for key, tag_type in (("objects", OBJECT), ("attributes", ATTRIBUTE), ("actions", ACTION)):
            for tag in result.get(key) or ():
                seen.add((tag, tag_type))
                if count_compound_heads and tag_type == OBJECT and " " in tag:
                    seen.add((tag.rsplit(" ", 1)[1], OBJECT))
        counts.update(seen)
    return counts


def _parse_stop_entry(entry: str) -> tuple[str, str | None]:
    text = " ".join(str(entry).lower().split())
    if ":" in text:
        prefix, rest = text.split(":", 1)
        if prefix in TAG_TYPES:
            return rest.strip(), prefix
    return text, None


def read_stop_list(path: str | os.PathLike) -> list[str]:
    """One entry a line (``tag`` for every type, or ``type:tag``); ``#`` starts a comment line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"stop list not found: {path}")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and not line.lstrip().startswith("#")]


def select_tags(counts: Counter, top_k: int, min_count: int = 1, stop_list: Iterable[str] | None = None) -> list[TagEntry]:
    """The ``top_k`` most frequent tags with at least ``min_count`` captions, minus the stop list.

    Ties are broken by type (object, action, attribute) and then alphabetically, so the choice
    is deterministic. The result is in file order: grouped by type as in the official list,
    and by descending count within a type.

    Args:
        counts: ``(tag, type) -> count``, e.g. from :func:`count_tags`.
        top_k: how many tags to keep at most.
        min_count: drop tags seen in fewer captions.
        stop_list: tags never to keep: ``"tag"`` (any type) or ``"type:tag"``.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    if isinstance(min_count, bool) or not isinstance(min_count, int) or min_count < 1:
        raise ValueError(f"min_count must be a positive integer, got {min_count!r}")
    if isinstance(stop_list, str):
        raise TypeError("stop_list must be a list of tags, not a string; use read_stop_list(path) for a file")
    stop_any, stop_typed = set(), set()
    for entry in stop_list or ():
        tag, tag_type = _parse_stop_entry(entry)
        (stop_any.add(tag) if tag_type is None else stop_typed.add((tag, tag_type)))
    eligible = [
        TagEntry(tag, tag_type, count)
        for (tag, tag_type), count in counts.items()
        if count >= min_count and tag not in stop_any and (tag, tag_type) not in stop_typed
    ]
    eligible.sort(key=lambda e: (-e.count, _TYPE_ORDER[e.type], e.tag))
    kept = eligible[:top_k]
    kept.sort(key=lambda e: (_TYPE_ORDER[e.type], -e.count, e.tag))
    return kept


def write_tag_list(entries: list[TagEntry], path: str | os.PathLike, metadata: dict | None = None) -> tuple[Path, Path]:
    """Write ``path`` (one tag a line) and its ``.counts.json`` sidecar; returns both paths."""
    path = Path(path)
    if not entries:
        raise ValueError(f"no tags to write to {path}: nothing met the selection (lower min_count or check the captions)")
    for entry in entries:
        if "\n" in entry.tag or "\r" in entry.tag or not entry.tag.strip():
            raise ValueError(f"tag {entry.tag!r} cannot be written as one line of {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(e.tag for e in entries), encoding="utf-8")
    side = sidecar_path(path)
    document = {
        "format": SIDECAR_FORMAT,
        "version": 1,
        "tag_list": path.name,
        "num_tags": len(entries),
        "num_tags_by_type": {t: sum(1 for e in entries if e.type == t) for t in TAG_TYPES},
        "tags": [{"index": i, "tag": e.tag, "type": e.type, "count": e.count} for i, e in enumerate(entries)],
        **(metadata or {}),
    }
    side.write_text(json.dumps(document, indent=1, ensure_ascii=False, sort_keys=False) + "\n", encoding="utf-8")
    return path, side


def _dataset_types() -> tuple:
    try:
        import datasets

        dataset_types = (datasets.Dataset, datasets.IterableDataset, datasets.DatasetDict, datasets.IterableDatasetDict)
    except ImportError:  # datasets is optional for plain lists
        dataset_types = ()
    return dataset_types


def build_tag_list(
    captions,
    output: str | os.PathLike | None,
    *,
    top_k: int,
    min_count: int = 1,
    stop_list: Iterable[str] | None = None,
    miner=None,
    spacy_model: str | None = None,
    synonyms=None,
    caption_column: str | None = None,
    batch_size: int = 256,
    n_process: int | None = None,
    count_compound_heads: bool = True,
    progress: bool = True,
    total: int | None = None,
) -> TagListResult:
    """Mine a caption corpus and write its top-K tag list.

    Args:
        captions: a ``datasets.Dataset`` (read column-wise in batches), a
            ``datasets.IterableDataset`` (streamed), an iterable of caption strings, or an
            iterable of :class:`~.caption_sources.CaptionRecord`.
        output: the tag list path (``tag_list.txt``); its sidecar goes next to it. ``None``
            to only compute the selection.
        top_k: the number of tags to keep at most.
        min_count: the minimum number of captions a tag must appear in.
        stop_list: tags to exclude (``"tag"`` or ``"type:tag"``).
        miner: a :class:`~.tag_miner.TagMiner` to use (must have no tag list); by default one
            is made with ``spacy_model`` and ``synonyms``.
        caption_column: the caption column of a dataset (default: caption/captions/text).
        batch_size, n_process: passed to :meth:`TagMiner.iter_mine`; ``n_process=None``
            chooses by corpus size (a streamed dataset of unknown size uses one process).
        count_compound_heads: see :func:`count_tags`.
        progress: show a progress bar.
        total: the number of captions, if known and ``captions`` has no ``len`` (sizes the
            progress bar and the process count).

    Returns:
        A :class:`TagListResult`.
    """
    from .spacy_model import spacy_model_description
    from .tag_miner import TagMiner

    if miner is None:
        miner = TagMiner(spacy_model=spacy_model, synonyms=synonyms, progress=progress)
    elif miner.vocabulary is not None:
        raise ValueError("build_tag_list needs a TagMiner without a tag_list (tags must not be limited to an existing list)")
    if isinstance(stop_list, (str, os.PathLike)):
        stop_list = read_stop_list(stop_list)
    stop_list = sorted({" ".join(str(s).lower().split()) for s in (stop_list or ())})

    dataset_types = _dataset_types()
    if dataset_types and isinstance(captions, dataset_types):
        records, size = dataset_caption_records(captions, caption_column)
        texts = (r.caption for r in records)
    elif isinstance(captions, (str, bytes, os.PathLike)):
        raise TypeError("captions must be a dataset or an iterable of captions; open a file with open_caption_source(path)")
    else:
        size = len(captions) if hasattr(captions, "__len__") else total
        texts = (r.caption if isinstance(r, CaptionRecord) else r for r in captions)

    summary = MiningSummary()
    results = miner.iter_mine(texts, batch_size=batch_size, n_process=n_process, summary=summary, total=size)
    counts = count_tags(results, count_compound_heads=count_compound_heads)
    logger.info("tag list corpus: %s", summary.format())
    entries = select_tags(counts, top_k, min_count, stop_list)
    logger.info(
        "kept %d of %d distinct tags (top_k=%d, min_count=%d, %d stop entries): %s",
        len(entries),
        len(counts),
        top_k,
        min_count,
        len(stop_list),
        dict(Counter(e.type for e in entries)),
    )
    if len(entries) < top_k:
        logger.info("fewer than top_k=%d tags met min_count=%d", top_k, min_count)

    tag_list_path = side = None
    if output is not None:
        metadata = {
            "settings": {
                "top_k": top_k,
                "min_count": min_count,
                "stop_list": stop_list,
                "count_compound_heads": count_compound_heads,
                "spacy_model": spacy_model_description(miner.nlp),
                "parser_fixes": miner.rules.fixes(),
                "synonyms": len(miner.synonyms),
            },
            "corpus": {**summary.to_dict(), "distinct_tags": len(counts)},
        }
        tag_list_path, side = write_tag_list(entries, output, metadata)
        logger.info("wrote %s and %s", tag_list_path, side)
    return TagListResult(entries, tag_list_path, side, summary, len(counts))
