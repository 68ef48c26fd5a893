"""Tag2TextProcessor: the image processor plus a BERT WordPiece tokenizer with ``[DEC]`` and ``[ENC]``.

Text conventions of the original model:
- captions: ``[DEC] a picture of <caption> [SEP]`` (``[DEC]`` in place of ``[CLS]``), at most 40 tokens;
- tags: ``[ENC] tag1 | tag2 ... [SEP]`` padded to ``max_tag_length`` (the decoder attends to every position);
- decoded captions lose the prompt.

Part of the Hub payload of the processor: imports only the standard library, torch and transformers, and
its sibling image processor.
"""

from __future__ import annotations

import os

import torch
from transformers import BertTokenizer
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .image_processing_tag2text import Tag2TextImageProcessor

DEC_TOKEN = "[DEC]"
ENC_TOKEN = "[ENC]"


def add_tag2text_tokens(tokenizer):
    """Add ``[DEC]`` as the bos token and ``[ENC]`` as an extra special token, as the original does."""
    if tokenizer.convert_tokens_to_ids(DEC_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"bos_token": DEC_TOKEN})
    else:
        tokenizer.bos_token = DEC_TOKEN
    if tokenizer.convert_tokens_to_ids(ENC_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": [ENC_TOKEN]})
    return tokenizer


def build_tokenizer(name_or_path: str | os.PathLike = "bert-base-uncased", *, option: str = "--tokenizer",
                    probe_words=None, **kwargs):
    """A lower-casing BERT WordPiece tokenizer with ``[DEC]``/``[ENC]`` added, checked to be usable.

    Args:
        name_or_path: a ``vocab.txt`` file, a directory holding ``vocab.txt`` or saved tokenizer files, or a
            Hub id (``bert-base-uncased``, as the original used). ``~`` is expanded; a local-looking path that
            does not exist fails at once instead of going to the Hub.
        option: the command-line option that chose the source, named in errors.
        probe_words: words the tokenizer must spell with some token other than ``[UNK]``. Default: "a", "dog"
            and "red" for a Hub id or saved tokenizer files, "a" for a vocab.txt (it may be written for one's
            own captions).

    Raises:
        TokenizerLoadError: (a ``ValueError``) the source is missing, or gave a vocabulary of special tokens
            only (what transformers returns for a Hub id it cannot download) or one that spells a probe word
            as ``[UNK]``; the message names the source and ``option``.
    """
    from .source_check import (
        GENERAL_PROBE_WORDS,
        VOCABULARY_FILE_PROBE_WORDS,
        TokenizerLoadError,
        check_tokenizer,
        missing_local_source,
    )

    source = os.fspath(name_or_path)
    path = os.path.expanduser(source)
    missing = missing_local_source(source, allow_bare_name=True)
    if missing is not None:
        raise TokenizerLoadError(f"{option}: no tokenizer file or directory at {missing}")
    vocabulary_file = None
    if os.path.isfile(path):
        vocabulary_file = path
    elif os.path.isdir(path) and not any(
        os.path.exists(os.path.join(path, name)) for name in ("tokenizer.json", "tokenizer_config.json")
    ):
        vocabulary_file = os.path.join(path, "vocab.txt")
        if not os.path.isfile(vocabulary_file):
            raise TokenizerLoadError(f"{option}: tokenizer directory {path} holds neither vocab.txt nor tokenizer files")
    try:
        if vocabulary_file is not None:
            tokenizer = BertTokenizer(vocab=vocabulary_file, do_lower_case=True, **kwargs)
        else:
            tokenizer = BertTokenizer.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as error:
        raise TokenizerLoadError(
            f"{option}: could not load {source!r} ({error}); pass a directory holding vocab.txt, or the file"
        ) from error
    if probe_words is None:
        probe_words = VOCABULARY_FILE_PROBE_WORDS if vocabulary_file is not None else GENERAL_PROBE_WORDS
    check_tokenizer(tokenizer, source, option=option, probe_words=probe_words)
    return add_tag2text_tokens(tokenizer)


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
        add_tag2text_tokens(tokenizer)
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
        return len(self.tokenizer(self.prompt, add_special_tokens=False)["input_ids"]) + 1

    # -- encoding ------------------------------------------------------------------------------------------

    def tags_to_text(self, tags) -> str:
        """One image's tags (a list of names or an already joined string) as the tag text."""
        if isinstance(tags, str):
            return tags
        return self.tag_separator.join(str(t).strip() for t in tags if str(t).strip())

    def encode_tags(self, tags, return_tensors="pt") -> BatchFeature:
        """``tag_input_ids``/``tag_attention_mask``: per image ``[ENC] t1 | t2 ... [SEP]``, padded to
        ``max_tag_length`` (longer tag texts are truncated, as released)."""
        if isinstance(tags, str):
            tags = [tags]
        texts = [self.tags_to_text(item) for item in tags]
        encoded = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_tag_length, return_tensors="pt"
        )
        ids = encoded["input_ids"].clone()
        ids[:, 0] = self.enc_token_id
        data = {"tag_input_ids": ids, "tag_attention_mask": encoded["attention_mask"]}
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _with_prompt(self, text: str) -> str:
        text = "" if text is None else str(text)
        if text.strip().lower().startswith(self.prompt.strip().lower()):
            return text.strip()
        return self.prompt + text.strip()

    def encode_captions(self, text, return_tensors="pt", add_prompt: bool = True, return_labels: bool = False,
                        max_length: int | None = None) -> BatchFeature:
        """``input_ids``/``attention_mask`` of ``[DEC] prompt caption [SEP]``, padded to the longest.

        With ``return_labels``, ``labels`` copy the ids with -100 on padding and on the ``[DEC]`` + prompt
        tokens, so the LM loss covers the caption and the final ``[SEP]``.
        """
        texts = [text] if isinstance(text, str) else list(text)
        texts = [self._with_prompt(t) if add_prompt else str(t) for t in texts]
        limit = max_length or self.max_text_length
        encoded = self.tokenizer(texts, padding="longest", truncation=True, max_length=limit, return_tensors="pt")
        ids = encoded["input_ids"].clone()
        ids[:, 0] = self.dec_token_id
        data = {"input_ids": ids, "attention_mask": encoded["attention_mask"]}
        if return_labels:
            labels = ids.masked_fill(encoded["attention_mask"] == 0, -100)
            if add_prompt:
                labels[:, : self.prompt_length] = -100
            else:
                labels[:, 0] = -100
            data["labels"] = labels
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(
        self,
        images=None,
        text=None,
        tags=None,
        return_tensors="pt",
        add_prompt: bool = True,
        return_labels: bool = False,
        **kwargs,
    ) -> BatchFeature:
        """Encode any of images, captions (``text``) and tags.

        Args:
            images: one image or a list (PIL images of any mode, file paths, numpy arrays, tensors).
            text: caption(s); the prompt is prepended unless the text already starts with it.
            tags: per image a list of tag names or a ``" | "``-joined string (a single string or flat list
                of names for one image).
            return_labels: add LM ``labels`` for training.
        Returns:
            ``pixel_values``, ``input_ids``, ``attention_mask`` (and ``labels``), ``tag_input_ids``,
            ``tag_attention_mask`` for what was given.
        """
        if images is None and text is None and tags is None:
            raise ValueError("give at least one of images, text and tags")
        data = {}
        if images is not None:
            data.update(self.image_processor(images, return_tensors="pt"))
        if text is not None:
            data.update(self.encode_captions(text, add_prompt=add_prompt, return_labels=return_labels))
        if tags is not None:
            if isinstance(tags, str):
                tags = [tags]
            elif tags and all(isinstance(t, str) for t in tags) and images is not None and len(tags) > 1 and (
                "pixel_values" in data and data["pixel_values"].shape[0] == 1
            ):
                tags = [tags]
            data.update(self.encode_tags(tags))
            if "pixel_values" in data and data["tag_input_ids"].shape[0] != data["pixel_values"].shape[0]:
                raise ValueError(
                    f"got tags for {data['tag_input_ids'].shape[0]} images but {data['pixel_values'].shape[0]} images"
                )
        return BatchFeature(data=data, tensor_type=return_tensors)

    # -- decoding ------------------------------------------------------------------------------------------

    def strip_prompt(self, text: str) -> str:
        prompt = self.prompt.strip().lower()
        stripped = text.strip()
        if prompt and stripped.lower().startswith(prompt):
            stripped = stripped[len(prompt):]
        return stripped.strip()

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
