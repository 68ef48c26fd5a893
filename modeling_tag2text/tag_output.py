"""What tagging and captioning return: the tags of one image (``model.tag(...)`` and the ONNX runtime's
``tag(...)``), and the result row of one image that every inference entry point writes (``tag2text caption``, its
sharded run, ``tag2text serve``, the image-to-text pipeline, both backends).

Standard library only: the onnxruntime side (:mod:`.onnx`) must not import torch, and the modeling side ships
this file in the Hub payload (the pipeline imports it there).
"""

from __future__ import annotations

from dataclasses import dataclass

# Tag probabilities in result rows: float32 carries about 7 digits, and 6 keep the rows of the torch and the
# onnxruntime backends equal where their float32 arithmetic differs in the last place.
SCORE_DIGITS = 6


@dataclass
class Tag2TextTagOutput:
    """Tags of one image: names, class indices and probabilities, in class-index order."""

    tags: list
    tag_ids: list
    scores: list

    def as_dict(self) -> dict:
        return {"tags": list(self.tags), "tag_ids": list(self.tag_ids), "scores": list(self.scores)}


def tag_scores(names, scores) -> dict:
    """``{name: probability}`` of the predicted tags, in their class-index order, rounded to SCORE_DIGITS."""
    return {name: round(float(score), SCORE_DIGITS) for name, score in zip(names, scores)}


def result_rows(tags_per_image, scores_per_image=None, captions=None, chinese_per_image=None) -> list[dict]:
    """One row per caption: ``{"tags", "tag_scores", "caption"}`` (tagging-only models: ``{"tags", "tags_zh",
    "tag_scores"}``).

    ``tags_per_image`` are the tags each caption was written from (the steering tags when given, else the
    predicted ones); ``scores_per_image`` the :func:`tag_scores` of the predicted tags (the row has no
    "tag_scores" when None); ``captions`` the decoded captions, several per image in a row with
    ``num_return_sequences`` (None: tag rows without "caption"); ``chinese_per_image`` the Chinese names of each
    image's tags (RAM, RAM++; an entry None where the model has none), or None for rows without "tags_zh".
    """
    images = len(tags_per_image)
    if captions is None:
        per_image = 1
    else:
        per_image = len(captions) // images if images else 0
        if per_image * images != len(captions) or (images and not per_image):
            raise ValueError(f"{len(captions)} captions do not divide among {images} images")
    rows = []
    for index in range(images * per_image):
        image = index // per_image
        row = {"tags": list(tags_per_image[image])}
        if chinese_per_image is not None:
            chinese = chinese_per_image[image]
            row["tags_zh"] = None if chinese is None else list(chinese)
        if scores_per_image is not None:
            row["tag_scores"] = scores_per_image[image]
        if captions is not None:
            row["caption"] = captions[index]
        rows.append(row)
    return rows
