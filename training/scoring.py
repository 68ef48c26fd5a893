"""The training package's only door to the metric implementations in :mod:`tag2text.training.metrics`.

Names in the returned dictionaries (all percentages except the caption metrics, which keep the COCO
toolkit's fractions):

* tagging: ``tag_mAP``, ``tag_CP``/``tag_CR``/``tag_CF1`` (per-class mean), ``tag_OP``/``tag_OR``/``tag_OF1``
  (overall, i.e. micro), at the model's thresholds;
* captioning: ``caption_Bleu_1`` .. ``caption_Bleu_4``, ``caption_METEOR`` (None without Java),
  ``caption_ROUGE_L``, ``caption_CIDEr``;
* retrieval: ``retrieval_txt_r1/5/10`` (image-to-text), ``retrieval_img_r1/5/10`` (text-to-image), means.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def tagging_scores(probabilities, labels, thresholds) -> dict:
    from .metrics import compute_tagging_metrics

    result = compute_tagging_metrics(probabilities, labels, thresholds)
    keys = ("mAP", "CP", "CR", "CF1", "OP", "OR", "OF1")
    scores = {f"tag_{k}": result[k] for k in keys}
    scores["tag_classes_evaluated"] = result["num_classes_evaluated"]
    return scores


def caption_scores(references: dict, predictions: dict, meteor: bool | None = None) -> dict:
    """``references``: image id -> list of captions; ``predictions``: image id -> caption."""
    from .metrics import compute_caption_metrics

    result = compute_caption_metrics(references, predictions, meteor=meteor)
    return {f"caption_{k}": v for k, v in result["corpus"].items()}


def retrieval_scores(similarity_i2t, text_to_image, similarity_t2i=None) -> dict:
    from .metrics import compute_retrieval_metrics

    result = compute_retrieval_metrics(similarity_i2t, text_to_image, similarity_t2i)
    return {f"retrieval_{k}": v for k, v in result.items()}
