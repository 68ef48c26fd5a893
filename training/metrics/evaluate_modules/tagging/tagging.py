"""evaluate module: multi-label tagging metrics (mAP, per-class AP, P/R/F1 at thresholds).

Load offline with ``evaluate.load("<path to this folder>")`` or
``tag2text.training.metrics.load_metric("tagging")``. The computation lives in
``tag2text.training.metrics.tagging_metrics``; this file only adapts it to evaluate's API.
"""

import datasets
import evaluate
import numpy as np

from tag2text.training.metrics.tagging_metrics import compute_tagging_metrics

_DESCRIPTION = """\
Multi-label tagging metrics as multi-label recognition papers (ML-GCN, ASL, RAM/Tag2Text) report
them, in percent: mAP over classes with at least one positive image, per-class AP, and per-class
(CP/CR/CF1) and overall (OP/OR/OF1) precision, recall and F1 at given thresholds (a tag is
predicted when its score is strictly greater than the threshold).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of per-image score vectors (num_classes floats each).
    references: list of per-image 0/1 label vectors (num_classes ints each).
    thresholds: a float (default 0.5) or one float per class, on the scale of the scores.
Returns:
    {"mAP", "CP", "CR", "CF1", "OP", "OR", "OF1", "num_classes_evaluated", "AP", "precision", "recall", "f1"}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Tagging(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int8")),
                }
            ),
        )

    def _compute(self, predictions, references, thresholds=0.5):
        return compute_tagging_metrics(np.asarray(predictions), np.asarray(references), thresholds=thresholds)
