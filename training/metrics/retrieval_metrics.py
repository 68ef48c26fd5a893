"""Image-text retrieval recall (R@1/5/10, both directions) as BLIP's ``itm_eval`` reports it.

Image-to-text: an image is a hit at k when *any* of its captions ranks in the top k texts.
Text-to-image: a caption is a hit at k when its image ranks in the top k images. Results are
percentages under BLIP's keys (``txt_r1`` ... ``img_r10``, ``txt_r_mean``, ``img_r_mean``,
``r_mean``), so they can be compared with BLIP and Tag2Text logs directly.

BLIP ranks with ``np.argsort(score)[::-1]``, whose order among equal scores is an accident of
the sort; here a tie with a wrong candidate counts against the query (the rank is the number of
wrong candidates scoring at least as high as the best correct one). Without ties both agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["compute_retrieval_metrics"]

_ROW_CHUNK = 256  # query rows per block when counting, to bound temporary memory


def _as_matrix(x, name: str) -> np.ndarray:
    m = np.asarray(x)
    if m.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.floating):
        m = m.astype(np.float64)
    if np.isnan(m).any():
        raise ValueError(f"{name} contains NaN")
    return m


def _count_at_least(scores: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    out = np.empty(scores.shape[0], dtype=np.int64)
    for start in range(0, scores.shape[0], _ROW_CHUNK):
        block = scores[start : start + _ROW_CHUNK]
        out[start : start + _ROW_CHUNK] = (block >= threshold[start : start + _ROW_CHUNK, None]).sum(axis=1)
    return out


def compute_retrieval_metrics(similarity, text_to_image, similarity_t2i=None, ks=(1, 5, 10)) -> dict:
    """Recall@k in both directions from similarity scores.

    Args:
        similarity: ``(num_images, num_texts)`` image-to-text scores (numpy, lists or CPU tensors).
        text_to_image: ``(num_texts,)`` index of the image each text describes; every image needs
            at least one text.
        similarity_t2i: optional ``(num_texts, num_images)`` text-to-image scores, for models that
            re-rank each direction separately as BLIP does; defaults to ``similarity.T``.
        ks: the cut-offs.

    Returns:
        ``{"txt_r{k}": ..., "txt_r_mean": ..., "img_r{k}": ..., "img_r_mean": ..., "r_mean": ...}``
        in percent (``txt`` = image-to-text, ``img`` = text-to-image, as in BLIP), plus
        ``"num_images"`` and ``"num_texts"``.
    """
    sim = _as_matrix(similarity, "similarity")
    num_images, num_texts = sim.shape
    t2i = sim.T if similarity_t2i is None else _as_matrix(similarity_t2i, "similarity_t2i")
    if t2i.shape != (num_texts, num_images):
        raise ValueError(f"similarity_t2i must have shape {(num_texts, num_images)}, got {t2i.shape}")
    owner = np.asarray(text_to_image)
    if owner.shape != (num_texts,) or not np.issubdtype(owner.dtype, np.integer):
        raise ValueError(f"text_to_image must be {num_texts} integer image indices, got shape {owner.shape}")
    if num_texts and (owner.min() < 0 or owner.max() >= num_images):
        raise ValueError(f"text_to_image holds indices outside [0, {num_images})")
    texts_per_image = np.bincount(owner, minlength=num_images)
    if (texts_per_image == 0).any():
        missing = np.flatnonzero(texts_per_image == 0)
        raise ValueError(f"{len(missing)} image(s) have no text, e.g. index {int(missing[0])}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")

    # Image -> text: rank of the best-scoring correct caption among the wrong ones.
    own = sim[owner, np.arange(num_texts)]
    best = np.full(num_images, -np.inf, dtype=np.float64)
    np.maximum.at(best, owner, own)
    own_at_best = np.bincount(owner, weights=(own >= best[owner]), minlength=num_images).astype(np.int64)
    i2t_rank = _count_at_least(sim, best.astype(sim.dtype)) - own_at_best

    # Text -> image: rank of the correct image among the others.
    correct = t2i[np.arange(num_texts), owner]
    t2i_rank = _count_at_least(t2i, correct) - 1

    result: dict = {}
    for k in ks:
        result[f"txt_r{k}"] = 100.0 * float(np.mean(i2t_rank < k))
    result["txt_r_mean"] = float(np.mean([result[f"txt_r{k}"] for k in ks]))
    for k in ks:
        result[f"img_r{k}"] = 100.0 * float(np.mean(t2i_rank < k))
    result["img_r_mean"] = float(np.mean([result[f"img_r{k}"] for k in ks]))
    result["r_mean"] = (result["txt_r_mean"] + result["img_r_mean"]) / 2
    result["num_images"] = int(num_images)
    result["num_texts"] = int(num_texts)
    return result
