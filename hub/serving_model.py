"""The model side of ``tag2text serve``: loading, what the server reports, steering-tag checks per request, and
the batched calls, which go through :class:`~tag2text.hub.inference.TorchBackend` (the model calls of
``tag2text caption`` too). Each image keeps its own threshold and steering tags inside a shared batch, so a
batched answer is the answer that image gets alone (and what ``tag2text caption`` prints for it).
"""

from __future__ import annotations

import logging

import torch

from .inference import TorchBackend, unknown_steering_tags

logger = logging.getLogger(__name__)

# Beams multiply the decoder's batch; a cap keeps one request from occupying the server for long.
MAX_NUM_BEAMS = 16
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ServingModel:
    """A Tag2Text captioning model and its processor, for batches of single-image requests."""

    def __init__(self, model, processor, name: str = "model"):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.backend = TorchBackend(self.model, processor)

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", dtype: str = "float32") -> "ServingModel":
        """Load as ``tag2text caption`` does; a source that cannot be loaded raises ModelSourceError naming it."""
        from .model_source import load_config, load_model, load_processor

        config = load_config(name_or_path)
        processor = load_processor(name_or_path, prompt=config.prompt)
        model = load_model(name_or_path, dtype=DTYPES[dtype]).to(device)
        return cls(model, processor, name=str(name_or_path))

    # -- what the server reports and checks ----------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def default_num_beams(self) -> int:
        return int(self.model.generation_config.num_beams or 1)

    @property
    def default_max_new_tokens(self) -> int:
        return int(self.model.generation_config.max_new_tokens)

    @property
    def longest_caption(self) -> int:
        """The most new tokens the decoder's position embeddings allow after the prompt."""
        config = self.model.config
        prompt_tokens = 1 + len(config.prompt_token_ids or [])
        return config.text_config.max_position_embeddings - prompt_tokens

    def describe(self) -> dict:
        config = self.model.config
        return {
            "model": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "num_tags": config.num_tags,
            "image_size": self.processor.image_processor.size,
            "defaults": {
                "threshold": config.tag_threshold,
                "per_class_thresholds": len(config.tag_thresholds),
                "num_beams": self.default_num_beams,
                "max_new_tokens": self.default_max_new_tokens,
            },
        }

    @property
    def default_threshold(self) -> float:
        return float(self.model.config.tag_threshold)

    # -- per-request preparation (any thread) --------------------------------------------------------------

    def pixel_values(self, image) -> torch.Tensor:
        """(1, 3, H, W) float32 on the CPU for one RGB PIL image; batches concatenate these."""
        return self.processor(images=[image], return_tensors="pt")["pixel_values"]

    def steering_tags(self, tags) -> list[str]:
        """The names of user tags (``"a | b"`` or a list of names), checked: every name spelled by the tokenizer,
        and the tag text within the model's ``max_tag_length``. Raises ValueError naming the problem."""
        model = self.model
        names = self.processor.parse_tags(tags if isinstance(tags, str) else [list(tags)], 1)[0]
        if not names:
            raise ValueError("tags holds no tag names")
        text = model.config.tag_separator.join(names)
        unknown = unknown_steering_tags(text, model.config.tag_separator, self.processor.tokenizer)
        if unknown:
            # The caption would be steered by [UNK] in their place; refuse rather than replace them silently.
            raise ValueError(f"the model's tokenizer spells {', '.join(map(repr, unknown))} as [UNK]")
        length = len(self.processor.tokenizer(text)["input_ids"])
        if length > model.config.max_tag_length:
            # The model would cut the tag text; refuse instead of captioning with fewer tags than asked for.
            raise ValueError(f"tags are {length} tokens with [ENC] and [SEP]; this model reads at most "
                             f"{model.config.max_tag_length}")
        return names

    # -- batched model calls (the batcher's thread) --------------------------------------------------------

    def _batch(self, pixel_values: list) -> torch.Tensor:
        return torch.cat(pixel_values).to(self.device, self.dtype)

    def tag_batch(self, pixel_values: list, thresholds: list) -> list[dict]:
        """``{"tags", "tag_scores"}`` per image, without the decoder."""
        return self.backend.tag(self._batch(pixel_values), thresholds)

    def caption_batch(self, pixel_values: list, thresholds: list, steering: list, num_beams: int,
                      max_new_tokens: int) -> list[dict]:
        """``{"tags", "tag_scores", "caption"}`` per image; ``steering[i]`` (names from :meth:`steering_tags`, or
        None) replaces image i's predicted tags in the caption, its tag scores are still the predicted ones."""
        return self.backend.tag_and_caption(self._batch(pixel_values), tags=steering, thresholds=thresholds,
                                            num_beams=num_beams, max_new_tokens=max_new_tokens)
