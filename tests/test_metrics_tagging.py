"""Tagging metrics: hand-worked AP/mAP/P/R/F1 and threshold search, and brute-force cross-checks."""

import numpy as np
import pytest

from tag2text.training.metrics import average_precision, compute_tagging_metrics, search_thresholds

# 4 images x 3 classes. Class 0: positives ranked 1st and 3rd. Class 1: a tie at 0.5 between a
# positive and a negative, another positive last. Class 2: no positive.
SCORES = np.array(
    [
        [0.9, 0.5, 0.1],
        [0.8, 0.5, 0.9],
        [0.7, 0.2, 0.3],
        [0.6, 0.9, 0.2],
    ]
)
LABELS = np.array(
    [
        [1, 1, 0],
        [0, 0, 0],
        [1, 1, 0],
        [0, 0, 0],
    ]
)


def test_average_precision_hand_worked():
    ap = average_precision(SCORES, LABELS)
    # Class 0: precision 1/1 at the first positive, 2/3 at the second.
    assert ap[0] == pytest.approx((1 + 2 / 3) / 2)
    # Class 1: the tied pair counts as one group of ranks 2-3 holding 1 positive (precision 1/3);
    # the last positive has precision 2/4.
    assert ap[1] == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert np.isnan(ap[2])


def test_map_and_thresholded_metrics_hand_worked():
    out = compute_tagging_metrics(SCORES, LABELS, thresholds=0.55)
    assert out["num_classes_evaluated"] == 2
    assert out["mAP"] == pytest.approx(100 * ((1 + 2 / 3) / 2 + (1 / 3 + 1 / 2) / 2) / 2)
    assert out["AP"][2] is None
    # score > 0.55: class 0 predicts all four (TP 2), class 1 only the 0.9 negative, class 2 its 0.9.
    assert out["precision"][:2] == pytest.approx([50.0, 0.0])
    assert out["recall"][:2] == pytest.approx([100.0, 0.0])
    assert out["precision"][2] is None and out["recall"][2] is None
    assert out["CP"] == pytest.approx(25.0)
    assert out["CR"] == pytest.approx(50.0)
    assert out["CF1"] == pytest.approx(100 * 2 * 0.25 * 0.5 / 0.75)
    assert out["OP"] == pytest.approx(100 * 2 / 6)  # 2 TP among 4 + 1 + 1 predictions
    assert out["OR"] == pytest.approx(50.0)  # 2 of 4 positives
    assert out["OF1"] == pytest.approx(100 * 2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert out["f1"][0] == pytest.approx(100 * 2 * 0.5 * 1 / 1.5)


def test_threshold_is_strict_and_per_class():
    # A score equal to the threshold is not a prediction (Tag2Text: sigmoid(logits) > threshold).
    strict = compute_tagging_metrics(SCORES, LABELS, thresholds=[0.6, 0.95, 0.5])
    assert strict["precision"][0] == pytest.approx(100 * 2 / 3)  # 0.9, 0.8, 0.7 kept; 0.6 is not
    assert strict["precision"][1] == 0.0  # nothing above 0.95
    with pytest.raises(ValueError, match="thresholds"):
        compute_tagging_metrics(SCORES, LABELS, thresholds=[0.5, 0.5])


def test_search_thresholds_hand_worked():
    found = search_thresholds(SCORES, LABELS, default_threshold=0.42)
    # Class 0: keeping the top 3 gives F1 = 2*2/(3+2) = 0.8, the best cut; halfway to the 4th score.
    assert found["thresholds"][0] == pytest.approx(0.65)
    assert found["f1"][0] == pytest.approx(0.8)
    # Class 1: keeping all four (F1 = 4/6) beats keeping the tied group (2/5); just below 0.2.
    assert found["thresholds"][1] < 0.2 and found["thresholds"][1] == pytest.approx(0.2)
    assert found["f1"][1] == pytest.approx(4 / 6)
    assert found["thresholds"][2] == 0.42 and np.isnan(found["f1"][2])
    assert list(found["searched"]) == [True, True, False]
    # The thresholds reproduce the searched F1 when applied with the strict rule.
    applied = compute_tagging_metrics(SCORES, LABELS, thresholds=found["thresholds"])
    assert applied["f1"][:2] == pytest.approx([80.0, 100 * 4 / 6])


def _brute_force_ap(scores, labels):
    """AP by definition: mean over positives of precision among images scored at least as high."""
    aps = []
    for c in range(scores.shape[1]):
        s, y = scores[:, c], labels[:, c]
        if y.sum() == 0:
            aps.append(np.nan)
            continue
        precisions = [(y[s >= s[i]]).mean() for i in np.flatnonzero(y)]
        aps.append(np.mean(precisions))
    return np.array(aps)


def _asl_ap(output, target):
    """The ASL / RAM ``average_precision`` formula (sort, precision at each positive), for tie-free data."""
    order = np.argsort(-output)
    hits = target[order] == 1
    pos_count = np.cumsum(hits)
    precision_at_hits = pos_count[hits] / (np.flatnonzero(hits) + 1)
    return precision_at_hits.sum() / hits.sum()


def test_average_precision_matches_independent_computations():
    rng = np.random.default_rng(7)
    tied = np.round(rng.random((300, 40)), 1)  # many ties
    labels = (rng.random((300, 40)) < 0.15).astype(int)
    labels[:, 5] = 0
    np.testing.assert_allclose(average_precision(tied, labels), _brute_force_ap(tied, labels), equal_nan=True)
    smooth = rng.random((300, 40))
    ours = average_precision(smooth, labels)
    for c in range(40):
        if labels[:, c].any():
            assert ours[c] == pytest.approx(_asl_ap(smooth[:, c], labels[:, c]))


def test_search_thresholds_matches_exhaustive_search():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((120, 12)), 2)
    labels = (rng.random((120, 12)) < 0.2).astype(int)
    found = search_thresholds(scores, labels)
    for c in range(12):
        s, y = scores[:, c], labels[:, c].astype(bool)
        best = 0.0
        for t in np.r_[np.unique(s) - 1e-9, s.max() + 1]:
            pred = s > t
            tp = (pred & y).sum()
            best = max(best, 2 * tp / (pred.sum() + y.sum()))
        assert found["f1"][c] == pytest.approx(best)
        pred = s > found["thresholds"][c]
        assert 2 * (pred & y).sum() / (pred.sum() + y.sum()) == pytest.approx(best)


def test_chunking_over_many_classes_is_invisible():
    rng = np.random.default_rng(11)
    scores = rng.random((20, 1100))  # more classes than one vectorised block
    labels = (rng.random((20, 1100)) < 0.3).astype(int)
    full = average_precision(scores, labels)
    assert full[1050] == pytest.approx(average_precision(scores[:, 1050:1051], labels[:, 1050:1051])[0])


def test_bad_input():
    with pytest.raises(ValueError, match="shape"):
        compute_tagging_metrics(SCORES, LABELS[:, :2])
    with pytest.raises(ValueError, match="0/1"):
        compute_tagging_metrics(SCORES, LABELS * 2)
    with pytest.raises(ValueError, match="NaN"):
        compute_tagging_metrics(np.where(SCORES > 0.8, np.nan, SCORES), LABELS)
    with pytest.raises(ValueError, match="2-D"):
        average_precision(SCORES[0], LABELS[0])
    with pytest.raises(ValueError, match="no images"):
        search_thresholds(np.zeros((0, 3)), np.zeros((0, 3)))
