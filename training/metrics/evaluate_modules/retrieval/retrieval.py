"""evaluate module: image-text retrieval recall R@1/5/10 in both directions, as BLIP reports it.

Load offline with ``evaluate.load("<path to this folder>")`` or
``tag2text.training.metrics.load_metric("retrieval")``. The computation lives in
``tag2text.training.metrics.retrieval_metrics``; this file only adapts it to evaluate's API.
"""

import datasets
import evaluate
import numpy as np

from tag2text.training.metrics.retrieval_metrics import compute_retrieval_metrics

_DESCRIPTION = """\
Retrieval recall as BLIP's itm_eval computes it, in percent: image-to-text (an image is a hit when
any of its captions ranks in the top k; keys txt_r1/5/10) and text-to-image (a caption is a hit
when its image ranks in the top k; keys img_r1/5/10), with their means and r_mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: one row per text: its similarity to every image (num_images floats).
    references: one int per text: the index of the image it describes.
    similarity_i2t: optional (num_images, num_texts) image-to-text scores when the model ranks
        that direction separately (BLIP re-ranks each direction with ITM); default: the
        transpose of the predictions.
Returns:
    {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean",
     "r_mean", "num_images", "num_texts"}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Retrieval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Value("int64"),
                }
            ),
            reference_urls=["https://github.com/salesforce/BLIP"],
        )

    def _compute(self, predictions, references, similarity_i2t=None):
        t2i = np.asarray(predictions)
        i2t = t2i.T if similarity_i2t is None else np.asarray(similarity_i2t)
        return compute_retrieval_metrics(i2t, np.asarray(references), similarity_t2i=t2i)
