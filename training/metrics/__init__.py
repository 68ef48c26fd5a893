"""Evaluation metrics computed the way the reference tools compute them, usable offline.

Captions (``compute_caption_metrics``): the COCO caption toolkit's BLEU-1..4, METEOR, ROUGE-L
and CIDEr-D with its PTB tokenisation; fractions under the toolkit's names.
Tagging (``compute_tagging_metrics``, ``search_thresholds``, ``average_precision``): mAP and
precision/recall/F1 as multi-label papers report them; percentages.
Retrieval (``compute_retrieval_metrics``): R@1/5/10 both ways as BLIP's ``itm_eval``; percentages.

The same metrics are shipped as local ``evaluate`` modules (``evaluate.load("bleu")`` needs the
Hub; these do not): ``load_metric("caption" | "tagging" | "retrieval")`` or
``evaluate.load(str(metric_path(name)))``.
"""

from __future__ import annotations

from pathlib import Path

from ...lazy_exports import lazy_exports

# Imported on first use: the metrics pull in numpy, pycocoevalcap and the tokenizer, which
# ``tag2text score-captions --help`` should not pay for.
_EXPORTS = {
    "METRIC_NAMES": ".caption_metrics",
    "CaptionInputError": ".caption_metrics",
    "compute_caption_metrics": ".caption_metrics",
    "compute_retrieval_metrics": ".retrieval_metrics",
    "average_precision": ".tagging_metrics",
    "compute_tagging_metrics": ".tagging_metrics",
    "search_thresholds": ".tagging_metrics",
    "tokenize_captions": ".tokenization",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "METRIC_NAMES",
    "MODULE_NAMES",
    "CaptionInputError",
    "average_precision",
    "compute_caption_metrics",
    "compute_retrieval_metrics",
    "compute_tagging_metrics",
    "load_metric",
    "metric_path",
    "search_thresholds",
    "tokenize_captions",
]

MODULE_NAMES = ("caption", "tagging", "retrieval")


def metric_path(name: str) -> Path:
    """Folder of the local evaluate module ``name`` (one of ``MODULE_NAMES``)."""
    if name not in MODULE_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose one of {MODULE_NAMES}")
    return Path(__file__).resolve().parent / "evaluate_modules" / name


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of one of this package's metric modules, offline; kwargs go to ``evaluate.load``."""
    import evaluate  # imported here: only this helper needs evaluate (and datasets)

    return evaluate.load(str(metric_path(name)), **kwargs)
