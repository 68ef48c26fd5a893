"""The training package's only door to the tag miner (``tag2text.processing.mining``).

Training needs three things from it: tags per caption (free-form, with their types), tag indices per caption
for a given tag list, and a tag list built from a caption corpus. The miner parses with spaCy, which is slow
on big corpora, so results are cached beside the data, keyed by the captions, the tag list and the spaCy
pipeline: a second run over the same data reads the cache instead of parsing again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections import Counter
from pathlib import Path

logger = logging.getLogger(__name__)

# Bump when the cached content changes meaning (e.g. a new miner version mines differently).
CACHE_VERSION = 1
CACHE_DIR_NAME = ".tag2text-cache"
TYPE_ORDER = ("object", "action", "attribute")  # the official list's order, kept for built lists


def _miner_class():
    try:
        from ..processing.mining.tag_miner import TagMiner
    except ImportError as error:
        raise ImportError(
            "mining tags from captions needs tag2text.processing.mining and spaCy (pip install 'tag2text[train]'); "
            f"or give tags in the data. ({error})"
        ) from error
    return TagMiner


@dataclasses.dataclass
class TagList:
    """A tag list with the type of each tag (``object``/``action``/``attribute``, or None if unknown)."""

    names: list[str]
    types: list[str] | None = None
    counts: list[int] | None = None

    def __post_init__(self):
        if not self.names:
            raise ValueError("the tag list is empty")
        if self.types is not None and len(self.types) != len(self.names):
            raise ValueError(f"{len(self.types)} tag types for {len(self.names)} tags")

    def __len__(self) -> int:
        return len(self.names)

    def write(self, path: str | os.PathLike) -> Path:
        """``path`` gets one tag a line; with types known, the tag miner's ``<stem>.counts.json`` sidecar keeps
        types and counts (the miner reads the types back when it matches captions to the list)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.types is None:
            path.write_text("\n".join(self.names), encoding="utf-8")
            return path
        from ..processing.mining.tag_list_builder import TagEntry, write_tag_list

        counts = self.counts or [0] * len(self.names)
        write_tag_list([TagEntry(n, t, int(c)) for n, t, c in zip(self.names, self.types, counts)], path)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> "TagList":
        """A tag list file (one tag a line); types from its sidecar, or the official list's known layout."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"--tag-list {path}: no such file")
        from ..processing.mining.tag_vocabulary import TagVocabulary

        try:
            vocabulary = TagVocabulary.from_file(path)
        except ValueError as error:
            raise ValueError(f"--tag-list {path}: {error}") from None
        return cls(list(vocabulary.tags), vocabulary.types)


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True).encode("utf-8"))
        digest.update(b"\x00")
    return digest.hexdigest()[:24]


def cache_directory(data_root: str | os.PathLike | None) -> Path:
    """``<data_root>/.tag2text-cache`` when writable, else ``~/.cache/tag2text/mined-tags``."""
    if data_root is not None:
        candidate = Path(data_root) / CACHE_DIR_NAME
        try:
            candidate.mkdir(parents=True, exist_ok=True)
            probe = candidate / ".write-test"
            probe.write_text("")
            probe.unlink()
            return candidate
        except OSError as error:
            logger.warning("cannot write the tag cache beside the data (%s); using the user cache", error)
    fallback = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tag2text" / "mined-tags"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


class CaptionTagger:
    """Mine tags of captions, once per corpus (cached).

    Args:
        cache_root: folder beside which the cache lives (the data folder); None uses the user cache.
        spacy_model: spaCy pipeline for the miner (default: the miner's).
        progress: tqdm progress bars while parsing.
    """

    def __init__(self, cache_root=None, spacy_model: str | None = None, progress: bool = True):
        self.cache_root = cache_root
        self.spacy_model = spacy_model
        self.progress = progress

    def _cached(self, kind: str, key_parts, compute):
        key = _fingerprint(CACHE_VERSION, kind, self.spacy_model, *key_parts)
        path = cache_directory(self.cache_root) / f"{kind}-{key}.json"
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                logger.info("read mined tags from the cache %s", path)
                return data
            except (OSError, ValueError) as error:
                logger.warning("ignoring unreadable tag cache %s (%s); mining again", path, error)
        data = compute()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)  # atomic, so that a concurrent reader never sees half a file
        logger.info("cached mined tags in %s", path)
        return data

    def mine_typed(self, captions: list[str]) -> list[list[list[str]]]:
        """Free-form tags per caption as ``[objects, actions, attributes]``."""
        captions = [str(c) for c in captions]

        def compute():
            miner = _miner_class()(spacy_model=self.spacy_model, progress=self.progress)
            rows = miner.mine(captions)
            return [[list(r["objects"]), list(r["actions"]), list(r["attributes"])] for r in rows]

        return self._cached("typed", [captions], compute)

    def mine_ids(self, captions: list[str], tag_list: TagList) -> list[list[int]]:
        """Indices into ``tag_list`` per caption (the miner's matching: synonyms, multi-word tags, types)."""
        captions = [str(c) for c in captions]

        def compute():
            miner = _miner_class()(tag_list=list(tag_list.names), tag_types=tag_list.types,
                                   spacy_model=self.spacy_model, progress=self.progress)
            return [list(r["tag_ids"] or []) for r in miner.mine(captions)]

        return self._cached("ids", [captions, tag_list.names, tag_list.types], compute)


def build_tag_list(typed_per_sample: list[list[list[list[str]]]], max_tags: int | None = None,
                   min_count: int = 1, minority_share: float = 0.25) -> TagList:
    """A tag list from mined captions with the tag miner's counting and selection (caption frequency of each
    ``(tag, type)``, top K, ordered objects, actions, attributes as the official list).

    A string mined under two types counts under its majority type unless the other type holds at least
    ``minority_share`` of its mentions: a parser's occasional slip ("purple" read as a noun) should not split
    one visual fact into two classes.

    Args:
        typed_per_sample: per sample, per caption ``[objects, actions, attributes]`` (from
            :meth:`CaptionTagger.mine_typed`).
        max_tags: keep at most this many (default: all).
        min_count: keep tags seen in at least this many captions.
    """
    from ..processing.mining.tag_list_builder import count_tags, select_tags

    results = [{"objects": c[0], "actions": c[1], "attributes": c[2]} for captions in typed_per_sample for c in captions]
    counts = count_tags(results, count_compound_heads=False)
    by_string: dict[str, Counter] = {}
    for (tag, tag_type), n in counts.items():
        by_string.setdefault(tag, Counter())[tag_type] = n
    folded: Counter = Counter()
    for tag, types in by_string.items():
        majority, _ = types.most_common(1)[0]
        total = sum(types.values())
        for tag_type, n in types.items():
            keep = tag_type == majority or n >= minority_share * total
            folded[(tag, tag_type if keep else majority)] += n
    if not folded:
        raise ValueError("no tag was mined from the captions; give a --tag-list or tags in the data")
    entries = select_tags(folded, top_k=int(max_tags) if max_tags else len(folded), min_count=min_count)
    if not entries:
        raise ValueError(
            f"no tag was mined from the captions at least {min_count} times; give a --tag-list or tags in the data"
        )
    return TagList([e.tag for e in entries], [e.type for e in entries], [e.count for e in entries])


def typed_to_ids(typed: list[list[str]], tag_list: TagList) -> list[int]:
    """Indices of one caption's free-form typed tags in a tag list built from them (same string and type, else
    same string)."""
    index = {}
    for i, name in enumerate(tag_list.names):
        index.setdefault((name, tag_list.types[i] if tag_list.types else None), i)
        index.setdefault((name, None), i)
    ids = set()
    for tag_type, tags in zip(TYPE_ORDER, typed):
        for tag in tags:
            found = index.get((tag, tag_type), index.get((tag, None)))
            if found is not None:
                ids.add(found)
    return sorted(ids)
