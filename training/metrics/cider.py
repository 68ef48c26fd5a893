"""CIDEr-D exactly as the COCO caption toolkit computes it, vectorised over the corpus.

Facts reproduced from pycocoevalcap's ``CiderScorer`` (Vedantam et al. 2015, the "-D" variant):
each sentence is a tf-idf vector per n-gram order (n = 1..4), with document frequency counted
over the *reference sets of the images being scored* (so scores depend on the whole evaluated
set, and a single image scores 0) and idf ``log(num_images) - log(max(1, df))``. A hypothesis
is compared with each reference by a clipped cosine ``sum(min(h, r) * r) / (|h| |r|)`` per order,
times a Gaussian length penalty ``exp(-delta^2 / (2 * 6^2))``. The toolkit's ``delta`` is the
difference in *bigram* counts (``len - 1`` for sentences of two or more words, 0 otherwise), a
quirk kept here. Per image: mean over orders of the sum over references, divided by the number of
references, times 10. Corpus CIDEr is the mean over images.

Written here rather than called from pycocoevalcap for speed: the toolkit rebuilds every
reference's tf-idf vector for each comparison in Python loops.
"""

from __future__ import annotations

import numpy as np

from .ngram_stats import NgramTable, lookup, unique_sorted

__all__ = ["cider_d_scores"]

SIGMA = 6.0


def cider_d_scores(table: NgramTable, num_images: int, ref_image: np.ndarray) -> tuple[float, np.ndarray]:
    """Corpus and per-image CIDEr-D; arguments as for :func:`.bleu.bleu_scores`."""
    max_n = table.max_n
    grams = table.num_grams
    num_sentences = len(table.lengths)
    is_hyp = table.sentence < num_images
    sent_image = np.concatenate([np.arange(num_images, dtype=np.int64), ref_image.astype(np.int64)])
    row_image = sent_image[table.sentence]

    # Document frequency: in how many images' reference sets each n-gram occurs.
    ref_pairs = unique_sorted(row_image[~is_hyp] * grams + table.gram[~is_hyp])
    doc_freq = np.bincount(ref_pairs % max(grams, 1), minlength=grams).astype(np.float64)
    log_images = np.log(float(num_images))
    weight = table.count * (log_images - np.log(np.maximum(1.0, doc_freq[table.gram])))

    cell = table.sentence * max_n + table.order
    norm = np.sqrt(np.bincount(cell, weights=weight**2, minlength=num_sentences * max_n)).reshape(-1, max_n)
    bigrams = np.maximum(table.lengths - 1, 0)

    # Pair each reference n-gram with the same n-gram in its image's hypothesis.
    hyp_keys = row_image[is_hyp] * grams + table.gram[is_hyp]  # sorted: rows are sorted by (sentence, gram)
    hyp_weight = weight[is_hyp]
    ref_rows = ~is_hyp
    h = lookup(hyp_keys, hyp_weight, row_image[ref_rows] * grams + table.gram[ref_rows], default=0.0)
    r = weight[ref_rows]
    overlap = np.bincount(
        cell[ref_rows], weights=np.minimum(h, r) * r, minlength=num_sentences * max_n
    ).reshape(-1, max_n)[num_images:]

    ref_norm = norm[num_images:]
    hyp_norm = norm[:num_images][ref_image]
    denom = hyp_norm * ref_norm
    # The toolkit divides only when both norms are non-zero; the overlap is 0 otherwise anyway.
    sim = np.divide(overlap, denom, out=overlap.copy(), where=denom != 0)
    delta = (bigrams[:num_images][ref_image] - bigrams[num_images:]).astype(np.float64)
    sim *= (np.e ** (-(delta**2) / (2 * SIGMA**2)))[:, None]

    summed = np.zeros((num_images, max_n))
    np.add.at(summed, ref_image, sim)
    refs_per_image = np.bincount(ref_image, minlength=num_images)
    per_image = summed.mean(axis=1) / refs_per_image * 10.0
    return float(np.mean(per_image)), per_image
