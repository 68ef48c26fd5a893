"""BLEU-1..4 exactly as the COCO caption toolkit computes it, vectorised over the corpus.

Facts reproduced from pycocoevalcap's ``BleuScorer`` (Papineni et al. BLEU with the toolkit's
conventions): n-gram matches are clipped by the maximum count in any one reference; the
effective reference length is the reference length *closest* to the hypothesis (the shorter
one on a tie); corpus BLEU sums matches, guesses and lengths over images before combining them;
both corpus and per-image scores add ``tiny = 1e-15`` to match counts and ``small = 1e-9`` to
guess counts (so an order with no match gives a tiny, not zero, precision) and apply the brevity
penalty ``exp(1 - r/c)`` through the ratio ``(c + tiny) / (r + small)``.

Written here rather than called from pycocoevalcap for speed: the toolkit counts n-grams in
Python dictionaries per sentence; this module works on :class:`.ngram_stats.NgramTable`, which
CIDEr-D shares.
"""

from __future__ import annotations

import math

import numpy as np

from .ngram_stats import NgramTable, lookup

__all__ = ["bleu_scores"]

_TINY = 1e-15
_SMALL = 1e-9


def bleu_scores(table: NgramTable, num_images: int, ref_image: np.ndarray) -> tuple[list[float], np.ndarray]:
    """Corpus and per-image BLEU-1..``table.max_n``.

    ``table`` holds the hypotheses as sentences ``0..num_images-1`` (one per image) followed by
    the references; ``ref_image[j]`` is the image of reference sentence ``num_images + j``.
    Returns ``(corpus, per_image)``: a list of ``max_n`` floats and a ``(num_images, max_n)``
    array.
    """
    max_n = table.max_n
    grams = table.num_grams
    is_hyp = table.sentence < num_images
    image_of_row = np.where(is_hyp, table.sentence, ref_image[np.maximum(table.sentence - num_images, 0)])
    keys = image_of_row * grams + table.gram

    # Largest count of each n-gram in any single reference of the image.
    ref_keys = keys[~is_hyp]
    ref_counts = table.count[~is_hyp]
    if len(ref_keys):
        order = np.argsort(ref_keys, kind="stable")
        ref_keys = ref_keys[order]
        ref_counts = ref_counts[order]
        starts = np.flatnonzero(np.r_[True, ref_keys[1:] != ref_keys[:-1]])
        uniq_keys = ref_keys[starts]
        max_counts = np.maximum.reduceat(ref_counts, starts)
    else:
        uniq_keys = np.zeros(0, np.int64)
        max_counts = np.zeros(0, np.int64)

    clipped = np.minimum(table.count[is_hyp], lookup(uniq_keys, max_counts, keys[is_hyp]))
    correct = np.bincount(
        table.sentence[is_hyp] * max_n + table.order[is_hyp], weights=clipped, minlength=num_images * max_n
    ).reshape(num_images, max_n)

    test_len = table.lengths[:num_images]
    guess = np.maximum(0, test_len[:, None] - np.arange(max_n)[None, :]).astype(np.float64)

    ref_len = table.lengths[num_images:]
    # Closest reference length, the shorter one on a tie: minimise (|r - c|, r) lexicographically.
    span = int(ref_len.max(initial=0)) + 1
    combined = np.abs(ref_len - test_len[ref_image]) * span + ref_len
    best = np.full(num_images, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, ref_image, combined)
    eff_ref_len = (best % span).astype(np.float64)

    per_image = np.empty((num_images, max_n), dtype=np.float64)
    running = np.ones(num_images, dtype=np.float64)
    for k in range(max_n):
        running = running * ((correct[:, k] + _TINY) / (guess[:, k] + _SMALL))
        per_image[:, k] = running ** (1.0 / (k + 1))
    ratio = (test_len + _TINY) / (eff_ref_len + _SMALL)
    short = ratio < 1
    with np.errstate(over="ignore", divide="ignore"):
        per_image[short] *= np.exp(1 - 1 / ratio[short])[:, None]

    total_correct = correct.sum(axis=0)
    total_guess = guess.sum(axis=0)
    total_test = float(test_len.sum())
    total_ref = float(eff_ref_len.sum())
    corpus = []
    running_c = 1.0
    for k in range(max_n):
        running_c *= float(total_correct[k] + _TINY) / (total_guess[k] + _SMALL)
        corpus.append(running_c ** (1.0 / (k + 1)))
    ratio_c = (total_test + _TINY) / (total_ref + _SMALL)
    if ratio_c < 1:
        corpus = [b * math.exp(1 - 1 / ratio_c) for b in corpus]
    return corpus, per_image
