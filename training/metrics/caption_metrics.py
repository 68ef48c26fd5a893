"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr-D) as the COCO caption toolkit computes them.

:func:`compute_caption_metrics` is the entry point. It reproduces ``COCOEvalCap.evaluate()``
(without SPICE, which needs a download): the images scored are those with a prediction, PTB
tokenisation is applied to references and predictions separately and in the toolkit's order,
and the results use the toolkit's metric names.

Input handling (the toolkit itself fails with a bare ``assert`` or silently misaligns):

* a prediction for an image without references: ``CaptionInputError`` (the toolkit refuses such
  result files too);
* an image with an empty reference list: ``CaptionInputError``;
* images with references but no prediction: not scored, counted in ``info`` and logged (the
  toolkit scores exactly the images of the result file);
* a reference that is empty after tokenisation: dropped, counted in ``info``; an image left with
  no reference is a ``CaptionInputError``;
* an empty prediction (after tokenisation): scored, every metric is 0 for it, counted in ``info``;
* duplicate predictions cannot occur in a mapping; the file readers in :mod:`.caption_io` reject
  them.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from .bleu import bleu_scores
from .cider import cider_d_scores
from .meteor import meteor_scores
from .ngram_stats import count_ngrams
from .rouge import rouge_l_scores
from .tokenization import java_available, resolve_backend, tokenize_caption_batches

logger = logging.getLogger(__name__)

__all__ = ["METRIC_NAMES", "CaptionInputError", "compute_caption_metrics"]

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")


class CaptionInputError(ValueError):
    """References or predictions that cannot be scored as given."""


def _preview(ids: list) -> str:
    shown = ", ".join(repr(i) for i in ids[:5])
    return shown + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def _validate(
    references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str]
) -> tuple[list, int]:
    if not isinstance(references, Mapping):
        raise TypeError(f"references must be a mapping image id -> list of captions, got {type(references).__name__}")
    if not isinstance(predictions, Mapping):
        raise TypeError(f"predictions must be a mapping image id -> caption, got {type(predictions).__name__}")
    for image, refs in references.items():
        if isinstance(refs, str) or not isinstance(refs, Sequence):
            raise TypeError(f"references[{image!r}] must be a list of captions, got {type(refs).__name__}")
        if len(refs) == 0:
            raise CaptionInputError(f"image {image!r} has no references")
        for ref in refs:
            if not isinstance(ref, str):
                raise TypeError(f"references[{image!r}] holds a {type(ref).__name__}, expected str: {ref!r}")
    for image, pred in predictions.items():
        if not isinstance(pred, str):
            raise TypeError(
                f"predictions[{image!r}] must be one caption string, got {type(pred).__name__}: {pred!r}"
            )
    unknown = [image for image in predictions if image not in references]
    if unknown:
        raise CaptionInputError(f"{len(unknown)} prediction(s) for images without references: {_preview(unknown)}")
    images = [image for image in references if image in predictions]
    if not images:
        raise CaptionInputError("no predictions to score")
    return images, len(references) - len(images)


def compute_caption_metrics(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    *,
    tokenizer: str = "auto",
    meteor: bool | None = None,
) -> dict:
    """Score ``predictions`` (image id -> caption) against ``references`` (image id -> captions).

    Args:
        references: one or more reference captions per image. Images without a prediction are
            not scored (counted in ``info["images_without_prediction"]``).
        predictions: one caption per image; every key must be in ``references``.
        tokenizer: ``"auto"`` (the toolkit's Java PTB tokenizer when Java is present, else our own
            tokenizer written from the Java one's observed output), ``"java"``, ``"python"``, or ``"none"`` for captions that
            are already tokenised (lower-case, space-separated, punctuation removed).
        meteor: ``None`` computes METEOR when Java is present and reports ``None`` otherwise;
            ``True`` requires it (``RuntimeError`` without Java); ``False`` skips it (saves ~15 s).

    Returns:
        ``{"corpus": {name: float}, "per_image": {image_id: {name: float}}, "info": {...}}`` with
        the toolkit's names ``Bleu_1..Bleu_4, METEOR, ROUGE_L, CIDEr`` (fractions, not percent;
        METEOR ``None`` when skipped). Images appear in ``references`` order. ``info`` records
        the tokenizer used, whether METEOR ran, and the counts of handled bad input.

    CIDEr-D's idf is computed over the scored images, so it is 0 for a single image and
    depends on which images are scored together, exactly as in the toolkit.
    """
    images, without_prediction = _validate(references, predictions)
    if without_prediction:
        logger.warning(
            "%d of %d images with references have no prediction; scoring the %d predicted images",
            without_prediction,
            len(references),
            len(images),
        )

    if tokenizer == "none":
        backend = "none"
        hyps = [predictions[i] for i in images]
        refs_flat = [r for i in images for r in references[i]]
    else:
        backend = resolve_backend(tokenizer)
        refs_raw = [r for i in images for r in references[i]]
        preds_raw = [predictions[i] for i in images]
        refs_flat, hyps = tokenize_caption_batches([refs_raw, preds_raw], backend)

    ref_lists: list[list[str]] = []
    dropped = 0
    pos = 0
    for image in images:
        n = len(references[image])
        kept = [r for r in refs_flat[pos : pos + n] if r.strip()]
        pos += n
        dropped += n - len(kept)
        if not kept:
            raise CaptionInputError(f"image {image!r}: all {n} references are empty after tokenisation")
        ref_lists.append(kept)
    if dropped:
        logger.warning("dropped %d reference(s) that are empty after tokenisation", dropped)
    empty_predictions = sum(1 for h in hyps if not h.strip())
    if empty_predictions:
        logger.warning(
            "%d prediction(s) are empty after tokenisation; they score 0 on every metric", empty_predictions
        )
    if len(images) == 1:
        logger.warning("CIDEr-D over a single image is 0 by construction (its idf is computed over the scored set)")

    num_images = len(images)
    ref_image = np.repeat(np.arange(num_images, dtype=np.int64), [len(r) for r in ref_lists])
    table = count_ngrams(list(hyps) + [r for refs in ref_lists for r in refs], max_n=4)
    bleu_corpus, bleu_per_image = bleu_scores(table, num_images, ref_image)
    cider_corpus, cider_per_image = cider_d_scores(table, num_images, ref_image)
    rouge_corpus, rouge_per_image = rouge_l_scores(hyps, ref_lists)

    if meteor is None:
        run_meteor = java_available()
        if not run_meteor:
            logger.warning("METEOR skipped: it needs Java, which was not found (reported as null)")
    else:
        run_meteor = bool(meteor)
    meteor_corpus, meteor_per_image = (None, None)
    if run_meteor:
        meteor_corpus, meteor_per_image = meteor_scores(hyps, ref_lists)

    corpus = {f"Bleu_{k + 1}": float(bleu_corpus[k]) for k in range(4)}
    corpus.update({"METEOR": meteor_corpus, "ROUGE_L": rouge_corpus, "CIDEr": cider_corpus})
    per_image = {}
    for idx, image in enumerate(images):
        row = {f"Bleu_{k + 1}": float(bleu_per_image[idx, k]) for k in range(4)}
        row["METEOR"] = None if meteor_per_image is None else float(meteor_per_image[idx])
        row["ROUGE_L"] = float(rouge_per_image[idx])
        row["CIDEr"] = float(cider_per_image[idx])
        per_image[image] = row
    info = {
        "num_images": num_images,
        "num_references": int(sum(len(r) for r in ref_lists)),
        "tokenizer": backend,
        "meteor": "computed" if run_meteor else ("disabled" if meteor is False else "skipped: Java not found"),
        "images_without_prediction": without_prediction,
        "empty_predictions": empty_predictions,
        "empty_references_dropped": dropped,
    }
    return {"corpus": corpus, "per_image": per_image, "info": info}
