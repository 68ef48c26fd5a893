"""Image captioning pipeline for Tag2Text: an image in, ``[{"generated_text": caption, "tags": [...]}]`` out.

transformers 5 removed the "image-to-text" task and redirects it to "image-text-to-text", which refuses an
image without text. Model directories therefore declare this class under ``custom_pipelines`` in config.json,
so ``pipeline("image-to-text", model=DIR, trust_remote_code=True)`` builds it (custom tasks are looked up
before the redirect).

Part of the Hub payload: imports only transformers and its sibling files.
"""

from __future__ import annotations

from transformers import Pipeline

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .tag_output import result_rows

TASK = "image-to-text"
PIPELINE_IMPL = "pipeline_tag2text.Tag2TextCaptionPipeline"

_GENERATE_ARGS = (
    "max_new_tokens",
    "max_length",
    "min_length",
    "min_new_tokens",
    "num_beams",
    "do_sample",
    "top_p",
    "top_k",
    "temperature",
    "repetition_penalty",
    "length_penalty",
    "no_repeat_ngram_size",
    "num_return_sequences",
)


class Tag2TextCaptionPipeline(Pipeline):
    """Tag and caption images.

    Call arguments: ``tags`` (steer the caption: a list of names or a ``" | "`` string, per image),
    ``threshold`` (tagging threshold override), ``generate_kwargs`` (a dict), and the usual generation
    arguments directly (``num_beams``, ``max_new_tokens``, ``do_sample`` ...).
    """

    _load_processor = True
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def _sanitize_parameters(self, tags=None, threshold=None, generate_kwargs=None, timeout=None, **kwargs):
        preprocess = {}
        forward = {"generate_kwargs": dict(generate_kwargs or {})}
        if tags is not None:
            preprocess["tags"] = tags
        if threshold is not None:
            forward["threshold"] = threshold
        for name in list(kwargs):
            if name in _GENERATE_ARGS:
                forward["generate_kwargs"][name] = kwargs.pop(name)
        if kwargs:
            raise TypeError(f"unexpected arguments for the Tag2Text captioning pipeline: {sorted(kwargs)}")
        return preprocess, forward, {}

    def preprocess(self, image, tags=None):
        inputs = self.processor(images=image, return_tensors="pt")
        inputs = {"pixel_values": inputs["pixel_values"].to(self.dtype or inputs["pixel_values"].dtype)}
        if tags is not None:
            inputs["tags"] = [tags] if not isinstance(tags, (list, tuple)) or all(isinstance(t, str) for t in tags) else tags
        return inputs

    def _forward(self, model_inputs, generate_kwargs=None, threshold=None):
        # One call tags, encodes and captions the image (one vision pass); the tags come back with the caption.
        tags = model_inputs.pop("tags", None)
        outputs = self.model.generate(
            model_inputs["pixel_values"],
            tags=tags,
            tag_threshold=threshold,
            tokenizer=self.processor.tokenizer,
            return_dict_in_generate=True,
            **(generate_kwargs or {}),
        )
        return {"sequences": outputs.sequences, "tags": outputs["tags"]}

    def postprocess(self, model_outputs):
        captions = self.processor.decode_captions(model_outputs["sequences"])
        tags = model_outputs["tags"]
        # One image's tags: ``[names]`` as _forward returns them, or ``names`` alone where the pipeline split a
        # batch (``batch_size`` > 1) into images, indexing each field.
        names = tags[0] if tags and not isinstance(tags[0], str) else (tags or [])
        # The result rows of every entry point; transformers' image-to-text answer calls the caption
        # "generated_text".
        return [{"generated_text": row["caption"], "tags": row["tags"]} for row in result_rows([names], None, captions)]
