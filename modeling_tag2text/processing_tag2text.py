"""Tag2TextProcessor: the image processor plus a BERT WordPiece tokenizer with ``[DEC]`` and ``[ENC]``.

Every token sequence (caption with the ``[DEC]`` prompt, alignment and matching text, ``[ENC]`` tag text) is built
by :mod:`text_conventions`; this class applies it to a tokenizer and images. Call arguments follow transformers'
``ProcessingKwargs``: ``text_kwargs`` (captions: ``padding``, ``truncation``, ``max_length``,
``pad_to_multiple_of``, ``padding_side``, ``add_prompt``, ``return_labels``), ``images_kwargs`` (``size``,
``resample``, ``do_rescale``, ``rescale_factor``, ``do_normalize``, ``image_mean``, ``image_std``) and
``return_tensors``, given flat or per modality; any other keyword is an error.

Part of the Hub payload of the processor: imports only the standard library, torch and transformers, and
its siblings.
"""


from typing import TypedDict

import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessingKwargs, ProcessorMixin

from .version_compat import SUPPORTED_TRANSFORMERS  # noqa: F401  (first: an unsupported release stops here)
from .image_processing_tag2text import Tag2TextImageProcessor, Tag2TextImagesKwargs
# Imported here as well as by image_processing_tag2text: older transformers releases (5.0 and 4.57 measured) copy
# only a loaded module's direct single-dot imports into the remote-code cache, so each entry module names its
# whole closure.
from .image_loading import ImageInputError  # noqa: F401
from .text_conventions import (
    DEC_TOKEN,
    ENC_TOKEN,
    add_special_tokens,
    caption_labels,
    caption_text,
    piece_ids,
    strip_prompt,
    tag_names_per_image,
    tag_text,
    tag_token_sequences,
    with_first_token,
)


def add_tag2text_tokens(tokenizer):
    """Add ``[DEC]`` as the bos token and ``[ENC]`` as an extra special token, as the original does."""
    return add_special_tokens(tokenizer)


class Tag2TextTextKwargs(TypedDict, total=False):
    """Caption encoding at call time. ``max_length`` defaults to the processor's ``max_text_length`` (40)."""

    padding: bool | str | None
    truncation: bool | str | None
    max_length: int | None
    pad_to_multiple_of: int | None
    padding_side: str | None
    add_prompt: bool | None
    return_labels: bool | None
    return_tensors: str | None


# Lowest-priority defaults of transformers' kwargs merging for the caption text.
TEXT_DEFAULTS = {"padding": "longest", "truncation": True, "add_prompt": True, "return_labels": False}


class Tag2TextProcessorKwargs(ProcessingKwargs, total=False):
    text_kwargs: Tag2TextTextKwargs
    images_kwargs: Tag2TextImagesKwargs
    # transformers 5.0 reads the defaults from here (and requires the attribute: a TypedDict subclass does not
    # inherit ProcessingKwargs._defaults); later releases read the processor's attributes first and these after,
    # so giving the same values in both places means the same merge on every release.
    _defaults = {"text_kwargs": TEXT_DEFAULTS}


_UNSUPPORTED_MODALITIES = ("audio_kwargs", "videos_kwargs")


class Tag2TextProcessor(ProcessorMixin):
    """Images, captions and tags in; model inputs out; captions decoded without the prompt.

    Args:
        image_processor: a :class:`Tag2TextImageProcessor`.
        tokenizer: a BERT tokenizer with ``[DEC]`` and ``[ENC]`` (see :func:`build_tokenizer`).
        prompt: the decoder prompt (``"a picture of "``).
        max_text_length: caption token limit including special tokens (40, as released).
        max_tag_length: tag text token length including ``[ENC]``/``[SEP]`` (40).
        tag_separator: joins tag names (``" | "``).
    """

    valid_processor_kwargs = Tag2TextProcessorKwargs
    # Lowest-priority defaults of transformers' kwargs merging (processor attributes; see Tag2TextProcessorKwargs).
    text_kwargs = TEXT_DEFAULTS
    images_kwargs = {}

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        prompt: str = "a picture of ",
        max_text_length: int = 40,
        max_tag_length: int = 40,
        tag_separator: str = " | ",
        **kwargs,
    ):
        if image_processor is None:
            image_processor = Tag2TextImageProcessor()
        if tokenizer is None:
            raise ValueError("Tag2TextProcessor needs a tokenizer (see tag2text.build_tokenizer)")
        add_special_tokens(tokenizer)
        self.prompt = prompt
        self.max_text_length = int(max_text_length)
        self.max_tag_length = int(max_tag_length)
        self.tag_separator = tag_separator
        super().__init__(image_processor, tokenizer, **kwargs)

    # -- token ids -----------------------------------------------------------------------------------------

    @property
    def dec_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(DEC_TOKEN)

    @property
    def enc_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(ENC_TOKEN)

    @property
    def prompt_length(self) -> int:
        """Tokens of ``[DEC]`` + prompt (4 for ``"a picture of "``); the LM loss skips them."""
        return len(piece_ids(self.tokenizer, [self.prompt])[0]) + 1

    # -- encoding ------------------------------------------------------------------------------------------

    def parse_tags(self, tags, batch_size: int = 1) -> list:
        """User tags as a list of names per image: one ``tag_separator``-joined string (one image), a list with
        one entry per image (a joined string or a list of names), or a flat list of names for one image. The
        model's ``generate(tags=...)`` and the ONNX runtime read tags by the same rule
        (:func:`~.text_conventions.tag_names_per_image`)."""
        return tag_names_per_image(tags, batch_size, self.tag_separator)

    def encode_tags(self, tags, return_tensors="pt") -> BatchFeature:
        """``tag_input_ids``/``tag_attention_mask``: per image ``[ENC] t1 | t2 ... [SEP]``, padded to
        ``max_tag_length`` (longer tag texts are truncated, as released). Per image a list of names or one
        joined string."""
        if isinstance(tags, str):
            tags = [tags]
        # Every name of the batch (and the separator) in one tokenizer call: the collator encodes a batch's tags
        # each training step, and a call per image cost 10 ms of a 0.27 s quickstart step (measured).
        texts, spans = [], []
        for item in tags:
            names = [item] if isinstance(item, str) else [str(t).strip() for t in item if str(t).strip()]
            spans.append((len(texts), len(names)))
            texts.extend(names)
        encoded = piece_ids(self.tokenizer, texts + [self.tag_separator])
        separator = encoded[-1]
        pieces = [encoded[start:start + count] for start, count in spans]
        tokenizer = self.tokenizer
        ids, mask = tag_token_sequences(pieces, separator, self.enc_token_id, tokenizer.sep_token_id,
                                        tokenizer.pad_token_id, self.max_tag_length)
        return BatchFeature(data={"tag_input_ids": ids, "tag_attention_mask": mask}, tensor_type=return_tensors)

    def encode_captions(self, text, return_tensors="pt", add_prompt: bool = True, return_labels: bool = False,
                        max_length: int | None = None, padding="longest", truncation=True, pad_to_multiple_of=None,
                        padding_side=None) -> BatchFeature:
        """``input_ids``/``attention_mask`` of ``[DEC] prompt caption [SEP]``, padded to the longest.

        With ``return_labels``, ``labels`` copy the ids with -100 on padding and on the ``[DEC]`` + prompt
        tokens, so the LM loss covers the caption and the final ``[SEP]``.
        """
        texts = [text] if isinstance(text, str) else list(text)
        texts = [caption_text(t, self.prompt, add_prompt) for t in texts]
        options = {"padding_side": padding_side} if padding_side is not None else {}
        encoded = self.tokenizer(texts, padding=padding, truncation=truncation,
                                 max_length=max_length or self.max_text_length,
                                 pad_to_multiple_of=pad_to_multiple_of, **options)
        masks = [list(m) for m in encoded["attention_mask"]]
        rows = with_first_token(encoded["input_ids"], self.dec_token_id, masks)
        data = {"input_ids": rows, "attention_mask": masks}
        if return_labels:
            data["labels"] = caption_labels(rows, masks, self.prompt_length if add_prompt else 1)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def encode_alignment_text(self, text, return_tensors="pt", max_length: int | None = None) -> BatchFeature:
        """Captions for ITC and ITM (no prompt): ``text_input_ids`` start with ``[CLS]`` (the text-only encoder),
        ``itm_input_ids`` with ``[ENC]`` (the encoder with cross-attention); one ``text_attention_mask``."""
        encoded = self.encode_captions(text, return_tensors=None, add_prompt=False, max_length=max_length)
        masks = encoded["attention_mask"]
        data = {
            "text_input_ids": with_first_token(encoded["input_ids"], self.tokenizer.cls_token_id, masks),
            "itm_input_ids": with_first_token(encoded["input_ids"], self.enc_token_id, masks),
            "text_attention_mask": masks,
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _call_options(self, kwargs) -> dict:
        known = set(Tag2TextTextKwargs.__annotations__) | set(Tag2TextImagesKwargs.__annotations__)
        known |= {"text_kwargs", "images_kwargs", "common_kwargs", "return_tensors"}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"Tag2TextProcessor got unexpected argument(s) {unknown}; it takes {sorted(known)}")
        for modality, allowed in (("text_kwargs", Tag2TextTextKwargs), ("images_kwargs", Tag2TextImagesKwargs)):
            extra = sorted(set(kwargs.get(modality) or {}) - set(allowed.__annotations__))
            if extra:
                raise TypeError(f"Tag2TextProcessor: {modality} got unexpected key(s) {extra}; it takes "
                                f"{sorted(allowed.__annotations__)}")
        return self._merge_kwargs(Tag2TextProcessorKwargs, **kwargs)

    def __call__(self, images=None, text=None, tags=None, **kwargs) -> BatchFeature:
        """Encode any of images, captions (``text``) and tags.

        Args:
            images: one image or a list (PIL images of any mode, file paths, numpy arrays, tensors).
            text: caption(s); the prompt is prepended unless the text already starts with it (``add_prompt``).
            tags: per image a list of tag names or a ``" | "``-joined string (a single string or flat list
                of names for one image).
            **kwargs: ``return_tensors`` (``"pt"``, ``"np"`` or None for lists), the caption options and the
                image options named in the module docstring, flat or as ``text_kwargs``/``images_kwargs``.
        Returns:
            ``pixel_values``, ``input_ids``, ``attention_mask`` (and ``labels``), ``tag_input_ids``,
            ``tag_attention_mask`` for what was given.
        """
        if images is None and text is None and tags is None:
            raise ValueError("give at least one of images, text and tags")
        options = self._call_options(kwargs)
        return_tensors = kwargs.get("return_tensors", "pt")
        text_options = dict(options["text_kwargs"])
        image_options = dict(options["images_kwargs"])
        text_options.pop("return_tensors", None)
        image_options.pop("return_tensors", None)
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors=None, **image_options))
        if text is not None:
            data.update(self.encode_captions(text, return_tensors=None, **text_options))
        if tags is not None:
            if isinstance(tags, str):
                tags = [tags]
            elif tags and all(isinstance(t, str) for t in tags) and images is not None and len(tags) > 1 and (
                "pixel_values" in data and len(data["pixel_values"]) == 1
            ):
                tags = [tags]
            data.update(self.encode_tags(tags, return_tensors=None))
            if "pixel_values" in data and len(data["tag_input_ids"]) != len(data["pixel_values"]):
                raise ValueError(
                    f"got tags for {len(data['tag_input_ids'])} images but {len(data['pixel_values'])} images"
                )
        return BatchFeature(data=data, tensor_type=return_tensors)

    # -- decoding ------------------------------------------------------------------------------------------

    def strip_prompt(self, text: str) -> str:
        return strip_prompt(text, self.prompt)

    def decode_captions(self, sequences) -> list[str]:
        """Captions from generated ids (prompt included), special tokens and the prompt removed."""
        if isinstance(sequences, torch.Tensor):
            sequences = sequences.tolist()
        texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=True)
        return [self.strip_prompt(t) for t in texts]

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    def post_process_image_text_to_text(self, generated_outputs, skip_special_tokens=True, **kwargs):
        return self.tokenizer.batch_decode(generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs)

    @property
    def model_input_names(self):
        return ["pixel_values", "input_ids", "attention_mask", "tag_input_ids", "tag_attention_mask"]
