"""Retrieval recall: a hand-worked case, BLIP's itm_eval loop as an independent check, ties, bad input."""

import numpy as np
import pytest

from tag2text.training.metrics import compute_retrieval_metrics


def test_hand_worked():
    # Texts 0, 1 describe image 0; texts 2, 3 describe image 1.
    sim = np.array(
        [
            [0.1, 0.9, 0.8, 0.2],  # image 0: its best text (0.9) is first -> hit at 1
            [0.7, 0.95, 0.3, 0.6],  # image 1: its best text (0.6) is third -> hit at 5 only
        ]
    )
    out = compute_retrieval_metrics(sim, [0, 0, 1, 1])
    assert (out["txt_r1"], out["txt_r5"], out["txt_r10"]) == (50.0, 100.0, 100.0)
    # Text -> image (transpose): only text 3 ranks its image first.
    assert (out["img_r1"], out["img_r5"]) == (25.0, 100.0)
    assert out["txt_r_mean"] == pytest.approx(250 / 3)
    assert out["img_r_mean"] == pytest.approx(225 / 3)
    assert out["r_mean"] == pytest.approx((250 / 3 + 225 / 3) / 2)
    assert (out["num_images"], out["num_texts"]) == (2, 4)


def _blip_itm_eval(scores_i2t, scores_t2i, txt2img, img2txt):
    """BLIP's itm_eval (salesforce/BLIP train_retrieval.py), restated: argsort per query."""
    ranks = np.zeros(scores_i2t.shape[0])
    for index, score in enumerate(scores_i2t):
        inds = np.argsort(score)[::-1]
        ranks[index] = min(np.where(inds == i)[0][0] for i in img2txt[index])
    tr = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    ranks = np.zeros(scores_t2i.shape[0])
    for index, score in enumerate(scores_t2i):
        inds = np.argsort(score)[::-1]
        ranks[index] = np.where(inds == txt2img[index])[0][0]
    ir = [100.0 * np.mean(ranks < k) for k in (1, 5, 10)]
    return {"txt_r1": tr[0], "txt_r5": tr[1], "txt_r10": tr[2], "img_r1": ir[0], "img_r5": ir[1], "img_r10": ir[2]}


@pytest.mark.parametrize("separate_t2i", [False, True])
def test_matches_blip_itm_eval_without_ties(separate_t2i):
    rng = np.random.default_rng(5)
    num_images, per_image = 40, 5
    owner = rng.permutation(np.repeat(np.arange(num_images), per_image))
    # Scores correlated with the truth so that recall is neither 0 nor 100.
    sim = rng.normal(size=(num_images, len(owner))).astype(np.float32)
    sim[owner, np.arange(len(owner))] += 1.5
    t2i = (sim.T + rng.normal(scale=0.5, size=sim.T.shape)).astype(np.float32) if separate_t2i else sim.T
    img2txt = [np.flatnonzero(owner == i) for i in range(num_images)]
    expected = _blip_itm_eval(sim, t2i, owner, img2txt)
    ours = compute_retrieval_metrics(sim, owner, similarity_t2i=t2i if separate_t2i else None)
    for key, value in expected.items():
        assert ours[key] == pytest.approx(value), key
    assert 0 < ours["txt_r1"] < 100 and 0 < ours["img_r1"] < 100


def test_ties_count_against_the_query():
    # All scores equal: every wrong candidate ties with the right one and ranks ahead of it.
    out = compute_retrieval_metrics(np.zeros((3, 3)), [0, 1, 2], ks=(1, 2, 3))
    assert (out["txt_r1"], out["txt_r2"], out["txt_r3"]) == (0.0, 0.0, 100.0)
    assert (out["img_r1"], out["img_r3"]) == (0.0, 100.0)
    # Two correct captions tied at the top still give a hit at 1.
    out = compute_retrieval_metrics(np.array([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]), [0, 0, 1])
    assert out["txt_r1"] == 100.0


def test_bad_input():
    sim = np.zeros((2, 3))
    with pytest.raises(ValueError, match="no text"):
        compute_retrieval_metrics(sim, [0, 0, 0])
    with pytest.raises(ValueError, match="outside"):
        compute_retrieval_metrics(sim, [0, 1, 2])
    with pytest.raises(ValueError, match="integer image indices"):
        compute_retrieval_metrics(sim, [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        compute_retrieval_metrics(np.full((2, 3), np.nan), [0, 1, 1])
    with pytest.raises(ValueError, match="similarity_t2i must have shape"):
        compute_retrieval_metrics(sim, [0, 1, 1], similarity_t2i=sim)
