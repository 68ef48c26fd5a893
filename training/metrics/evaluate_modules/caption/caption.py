"""evaluate module: COCO caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) as pycocoevalcap computes them.

Load offline with ``evaluate.load("<path to this folder>")`` or
``tag2text.training.metrics.load_metric("caption")``. The computation lives in
``tag2text.training.metrics.caption_metrics``; this file only adapts it to evaluate's API.
"""

import datasets
import evaluate

from tag2text.training.metrics.caption_metrics import compute_caption_metrics

_DESCRIPTION = """\
Caption metrics of the COCO caption evaluation toolkit (pycocoevalcap): PTB tokenisation (the
toolkit's Java tokenizer, or without Java our own tokenizer written from its observed output), BLEU-1..4, METEOR (Java;
None without Java), ROUGE-L and CIDEr-D, with several references per image. On a 4,982-image COCO
set its corpus and per-image scores equal pycocoevalcap's up to floating-point rounding.
"""

_CITATION = """\
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh
          and Doll{\\'a}r, Piotr and Zitnick, C. Lawrence},
  journal={arXiv preprint arXiv:1504.00325},
  year={2015}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of str, one generated caption per image.
    references: list of list of str, the reference captions of each image.
    image_ids: optional list of ids (same length) used as keys of "per_image"; default 0..n-1.
    tokenizer: "auto" (default), "java", "python" or "none" (input already tokenised).
    meteor: None (default: when Java is present), True (require) or False (skip).
Returns:
    {"corpus": {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"},
     "per_image": {image_id: {same keys}}, "info": {...}} with fractions (not percent).
Examples:
    >>> caption = evaluate.load("path/to/caption")
    >>> caption.compute(predictions=["a dog runs", "a red car"],
    ...                 references=[["a dog is running"], ["a red car parked"]], meteor=False)["corpus"]["CIDEr"]
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Caption(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Sequence(datasets.Value("string")),
                }
            ),
            reference_urls=["https://github.com/salaniz/pycocoevalcap"],
        )

    def _compute(self, predictions, references, image_ids=None, tokenizer="auto", meteor=None):
        if image_ids is None:
            image_ids = list(range(len(predictions)))
        if len(image_ids) != len(predictions) or len(set(image_ids)) != len(image_ids):
            raise ValueError("image_ids must hold one distinct id per prediction")
        refs = dict(zip(image_ids, references))
        preds = dict(zip(image_ids, predictions))
        return compute_caption_metrics(refs, preds, tokenizer=tokenizer, meteor=meteor)
