"""A tag list, its tag types, and matching mined tags to tag indices.

Tags are identified by index: the official Tag2Text list holds 114 strings twice (a noun and an
adjective "black", a noun and a verb "surf"), so a mined tag is looked up by (string, type)
when the types are known. Types come from, in order: the ``types`` argument, the sidecar file
written by :func:`~.tag_list_builder.build_tag_list` next to the list, or - for the official
3,429-tag list, recognised by its SHA-256 - its known layout. A list without types matches on
the string alone, and a repeated string then maps to its first index.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from .multi_hot import tag_ids_to_multi_hot
from .tag_extraction import TagMention
from .tag_types import ACTION, ATTRIBUTE, OBJECT, TAG_TYPES

logger = logging.getLogger(__name__)

# sha256 of "\n".join(tags) of recognize-anything's tag2text_ori_tag_list.txt (= tag_list.txt).
OFFICIAL_TAG2TEXT_SHA256 = "7d05c7cb88ed46a2aee1434776964f6bdbda0c0f4233c8633e109084382d3a45"
OFFICIAL_TAG2TEXT_LAYOUT = ((OBJECT, 3012), (ACTION, 240), (ATTRIBUTE, 177))

SIDECAR_SUFFIX = ".counts.json"
SIDECAR_FORMAT = "tag2text-tag-list-counts"


def sidecar_path(tag_list_path: str | os.PathLike) -> Path:
    """Where the counts/types sidecar of a tag list lives: ``tag_list.txt`` -> ``tag_list.counts.json``."""
    path = Path(tag_list_path)
    return path.with_name(path.stem + SIDECAR_SUFFIX)


def tag_list_fingerprint(tags: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(tags).encode("utf-8")).hexdigest()


def _normalise(tag: str) -> str:
    return " ".join(tag.lower().split())


def read_tag_list(path: str | os.PathLike) -> list[str]:
    """Read a tag list file: one tag a line, trailing newline optional (``splitlines``).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty or has an empty line; the message names the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag list not found: {path}")
    tags = path.read_text(encoding="utf-8").splitlines()
    if not tags:
        raise ValueError(f"tag list {path} is empty")
    for number, tag in enumerate(tags, start=1):
        if not tag.strip():
            raise ValueError(f"tag list {path} has an empty tag on line {number}")
    return tags


class TagVocabulary:
    """An ordered tag list with optional types, for matching mined tags.

    Args:
        tags: the tag strings, in index order.
        types: one of ``"object"``, ``"action"``, ``"attribute"`` per tag, or ``None``.
        source: a name for error messages.
    """

    def __init__(self, tags: Sequence[str], types: Sequence[str] | None = None, *, source: str = "tag list"):
        if isinstance(tags, (str, bytes)) or not isinstance(tags, Sequence):
            raise TypeError(f"{source}: tags must be a list of strings, got {type(tags).__name__}")
        if not tags:
            raise ValueError(f"{source}: the tag list is empty")
        for index, tag in enumerate(tags):
            if not isinstance(tag, str) or not tag.strip():
                raise ValueError(f"{source}: tag {index} must be a non-empty string, got {tag!r}")
        if types is not None:
            if len(types) != len(tags):
                raise ValueError(f"{source}: {len(types)} types for {len(tags)} tags")
            for index, tag_type in enumerate(types):
                if tag_type not in TAG_TYPES:
                    raise ValueError(f"{source}: type of tag {index} ({tags[index]!r}) must be one of {list(TAG_TYPES)}, got {tag_type!r}")
        self.tags: list[str] = list(tags)
        self.types: list[str] | None = list(types) if types is not None else None
        self.source = source

        self._by_string: dict[str, int] = {}
        self._by_typed: dict[tuple[str, str], int] = {}
        for index, tag in enumerate(self.tags):
            key = _normalise(tag)
            self._by_string.setdefault(key, index)
            if self.types is not None:
                self._by_typed.setdefault((key, self.types[index]), index)
        repeated = len(self.tags) - len(self._by_string)
        if self.types is None and repeated:
            logger.info(
                "%s: %d tag strings occur more than once and no types are known, so each maps to its first index",
                source,
                repeated,
            )
        if self.types is not None:
            clashes = len(self.tags) - len(self._by_typed)
            if clashes:
                logger.warning("%s: %d tags repeat with the same type; each maps to its first index", source, clashes)

    def __len__(self) -> int:
        return len(self.tags)

    def __repr__(self) -> str:
        return f"TagVocabulary({len(self)} tags, typed={self.typed}, source={self.source!r})"

    @property
    def typed(self) -> bool:
        return self.types is not None

    def type_counts(self) -> dict[str, int]:
        return dict(Counter(self.types)) if self.types is not None else {}

    def index_of(self, tag: str, tag_type: str | None = None) -> int | None:
        """Index of ``tag``; with types known, of ``tag`` with type ``tag_type``. ``None`` if absent."""
        key = _normalise(tag)
        if self.types is not None and tag_type is not None:
            return self._by_typed.get((key, tag_type))
        return self._by_string.get(key)

    def match(self, mentions: Iterable[TagMention], canonical=None) -> tuple[list[int], list[TagMention]]:
        """Tag indices for the mentions of one caption.

        Each mention takes its most specific candidate that is in the list. When an object
        candidate includes adjectives ("hot dog"), those adjectives are not attributes too.

        Args:
            mentions: from :func:`~.tag_extraction.extract_tag_mentions`.
            canonical: optional ``(text, type) -> text`` applied to candidates first (synonyms).

        Returns:
            (sorted unique indices, mentions that matched nothing).
        """
        mentions = list(mentions)
        ids: set[int] = set()
        unmatched: list[TagMention] = []
        absorbed: set[int] = set()
        # Objects first: a matched "hot dog" absorbs the attribute "hot".
        ordered = [m for m in mentions if m.type == OBJECT] + [m for m in mentions if m.type != OBJECT]
        for mention in ordered:
            if mention.type == ATTRIBUTE and mention.position in absorbed:
                continue
            for candidate in mention.candidates:
                text = canonical(candidate.text, mention.type) if canonical else candidate.text
                index = self.index_of(text, mention.type)
                if index is not None:
                    ids.add(index)
                    absorbed.update(candidate.covers)
                    break
            else:
                unmatched.append(mention)
        return sorted(ids), unmatched

    def multi_hot(self, tag_ids, *, return_tensors: str = "np", dtype=None):
        """Multi-hot vector(s) of length ``len(self)``; see :func:`~.multi_hot.tag_ids_to_multi_hot`."""
        return tag_ids_to_multi_hot(tag_ids, len(self), return_tensors=return_tensors, dtype=dtype)

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, types: Sequence[str] | None = None) -> "TagVocabulary":
        """Load a tag list file and find its types (see the module docstring)."""
        path = Path(path)
        tags = read_tag_list(path)
        source = str(path)
        if types is not None:
            return cls(tags, types, source=source)
        found = _types_from_sidecar(tags, sidecar_path(path))
        if found is None:
            found = official_layout_types(tags)
            if found is not None:
                logger.info("%s is the official Tag2Text tag list; using its object/action/attribute layout", path)
        if found is None:
            logger.info("%s: no types known (no %s sidecar); tags are matched by string", path, sidecar_path(path).name)
        return cls(tags, found, source=source)

    @classmethod
    def coerce(cls, value, types: Sequence[str] | None = None) -> "TagVocabulary | None":
        """Accept ``None``, a list of tags, a tag list path, or a :class:`TagVocabulary`."""
        if value is None:
            if types is not None:
                raise ValueError("tag_types were given without a tag_list")
            return None
        if isinstance(value, TagVocabulary):
            if types is not None:
                return cls(value.tags, types, source=value.source)
            return value
        if isinstance(value, (str, os.PathLike)):
            return cls.from_file(value, types)
        if isinstance(value, Sequence):
            found = types if types is not None else official_layout_types(value)
            return cls(value, found)
        raise TypeError(f"tag_list must be a list of strings, a file path or a TagVocabulary, got {type(value).__name__}")


def official_layout_types(tags: Sequence[str]) -> list[str] | None:
    """Types of the official 3,429-tag list (3,012 objects, 240 actions, 177 attributes), or None."""
    if len(tags) != sum(n for _, n in OFFICIAL_TAG2TEXT_LAYOUT):
        return None
    if tag_list_fingerprint(list(tags)) != OFFICIAL_TAG2TEXT_SHA256:
        return None
    return [tag_type for tag_type, count in OFFICIAL_TAG2TEXT_LAYOUT for _ in range(count)]


def _types_from_sidecar(tags: list[str], path: Path) -> list[str] | None:
    """Types for ``tags`` from a sidecar written for this list or for a list it was cut from.

    Lists are often pruned by hand after building; lines deleted (order kept) still align with
    the sidecar entries, so each tag takes the type of the next sidecar entry with its text.
    """
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = data["tags"]
        pairs = [(str(e["tag"]), str(e["type"])) for e in entries]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"tag list sidecar {path} is not a {SIDECAR_FORMAT} file: {err}") from err
    types = []
    position = 0
    for tag in tags:
        while position < len(pairs) and pairs[position][0] != tag:
            position += 1
        if position == len(pairs):
            logger.warning(
                "%s does not describe this tag list (no entry for %r in order); ignoring its types", path, tag
            )
            return None
        types.append(pairs[position][1])
        position += 1
    for tag, tag_type in zip(tags, types):
        if tag_type not in TAG_TYPES:
            raise ValueError(f"tag list sidecar {path}: tag {tag!r} has unknown type {tag_type!r}")
    return types
