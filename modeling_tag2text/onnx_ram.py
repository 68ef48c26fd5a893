"""RAM and RAM++ tagging on onnxruntime, from a directory written by ``tag2text export`` on a RAM / RAM++ model.

Imports only numpy, PIL and onnxruntime (no torch, no transformers):

    from tag2text.onnx_ram import OnnxRamTagger
    tagger = OnnxRamTagger.from_pretrained("ram-plus-onnx")
    for result in tagger.tag(["photo.jpg"]):
        print(result.tags, result.tags_zh, result.scores)

The same tags as ``RamForImageTagging.tag`` / ``RamPlusForImageTagging.tag``: the processor's resize and
normalisation, the graph's logits, a tag fires when its probability is strictly above its per-class threshold
(or one ``threshold`` for every tag), names in class-index order, the Chinese names as the config stores them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .onnx import OnnxImageInputs
from .tag_output import Tag2TextTagOutput

MANIFEST = "onnx_config.json"
FAMILIES = ("ram", "ram_plus")


class OnnxRamError(ValueError):
    """An export directory or an input that the tagger cannot use; the message names it."""


@dataclass
class OnnxRamTagOutput(Tag2TextTagOutput):
    """Tags of one image with their Chinese names (None when the export has none), as ``RamTagOutput``."""

    tags_zh: list | None = None

    def as_dict(self) -> dict:
        return dict(super().as_dict(), tags_zh=None if self.tags_zh is None else list(self.tags_zh))


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-logits.astype(np.float32)))).astype(np.float32)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise OnnxRamError(f"cannot read {os.fspath(path)!r}: {error}") from error


def is_ram_export(directory) -> bool:
    """Whether ``directory`` holds a RAM / RAM++ export (its manifest names the family)."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        return False
    return _read_json(path).get("family") in FAMILIES


class OnnxRamTagger(OnnxImageInputs):
    """A RAM / RAM++ tagger on onnxruntime; build it with :meth:`from_pretrained`."""

    input_error = OnnxRamError

    def __init__(self, directory: Path, session, manifest: dict, config: dict, image_settings: dict):
        self.directory = directory
        self.session = session
        self.manifest = manifest
        self.config = config
        self.family = manifest["family"]
        labels = config["id2label"]
        self.tag_names = [labels[str(index)] for index in range(len(labels))]
        chinese = config.get("tag_names_chinese")
        self.tag_names_chinese = None if chinese is None else list(chinese)
        self.thresholds = np.asarray(manifest["tag_thresholds"], dtype=np.float32)
        if len(self.thresholds) != len(self.tag_names):
            raise OnnxRamError(f"{os.fspath(directory)!r}: {len(self.thresholds)} thresholds for "
                               f"{len(self.tag_names)} tags")
        self._read_image_settings(image_settings)

    @classmethod
    def from_pretrained(cls, directory, providers=None, session_options=None) -> "OnnxRamTagger":
        """Load an export directory (``providers`` default to ``["CPUExecutionProvider"]``)."""
        import onnxruntime as ort

        root = Path(directory)
        manifest_path = root / MANIFEST
        if not manifest_path.is_file():
            raise OnnxRamError(f"{os.fspath(root)!r} is not an ONNX export: {MANIFEST} is missing")
        manifest = _read_json(manifest_path)
        if manifest.get("family") not in FAMILIES:
            raise OnnxRamError(f"{os.fspath(manifest_path)!r}: not a RAM / RAM++ export (family "
                               f"{manifest.get('family')!r})")
        config = _read_json(root / "config.json")
        settings_path = root / "preprocessor_config.json"
        if not settings_path.is_file():
            raise OnnxRamError(f"{os.fspath(settings_path)!r} is missing")
        path = root / manifest["graphs"]["tagger"]
        if not path.is_file():
            raise OnnxRamError(f"{os.fspath(path)!r} is missing")
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        session = ort.InferenceSession(os.fspath(path), sess_options=session_options, providers=providers)
        return cls(root, session, manifest, config, _read_json(settings_path))

    # -- tagging -----------------------------------------------------------------------------------------------

    def logits(self, images=None, pixel_values=None) -> np.ndarray:
        """Tag logits (batch, num_tags)."""
        logits, _ = self.session.run(None, {"pixel_values": self._pixels(images, pixel_values)})
        return logits

    def _threshold_array(self, threshold) -> np.ndarray:
        if threshold is None:
            return self.thresholds
        if isinstance(threshold, (int, float)):
            if not 0.0 <= float(threshold) <= 1.0:
                raise OnnxRamError(f"threshold must be in [0, 1], got {threshold}")
            return np.full(len(self.tag_names), float(threshold), dtype=np.float32)
        values = np.asarray(threshold, dtype=np.float32)
        if values.shape != (len(self.tag_names),):
            raise OnnxRamError(f"threshold must be a float or {len(self.tag_names)} values, got shape {values.shape}")
        return values

    def select_tags(self, logits: np.ndarray, threshold=None) -> list[list[int]]:
        """Class indices whose probability is strictly above the threshold, per image, in index order."""
        fired = _sigmoid(logits) > self._threshold_array(threshold)
        return [np.flatnonzero(row).tolist() for row in fired]

    def tag(self, images=None, threshold=None, pixel_values=None) -> list[OnnxRamTagOutput]:
        """Tags per image above the per-class thresholds (or ``threshold``), as the PyTorch model's ``tag``."""
        logits = self.logits(images, pixel_values)
        probabilities = _sigmoid(logits)
        chinese = self.tag_names_chinese
        return [
            OnnxRamTagOutput(tags=[self.tag_names[i] for i in ids], tag_ids=ids, scores=[float(row[i]) for i in ids],
                             tags_zh=None if chinese is None else [chinese[i] for i in ids])
            for row, ids in zip(probabilities, self.select_tags(logits, threshold))
        ]
