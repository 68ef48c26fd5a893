"""N-gram counts of many tokenised sentences at once, shared by BLEU and CIDEr-D.

pycocoevalcap counts n-grams per sentence in Python dictionaries, separately for BLEU and for
CIDEr, and CIDEr recounts every reference once per comparison. Here each sentence is counted
once: words become integer ids, each n-gram order is built from the previous one with
``np.unique``, and the result is a flat table of (sentence, n-gram id, count) rows that the
metrics reduce with vectorised numpy operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

__all__ = ["NgramTable", "count_ngrams", "lookup", "unique_counts", "unique_sorted"]


@dataclass(frozen=True)
class NgramTable:
    """Distinct n-grams of each sentence with their counts.

    Row ``j`` says that sentence ``sentence[j]`` contains n-gram ``gram[j]`` (of length
    ``order[j] + 1``) ``count[j]`` times. N-gram ids are unique across orders and range over
    ``[0, num_grams)``; rows are sorted by (sentence, gram).
    """

    lengths: np.ndarray  # words per sentence, int64
    sentence: np.ndarray
    gram: np.ndarray
    order: np.ndarray
    count: np.ndarray
    num_grams: int
    max_n: int


def count_ngrams(sentences: Sequence[str], max_n: int = 4) -> NgramTable:
    """Count the 1..``max_n``-grams of whitespace-split ``sentences`` (``str.split()``, as the toolkit)."""
    if max_n < 1:
        raise ValueError(f"max_n must be >= 1, got {max_n}")
    words = [s.split() for s in sentences]
    num_sentences = len(words)
    lengths = np.fromiter((len(w) for w in words), dtype=np.int64, count=num_sentences)
    total = int(lengths.sum())
    all_words = list(chain.from_iterable(words))
    vocab = {w: i for i, w in enumerate(dict.fromkeys(all_words))}
    flat = np.fromiter(map(vocab.__getitem__, all_words), dtype=np.int64, count=total)
    vocab_size = max(len(vocab), 1)
    sentence_of = np.repeat(np.arange(num_sentences, dtype=np.int64), lengths)
    starts = np.cumsum(lengths) - lengths
    remaining = lengths[sentence_of] - (np.arange(total, dtype=np.int64) - starts[sentence_of])

    sent_parts, gram_parts = [], []
    bounds = [0]
    prev_ids = flat  # id of the (n-1)-gram starting at each position; -1 where it does not fit
    for n in range(1, max_n + 1):
        if n == 1:
            valid = np.ones(total, dtype=bool)
            local = flat
            distinct = vocab_size if total else 0
        else:
            valid = remaining >= n
            pos = np.flatnonzero(valid)
            key = prev_ids[pos] * vocab_size + flat[pos + n - 1]
            distinct, inverse = _unique_inverse(key)
            local = np.full(total, -1, dtype=np.int64)
            local[pos] = inverse
        sent_parts.append(sentence_of[valid])
        gram_parts.append(local[valid] + bounds[-1])
        bounds.append(bounds[-1] + distinct)
        prev_ids = local

    num_grams = bounds[-1]
    sent = np.concatenate(sent_parts) if sent_parts else np.zeros(0, np.int64)
    gram = np.concatenate(gram_parts) if gram_parts else np.zeros(0, np.int64)
    keys, counts = unique_counts(sent * max(num_grams, 1) + gram)
    sent = keys // max(num_grams, 1)
    gram = keys % max(num_grams, 1)
    order = np.searchsorted(np.asarray(bounds[1:]), gram, side="right")
    return NgramTable(
        lengths=lengths,
        sentence=sent,
        gram=gram,
        order=order.astype(np.int64),
        count=counts.astype(np.int64),
        num_grams=num_grams,
        max_n=max_n,
    )


# Sort-based uniques: numpy 2's hash-based np.unique is several times slower on these int64 keys.
def unique_sorted(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array."""
    s = np.sort(keys)
    return s[np.r_[True, s[1:] != s[:-1]]] if len(s) else s


def unique_counts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of an int array and how often each occurs."""
    s = np.sort(keys)
    if not len(s):
        return s, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return s[starts], np.diff(np.r_[starts, len(s)])


def _unique_inverse(keys: np.ndarray) -> tuple[int, np.ndarray]:
    """Number of distinct values and, per element, the rank of its value among them."""
    order = np.argsort(keys)
    s = keys[order]
    first = np.r_[True, s[1:] != s[:-1]] if len(s) else np.zeros(0, bool)
    ranks = np.cumsum(first) - 1
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = ranks
    return int(first.sum()), inverse


def lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, default=0) -> np.ndarray:
    """``values`` at the position of each query in ``sorted_keys``; ``default`` where it is absent."""
    if len(sorted_keys) == 0:
        return np.full(len(queries), default, dtype=np.result_type(values, type(default)))
    idx = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[idx] == queries, values[idx], default)
