"""The serving core shared by the HTTP API and the web demo: check a request, queue it, batch the model calls.

``prepare`` runs in the request's thread (decode, validate, preprocess) and raises
:class:`~tag2text.hub.serving_inputs.RequestError` for a bad request; ``submit`` hands the prepared request to
the :class:`~tag2text.hub.serving_batcher.DynamicBatcher`, which groups requests by their generation options.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future
from dataclasses import dataclass

from .serving_batcher import DynamicBatcher
from .serving_inputs import CAPTION_FIELDS, TAG_FIELDS, Limits, RequestError, decode_image, parse_options

logger = logging.getLogger(__name__)

ENDPOINT_FIELDS = {"caption": CAPTION_FIELDS, "tags": TAG_FIELDS}


@dataclass
class Prepared:
    """A checked request: its batching key and what the model needs for its image."""

    key: tuple
    pixel_values: object
    threshold: float | None
    steering: object = None


class TaggingService:
    """One loaded model behind a dynamic batcher.

    Args:
        serving_model: a :class:`~tag2text.hub.serving_model.ServingModel`.
        max_batch_size / batch_timeout_s: see :class:`DynamicBatcher` (1: no batching).
        max_image_pixels: largest width x height a request may send.
    """

    def __init__(self, serving_model, max_batch_size: int = 8, batch_timeout_s: float = 0.02,
                 max_image_pixels: int = 40_000_000):
        from .serving_model import MAX_NUM_BEAMS

        self.model = serving_model
        self.limits = Limits(max_image_pixels=max_image_pixels, max_num_beams=MAX_NUM_BEAMS,
                             max_new_tokens=serving_model.longest_caption)
        self.batcher = DynamicBatcher(self._run_batch, max_batch_size=max_batch_size, timeout_s=batch_timeout_s)

    def prepare(self, kind: str, image_bytes: bytes, fields: dict) -> Prepared:
        """Check one request of endpoint ``kind`` ("caption" or "tags"); ``fields`` holds every field sent
        (the image included, under "image"), values as JSON gave them or as form strings."""
        if kind == "caption" and not self.model.writes_captions:
            described = self.model.describe()
            raise RequestError(400, f"model {described['model']} ({described['model_type']}) only tags images: it "
                                    "has no caption decoder; send the image to /v1/tags")
        options = parse_options(fields, ENDPOINT_FIELDS[kind], self.limits)
        image = decode_image(image_bytes, self.limits.max_image_pixels)
        pixel_values = self.model.pixel_values(image)
        if kind == "tags":
            return Prepared(("tags",), pixel_values, options.threshold)
        steering = None
        if options.tags is not None:
            try:
                steering = self.model.steering_tags(options.tags)
            except (ValueError, TypeError) as error:
                raise RequestError(400, f"field 'tags': {error}") from error
        num_beams = options.num_beams or self.model.default_num_beams
        max_new_tokens = options.max_new_tokens or self.model.default_max_new_tokens
        return Prepared(("caption", num_beams, max_new_tokens), pixel_values, options.threshold, steering)

    def submit(self, prepared: Prepared) -> Future:
        return self.batcher.submit(prepared.key, prepared)

    def answer(self, kind: str, image_bytes: bytes, fields: dict, timeout: float | None = None) -> dict:
        """Prepare, submit and wait: the blocking call of the web demo and of scripts."""
        return self.submit(self.prepare(kind, image_bytes, fields)).result(timeout)

    def _run_batch(self, key: tuple, batch: list[Prepared]) -> list[dict]:
        pixel_values = [item.pixel_values for item in batch]
        thresholds = [item.threshold for item in batch]
        if key[0] == "tags":
            return self.model.tag_batch(pixel_values, thresholds)
        _, num_beams, max_new_tokens = key
        return self.model.caption_batch(pixel_values, thresholds, [item.steering for item in batch], num_beams,
                                        max_new_tokens)

    def health(self) -> dict:
        return {"status": "ok", "model_loaded": True, **self.model.describe(),
                "max_image_pixels": self.limits.max_image_pixels, "batching": self.batcher.stats()}

    def stats(self) -> dict:
        return self.batcher.stats()

    def close(self) -> None:
        self.batcher.close()
