"""The model side of ``tag2text serve``: loading, what the server reports, steering-tag checks per request, and
the batched calls, which go through :class:`~tag2text.hub.inference.TorchBackend` (the model calls of
``tag2text caption`` too). Each image keeps its own threshold and steering tags inside a shared batch, so a
batched answer is the answer that image gets alone (and what ``tag2text caption`` prints for it).
"""

from __future__ import annotations

import logging

import torch

from .inference import torch_backend, unknown_steering_tags

logger = logging.getLogger(__name__)

# Beams multiply the decoder's batch; a cap keeps one request from occupying the server for long.
MAX_NUM_BEAMS = 16
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ServingModel:
    """A Tag2Text captioning model and its processor, or a tagging-only RAM / RAM++ model and its image processor
    (``writes_captions`` False: tags only), for batches of single-image requests."""

    def __init__(self, model, processor, name: str = "model"):
        self.model = model.eval()
        self.processor = processor
        self.image_processor = getattr(processor, "image_processor", processor)
        self.name = name
        self.backend = torch_backend(self.model, processor)
        self.writes_captions = self.backend.writes_captions

    @classmethod
    def load(cls, name_or_path: str, device: str = "cpu", dtype: str = "float32") -> "ServingModel":
        """Load as ``tag2text caption`` does; a source that cannot be loaded raises ModelSourceError naming it."""
        from .model_source import (load_config, load_image_processor, load_model, load_processor, model_type,
                                   tagging_only_family)

        if tagging_only_family(model_type(name_or_path)):
            processor = load_image_processor(name_or_path)
        else:
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
    def default_num_beams(self) -> int | None:
        if not self.writes_captions:
            return None
        return int(self.model.generation_config.num_beams or 1)

    @property
    def default_max_new_tokens(self) -> int | None:
        if not self.writes_captions:
            return None
        return int(self.model.generation_config.max_new_tokens)

    @property
    def longest_caption(self) -> int:
        """The most new tokens the decoder's position embeddings allow after the prompt (0: no decoder)."""
        if not self.writes_captions:
            return 0
        config = self.model.config
        prompt_tokens = 1 + len(config.prompt_token_ids or [])
        return config.text_config.max_position_embeddings - prompt_tokens

    def describe(self) -> dict:
        config = self.model.config
        described = {
            "model": self.name,
            "device": str(self.device),
            "dtype": str(self.dtype).removeprefix("torch."),
            "num_tags": config.num_tags,
            "image_size": self.image_processor.size,
            "defaults": {
                "threshold": config.tag_threshold,
                "per_class_thresholds": len(self._per_class_thresholds()),
                "num_beams": self.default_num_beams,
                "max_new_tokens": self.default_max_new_tokens,
            },
        }
        if not self.writes_captions:
            # Only tagging-only models carry these keys, so a Tag2Text server's /health is unchanged.
            described["model_type"] = config.model_type
            described["writes_captions"] = False
            described["chinese_tag_names"] = config.tag_names_chinese is not None
        return described

    def _per_class_thresholds(self) -> list:
        config = self.model.config
        if self.writes_captions:
            return list(config.tag_thresholds)
        return list(config.class_thresholds or [])

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
