"""Multi-label tagging metrics: mAP, per-class AP, precision/recall/F1 at thresholds, threshold search.

Conventions (those of multi-label recognition papers such as ML-GCN, ASL and RAM/Tag2Text):

* **AP** of a class is the mean, over its positive images, of the precision among all images
  scored at least as high (non-interpolated AP; equal to ``sklearn``'s ``average_precision_score``).
  Tied scores are ranked as one group, so the result does not depend on sort order; without ties
  it equals the ASL/RAM ``average_precision`` code up to that code's ``1e-8`` epsilon.
* **mAP** is the mean AP over classes with at least one positive image; classes without positives
  have no AP (``None``) and are left out, instead of counting as 0 as some scripts do.
* A tag is predicted when its score is **strictly greater** than the class threshold, as
  Tag2Text and RAM decide at inference (``sigmoid(logits) > threshold``).
* **CP/CR** are per-class precision and recall averaged over classes with at least one positive
  (a class with no predicted image has precision 0); **CF1** ``= 2 CP CR / (CP + CR)``.
  **OP/OR/OF1** pool true and false positives over all classes (micro averages).
* All values are percentages (0..100), as these papers report them.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["average_precision", "compute_tagging_metrics", "search_thresholds"]

_CHUNK = 512  # classes per vectorised block, to bound memory on (images x 4,585) inputs


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 2:
        raise ValueError(f"scores must be a 2-D array (images x classes), got shape {scores.shape}")
    if labels.shape != scores.shape:
        raise ValueError(f"labels shape {labels.shape} does not match scores shape {scores.shape}")
    if scores.shape[0] == 0:
        raise ValueError("no images to evaluate")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    if labels.dtype != bool and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0/1 (or boolean)")
    return scores, labels.astype(bool)


def _sorted_columns(scores: np.ndarray, labels: np.ndarray):
    """Per column: labels sorted by descending score, and a mask of the last row of each tie group."""
    order = np.argsort(-scores, axis=0, kind="stable")
    s = np.take_along_axis(scores, order, axis=0)
    y = np.take_along_axis(labels, order, axis=0)
    last = np.ones_like(s, dtype=bool)
    last[:-1] = s[:-1] != s[1:]
    return s, y, last


def _group_end_index(last: np.ndarray) -> np.ndarray:
    """For every row, the index of the last row of its tie group (reverse running minimum)."""
    n = last.shape[0]
    idx = np.where(last, np.arange(n)[:, None], n)
    return np.minimum.accumulate(idx[::-1], axis=0)[::-1]


def average_precision(scores, labels) -> np.ndarray:
    """Per-class AP as a fraction (0..1); NaN for classes without positive images.

    ``scores`` and ``labels`` are ``(num_images, num_classes)``; labels are 0/1.
    """
    scores, labels = _check(scores, labels)
    out = np.full(scores.shape[1], np.nan)
    for start in range(0, scores.shape[1], _CHUNK):
        sl = slice(start, start + _CHUNK)
        _, y, last = _sorted_columns(scores[:, sl], labels[:, sl])
        tp = np.cumsum(y, axis=0)
        rank = np.arange(1, y.shape[0] + 1)[:, None]
        end = _group_end_index(last)
        precision_at_group = np.take_along_axis(tp / rank, end, axis=0)
        positives = y.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap = (precision_at_group * y).sum(axis=0) / positives
        out[sl] = np.where(positives > 0, ap, np.nan)
    return out


def _thresholds_vector(thresholds, num_classes: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        return np.full(num_classes, float(thr))
    if thr.shape != (num_classes,):
        raise ValueError(f"thresholds must be a scalar or have shape ({num_classes},), got {thr.shape}")
    return thr


def _percent(x: float) -> float | None:
    return None if np.isnan(x) else float(100.0 * x)


def compute_tagging_metrics(scores, labels, thresholds=0.5) -> dict:
    """Tagging metrics of ``scores`` (probabilities or logits) against 0/1 ``labels``.

    Args:
        scores: ``(num_images, num_classes)`` array-like (numpy, lists, CPU tensors).
        labels: same shape, 0/1 or boolean.
        thresholds: a scalar or a ``(num_classes,)`` array; a tag is predicted when its score is
            strictly greater than its threshold. Must be on the same scale as ``scores``.

    Returns (percentages, see the module docstring):
        ``{"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1"}`` floats (``None`` if no class has a
        positive), ``"num_classes_evaluated"`` (classes with at least one positive) and
        per-class lists ``"AP"``, ``"precision"``, ``"recall"``, ``"f1"`` (``None`` for classes
        without positives).
    """
    scores, labels = _check(scores, labels)
    thr = _thresholds_vector(thresholds, scores.shape[1])
    ap = average_precision(scores, labels)
    has_pos = labels.any(axis=0)
    if not has_pos.any():
        logger.warning("no class has a positive label; tagging metrics are undefined")

    predicted = scores > thr[None, :]
    tp = (predicted & labels).sum(axis=0).astype(np.float64)
    n_pred = predicted.sum(axis=0).astype(np.float64)
    n_pos = labels.sum(axis=0).astype(np.float64)
    precision = np.divide(tp, n_pred, out=np.zeros_like(tp), where=n_pred > 0)
    recall = np.divide(tp, n_pos, out=np.full_like(tp, np.nan), where=n_pos > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    f1[~has_pos] = np.nan
    precision_eval = np.where(has_pos, precision, np.nan)

    if has_pos.any():
        cp = float(np.mean(precision[has_pos]))
        cr = float(np.mean(recall[has_pos]))
        cf1 = 2 * cp * cr / (cp + cr) if cp + cr > 0 else 0.0
        mean_ap = float(np.mean(ap[has_pos]))
    else:
        cp = cr = cf1 = mean_ap = np.nan
    total_pred = n_pred.sum()
    total_tp = tp.sum()
    total_pos = n_pos.sum()
    op = total_tp / total_pred if total_pred > 0 else 0.0
    if total_pos > 0:
        orc = total_tp / total_pos
        of1 = 2 * op * orc / (op + orc) if op + orc > 0 else 0.0
    else:
        orc = of1 = np.nan
    return {
        "mAP": _percent(mean_ap),
        "CP": _percent(cp),
        "CR": _percent(cr),
        "CF1": _percent(cf1),
        "OP": _percent(op),
        "OR": _percent(orc),
        "OF1": _percent(of1),
        "num_classes_evaluated": int(has_pos.sum()),
        "AP": [_percent(v) for v in ap],
        "precision": [_percent(v) for v in precision_eval],
        "recall": [_percent(v) for v in recall],
        "f1": [_percent(v) for v in f1],
    }


def search_thresholds(scores, labels, default_threshold: float = 0.5) -> dict:
    """Per-class thresholds that maximise F1 on a validation split.

    For each class every cut between two distinct scores is tried; the threshold is placed
    halfway between the lowest score kept and the next lower score (just below the lowest score
    when everything is kept), so ``score > threshold`` reproduces the chosen cut and leaves a
    margin for unseen images. On equal F1 the higher threshold wins. Classes without a positive
    image get ``default_threshold``.

    Returns ``{"thresholds": np.ndarray (num_classes,), "f1": np.ndarray (fractions, NaN where not
    searched), "searched": np.ndarray of bool}``.
    """
    scores, labels = _check(scores, labels)
    num_classes = scores.shape[1]
    thresholds = np.full(num_classes, float(default_threshold))
    best_f1 = np.full(num_classes, np.nan)
    for start in range(0, num_classes, _CHUNK):
        sl = slice(start, start + _CHUNK)
        s, y, last = _sorted_columns(scores[:, sl], labels[:, sl])
        tp = np.cumsum(y, axis=0)
        kept = np.arange(1, y.shape[0] + 1)[:, None]
        positives = y.sum(axis=0)
        f1 = np.where(last, 2 * tp / (kept + positives[None, :]), -1.0)
        cut = np.argmax(f1, axis=0)  # first maximum: the fewest images kept, i.e. the highest threshold
        cols = np.arange(f1.shape[1])
        lowest_kept = s[cut, cols]
        below = np.where(cut + 1 < y.shape[0], s[np.minimum(cut + 1, y.shape[0] - 1), cols], -np.inf)
        thr = np.where(np.isfinite(below), (lowest_kept + below) / 2, np.nextafter(lowest_kept, -np.inf))
        # Halfway can round up to the kept score itself when the two are adjacent floats.
        thr = np.where(thr >= lowest_kept, np.nextafter(lowest_kept, -np.inf), thr)
        searched = positives > 0
        thresholds[sl] = np.where(searched, thr, default_threshold)
        best_f1[sl] = np.where(searched, f1[cut, cols], np.nan)
    return {"thresholds": thresholds, "f1": best_f1, "searched": labels.any(axis=0)}
