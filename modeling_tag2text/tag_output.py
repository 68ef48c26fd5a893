"""The tags of one image, as ``model.tag(...)`` and the ONNX runtime's ``tag(...)`` return them.

Standard library only: the onnxruntime side (:mod:`.onnx`) must not import torch, and the modeling side ships
this file in the Hub payload.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Tag2TextTagOutput:
    """Tags of one image: names, class indices and probabilities, in class-index order."""

    tags: list
    tag_ids: list
    scores: list

    def as_dict(self) -> dict:
        return {"tags": list(self.tags), "tag_ids": list(self.tag_ids), "scores": list(self.scores)}
